//! Where requests meet [`fanfare_auth`]: finding the token in a request and deciding who the
//! user is. Nothing here logs; the token never leaves these functions.

use axum::http::{header, HeaderMap};
use fanfare_auth::{Action, AuthError, Grant, Verifier};
use fanfare_model::VideoId;
use fanfare_telemetry::{AuthRequest, FrontendMetrics};

use crate::problem::ApiError;

/// Query parameter a browser's `EventSource` can carry a viewer token in.
pub(crate) const TOKEN_QUERY_PARAM: &str = "access_token";
/// Cookie a viewer token can come in.
pub(crate) const TOKEN_COOKIE: &str = "fanfare_token";

/// The frontend's authentication: `None` inside when it is off.
pub(crate) struct Gate {
    verifier: Option<Verifier>,
    /// Counts refusals by reason.
    metrics: FrontendMetrics,
}

impl Gate {
    pub(crate) fn new(verifier: Option<Verifier>, metrics: FrontendMetrics) -> Self {
        Self { verifier, metrics }
    }

    fn refused(&self, request: AuthRequest, error: AuthError) -> ApiError {
        self.metrics.auth_refused(request, error.slug());
        ApiError::Auth(error)
    }

    /// Checks a publish request's bearer token for `action` on `video`. With authentication
    /// off there is no grant.
    pub(crate) fn publisher(
        &self,
        headers: &HeaderMap,
        video: &VideoId,
        action: Action,
    ) -> Result<Option<Grant>, ApiError> {
        let Some(verifier) = &self.verifier else {
            return Ok(None);
        };
        let authorization = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
        bearer(authorization)
            .and_then(|token| verifier.authorize(token, video.as_str(), action))
            .map(Some)
            .map_err(|error| self.refused(AuthRequest::Publish, error))
    }

    /// Checks a viewer's token when `video` is private: from the `Authorization` header, else
    /// the `access_token` query parameter, else the `fanfare_token` cookie. The token's subject
    /// when one was checked.
    pub(crate) fn viewer(
        &self,
        video: &VideoId,
        authorization: Option<&[u8]>,
        query_token: Option<&str>,
        cookie: Option<&[u8]>,
    ) -> Result<Option<String>, ApiError> {
        let Some(verifier) = &self.verifier else {
            return Ok(None);
        };
        if !verifier.is_private(video.as_str()) {
            return Ok(None);
        }
        let token = bearer(authorization).map(|header_token| {
            header_token.or_else(|| {
                query_token
                    .filter(|token| !token.is_empty())
                    .or_else(|| cookie.and_then(cookie_token))
            })
        });
        token
            .and_then(|token| verifier.authorize(token, video.as_str(), Action::View))
            .map(|grant| Some(grant.subject))
            .map_err(|error| self.refused(AuthRequest::View, error))
    }
}

/// The token of an `Authorization: Bearer <token>` header value; `None` when there is no
/// header. Any other scheme, or a value that is not text, is a malformed token.
fn bearer(value: Option<&[u8]>) -> Result<Option<&str>, AuthError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let value = std::str::from_utf8(value)
        .map_err(|_| AuthError::Malformed("the authorization header is not text"))?;
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed(
            "the authorization header is not a bearer token",
        ));
    }
    Ok(Some(token.trim()))
}

/// The `fanfare_token` value of a `Cookie` header.
fn cookie_token(cookie: &[u8]) -> Option<&str> {
    let cookie = std::str::from_utf8(cookie).ok()?;
    cookie.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == TOKEN_COOKIE && !value.is_empty()).then_some(value.trim_matches('"'))
    })
}

/// The user id of a like or comment: the token's subject when authentication is on (a body
/// `user_id` must then equal it), else the body's `user_id`, which is then required. A body
/// `user_id` has been checked by the model's `decode`, a subject by the token verifier.
pub(crate) fn user_id(grant: Option<Grant>, body_user: Option<String>) -> Result<String, ApiError> {
    match grant {
        Some(grant) => match body_user {
            Some(user) if user != grant.subject => Err(ApiError::UserMismatch),
            _ => Ok(grant.subject),
        },
        None => body_user.ok_or_else(|| ApiError::InvalidBody("user_id is required".to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fanfare_auth::{AuthSettings, KeyAlgorithm, KeySettings};
    use proptest::prelude::*;

    /// A gate with the test-only Ed25519 fixture key, where `vip-*` is private.
    fn gate() -> Gate {
        let key = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/auth/ed25519-public.pem");
        let settings = AuthSettings {
            private_videos: vec!["vip-*".to_owned()],
            keys: vec![KeySettings::public_key_file("ed", KeyAlgorithm::EdDSA, key)],
            ..AuthSettings::default()
        };
        let verifier = Verifier::from_settings(&settings).unwrap();
        let mut registry = prometheus_client::registry::Registry::default();
        Gate::new(verifier, FrontendMetrics::register(&mut registry))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever arrives as header, query parameter or cookie, a private video is refused
        /// (401) without a panic, and a public one is let through.
        #[test]
        fn arbitrary_credentials_never_open_a_private_video(
            authorization in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
            query in proptest::option::of(any::<String>()),
            cookie in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
        ) {
            let gate = gate();
            let private = VideoId::parse("vip-1").unwrap();
            let refused = gate.viewer(
                &private,
                authorization.as_deref(),
                query.as_deref(),
                cookie.as_deref(),
            );
            prop_assert!(matches!(refused, Err(ApiError::Auth(ref error)) if !error.is_forbidden()));
            let public = VideoId::parse("talk").unwrap();
            prop_assert!(gate
                .viewer(&public, authorization.as_deref(), query.as_deref(), cookie.as_deref())
                .is_ok());
        }
    }

    #[test]
    fn bearer_takes_the_token_of_the_bearer_scheme_only() {
        assert_eq!(bearer(None), Ok(None));
        assert_eq!(bearer(Some(b"Bearer abc")), Ok(Some("abc")));
        assert_eq!(bearer(Some(b"bearer  abc ")), Ok(Some("abc")));
        assert_eq!(bearer(Some(b"Bearer")), Ok(Some("")));
        assert!(bearer(Some(b"Basic dXNlcjpwYXNz")).is_err());
        assert!(bearer(Some(b"Bearer \xff")).is_err());
    }

    #[test]
    fn the_token_cookie_is_found_among_others() {
        assert_eq!(cookie_token(b"a=1; fanfare_token=xyz; b=2"), Some("xyz"));
        assert_eq!(cookie_token(b"fanfare_token=\"q\""), Some("q"));
        assert_eq!(cookie_token(b"other_fanfare_token=xyz"), None);
        assert_eq!(cookie_token(b"fanfare_token="), None);
    }

    #[test]
    fn with_auth_off_the_body_names_the_user_and_must() {
        assert_eq!(user_id(None, Some("bob".into())).unwrap(), "bob");
        assert!(matches!(
            user_id(None, None),
            Err(ApiError::InvalidBody(message)) if message.contains("required")
        ));
    }

    /// What reaches [`user_id`] has been decoded by the model, which refuses bad user ids.
    #[test]
    fn a_body_user_id_is_checked_before_it_gets_here() {
        for bad in ["", "a\u{7}"] {
            let body = serde_json::json!({ "user_id": bad }).to_string();
            assert!(
                fanfare_model::LikeRequest::decode(body.as_bytes()).is_err(),
                "{bad:?}"
            );
        }
    }
}
