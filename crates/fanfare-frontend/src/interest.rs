//! Keeps this frontend's entries in its datacenter's subscription table in step with its
//! viewers: written when a video gets its first viewer, deleted after its last one leaves,
//! refreshed before they expire.
//!
//! All writes go through one task, in order, so a quick leave-then-join of a video can never end
//! with the entry deleted while the video has viewers.

use std::sync::Arc;
use std::time::Duration;

use fanfare_fabric::InterestRegistry;
use fanfare_model::VideoId;
use fanfare_telemetry::FrontendMetrics;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;

pub(crate) enum InterestChange {
    /// A first viewer arrived; the sender is answered once the entry is written.
    Register(VideoId, oneshot::Sender<()>),
    /// The last viewer left.
    Withdraw(VideoId),
}

/// Changes waiting for the keeper; a first viewer waits for a slot rather than being refused.
const CHANGE_QUEUE: usize = 4096;

#[derive(Clone)]
pub(crate) struct InterestKeeper {
    /// Sent by viewer streams, received by the keeper task; closed at shutdown.
    changes: mpsc::Sender<InterestChange>,
}

impl InterestKeeper {
    pub(crate) fn start(
        registry: InterestRegistry,
        hub: Arc<Hub>,
        ttl: Duration,
        metrics: FrontendMetrics,
        shutdown: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (changes, receiver) = mpsc::channel(CHANGE_QUEUE);
        let task = tokio::spawn(keep(registry, hub, ttl, metrics, receiver, shutdown));
        (Self { changes }, task)
    }

    /// Writes the entry for `video` and waits until it is stored (or failed: the refresh
    /// retries).
    pub(crate) async fn register(&self, video: VideoId) {
        let (done, written) = oneshot::channel();
        if self
            .changes
            .send(InterestChange::Register(video, done))
            .await
            .is_ok()
        {
            let _ = written.await;
        }
    }

    /// Queues the deletion of `video`'s entry; called from `Drop`, so it never waits.
    pub(crate) fn withdraw(&self, video: VideoId) {
        let changes = self.changes.clone();
        if let Err(mpsc::error::TrySendError::Full(change)) =
            changes.try_send(InterestChange::Withdraw(video))
        {
            tokio::spawn(async move {
                let _ = changes.send(change).await;
            });
        }
    }
}

async fn keep(
    registry: InterestRegistry,
    hub: Arc<Hub>,
    ttl: Duration,
    metrics: FrontendMetrics,
    mut changes: mpsc::Receiver<InterestChange>,
    shutdown: CancellationToken,
) {
    let mut refresh = tokio::time::interval(ttl / 3);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            change = changes.recv() => match change {
                Some(InterestChange::Register(video, done)) => {
                    if let Err(error) = registry.register_interest(&video).await {
                        metrics.interest_failed(&error);
                    }
                    let _ = done.send(());
                }
                Some(InterestChange::Withdraw(video)) => {
                    // A viewer may have come back since the change was queued.
                    if hub.is_watched(&video) {
                        continue;
                    }
                    if let Err(error) = registry.withdraw_interest(&video).await {
                        metrics.interest_failed(&error);
                    }
                }
                None => break,
            },
            _ = refresh.tick() => {
                for video in hub.watched_videos() {
                    if let Err(error) = registry.register_interest(&video).await {
                        metrics.interest_failed(&error);
                        break;
                    }
                }
            }
        }
    }
    // Leaving: tell the dispatchers now instead of letting the entries expire.
    for video in hub.watched_videos() {
        let _ = registry.withdraw_interest(&video).await;
    }
}
