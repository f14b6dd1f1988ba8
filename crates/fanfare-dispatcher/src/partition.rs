//! One dispatch partition: pull, decode, count and send (see [`Sender`]), acknowledge.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, consumer::pull::MessagesError, AckKind};
use fanfare_fabric::{FabricError, FabricErrorKind};
use fanfare_model::{names, Delivery, DeliveryPayload, Interaction};
use fanfare_telemetry::{spans, DispatcherMetrics};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::send::{Sender, TotalsCache};
use crate::Settings;

/// Pause before retrying a partition whose consumer could not be opened or whose pull failed.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// How long a stopping dispatcher tries to hand its pins over; past it, the pins expire on
/// their own after the consumers' pin timeout.
const UNPIN_TIMEOUT: Duration = Duration::from_secs(1);
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
    pub fanout: jetstream::stream::Stream,
    pub sender: Arc<Sender>,
    pub metrics: DispatcherMetrics,
}

impl PartitionWorker {
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let consumer_name = names::dispatch_consumer(self.partition);
        let mut totals_cache = TotalsCache::new();
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
            .heartbeat(expiry / 2)
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

    async fn dispatch_round(&self, messages: Vec<jetstream::Message>, totals: &mut TotalsCache) {
        let mut messages = messages;
        sort_and_dedup(&mut messages);
        let message_count = messages.len();
        let redelivered = messages
            .iter()
            .filter(|message| delivery_count(message) > 1)
            .count();
        let mut deliveries = Vec::with_capacity(message_count);
        let mut causes = Vec::new();
        for message in &messages {
            match decode(message) {
                Ok(delivery) => deliveries.push(delivery),
                Err(error) => self.metrics.undecodable(message.subject.as_str(), &*error),
            }
            if causes.len() < spans::MAX_LINKS {
                causes.extend(trace_cause(message));
            }
        }
        let span = spans::dispatch_round(self.partition, message_count, &causes);
        tracing::debug!(
            partition = self.partition,
            messages = message_count,
            redelivered,
            first_seq = messages.first().map(stream_sequence),
            last_seq = messages.last().map(stream_sequence),
            "dispatch round"
        );
        self.count_send_ack(messages, deliveries, redelivered, totals)
            .instrument(span)
            .await;
    }

    /// The round's work past decoding, inside the round's span so that the batches sent to
    /// frontends carry its context.
    async fn count_send_ack(
        &self,
        messages: Vec<jetstream::Message>,
        mut deliveries: Vec<Delivery>,
        redelivered: usize,
        totals: &mut TotalsCache,
    ) {
        let message_count = messages.len();
        if let Err(error) = self.sender.count_likes(&mut deliveries, totals).await {
            // Without a total the likes cannot be delivered exactly; let the server redeliver
            // the whole round.
            tracing::warn!(partition = self.partition, %error, "cannot update like totals, round will be redelivered");
            totals.clear();
            for message in &messages {
                let _ = message.ack_with(AckKind::Nak(Some(RETRY_PAUSE))).await;
            }
            return;
        }
        // Acknowledge only once every frontend confirmed: see `Sender::send`.
        let sent = self.sender.send(&deliveries).await;
        for message in &messages {
            if let Err(error) = message.ack().await {
                tracing::debug!(%error, "ack failed; the message will be redelivered");
            }
        }
        self.metrics.round(
            message_count,
            redelivered,
            sent.unwatched,
            sent.deliveries,
            sent.batches,
        );
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

/// The span that published `message`, while trace export is on: sourcing keeps the origin
/// message's headers, `traceparent` included.
fn trace_cause(message: &jetstream::Message) -> Option<spans::TraceCause> {
    if !fanfare_telemetry::enabled() {
        return None;
    }
    let traceparent = message.headers.as_ref()?.get(spans::TRACEPARENT)?;
    spans::TraceCause::from_traceparent(Some(traceparent.as_str()))
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
    Ok(Delivery {
        video_id: video,
        origin_dc: origin.to_owned(),
        origin_seq,
        payload: DeliveryPayload::from(interaction),
    })
}
