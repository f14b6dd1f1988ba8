//! One dispatch partition: pull, count, route, send, acknowledge.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, consumer::pull::MessagesError, AckKind};
use fanfare_fabric::{FabricError, FabricErrorKind, SubscriptionTable, TotalRecord, Totals};
use fanfare_model::{names, Delivery, DeliveryPayload, FrontendBatch, Interaction, VideoId};
use fanfare_telemetry::DispatcherMetrics;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::Settings;

/// Pause before retrying a partition whose consumer could not be opened or whose pull failed.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// How long a stopping dispatcher tries to hand its pins over; past it, the pins expire on
/// their own after the consumers' pin timeout.
const UNPIN_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a dispatcher keeps trying to hand one batch to a frontend.
const DELIVER_FOR: Duration = Duration::from_secs(3);
/// Wait for one confirmation before sending the batch again.
const DELIVER_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);
const DELIVER_RETRY_PAUSE: Duration = Duration::from_millis(50);
/// How long a frontend that failed to confirm gets batches without the wait.
const UNREACHABLE_FOR: Duration = Duration::from_secs(10);
/// Bound on the wait for a previous owner's unacknowledged messages, in ack waits (the server
/// checks for due redeliveries about once per ack wait).
const ORPHAN_WAIT_ACK_WAITS: u32 = 3;
/// How often the take-over wait re-checks the consumer.
const ORPHAN_POLL: Duration = Duration::from_millis(100);

pub(crate) async fn open_fanout(
    js: &jetstream::Context,
    dc: &str,
) -> Result<jetstream::stream::Stream, FabricError> {
    let name = names::fanout_stream(dc);
    js.get_stream(&name).await.map_err(|error| {
        FabricError::new(
            FabricErrorKind::Consume,
            format!("opening stream {name}"),
            error,
        )
    })
}

pub(crate) struct PartitionWorker {
    pub partition: u16,
    pub settings: Arc<Settings>,
    pub client: async_nats::Client,
    pub fanout: jetstream::stream::Stream,
    pub table: SubscriptionTable,
    pub totals: Totals,
    pub metrics: DispatcherMetrics,
    /// Frontends that recently failed to confirm a batch, and when: they get batches without
    /// waiting, so that a dead frontend (until its interest expires) does not slow every
    /// round down.
    pub unreachable: std::sync::Mutex<HashMap<String, tokio::time::Instant>>,
}

/// One message of a round, decoded.
struct Routed {
    message: jetstream::Message,
    delivery: Option<Delivery>,
    fanout_seq: u64,
}

impl PartitionWorker {
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let consumer_name = names::dispatch_consumer(self.partition);
        let mut totals_cache: HashMap<VideoId, (TotalRecord, u64)> = HashMap::new();
        let mut owned = false;
        while !shutdown.is_cancelled() {
            let (consumer, messages) = match self.pull(&consumer_name).await {
                Ok(pulled) => pulled,
                Err(error) => {
                    tracing::warn!(partition = self.partition, %error, "cannot pull, retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(RETRY_PAUSE) => continue,
                    }
                }
            };
            let mut rounds = messages.ready_chunks(self.settings.max_round);
            loop {
                let round = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    round = rounds.next() => round,
                };
                let Some(round) = round else { break };
                let mut received = collect_messages(round);
                if received.is_empty() {
                    continue;
                }
                if !owned {
                    owned = true;
                    self.metrics.partition_owned(self.partition);
                }
                if received.iter().any(|message| delivery_count(message) > 1) {
                    // Another dispatcher (or this one, before a pause) held messages it never
                    // acknowledged: gather them all before sending anything, so the video's
                    // order holds.
                    self.gather_orphans(&consumer, &mut received, &mut rounds)
                        .await;
                }
                self.dispatch_round(received, &mut totals_cache).await;
            }
        }
        if owned {
            // Hand the pin over now rather than after the pin timeout: everything this
            // dispatcher received has been sent and acknowledged.
            let release = self
                .fanout
                .unpin_consumer(&consumer_name, names::DISPATCH_GROUP);
            match tokio::time::timeout(UNPIN_TIMEOUT, release).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::debug!(partition = self.partition, %error, "could not release the pin")
                }
                Err(_) => {
                    tracing::debug!(partition = self.partition, "releasing the pin timed out")
                }
            }
            self.metrics.partition_lost(self.partition);
        }
    }

    async fn pull(
        &self,
        consumer_name: &str,
    ) -> Result<(jetstream::consumer::Consumer<pull::Config>, pull::Stream), FabricError> {
        let consumer: jetstream::consumer::Consumer<pull::Config> = self
            .fanout
            .get_consumer(consumer_name)
            .await
            .map_err(|error| {
                FabricError::new(
                    FabricErrorKind::Consume,
                    format!("opening consumer {consumer_name}"),
                    error,
                )
            })?;
        let expiry = self.settings.pull_expiry;
        let messages = consumer
            .stream()
            .group(names::DISPATCH_GROUP)
            .max_messages_per_batch(self.settings.max_round)
            .expires(expiry)
            .heartbeat(expiry / 4)
            .messages()
            .await
            .map_err(|error| {
                FabricError::new(
                    FabricErrorKind::Consume,
                    format!("pulling {consumer_name}"),
                    error,
                )
            })?;
        Ok((consumer, messages))
    }

    /// Waits until every message the consumer counts as delivered-but-unacknowledged is in
    /// `held` (the server redelivers them after the ack wait), then sorts `held` by stream
    /// sequence. Bounded: past [`ORPHAN_WAIT_ACK_WAITS`] ack waits it goes on with what it has.
    async fn gather_orphans<S>(
        &self,
        consumer: &jetstream::consumer::Consumer<pull::Config>,
        held: &mut Vec<jetstream::Message>,
        rounds: &mut S,
    ) where
        S: futures::Stream<Item = Vec<Result<jetstream::Message, MessagesError>>> + Unpin,
    {
        let ack_wait = consumer.cached_info().config.ack_wait;
        let deadline = tokio::time::Instant::now() + ack_wait * ORPHAN_WAIT_ACK_WAITS;
        loop {
            sort_and_dedup(held);
            let unacknowledged = match consumer.get_info().await {
                Ok(info) => info.num_ack_pending,
                Err(error) => {
                    tracing::debug!(partition = self.partition, %error, "cannot read consumer info");
                    0
                }
            };
            if unacknowledged <= held.len() || tokio::time::Instant::now() >= deadline {
                if unacknowledged > held.len() {
                    tracing::warn!(
                        partition = self.partition,
                        missing = unacknowledged - held.len(),
                        "unacknowledged messages did not come back in time; sending what is here"
                    );
                }
                return;
            }
            if let Ok(Some(round)) = tokio::time::timeout(ORPHAN_POLL, rounds.next()).await {
                held.extend(collect_messages(round));
            }
        }
    }

    async fn dispatch_round(
        &self,
        messages: Vec<jetstream::Message>,
        totals_cache: &mut HashMap<VideoId, (TotalRecord, u64)>,
    ) {
        let mut messages = messages;
        sort_and_dedup(&mut messages);
        let message_count = messages.len();
        let mut redelivered = 0;
        let mut routed = Vec::with_capacity(message_count);
        for message in messages {
            let (fanout_seq, delivered) = match message.info() {
                Ok(info) => (info.stream_sequence, info.delivered),
                Err(_) => (0, 1),
            };
            if delivered > 1 {
                redelivered += 1;
            }
            let delivery = match decode(&message) {
                Ok(delivery) => Some(delivery),
                Err(error) => {
                    self.metrics.undecodable(message.subject.as_str(), &*error);
                    None
                }
            };
            routed.push(Routed {
                message,
                delivery,
                fanout_seq,
            });
        }

        tracing::debug!(
            partition = self.partition,
            messages = message_count,
            redelivered,
            first_seq = routed.first().map(|item| item.fanout_seq),
            last_seq = routed.last().map(|item| item.fanout_seq),
            "dispatch round"
        );
        if let Err(error) = self.count_likes(&mut routed, totals_cache).await {
            // Without a total the likes cannot be delivered exactly; let the server redeliver
            // the whole round.
            tracing::warn!(partition = self.partition, %error, "cannot update like totals, round will be redelivered");
            totals_cache.clear();
            for item in &routed {
                let _ = item.message.ack_with(AckKind::Nak(Some(RETRY_PAUSE))).await;
            }
            return;
        }

        let mut batches: HashMap<Arc<str>, Vec<Delivery>> = HashMap::new();
        let mut unwatched = 0;
        let mut deliveries = 0;
        for item in &routed {
            let Some(delivery) = &item.delivery else {
                continue;
            };
            let frontends = self.table.frontends_for(&delivery.video_id);
            if frontends.is_empty() {
                unwatched += 1;
                continue;
            }
            deliveries += frontends.len();
            for frontend in frontends {
                batches.entry(frontend).or_default().push(delivery.clone());
            }
        }
        let batch_count = batches.len();
        let mut sends = Vec::with_capacity(batch_count);
        for (frontend, deliveries) in batches {
            let batch = FrontendBatch {
                dispatcher: self.settings.name.clone(),
                deliveries,
            };
            let payload = match serde_json::to_vec(&batch) {
                Ok(payload) => bytes::Bytes::from(payload),
                Err(error) => {
                    tracing::error!(%error, "cannot encode a frontend batch");
                    continue;
                }
            };
            let subject = names::frontend_inbox(&self.settings.dc, &frontend);
            sends.push(self.deliver_batch(subject, payload));
        }
        // Acknowledge only once every frontend confirmed (or could not be reached for
        // DELIVER_FOR): a batch lost on its way, e.g. while a frontend moves to another NATS
        // server, is sent again rather than lost.
        futures::future::join_all(sends).await;
        for item in &routed {
            if let Err(error) = item.message.ack().await {
                tracing::debug!(%error, "ack failed; the message will be redelivered");
            }
        }
        self.metrics.round(
            message_count,
            redelivered,
            unwatched,
            deliveries,
            batch_count,
        );
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
        if recently_failed {
            let _ = self.client.publish(subject, payload).await;
            return;
        }
        let deadline = tokio::time::Instant::now() + DELIVER_FOR;
        loop {
            let request = async_nats::Request::new()
                .payload(payload.clone())
                .timeout(Some(DELIVER_ATTEMPT_TIMEOUT));
            let outcome = self.client.send_request(subject.clone(), request).await;
            let Err(error) = outcome else { return };
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(%error, subject, "a frontend did not confirm a batch; giving up on it");
                self.unreachable
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .insert(subject, tokio::time::Instant::now());
                return;
            }
            tracing::debug!(%error, subject, "a frontend did not confirm a batch yet, retrying");
            tokio::time::sleep(DELIVER_RETRY_PAUSE).await;
        }
    }

    /// Adds this round's likes to the datacenter's totals (once per fan-out sequence, whoever
    /// counted before) and writes each like delivery's `total`.
    async fn count_likes(
        &self,
        routed: &mut [Routed],
        cache: &mut HashMap<VideoId, (TotalRecord, u64)>,
    ) -> Result<(), FabricError> {
        let mut videos: Vec<VideoId> = Vec::new();
        for item in routed.iter() {
            if let Some(Delivery {
                video_id,
                payload: DeliveryPayload::Likes { .. },
                ..
            }) = &item.delivery
            {
                if !videos.contains(video_id) {
                    videos.push(video_id.clone());
                }
            }
        }
        for video in videos {
            loop {
                let (stored, revision) = match cache.get(&video) {
                    Some(cached) => *cached,
                    None => self.totals.read(&video).await?,
                };
                let mut record = stored;
                for item in routed.iter_mut() {
                    let Some(Delivery {
                        video_id,
                        payload: DeliveryPayload::Likes { count, total },
                        ..
                    }) = &mut item.delivery
                    else {
                        continue;
                    };
                    if *video_id != video {
                        continue;
                    }
                    if item.fanout_seq > record.fanout_seq {
                        record.total += *count;
                        record.fanout_seq = item.fanout_seq;
                    }
                    *total = record.total;
                }
                if record == stored {
                    break;
                }
                match self.totals.write(&video, record, revision).await? {
                    Some(new_revision) => {
                        cache.insert(video.clone(), (record, new_revision));
                        break;
                    }
                    None => {
                        // Another dispatcher owned this partition meanwhile: start from what it
                        // stored.
                        cache.remove(&video);
                    }
                }
            }
        }
        Ok(())
    }
}

type DecodeError = Box<dyn std::error::Error + Send + Sync>;

fn collect_messages(
    round: Vec<Result<jetstream::Message, MessagesError>>,
) -> Vec<jetstream::Message> {
    round
        .into_iter()
        .filter_map(|item| match item {
            Ok(message) => Some(message),
            Err(error) => {
                tracing::debug!(%error, "pull status");
                None
            }
        })
        .collect()
}

fn stream_sequence(message: &jetstream::Message) -> u64 {
    message.info().map(|info| info.stream_sequence).unwrap_or(0)
}

fn delivery_count(message: &jetstream::Message) -> i64 {
    message.info().map(|info| info.delivered).unwrap_or(1)
}

/// Orders a round by stream sequence and keeps one copy of a message delivered twice.
fn sort_and_dedup(messages: &mut Vec<jetstream::Message>) {
    messages.sort_by_key(stream_sequence);
    messages.dedup_by_key(|message| stream_sequence(message));
}

fn decode(message: &jetstream::Message) -> Result<Delivery, DecodeError> {
    let (origin, video) = names::parse_fanout_subject(message.subject.as_str())
        .ok_or("subject is not a fan-out subject")?;
    let origin_seq = message
        .headers
        .as_ref()
        .and_then(fanfare_fabric::origin_sequence)
        .ok_or("no origin sequence in the source header")?;
    let interaction: Interaction = serde_json::from_slice(&message.payload)?;
    if interaction.video_id() != &video {
        return Err("payload names another video than the subject".into());
    }
    let payload = match interaction {
        Interaction::Likes(likes) => DeliveryPayload::Likes {
            count: likes.count,
            total: 0,
        },
        Interaction::Comment(comment) => DeliveryPayload::Comment(comment),
    };
    Ok(Delivery {
        video_id: video,
        origin_dc: origin.to_owned(),
        origin_seq,
        payload,
    })
}
