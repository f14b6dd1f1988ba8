use async_nats::jetstream;
use fanfare_model::{names, Interaction, MessageId};

use crate::{FabricError, FabricErrorKind};

/// Where the origin stream stored an interaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredAt {
    pub seq: u64,
    /// True when the stream had already stored a message with this id (a retried publish).
    pub duplicate: bool,
}

/// Stores `interaction` in the origin stream of `dc` and waits for the acknowledgement, so the
/// caller may tell its publisher the interaction is durable. `message_id` de-duplicates retries
/// within the stream's duplicate window; it is a [`MessageId`], so a publisher's
/// `Idempotency-Key` cannot forge a header line.
///
/// Nothing is sent while the client is disconnected: the client would buffer it and send it
/// after reconnecting, long after the publisher was answered. Only a publish sent and then not
/// acknowledged in time is [`FabricErrorKind::PublishOutcomeUnknown`].
///
/// While trace export is on, the message carries the current span's `traceparent`.
pub async fn publish_interaction(
    js: &jetstream::Context,
    dc: &str,
    interaction: &Interaction,
    message_id: &MessageId,
) -> Result<StoredAt, FabricError> {
    let subject = names::origin_subject(dc, interaction.video_id(), interaction.kind());
    let payload = serde_json::to_vec(interaction).map_err(|error| {
        FabricError::new(FabricErrorKind::Decode, "encoding interaction", error)
    })?;
    if js.client().connection_state() != async_nats::connection::State::Connected {
        return Err(FabricError::plain(
            FabricErrorKind::Publish,
            "not connected to the datacenter's nats servers; nothing sent",
        ));
    }
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, message_id.as_str());
    // The trace of the request that stored it; sourcing copies headers, so every
    // datacenter's dispatcher continues it.
    if let Some(traceparent) = fanfare_telemetry::spans::current_traceparent() {
        headers.insert(fanfare_telemetry::spans::TRACEPARENT, traceparent.as_str());
    }
    let ack_future = js
        .publish_with_headers(subject, headers, payload.into())
        .await
        .map_err(|error| {
            FabricError::new(FabricErrorKind::Publish, "publishing interaction", error)
        })?;
    let ack = ack_future.await.map_err(|error| {
        use jetstream::context::PublishErrorKind as Ack;
        let kind = match error.kind() {
            // The server answered (or nothing listens): not stored.
            Ack::StreamNotFound
            | Ack::WrongLastMessageId
            | Ack::WrongLastSequence
            | Ack::MaxPayloadExceeded => FabricErrorKind::Publish,
            // Sent, and no answer came back: it may be stored.
            _ => FabricErrorKind::PublishOutcomeUnknown,
        };
        FabricError::new(kind, "waiting for the stream's ack", error)
    })?;
    Ok(StoredAt {
        seq: ack.sequence,
        duplicate: ack.duplicate,
    })
}

/// The origin-stream sequence of a message sourced into a fan-out stream, from the
/// `Nats-Stream-Source` header the server writes (`<stream> <sequence> <filter> ...`).
pub fn origin_sequence(headers: &async_nats::HeaderMap) -> Option<u64> {
    let source = headers.get("Nats-Stream-Source")?;
    source.as_str().split_whitespace().nth(1)?.parse().ok()
}
