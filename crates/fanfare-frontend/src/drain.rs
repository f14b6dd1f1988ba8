//! A graceful drain, for rolling restarts: the frontend says it is not ready (so load
//! balancers stop sending it viewers) while it goes on serving, then ends its viewer streams
//! in waves, each stream with a random `retry:` within one wave's interval, so that the
//! reconnects land on the other frontends spread over the whole window instead of all at once.
//! Every ended stream's client resumes elsewhere with its `Last-Event-ID`: nothing is lost.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::Shared;

/// Waves a drain window is cut into.
pub(crate) const WAVES: u32 = 10;

/// Drains `shared`'s streams; `shutdown` cuts it short.
pub(crate) async fn streams(shared: &Shared, shutdown: &CancellationToken) {
    let grace = shared.settings.drain_grace;
    let window = shared.settings.drain_window;
    shared.draining.store(true, Ordering::Relaxed);
    tracing::info!(
        ?grace,
        ?window,
        "draining: not ready from now, viewer streams end in waves after the grace"
    );
    if !pause(grace, shutdown).await {
        return;
    }
    let interval = window / WAVES;
    let mut jitter = Jitter::seeded();
    let spread = interval.as_millis().max(1) as u64;
    for wave in 0..WAVES {
        let open = shared.open_streams.load(Ordering::Relaxed);
        let due = open.div_ceil((WAVES - wave) as usize);
        let ended = shared.hub.close_some(due, || jitter.below(spread));
        tracing::debug!(wave, ended, open, "drain wave");
        if !pause(interval, shutdown).await {
            return;
        }
    }
    tracing::info!("drained: every viewer stream has ended");
}

/// Sleeps `time` unless `shutdown` comes first; false then.
async fn pause(time: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(time) => true,
    }
}

/// A small xorshift generator: retry hints only need to differ, not to be unpredictable.
struct Jitter(u64);

impl Jitter {
    fn seeded() -> Self {
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        Self(u64::from_le_bytes(seed) | 1)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::Jitter;

    #[test]
    fn retry_hints_stay_within_the_wave_and_differ() {
        let mut jitter = Jitter::seeded();
        let hints: Vec<u64> = (0..1000).map(|_| jitter.below(2000)).collect();
        assert!(hints.iter().all(|hint| *hint < 2000));
        let distinct: std::collections::BTreeSet<u64> = hints.iter().copied().collect();
        assert!(
            distinct.len() > 500,
            "spread: {} distinct of 1000",
            distinct.len()
        );
    }
}
