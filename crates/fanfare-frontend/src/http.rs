//! The frontend's HTTP API: viewer streams, publishing, health and metrics.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fanfare_auth::Action;
use fanfare_fabric::publish_interaction;
use fanfare_model::{
    unix_millis, Comment, CommentRequest, Interaction, LikeRequest, MessageId, VideoId,
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
use crate::stream::{StreamParts, StreamRoute};
use crate::Shared;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/videos/{video_id}/events", get(open_video_stream))
        .route("/v1/events", get(open_videos_stream))
        .route(
            "/v1/connections/{connection_id}/subscriptions",
            post(change_subscriptions),
        )
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
    if shared.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    let connected = shared.client.connection_state() == async_nats::connection::State::Connected;
    if connected {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    shared.metrics.engine(
        shared.hub.counters().events,
        shared.hub.watched_videos().len(),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        fanfare_telemetry::render(&shared.registry),
    )
        .into_response()
}

/// `GET /v1/videos/{id}/events` when it reaches the router rather than the raw listener (an
/// unusual request head): the same checks, the same stream, through hyper.
async fn open_video_stream(
    State(shared): State<Arc<Shared>>,
    video_id: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Ok(Path(video)) = video_id else {
        return Err(ApiError::InvalidVideoId(
            fanfare_model::InvalidVideoId::BadCharacter,
        ));
    };
    open_stream(
        &shared,
        StreamRoute::Video(&video),
        query.as_deref(),
        &headers,
    )
    .await
}

/// `GET /v1/events` when it reaches the router.
async fn open_videos_stream(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    open_stream(&shared, StreamRoute::Videos, query.as_deref(), &headers).await
}

async fn open_stream(
    shared: &Arc<Shared>,
    route: StreamRoute<'_>,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let bytes_of = |name: &str| headers.get(name).map(|value| value.as_bytes());
    let parts = StreamParts {
        route,
        query,
        accept: bytes_of("accept"),
        last_event_id: bytes_of("last-event-id"),
        authorization: bytes_of("authorization"),
        cookie: bytes_of("cookie"),
    };
    let checked = crate::stream::check(
        &parts,
        &shared.auth,
        shared.settings.limits.max_videos_per_connection,
    )?;
    let viewer = crate::viewer::open(shared, checked).await?;
    let chunks = futures::stream::unfold(viewer, |mut viewer| async move {
        let chunk = viewer.connection.next_chunk().await?;
        Some((Ok::<_, std::convert::Infallible>(chunk.to_bytes()), viewer))
    });
    let mut response = Response::new(Body::from_stream(chunks));
    let response_headers = response.headers_mut();
    response_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response_headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// `POST /v1/connections/{connection_id}/subscriptions` with `{"add":[..],"remove":[..]}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscriptionChange {
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
}

/// The answer: what the connection follows after the change.
#[derive(Serialize)]
struct Subscriptions {
    connection_id: String,
    videos: Vec<VideoId>,
}

fn video_ids(raw: &[String]) -> Result<Vec<VideoId>, ApiError> {
    let mut videos: Vec<VideoId> = Vec::with_capacity(raw.len());
    for raw in raw {
        let video = VideoId::parse(raw)?;
        if !videos.contains(&video) {
            videos.push(video);
        }
    }
    Ok(videos)
}

/// Changes what an open multi-video stream follows; 200 with what it follows then. The
/// connection id is the capability: unknown (or gone) is 404, whatever the caller.
async fn change_subscriptions(
    State(shared): State<Arc<Shared>>,
    Extension(client): Extension<ClientAddr>,
    connection_id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let answer = change_subscriptions_of(&shared, client, connection_id, &headers, body).await;
    if let Err(error) = &answer {
        if let Some(limit) = error.limit() {
            shared.metrics.limited(limit);
        }
    }
    answer
}

async fn change_subscriptions_of(
    shared: &Arc<Shared>,
    client: ClientAddr,
    connection_id: Result<Path<String>, PathRejection>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // Before anything is looked up: guessing ids costs the guesser its rate.
    shared.publish_limits.admit_subscription_change(client)?;
    let Ok(Path(connection_id)) = connection_id else {
        return Err(ApiError::UnknownConnection);
    };
    let meta = shared
        .connection_meta(&connection_id)
        .ok_or(ApiError::UnknownConnection)?;
    let handle = shared
        .hub
        .connection(&connection_id)
        .ok_or(ApiError::UnknownConnection)?;
    let body = read_json(headers, body, shared.settings.max_body_bytes).await?;
    let change: SubscriptionChange =
        serde_json::from_slice(&body).map_err(|error| ApiError::InvalidBody(error.to_string()))?;
    let add = video_ids(&change.add)?;
    let remove = video_ids(&change.remove)?;
    // A private video needs a token that may view it, of the user the connection belongs to.
    let authorization = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    let cookie = headers.get(header::COOKIE).map(|v| v.as_bytes());
    let mut subject = None;
    for video in &add {
        if let Some(viewer) = shared.auth.viewer(video, authorization, None, cookie)? {
            subject.get_or_insert(viewer);
        }
    }
    // One change at a time per connection, so that the limit holds.
    let _changing = meta.changes.lock().await;
    if let Some(subject) = subject {
        meta.claim(subject)?;
    }
    let limit = shared.settings.limits.max_videos_per_connection;
    let current = handle.videos();
    let added: Vec<VideoId> = add
        .into_iter()
        .filter(|video| !current.contains(video) || remove.contains(video))
        .collect();
    let kept = current
        .iter()
        .filter(|video| !remove.contains(video))
        .count();
    if kept + added.len() > limit {
        return Err(ApiError::SubscriptionLimit { limit });
    }
    for video in &remove {
        shared.hub.unfollow(&handle, video);
    }
    crate::viewer::follow_all(shared, &handle, &added).await;
    for video in &added {
        let (_, total) = shared.hub.position(video);
        if total > 0 {
            handle.notice(crate::viewer::total_event(video, total));
        }
    }
    let answer = Subscriptions {
        connection_id,
        videos: handle.videos(),
    };
    Ok((StatusCode::OK, Json(answer)).into_response())
}

/// The video id in the path. A segment that does not percent-decode to UTF-8 (`%FF`) is an
/// invalid id like any other, answered with the same problem (not the router's plain text).
fn video_of(path: Result<Path<String>, PathRejection>) -> Result<VideoId, ApiError> {
    let Path(raw) =
        path.map_err(|_| ApiError::InvalidVideoId(fanfare_model::InvalidVideoId::BadCharacter))?;
    Ok(VideoId::parse(&raw)?)
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
