//! Why a token was refused. Messages are fixed text: none of them ever carries a byte of the
//! token, so they are safe to log and to send back.

use std::path::PathBuf;

use crate::Action;

/// A refused request: 401 for everything about the token itself, 403 for a valid token that
/// does not allow what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token was presented")]
    Missing,
    #[error("the token is malformed: {0}")]
    Malformed(&'static str),
    #[error("the token is missing the required claim {0}")]
    MissingClaim(&'static str),
    #[error("the token's algorithm is not the one configured for its key")]
    AlgorithmRejected,
    #[error("the token's signature does not verify with its key")]
    BadSignature,
    #[error("the token's key id is not configured here")]
    UnknownKey,
    #[error("the token has no key id, and more than one key is configured")]
    KeyIdRequired,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token is for another audience")]
    WrongAudience,
    #[error("the token is from another issuer")]
    WrongIssuer,
    #[error("the token does not allow this video")]
    VideoOutOfScope,
    #[error("the token does not allow the action {0}")]
    ActionOutOfScope(Action),
}

impl AuthError {
    /// The problem type's slug: `urn:fanfare:problem:<slug>`.
    pub fn slug(&self) -> &'static str {
        match self {
            AuthError::Missing => "token-missing",
            AuthError::Malformed(_) | AuthError::MissingClaim(_) => "token-malformed",
            AuthError::AlgorithmRejected => "token-algorithm-rejected",
            AuthError::BadSignature => "token-bad-signature",
            AuthError::UnknownKey | AuthError::KeyIdRequired => "token-unknown-key",
            AuthError::Expired => "token-expired",
            AuthError::NotYetValid => "token-not-yet-valid",
            AuthError::WrongAudience => "token-wrong-audience",
            AuthError::WrongIssuer => "token-wrong-issuer",
            AuthError::VideoOutOfScope => "token-video-out-of-scope",
            AuthError::ActionOutOfScope(_) => "token-action-out-of-scope",
        }
    }

    /// The problem's title.
    pub fn title(&self) -> &'static str {
        match self {
            AuthError::Missing => "Token missing",
            AuthError::Malformed(_) | AuthError::MissingClaim(_) => "Token malformed",
            AuthError::AlgorithmRejected => "Token algorithm rejected",
            AuthError::BadSignature => "Token signature invalid",
            AuthError::UnknownKey | AuthError::KeyIdRequired => "Token key unknown",
            AuthError::Expired => "Token expired",
            AuthError::NotYetValid => "Token not yet valid",
            AuthError::WrongAudience => "Token audience wrong",
            AuthError::WrongIssuer => "Token issuer wrong",
            AuthError::VideoOutOfScope => "Video not in the token's scope",
            AuthError::ActionOutOfScope(_) => "Action not in the token's scope",
        }
    }

    /// True for a valid token outside its scope (403); false for a token that is missing or
    /// not valid (401).
    pub fn is_forbidden(&self) -> bool {
        matches!(
            self,
            AuthError::VideoOutOfScope | AuthError::ActionOutOfScope(_)
        )
    }

    /// The `WWW-Authenticate` challenge (RFC 6750 §3): no error code when no token was sent,
    /// `invalid_token` for a bad one, `insufficient_scope` for a valid one outside its scope.
    pub fn challenge(&self) -> String {
        match self {
            AuthError::Missing => "Bearer realm=\"fanfare\"".to_owned(),
            error if error.is_forbidden() => format!(
                "Bearer realm=\"fanfare\", error=\"insufficient_scope\", error_description=\"{}\"",
                error.slug()
            ),
            error => format!(
                "Bearer realm=\"fanfare\", error=\"invalid_token\", error_description=\"{}\"",
                error.slug()
            ),
        }
    }
}

/// A configuration that cannot be turned into a [`crate::Verifier`]; names the field.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("{0}")]
    Invalid(String),
    #[error("auth.keys[{index}]: cannot read {path}")]
    ReadKey {
        index: usize,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("auth.keys[{index}]: {message}")]
    BadKey { index: usize, message: String },
}
