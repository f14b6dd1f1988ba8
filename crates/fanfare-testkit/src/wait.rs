//! Waiting on conditions with a deadline, never on bare sleeps.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often conditions are re-checked.
pub const POLL: Duration = Duration::from_millis(50);

/// Polls `check` until it returns `Some`, or fails with `what` after `timeout`.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}
