//! Keeps this frontend's part of its datacenter's subscription table in step with its
//! viewers: its lease, renewed every third of `interest_ttl`, and one interest key per video
//! it has viewers of, written when the video gets its first viewer here and deleted once the
//! hub reports nobody follows it any more. No key is refreshed: the lease alone says the
//! frontend is alive (see `fanfare_fabric::SubscriptionTable`).
//!
//! All writes go through one task, in order, and each is checked against the hub when it is
//! made, so a quick leave-then-join of a video can never end with the key deleted while the
//! video has viewers.

use std::time::Duration;

use fanfare_engine::Hub;
use fanfare_fabric::{InterestRegistry, Renewal};
use fanfare_model::VideoId;
use fanfare_telemetry::FrontendMetrics;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// A first viewer's request to write its video's key; answered once it is written (or
/// failed: the next renewal writes every key again if the lease was lost).
struct Register {
    video: VideoId,
    done: oneshot::Sender<()>,
}

/// Registrations waiting for the keeper; a first viewer waits for a slot rather than being
/// refused.
const REGISTER_QUEUE: usize = 4096;

#[derive(Clone)]
pub(crate) struct InterestKeeper {
    /// Sent by first viewers, received by the keeper task; closed at shutdown.
    registrations: mpsc::Sender<Register>,
}

impl InterestKeeper {
    /// Starts the keeper of a registry whose lease is held already.
    pub(crate) fn start(
        registry: InterestRegistry,
        hub: Hub,
        ttl: Duration,
        metrics: FrontendMetrics,
        shutdown: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (registrations, receiver) = mpsc::channel(REGISTER_QUEUE);
        let task = tokio::spawn(keep(registry, hub, ttl, metrics, receiver, shutdown));
        (Self { registrations }, task)
    }

    /// Writes the key of `video` and waits until it is stored.
    pub(crate) async fn register(&self, video: VideoId) {
        let (done, written) = oneshot::channel();
        if self
            .registrations
            .send(Register { video, done })
            .await
            .is_ok()
        {
            let _ = written.await;
        }
    }
}

async fn keep(
    registry: InterestRegistry,
    hub: Hub,
    ttl: Duration,
    metrics: FrontendMetrics,
    mut registrations: mpsc::Receiver<Register>,
    shutdown: CancellationToken,
) {
    let mut renew = tokio::time::interval(ttl / 3);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once; the lease was just taken.
    renew.tick().await;
    // The lease was lost and no new one could be taken yet.
    let mut lease_lost = false;
    // Keys not written again under a new lease yet (a rewrite that failed half-way).
    let mut rewrite_pending = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            registration = registrations.recv() => {
                let Some(Register { video, done }) = registration else { break };
                // The viewer may be gone already; a later first viewer registers again.
                if hub.is_watched(&video) {
                    if let Err(error) = registry.register_interest(&video).await {
                        metrics.interest_failed(&error);
                    }
                }
                let _ = done.send(());
            }
            _ = hub.unwatched_waiting() => {
                for video in hub.take_unwatched() {
                    // A viewer may have come back since.
                    if hub.is_watched(&video) {
                        continue;
                    }
                    if let Err(error) = registry.withdraw_interest(&video).await {
                        metrics.interest_failed(&error);
                    }
                }
            }
            _ = renew.tick() => {
                if lease_lost {
                    match registry.acquire_lease().await {
                        Ok(()) => {
                            lease_lost = false;
                            rewrite_pending = true;
                        }
                        Err(error) => metrics.interest_failed(&error),
                    }
                } else {
                    match registry.renew_lease().await {
                        Ok(Renewal::Renewed) => {}
                        Ok(Renewal::Lost) => {
                            tracing::warn!("the subscription-table lease was lost; taking a new one and registering every video again");
                            match registry.acquire_lease().await {
                                Ok(()) => rewrite_pending = true,
                                Err(error) => {
                                    lease_lost = true;
                                    metrics.interest_failed(&error);
                                }
                            }
                        }
                        Err(error) => metrics.interest_failed(&error),
                    }
                }
                if rewrite_pending && !lease_lost {
                    rewrite_pending = !rewrite_everything(&registry, &hub, &metrics).await;
                }
            }
        }
    }
    // Leaving: the lease first, so dispatchers stop sending here at once, then the keys, so
    // nothing is left for them to clear.
    if let Err(error) = registry.release_lease().await {
        metrics.interest_failed(&error);
    }
    for video in hub.watched_videos() {
        let _ = registry.withdraw_interest(&video).await;
    }
}

/// Writes every watched video's key again, under the current lease; false when a write
/// failed (the next renewal tries again).
async fn rewrite_everything(
    registry: &InterestRegistry,
    hub: &Hub,
    metrics: &FrontendMetrics,
) -> bool {
    for video in hub.watched_videos() {
        if let Err(error) = registry.register_interest(&video).await {
            metrics.interest_failed(&error);
            return false;
        }
    }
    true
}
