//! Minting tokens: what `fanfare token` and the tests use. A real deployment's identity
//! provider mints its own; fanfare only needs to verify them.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;

use crate::settings::{read_secret_file, KeyAlgorithm, MIN_SECRET_BYTES};
use crate::Action;

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("cannot read {path}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the secret must be at least {MIN_SECRET_BYTES} bytes")]
    ShortSecret,
    #[error("not a PEM {algorithm} private key: {message}")]
    BadKey {
        algorithm: &'static str,
        message: String,
    },
    #[error("signing failed: {0}")]
    Sign(String),
}

/// A key tokens are signed with, and the `kid` put in their header.
pub struct SigningKey {
    kid: Option<String>,
    algorithm: KeyAlgorithm,
    key: EncodingKey,
}

impl SigningKey {
    /// An HS256 key from a shared secret.
    pub fn hs256(kid: Option<&str>, secret: &[u8]) -> Result<Self, MintError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(MintError::ShortSecret);
        }
        Ok(Self {
            kid: kid.map(str::to_owned),
            algorithm: KeyAlgorithm::HS256,
            key: EncodingKey::from_secret(secret),
        })
    }

    /// An HS256 key from a secret file (one trailing newline is not part of the secret).
    pub fn hs256_file(kid: Option<&str>, path: &Path) -> Result<Self, MintError> {
        let secret = read_secret_file(path).map_err(|source| MintError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::hs256(kid, &secret)
    }

    /// An RS256 or EdDSA key from a PEM private key (PKCS#8, or PKCS#1 for RSA).
    pub fn from_pem(
        kid: Option<&str>,
        algorithm: KeyAlgorithm,
        pem: &[u8],
    ) -> Result<Self, MintError> {
        let bad = |error: jsonwebtoken::errors::Error| MintError::BadKey {
            algorithm: algorithm.as_str(),
            message: error.to_string(),
        };
        let key = match algorithm {
            KeyAlgorithm::HS256 => return Self::hs256(kid, pem),
            KeyAlgorithm::RS256 => EncodingKey::from_rsa_pem(pem).map_err(bad)?,
            KeyAlgorithm::EdDSA => EncodingKey::from_ed_pem(pem).map_err(bad)?,
        };
        Ok(Self {
            kid: kid.map(str::to_owned),
            algorithm,
            key,
        })
    }

    /// The same key with another `kid` in the header (or none).
    pub fn with_kid(mut self, kid: Option<&str>) -> Self {
        self.kid = kid.map(str::to_owned);
        self
    }
}

/// The claims of a minted token. Times are seconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Claims {
    pub sub: String,
    pub aud: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    pub iat: u64,
    pub exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Video ids or `prefix*` patterns this token may act on; absent: every video.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub videos: Option<Vec<String>>,
    /// Actions this token allows (`like`, `comment`, `view`); absent: every action.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<String>>,
}

impl Claims {
    /// A token for `sub` and `aud`, valid from now for `ttl`, allowing everything.
    pub fn new(sub: impl Into<String>, aud: impl Into<String>, ttl: Duration) -> Self {
        let now = unix_now();
        Self {
            sub: sub.into(),
            aud: aud.into(),
            iss: None,
            iat: now,
            exp: now.saturating_add(ttl.as_secs()),
            nbf: None,
            videos: None,
            actions: None,
        }
    }

    pub fn videos(mut self, patterns: &[&str]) -> Self {
        self.videos = Some(patterns.iter().map(|p| (*p).to_owned()).collect());
        self
    }

    pub fn actions(mut self, actions: &[Action]) -> Self {
        self.actions = Some(actions.iter().map(|a| a.as_str().to_owned()).collect());
        self
    }
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// Signs `claims` with `key`: a compact JWS (`header.claims.signature`).
pub fn mint(key: &SigningKey, claims: &Claims) -> Result<String, MintError> {
    let mut header = Header::new(key.algorithm.jwt());
    header.kid = key.kid.clone();
    jsonwebtoken::encode(&header, claims, &key.key)
        .map_err(|error| MintError::Sign(error.to_string()))
}
