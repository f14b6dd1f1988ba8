//! Publishers: per datacenter, comments and likes at fixed rates to that datacenter's running
//! frontends, round-robin, each on a random video.
//!
//! A comment carries an `Idempotency-Key`. When its outcome is unknown (a 504
//! `outcome-unknown`, a timeout, a connection cut after the request went out), it is sent
//! again with the same key, so the
//! ambiguity is resolved by the server rather than guessed: a 202 on any try means stored
//! once. An answer that says "not stored" (an error status, a refused connection) ends it as
//! rejected, unless an earlier try was ambiguous, which leaves it unknown.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fanfare_client::http::{self, HttpError};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ledger::{Ledger, Outcome};
use crate::liveness::Liveness;
use crate::rng::SeededRng;

/// Requests in flight per datacenter, comments and likes together. A publisher that reaches
/// it waits, so a stalled datacenter slows its own publishing instead of piling up requests.
pub(crate) const IN_FLIGHT_PER_DC: usize = 16;
/// Bound on one publish request. Longer than the frontend's own store timeout, so that a
/// timeout here really means the answer was lost.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(8);
/// Further tries of a comment whose outcome is unknown, and the pause before the first.
const COMMENT_RETRIES: u32 = 4;
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// One datacenter's publishing target.
pub(crate) struct DcPublisher {
    pub(crate) dc: usize,
    pub(crate) name: String,
    /// (node name, base url) of each frontend.
    pub(crate) frontends: Vec<(String, String)>,
    pub(crate) run_tag: String,
    pub(crate) videos: Vec<String>,
    pub(crate) comments_per_sec: f64,
    pub(crate) likes_per_sec: f64,
    pub(crate) next_frontend: AtomicUsize,
    pub(crate) next_comment: AtomicU64,
    /// Decides each request's video; seeded from the run's seed.
    pub(crate) rng: Mutex<SeededRng>,
}

/// What one try got.
enum Attempt {
    Accepted,
    /// The server said no, or there was nobody to ask: nothing was stored.
    Refused,
    /// The request may or may not have been carried out.
    Ambiguous,
}

fn classify(result: Result<http::HttpResponse, HttpError>) -> Attempt {
    match result {
        Ok(response) if matches!(response.status, 200 | 202) => Attempt::Accepted,
        // Sent to the stream, not acknowledged: it may be stored.
        Ok(response) if response.status == 504 => Attempt::Ambiguous,
        Ok(_) => Attempt::Refused,
        Err(HttpError::Client(error)) if error.is_connect() => Attempt::Refused,
        Err(HttpError::Client(_) | HttpError::Timeout | HttpError::Body(_)) => Attempt::Ambiguous,
        Err(_) => Attempt::Refused,
    }
}

impl DcPublisher {
    /// The next running frontend of this datacenter, round-robin.
    fn frontend(&self, liveness: &Liveness) -> Option<&str> {
        let running: Vec<&(String, String)> = self
            .frontends
            .iter()
            .filter(|(name, _)| liveness.is_running(name))
            .collect();
        if running.is_empty() {
            return None;
        }
        let turn = self.next_frontend.fetch_add(1, Ordering::Relaxed);
        Some(running[turn % running.len()].1.as_str())
    }

    fn video(&self) -> usize {
        let mut rng = self
            .rng
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        rng.below(self.videos.len() as u64) as usize
    }

    async fn like(&self, liveness: &Liveness, ledger: &Ledger) {
        let video = self.video();
        let attempt = match self.frontend(liveness) {
            None => Attempt::Refused,
            Some(base) => {
                let url = format!("{base}/v1/videos/{}/likes", self.videos[video]);
                let body = json!({ "user_id": format!("soak-{}", self.name) }).to_string();
                classify(
                    http::request_within(
                        REQUEST_TIMEOUT,
                        "POST",
                        &url,
                        &[("content-type", "application/json")],
                        body.into(),
                    )
                    .await,
                )
            }
        };
        let outcome = match attempt {
            Attempt::Accepted => Outcome::Accepted,
            Attempt::Refused => Outcome::Rejected,
            Attempt::Ambiguous => Outcome::Unknown,
        };
        ledger.like_outcome(self.dc, video, outcome);
    }

    async fn comment(&self, liveness: &Liveness, ledger: &Ledger, shutdown: &CancellationToken) {
        let video = self.video();
        let number = self.next_comment.fetch_add(1, Ordering::Relaxed);
        let key = format!("{}-{}-c{number}", self.run_tag, self.name);
        let body = json!({ "user_id": format!("soak-{}", self.name), "text": format!("soak comment {key}") })
            .to_string();
        let mut ambiguous = false;
        let mut pause = FIRST_RETRY_PAUSE;
        let mut outcome = Outcome::Rejected;
        for attempt in 0..=COMMENT_RETRIES {
            if attempt > 0 {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(pause) => {}
                }
                pause *= 2;
            }
            let result = match self.frontend(liveness) {
                None => Attempt::Refused,
                Some(base) => {
                    let url = format!("{base}/v1/videos/{}/comments", self.videos[video]);
                    classify(
                        http::request_within(
                            REQUEST_TIMEOUT,
                            "POST",
                            &url,
                            &[
                                ("content-type", "application/json"),
                                ("idempotency-key", &key),
                            ],
                            body.clone().into(),
                        )
                        .await,
                    )
                }
            };
            match result {
                Attempt::Accepted => {
                    outcome = Outcome::Accepted;
                    break;
                }
                Attempt::Ambiguous => ambiguous = true,
                // Nothing stored by this try; only an earlier ambiguous one keeps it open.
                Attempt::Refused if !ambiguous => break,
                Attempt::Refused => {}
            }
        }
        if outcome != Outcome::Accepted && ambiguous {
            outcome = Outcome::Unknown;
        }
        ledger.comment_outcome(self.dc, video, &key, outcome);
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Comment,
    Like,
}

/// Publishes comments and likes for one datacenter until `stop`; requests already sent are
/// tracked by `tracker` so the caller can wait for their outcomes.
pub(crate) async fn publish(
    publisher: Arc<DcPublisher>,
    liveness: Arc<Liveness>,
    ledger: Arc<Ledger>,
    tracker: TaskTracker,
    stop: CancellationToken,
    shutdown: CancellationToken,
) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT_PER_DC));
    let mut loops = Vec::new();
    let rates = [
        (Kind::Comment, publisher.comments_per_sec),
        (Kind::Like, publisher.likes_per_sec),
    ];
    for (kind, rate) in rates {
        if rate <= 0.0 {
            continue;
        }
        let period = Duration::from_secs_f64(1.0 / rate);
        let (publisher, liveness, ledger, tracker, stop, shutdown, in_flight) = (
            publisher.clone(),
            liveness.clone(),
            ledger.clone(),
            tracker.clone(),
            stop.clone(),
            shutdown.clone(),
            in_flight.clone(),
        );
        loops.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                let permit = tokio::select! {
                    _ = stop.cancelled() => break,
                    permit = in_flight.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                };
                let (publisher, liveness, ledger, shutdown) = (
                    publisher.clone(),
                    liveness.clone(),
                    ledger.clone(),
                    shutdown.clone(),
                );
                tracker.spawn(async move {
                    let _permit = permit;
                    match kind {
                        Kind::Comment => publisher.comment(&liveness, &ledger, &shutdown).await,
                        Kind::Like => publisher.like(&liveness, &ledger).await,
                    }
                });
            }
        }));
    }
    for publishing in loops {
        let _ = publishing.await;
    }
}
