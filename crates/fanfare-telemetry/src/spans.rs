//! The spans of the data path, and how their context crosses NATS.
//!
//! One trace follows an interaction: `publish` (the request on the frontend that stores it)
//! → `commit_likes` (likes only: the group commit that stores many requests' likes in one
//! message) → `dispatch_round` (each datacenter's dispatcher that sends it on) →
//! `frontend_batch` (each frontend that hands it to its viewers). The context travels as a
//! W3C `traceparent` NATS header: on the origin-stream message (stream sourcing copies headers
//! into every fan-out stream) and on each batch a dispatcher sends a frontend.
//!
//! Work that serves several interactions at once (a group commit, a dispatch round) is the
//! child of its cause when all of them belong to one trace, and otherwise links to at most
//! [`MAX_LINKS`] of them. Nothing is traced per viewer or per delivery.
//!
//! Attributes name the video, the datacenter, the node and counts; never a user, a comment's
//! text or any token. Every function here returns at once, allocating nothing, while export is
//! off ([`crate::enabled`]).

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{enabled, PublishKind, PublishOutcome};

/// Target of every data-path span; the export layer records this target and nothing else
/// below WARN.
pub(crate) const SPAN_TARGET: &str = "fanfare_trace";
/// The NATS header the context travels in.
pub const TRACEPARENT: &str = "traceparent";
/// Most links one span carries; a round of hundreds of interactions links to the first ones.
pub const MAX_LINKS: usize = 32;

/// A span that caused later work, maybe in another process: what a `traceparent` carries.
#[derive(Debug, Clone)]
pub struct TraceCause(SpanContext);

impl TraceCause {
    /// The current span, if export is on and a span is current.
    pub fn current() -> Option<Self> {
        if !enabled() {
            return None;
        }
        let context = Span::current().context();
        let span_context = context.span().span_context().clone();
        span_context.is_valid().then_some(Self(span_context))
    }

    /// A `traceparent` header's value, if export is on and it is well formed.
    pub fn from_traceparent(value: Option<&str>) -> Option<Self> {
        if !enabled() {
            return None;
        }
        let context = TraceContextPropagator::new().extract(&Traceparent(value?));
        let span_context = context.span().span_context().clone();
        span_context.is_valid().then_some(Self(span_context))
    }
}

/// The current span as a `traceparent` value, to send along with a NATS message; `None` while
/// export is off or outside any span.
pub fn current_traceparent() -> Option<String> {
    if !enabled() {
        return None;
    }
    let mut captured = CapturedTraceparent(None);
    TraceContextPropagator::new().inject_context(&Span::current().context(), &mut captured);
    captured.0
}

/// `POST /v1/videos/{id}/likes|comments` on a frontend. `video_id` is empty until the
/// handler has validated it (see [`record_video`]).
pub fn publish(kind: PublishKind) -> Span {
    if !enabled() {
        return Span::none();
    }
    let kind = match kind {
        PublishKind::Like => "like",
        PublishKind::Comment => "comment",
    };
    tracing::info_span!(
        target: SPAN_TARGET,
        "publish",
        otel.kind = "server",
        fanfare.kind = kind,
        video_id = tracing::field::Empty,
        outcome = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// Ends a [`publish`] span's story: accepted, rejected (the publisher's fault) or unavailable
/// (fanfare's; the span's status becomes an error).
pub fn record_outcome(span: &Span, outcome: &PublishOutcome) {
    if span.is_disabled() {
        return;
    }
    let label = match outcome {
        PublishOutcome::Accepted => "accepted",
        PublishOutcome::Rejected => "rejected",
        PublishOutcome::Unavailable => "unavailable",
    };
    span.record("outcome", label);
    if *outcome == PublishOutcome::Unavailable {
        span.record("otel.status_code", "error");
    }
}

/// Adds the validated video id to a [`publish`] span.
pub fn record_video(span: &Span, video_id: &str) {
    if !span.is_disabled() {
        span.record("video_id", video_id);
    }
}

/// One group commit of likes for one video, caused by the like requests it stores.
pub fn commit_likes(video_id: &str, likes: u64, causes: &[TraceCause]) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        "commit_likes",
        otel.kind = "producer",
        video_id,
        likes,
    );
    attach(&span, causes);
    span
}

/// One dispatch round of a partition: decode, count likes, send to frontends, acknowledge.
pub fn dispatch_round(partition: u16, messages: usize, causes: &[TraceCause]) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        "dispatch_round",
        otel.kind = "consumer",
        partition,
        messages,
        traced = causes.len(),
    );
    attach(&span, causes);
    span
}

/// A frontend handing one dispatcher batch to its viewers.
pub fn frontend_batch(dispatcher: &str, deliveries: usize, cause: Option<TraceCause>) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        "frontend_batch",
        otel.kind = "consumer",
        dispatcher,
        deliveries,
    );
    attach(&span, cause.as_slice());
    span
}

/// Makes `span` the child of its causes when they are one trace, else links it to them.
/// Must run before the span is first entered (the SDK span is built then).
fn attach(span: &Span, causes: &[TraceCause]) {
    let Some(first) = causes.first() else {
        return;
    };
    let one_trace = causes
        .iter()
        .all(|cause| cause.0.trace_id() == first.0.trace_id());
    if one_trace {
        let parent = Context::new().with_remote_span_context(first.0.clone());
        let _ = span.set_parent(parent);
        return;
    }
    for cause in causes.iter().take(MAX_LINKS) {
        span.add_link(cause.0.clone());
    }
}

/// Reads one `traceparent` value, as the propagator expects a carrier.
struct Traceparent<'a>(&'a str);

impl Extractor for Traceparent<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// Keeps the `traceparent` the propagator writes; fanfare sends no `tracestate`.
struct CapturedTraceparent(Option<String>);

impl Injector for CapturedTraceparent {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0 = Some(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_traceparent_is_read_only_while_export_is_on() {
        // Off is the state of every process until a node installs the export layer.
        if !enabled() {
            assert!(TraceCause::from_traceparent(Some(SAMPLED)).is_none());
            assert!(current_traceparent().is_none());
            assert!(publish(PublishKind::Comment).is_disabled());
        }
        crate::traces::mark_enabled();
        let cause = TraceCause::from_traceparent(Some(SAMPLED)).expect("well formed");
        assert_eq!(
            cause.0.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(TraceCause::from_traceparent(Some("00-garbage")).is_none());
        assert!(TraceCause::from_traceparent(None).is_none());
    }
}
