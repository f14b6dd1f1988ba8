//! From decoded deliveries to confirmed frontend batches: count likes into the datacenter's
//! totals, look each video up in the subscription table, send one batch per interested
//! frontend and wait for its confirmation. Shared by the dispatch partitions and the heal
//! bridge.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fanfare_fabric::{FabricError, SubscriptionTable, TotalRecord, Totals};
use fanfare_model::{names, Delivery, DeliveryPayload, FrontendBatch, VideoId};
use tokio::time::Instant;

/// How long a dispatcher keeps trying to hand one batch to a frontend.
const DELIVER_FOR: Duration = Duration::from_secs(3);
/// Wait for one confirmation before sending the batch again.
const DELIVER_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);
const DELIVER_RETRY_PAUSE: Duration = Duration::from_millis(50);
/// How long a frontend that failed to confirm gets batches without the wait.
const UNREACHABLE_FOR: Duration = Duration::from_secs(10);

/// Each counted video's record and its revision in the totals bucket, as this path last
/// wrote or read it.
pub(crate) type TotalsCache = HashMap<VideoId, (TotalRecord, u64)>;

/// What one [`Sender::send`] did.
pub(crate) struct Sent {
    /// Deliveries no local frontend wanted.
    pub unwatched: usize,
    /// Deliveries sent, one per frontend.
    pub deliveries: usize,
    /// NATS messages they went in.
    pub batches: usize,
}

pub(crate) struct Sender {
    pub dc: String,
    pub dispatcher: String,
    pub client: async_nats::Client,
    pub table: SubscriptionTable,
    pub totals: Totals,
    /// Frontends that recently failed to confirm a batch, and when: they get batches without
    /// waiting, so that a dead frontend (until its interest expires) does not slow every
    /// round down.
    pub unreachable: Mutex<HashMap<String, Instant>>,
}

impl Sender {
    /// Adds the like batches among `deliveries` to the datacenter's totals (each once per
    /// origin sequence, whoever counted it before) and writes each one's `total`.
    pub(crate) async fn count_likes(
        &self,
        deliveries: &mut [Delivery],
        cache: &mut TotalsCache,
    ) -> Result<(), FabricError> {
        let mut videos: Vec<VideoId> = Vec::new();
        for delivery in deliveries.iter() {
            if matches!(delivery.payload, DeliveryPayload::Likes { .. })
                && !videos.contains(&delivery.video_id)
            {
                videos.push(delivery.video_id.clone());
            }
        }
        for video in videos {
            loop {
                let (stored, revision) = match cache.get(&video) {
                    Some(cached) => cached.clone(),
                    None => self.totals.read(&video).await?,
                };
                let mut record = stored.clone();
                for delivery in deliveries.iter_mut() {
                    if delivery.video_id != video {
                        continue;
                    }
                    if let DeliveryPayload::Likes { count, total } = &mut delivery.payload {
                        *total = record.count(&delivery.origin_dc, delivery.origin_seq, *count);
                    }
                }
                if record == stored {
                    break;
                }
                match self.totals.write(&video, &record, revision).await? {
                    Some(new_revision) => {
                        cache.insert(video.clone(), (record, new_revision));
                        break;
                    }
                    // Another path counted meanwhile: start again from what it stored.
                    None => {
                        cache.remove(&video);
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends every delivery to the local frontends with viewers of its video, one batch per
    /// frontend, and returns once each frontend confirmed (or could not be reached for
    /// [`DELIVER_FOR`]): a batch lost on its way, e.g. while a frontend moves to another NATS
    /// server, is sent again rather than lost.
    pub(crate) async fn send(&self, deliveries: &[Delivery]) -> Sent {
        let mut batches: HashMap<Arc<str>, Vec<Delivery>> = HashMap::new();
        let mut unwatched = 0;
        let mut sent = 0;
        for delivery in deliveries {
            let frontends = self.table.frontends_for(&delivery.video_id);
            if frontends.is_empty() {
                unwatched += 1;
                continue;
            }
            sent += frontends.len();
            for frontend in frontends {
                batches.entry(frontend).or_default().push(delivery.clone());
            }
        }
        let batch_count = batches.len();
        let mut sends = Vec::with_capacity(batch_count);
        for (frontend, deliveries) in batches {
            let batch = FrontendBatch {
                dispatcher: self.dispatcher.clone(),
                deliveries,
            };
            let payload = match serde_json::to_vec(&batch) {
                Ok(payload) => bytes::Bytes::from(payload),
                Err(error) => {
                    tracing::error!(%error, "cannot encode a frontend batch");
                    continue;
                }
            };
            let subject = names::frontend_inbox(&self.dc, &frontend);
            sends.push(self.deliver_batch(subject, payload));
        }
        futures::future::join_all(sends).await;
        Sent {
            unwatched,
            deliveries: sent,
            batches: batch_count,
        }
    }

    /// Sends one batch to one frontend and waits for its confirmation, retrying while the
    /// frontend has no subscription (it is reconnecting) or does not answer, up to
    /// [`DELIVER_FOR`]. Past that the frontend is taken as gone: its interest entries expire.
    async fn deliver_batch(&self, subject: String, payload: bytes::Bytes) {
        let recently_failed = self
            .unreachable
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&subject)
            .is_some_and(|at| at.elapsed() < UNREACHABLE_FOR);
        // The round's trace goes on in the frontend's batch span.
        let headers = fanfare_telemetry::spans::current_traceparent().map(|traceparent| {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(fanfare_telemetry::spans::TRACEPARENT, traceparent.as_str());
            headers
        });
        if recently_failed {
            let _ = match headers {
                Some(headers) => {
                    self.client
                        .publish_with_headers(subject, headers, payload)
                        .await
                }
                None => self.client.publish(subject, payload).await,
            };
            return;
        }
        let deadline = Instant::now() + DELIVER_FOR;
        loop {
            let mut request = async_nats::Request::new()
                .payload(payload.clone())
                .timeout(Some(DELIVER_ATTEMPT_TIMEOUT));
            if let Some(headers) = &headers {
                request = request.headers(headers.clone());
            }
            let outcome = self.client.send_request(subject.clone(), request).await;
            let Err(error) = outcome else { return };
            if Instant::now() >= deadline {
                tracing::warn!(%error, subject, "a frontend did not confirm a batch; giving up on it");
                self.unreachable
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .insert(subject, Instant::now());
                return;
            }
            tracing::debug!(%error, subject, "a frontend did not confirm a batch yet, retrying");
            tokio::time::sleep(DELIVER_RETRY_PAUSE).await;
        }
    }
}
