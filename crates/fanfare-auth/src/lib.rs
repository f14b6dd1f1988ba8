//! fanfare-auth: who may publish, and who may watch a private video.
//!
//! A frontend builds one [`Verifier`] from its `[auth]` settings ([`AuthSettings`]) at
//! start-up, reading every key file then. Each publish request (and each viewer request for a
//! private video) hands its bearer token to [`Verifier::authorize`], which picks the key by
//! the token's `kid` header, refuses any algorithm but that key's own (so never `none`),
//! checks the signature, then `exp`, `nbf` (with a leeway), `aud` and, if configured, `iss`,
//! and finally the token's scope: the `videos` claim (exact ids or `prefix*` patterns) and the
//! `actions` claim (`like`, `comment`, `view`). What comes out is a [`Grant`] whose `subject`
//! (the `sub` claim) is the user id of what is published; what goes wrong is an [`AuthError`]
//! whose slug names the reason (401 for a bad token, 403 for one outside its scope) and whose
//! text never contains the token.
//!
//! [`mint`] signs tokens: `fanfare token` and the tests use it.

mod error;
mod mint;
mod scope;
mod settings;
mod verify;

pub use error::{AuthConfigError, AuthError};
pub use mint::{mint, unix_now, Claims, MintError, SigningKey};
pub use scope::{Action, VideoPattern};
pub use settings::{
    read_secret_file, AuthMode, AuthSettings, KeyAlgorithm, KeySettings, SettingsProblem,
    MIN_SECRET_BYTES, NO_KEYS_HINT,
};
pub use verify::{Grant, Verifier, MAX_SUBJECT_BYTES, MAX_TOKEN_BYTES};

#[cfg(test)]
mod tests;
