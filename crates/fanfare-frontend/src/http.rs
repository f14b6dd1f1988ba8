//! The frontend's HTTP API: viewer streams, publishing, health and metrics.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fanfare_auth::Action;
use fanfare_fabric::publish_interaction;
use fanfare_model::{
    sse, unix_millis, Comment, CommentRequest, Interaction, LikeRequest, MessageId, Position,
    VideoId,
};
use fanfare_telemetry::{spans, PublishKind, PublishOutcome};
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::Instrument;

use crate::auth;
use crate::ingest::{PendingLike, QueueError};
use crate::limits::ClientAddr;
use crate::problem::ApiError;
use crate::viewer::ViewerStream;
use crate::Shared;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/videos/{video_id}/events", get(open_stream))
        .route("/v1/videos/{video_id}/likes", post(publish_like))
        .route("/v1/videos/{video_id}/comments", post(publish_comment))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(shared)
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let connected = shared.client.connection_state() == async_nats::connection::State::Connected;
    if connected {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        fanfare_telemetry::render(&shared.registry),
    )
        .into_response()
}

/// `GET /v1/videos/{id}/events`: registers interest (first viewer of the video here), then
/// streams the video's events until the viewer leaves or the frontend shuts down.
async fn open_stream(
    State(shared): State<Arc<Shared>>,
    video_id: Result<Path<String>, PathRejection>,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let video = video_of(video_id)?;
    if !accepts_event_stream(&headers) {
        return Err(ApiError::NotAcceptable);
    }
    // Checked on every open, a resume (Last-Event-ID) included.
    shared.auth.viewer(
        &video,
        headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()),
        query.access_token.as_deref(),
        headers.get(header::COOKIE).map(|v| v.as_bytes()),
    )?;
    let resume_from = resume_position(
        headers.get("last-event-id").map(|value| value.as_bytes()),
        query.last_event_id.as_deref(),
    )?;
    let stream = ViewerStream::open(shared.clone(), video, resume_from).await;
    let mut preamble = Vec::with_capacity(64);
    sse::write_retry(&mut preamble, shared.settings.retry_hint.as_millis() as u64);
    let body = Body::from_stream(stream.into_body(Bytes::from(preamble)));
    let mut response = Response::new(body);
    let response_headers = response.headers_mut();
    response_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response_headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// Where a viewer resumes: the `Last-Event-ID` header (what a browser's EventSource sends on
/// reconnect) wins over the `last_event_id` query parameter (what a page can set on a fresh
/// EventSource). An empty id is no id, as in SSE itself (an `id:` line without a value resets
/// the last event id, and browsers then send no header): an empty header gives way to the
/// query, and with neither the stream starts from now instead of replaying everything
/// retained. A malformed id is a 400.
pub(crate) fn resume_position(
    header: Option<&[u8]>,
    query: Option<&str>,
) -> Result<Option<Position>, ApiError> {
    let raw = match header.filter(|raw| !raw.is_empty()) {
        // Not UTF-8: refused like any other malformed position.
        Some(raw) => std::str::from_utf8(raw).unwrap_or("\u{0}"),
        None => query.unwrap_or(""),
    };
    if raw.is_empty() {
        return Ok(None);
    }
    Ok(Some(raw.parse::<Position>()?))
}

/// The video id in the path. A segment that does not percent-decode to UTF-8 (`%FF`) is an
/// invalid id like any other, answered with the same problem (not the router's plain text).
fn video_of(path: Result<Path<String>, PathRejection>) -> Result<VideoId, ApiError> {
    let Path(raw) =
        path.map_err(|_| ApiError::InvalidVideoId(fanfare_model::InvalidVideoId::BadCharacter))?;
    Ok(VideoId::parse(&raw)?)
}

#[derive(serde::Deserialize)]
struct StreamQuery {
    last_event_id: Option<String>,
    /// A viewer token for a private video (`access_token=`); never logged.
    access_token: Option<String>,
}

fn accepts_event_stream(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT) else {
        return true;
    };
    let Ok(accept) = accept.to_str() else {
        return false;
    };
    accepts_media(accept)
}

/// Whether an `Accept` header value admits `text/event-stream`.
pub(crate) fn accepts_media(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let media = range.split(';').next().unwrap_or("").trim();
        matches!(media, "text/event-stream" | "text/*" | "*/*")
    })
}

#[derive(Serialize)]
struct Accepted {
    video_id: String,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment_id: Option<String>,
    origin_dc: String,
}

/// Reads a JSON body after checking its type and size; nothing is published on any error.
/// Decoding and checking its content is the model's pure `decode` of each request type.
async fn read_json(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| {
            let media = value.split(';').next().unwrap_or("").trim();
            media.eq_ignore_ascii_case("application/json")
        })
        .unwrap_or(false);
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(ApiError::BodyTooLarge { limit });
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::BodyTooLarge { limit })
}

/// An `Idempotency-Key` becomes the comment id and the stream's message id, so it must be a
/// [`MessageId`]: `[A-Za-z0-9_-]{1,64}`.
fn idempotency_key(value: &axum::http::HeaderValue) -> Result<MessageId, ApiError> {
    let key = value.to_str().unwrap_or_default();
    MessageId::parse(key).map_err(|_| {
        ApiError::InvalidBody(
            "Idempotency-Key must be 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'".to_owned(),
        )
    })
}

/// `POST /v1/videos/{id}/likes`: 202 once the like is stored in this datacenter.
async fn publish_like(
    State(shared): State<Arc<Shared>>,
    Extension(client): Extension<ClientAddr>,
    video_id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let span = spans::publish(PublishKind::Like);
    let outcome = async {
        let video = video_of(video_id)?;
        spans::record_video(&tracing::Span::current(), video.as_str());
        // Before the body is read: nothing of a refused request is stored.
        let grant = shared.auth.publisher(&headers, &video, Action::Like)?;
        let body = read_json(&headers, body, shared.settings.max_body_bytes).await?;
        let request = LikeRequest::decode(&body)?;
        let user_id = auth::user_id(grant, request.user_id)?;
        // Once the user is known (the token's subject with auth on), before anything goes to
        // NATS.
        shared
            .publish_limits
            .admit(PublishKind::Like, &user_id, client)?;
        let (reply, stored) = oneshot::channel();
        let pending = PendingLike {
            video: video.clone(),
            reply,
            cause: spans::TraceCause::current(),
        };
        shared
            .likes
            .try_enqueue(pending)
            .map_err(|error| match error {
                QueueError::Full => ApiError::Overloaded,
                QueueError::Closed => ApiError::Unavailable,
            })?;
        match stored.await {
            Ok(Ok(_seq)) => Ok(video),
            Ok(Err(error)) => {
                shared.metrics.publish_failed(&*error);
                Err(ApiError::from(&*error))
            }
            Err(_) => Err(ApiError::Unavailable),
        }
    }
    .instrument(span.clone())
    .await;
    respond(
        &shared,
        PublishKind::Like,
        started,
        &span,
        outcome.map(|video| (video, None)),
    )
}

/// `POST /v1/videos/{id}/comments`: 202 once the comment is stored in this datacenter.
async fn publish_comment(
    State(shared): State<Arc<Shared>>,
    Extension(client): Extension<ClientAddr>,
    video_id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let span = spans::publish(PublishKind::Comment);
    let outcome = async {
        let video = video_of(video_id)?;
        spans::record_video(&tracing::Span::current(), video.as_str());
        let grant = shared.auth.publisher(&headers, &video, Action::Comment)?;
        let body = read_json(&headers, body, shared.settings.max_body_bytes).await?;
        // The model bounds every comment; a frontend may be configured to take shorter ones.
        let request =
            CommentRequest::decode_within(&body, shared.settings.limits.max_comment_chars)?;
        let user_id = auth::user_id(grant, request.user_id)?;
        // Once the user is known, before anything goes to NATS.
        shared
            .publish_limits
            .admit(PublishKind::Comment, &user_id, client)?;
        // A publisher that retries with the same Idempotency-Key (within the origin stream's
        // duplicate window) gets its comment stored once.
        let comment_id = match headers.get("idempotency-key") {
            Some(key) => idempotency_key(key)?,
            None => MessageId::generate(),
        };
        let comment = Comment {
            video_id: video.clone(),
            comment_id: comment_id.to_string(),
            user_id,
            text: request.text,
            origin_dc: shared.settings.dc.clone(),
            published_at: unix_millis(),
        };
        let interaction = Interaction::Comment(comment);
        publish_interaction(&shared.js, &shared.settings.dc, &interaction, &comment_id)
            .await
            .map_err(|error| {
                shared.metrics.publish_failed(&error);
                ApiError::from(&error)
            })?;
        Ok((video, Some(comment_id.to_string())))
    }
    .instrument(span.clone())
    .await;
    respond(&shared, PublishKind::Comment, started, &span, outcome)
}

fn respond(
    shared: &Shared,
    kind: PublishKind,
    started: Instant,
    span: &tracing::Span,
    outcome: Result<(VideoId, Option<String>), ApiError>,
) -> Result<Response, ApiError> {
    let seconds = started.elapsed().as_secs_f64();
    match outcome {
        Ok((video, comment_id)) => {
            spans::record_outcome(span, &PublishOutcome::Accepted);
            shared
                .metrics
                .published(kind, PublishOutcome::Accepted, seconds);
            let accepted = Accepted {
                video_id: video.to_string(),
                status: "accepted",
                comment_id,
                origin_dc: shared.settings.dc.clone(),
            };
            Ok((StatusCode::ACCEPTED, Json(accepted)).into_response())
        }
        Err(error) => {
            if let Some(limit) = error.limit() {
                shared.metrics.limited(limit);
            }
            let outcome = match error {
                ApiError::Unavailable | ApiError::Overloaded | ApiError::OutcomeUnknown => {
                    PublishOutcome::Unavailable
                }
                _ => PublishOutcome::Rejected,
            };
            spans::record_outcome(span, &outcome);
            shared.metrics.published(kind, outcome, seconds);
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_last_event_id_starts_from_now_and_a_malformed_one_is_refused() {
        assert_eq!(resume_position(None, None).unwrap(), None);
        assert_eq!(resume_position(Some(b""), None).unwrap(), None);
        assert_eq!(resume_position(None, Some("")).unwrap(), None);
        let header = resume_position(Some(b"dc1:4"), Some("dc1:3")).unwrap();
        assert_eq!(header, Some("dc1:4".parse().unwrap()), "the header wins");
        let query = resume_position(Some(b""), Some("dc1:3")).unwrap();
        assert_eq!(
            query,
            Some("dc1:3".parse().unwrap()),
            "an empty header gives way"
        );
        for bad in [&b"dc1"[..], b"dc1:x", b"\xff", b" dc1:1"] {
            assert!(
                matches!(
                    resume_position(Some(bad), None),
                    Err(ApiError::InvalidLastEventId(_))
                ),
                "{bad:?}"
            );
        }
    }
}
