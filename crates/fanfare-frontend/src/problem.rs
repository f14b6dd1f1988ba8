//! Errors of the HTTP API, each rendered as an `application/problem+json` response (RFC 9457).
//! Internal details go to the log, never to the client.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use fanfare_telemetry::Limit;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid video id: {0}")]
    InvalidVideoId(#[from] fanfare_model::InvalidVideoId),
    #[error("invalid last-event-id: {0}")]
    InvalidLastEventId(#[from] fanfare_model::InvalidPosition),
    #[error("invalid body: {0}")]
    InvalidBody(String),
    #[error("body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    #[error("this endpoint streams text/event-stream")]
    NotAcceptable,
    #[error("too many pending requests, retry shortly")]
    Overloaded,
    #[error("cannot store the interaction right now; it was not stored")]
    Unavailable,
    #[error("the interaction was sent but not acknowledged in time: it may or may not be stored (retry a comment with the same Idempotency-Key to find out)")]
    OutcomeUnknown,
    #[error("no such resource")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A missing or invalid token (401), or a valid one outside its scope (403).
    #[error(transparent)]
    Auth(#[from] fanfare_auth::AuthError),
    #[error("the body's user_id differs from the token's subject: leave it out, or send the token's subject")]
    UserMismatch,
    #[error("text must be 1 to {limit} characters")]
    CommentTooLong { limit: usize },
    #[error("{}; retry in {retry_after_secs} s", rate_limited_what(*limit))]
    RateLimited { limit: Limit, retry_after_secs: u64 },
    #[error("too many open connections from this address")]
    TooManyConnections,
    #[error("this frontend has too many open connections, retry shortly")]
    FrontendFull,
    #[error("the request head is larger than {limit} bytes")]
    HeaderTooLarge { limit: usize },
    #[error("a stream follows at most {limit} videos")]
    TooManyVideos { limit: usize },
    #[error("this connection would follow more than {limit} videos; remove some first")]
    SubscriptionLimit { limit: usize },
    #[error("no open connection with this id on this frontend")]
    UnknownConnection,
    #[error("this connection belongs to another user")]
    ConnectionOwnerMismatch,
}

/// What a rate limit refused, as a client reads it.
fn rate_limited_what(limit: Limit) -> &'static str {
    match limit {
        Limit::LikeUserRate => "too many likes from this user",
        Limit::LikeAddressRate => "too many likes from this address",
        Limit::CommentUserRate => "too many comments from this user",
        Limit::CommentAddressRate => "too many comments from this address",
        Limit::SubscriptionAddressRate => "too many subscription changes from this address",
        _ => "too many requests",
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: String,
}

impl ApiError {
    fn status_and_slug(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::InvalidVideoId(_) => (
                StatusCode::BAD_REQUEST,
                "invalid-video-id",
                "Invalid video id",
            ),
            ApiError::InvalidBody(_) => (
                StatusCode::BAD_REQUEST,
                "invalid-body",
                "Invalid request body",
            ),
            ApiError::InvalidLastEventId(_) => (
                StatusCode::BAD_REQUEST,
                "invalid-last-event-id",
                "Invalid Last-Event-ID",
            ),
            ApiError::BodyTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "Request body too large",
            ),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            ApiError::NotAcceptable => (
                StatusCode::NOT_ACCEPTABLE,
                "not-acceptable",
                "Not acceptable",
            ),
            ApiError::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded", "Overloaded"),
            ApiError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
            ApiError::OutcomeUnknown => (
                StatusCode::GATEWAY_TIMEOUT,
                "outcome-unknown",
                "Outcome unknown",
            ),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            ApiError::CommentTooLong { .. } => (
                StatusCode::BAD_REQUEST,
                "invalid-body",
                "Invalid request body",
            ),
            ApiError::RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
            ),
            ApiError::TooManyConnections => (
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-connections",
                "Too many connections",
            ),
            ApiError::FrontendFull => (StatusCode::SERVICE_UNAVAILABLE, "overloaded", "Overloaded"),
            ApiError::HeaderTooLarge { .. } => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "header-too-large",
                "Request header too large",
            ),
            ApiError::Auth(error) if error.is_forbidden() => {
                (StatusCode::FORBIDDEN, error.slug(), error.title())
            }
            ApiError::Auth(error) => (StatusCode::UNAUTHORIZED, error.slug(), error.title()),
            ApiError::UserMismatch => (
                StatusCode::FORBIDDEN,
                "user-id-mismatch",
                "User id differs from the token",
            ),
            ApiError::TooManyVideos { .. } => (
                StatusCode::BAD_REQUEST,
                "too-many-videos",
                "Too many videos",
            ),
            ApiError::SubscriptionLimit { .. } => {
                (StatusCode::CONFLICT, "too-many-videos", "Too many videos")
            }
            ApiError::UnknownConnection => (
                StatusCode::NOT_FOUND,
                "unknown-connection",
                "Unknown connection",
            ),
            ApiError::ConnectionOwnerMismatch => (
                StatusCode::FORBIDDEN,
                "connection-owner-mismatch",
                "Connection of another user",
            ),
        }
    }

    /// The limit this error enforces, if it is one (counted in `fanfare_frontend_limited`).
    pub(crate) fn limit(&self) -> Option<Limit> {
        match self {
            ApiError::RateLimited { limit, .. } => Some(*limit),
            ApiError::BodyTooLarge { .. } => Some(Limit::BodySize),
            ApiError::CommentTooLong { .. } => Some(Limit::CommentLength),
            ApiError::TooManyConnections => Some(Limit::AddressConnections),
            ApiError::FrontendFull => Some(Limit::Connections),
            ApiError::HeaderTooLarge { .. } => Some(Limit::HeaderSize),
            ApiError::TooManyVideos { .. } | ApiError::SubscriptionLimit { .. } => {
                Some(Limit::VideosPerConnection)
            }
            _ => None,
        }
    }
}

impl From<fanfare_model::InvalidBody> for ApiError {
    fn from(error: fanfare_model::InvalidBody) -> Self {
        match error {
            // Counted as the comment-length limit.
            fanfare_model::InvalidBody::TextTooLong { limit } => ApiError::CommentTooLong { limit },
            other => ApiError::InvalidBody(other.to_string()),
        }
    }
}

impl From<&fanfare_fabric::FabricError> for ApiError {
    /// A failed publish: unknown outcome when it was sent and not acknowledged, else not stored.
    fn from(error: &fanfare_fabric::FabricError) -> Self {
        match error.kind() {
            fanfare_fabric::FabricErrorKind::PublishOutcomeUnknown => ApiError::OutcomeUnknown,
            _ => ApiError::Unavailable,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug, title) = self.status_and_slug();
        let retry_after = match &self {
            ApiError::RateLimited {
                retry_after_secs, ..
            } => Some(HeaderValue::from(*retry_after_secs)),
            ApiError::TooManyConnections => Some(HeaderValue::from_static("1")),
            _ => None,
        };
        // RFC 6750 §3: tell the client how to authenticate, and what was wrong.
        let challenge = match &self {
            ApiError::Auth(error) => HeaderValue::from_str(&error.challenge()).ok(),
            _ => None,
        };
        let problem = Problem {
            kind: format!("urn:fanfare:problem:{slug}"),
            title,
            status: status.as_u16(),
            detail: self.to_string(),
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(challenge) = challenge {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        if matches!(
            status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Some(retry_after) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn problem_of(response: Response) -> serde_json::Value {
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    #[tokio::test]
    async fn limits_answer_with_their_status_slug_and_retry_after() {
        let cases = [
            (
                ApiError::RateLimited {
                    limit: Limit::CommentAddressRate,
                    retry_after_secs: 7,
                },
                429,
                "rate-limited",
                Some("7"),
            ),
            (
                ApiError::TooManyConnections,
                429,
                "too-many-connections",
                Some("1"),
            ),
            (ApiError::FrontendFull, 503, "overloaded", Some("1")),
            (
                ApiError::HeaderTooLarge { limit: 8192 },
                431,
                "header-too-large",
                None,
            ),
            (
                ApiError::CommentTooLong { limit: 10 },
                400,
                "invalid-body",
                None,
            ),
        ];
        for (error, status, slug, retry_after) in cases {
            let detail = error.to_string();
            let response = error.into_response();
            assert_eq!(response.status().as_u16(), status, "{slug}");
            let header = response
                .headers()
                .get(header::RETRY_AFTER)
                .map(|value| value.to_str().unwrap().to_owned());
            assert_eq!(header.as_deref(), retry_after, "{slug}");
            let problem = problem_of(response).await;
            assert_eq!(problem["type"], format!("urn:fanfare:problem:{slug}"));
            assert_eq!(problem["detail"], detail);
        }
        let detail = ApiError::RateLimited {
            limit: Limit::CommentAddressRate,
            retry_after_secs: 7,
        }
        .to_string();
        assert_eq!(detail, "too many comments from this address; retry in 7 s");
    }
}
