//! Token verification: pick the key by `kid`, insist on that key's algorithm, check the
//! signature, then the registered claims (`exp`, `nbf`, `aud`, `iss`), then the scope.

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{DecodingKey, Validation};
use serde::Deserialize;

use crate::scope::{any_matches, VideoPattern};
use crate::settings::{read_secret_file, AuthMode, AuthSettings, KeyAlgorithm, MIN_SECRET_BYTES};
use crate::{Action, AuthConfigError, AuthError};

/// Longest token looked at; anything longer is malformed without being parsed.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Longest accepted `sub`: it becomes the user id of likes and comments.
pub const MAX_SUBJECT_BYTES: usize = fanfare_model::USER_ID_MAX_LEN;

/// Verifies tokens against the configured keys. Built once at start-up; verification reads
/// no file and takes no lock.
pub struct Verifier {
    keys: Vec<VerifyingKey>,
    private_videos: Vec<VideoPattern>,
}

struct VerifyingKey {
    kid: String,
    algorithm: KeyAlgorithm,
    decoding: DecodingKey,
    validation: Validation,
}

/// What a verified token says: who, and what it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The `sub` claim: the user id of what this token publishes.
    pub subject: String,
    /// `None`: every video.
    videos: Option<Vec<VideoPattern>>,
    /// `None`: every action.
    actions: Option<Vec<Action>>,
}

impl Grant {
    /// Ok when the token allows `action` on `video`.
    pub fn allows(&self, video: &str, action: Action) -> Result<(), AuthError> {
        if let Some(videos) = &self.videos {
            if !any_matches(videos, video) {
                return Err(AuthError::VideoOutOfScope);
            }
        }
        if let Some(actions) = &self.actions {
            if !actions.contains(&action) {
                return Err(AuthError::ActionOutOfScope(action));
            }
        }
        Ok(())
    }
}

/// The claims fanfare reads itself; `exp`, `nbf`, `aud` and `iss` are checked by the JWT
/// library from the same payload.
#[derive(Deserialize)]
struct ScopeClaims {
    sub: Option<String>,
    videos: Option<Vec<String>>,
    actions: Option<Vec<String>>,
}

impl Verifier {
    /// Loads every key (reading key files). `None` when authentication is off.
    pub fn from_settings(settings: &AuthSettings) -> Result<Option<Verifier>, AuthConfigError> {
        let problems = settings.check();
        if !problems.is_empty() {
            let all: Vec<String> = problems.iter().map(ToString::to_string).collect();
            return Err(AuthConfigError::Invalid(all.join("; ")));
        }
        if settings.mode == AuthMode::Off {
            return Ok(None);
        }
        let mut keys = Vec::with_capacity(settings.keys.len());
        for (index, key) in settings.keys.iter().enumerate() {
            let read = |path: &std::path::Path, secret: bool| {
                let read = if secret {
                    read_secret_file(path)
                } else {
                    std::fs::read(path)
                };
                read.map_err(|source| AuthConfigError::ReadKey {
                    index,
                    path: path.to_path_buf(),
                    source,
                })
            };
            let bad = |message: String| AuthConfigError::BadKey { index, message };
            let decoding = match key.algorithm {
                KeyAlgorithm::HS256 => {
                    let secret = match (&key.secret, &key.secret_file) {
                        (Some(secret), _) => secret.as_bytes().to_vec(),
                        (None, Some(path)) => read(path, true)?,
                        (None, None) => return Err(bad("no secret".to_owned())),
                    };
                    if secret.len() < MIN_SECRET_BYTES {
                        return Err(bad(format!(
                            "the secret must be at least {MIN_SECRET_BYTES} bytes"
                        )));
                    }
                    DecodingKey::from_secret(&secret)
                }
                KeyAlgorithm::RS256 | KeyAlgorithm::EdDSA => {
                    let pem = match (&key.public_key, &key.public_key_file) {
                        (Some(pem), _) => pem.as_bytes().to_vec(),
                        (None, Some(path)) => read(path, false)?,
                        (None, None) => return Err(bad("no public key".to_owned())),
                    };
                    let parsed = if key.algorithm == KeyAlgorithm::RS256 {
                        DecodingKey::from_rsa_pem(&pem)
                    } else {
                        DecodingKey::from_ed_pem(&pem)
                    };
                    parsed.map_err(|error| {
                        bad(format!(
                            "not a PEM {} public key ({error})",
                            key.algorithm.as_str()
                        ))
                    })?
                }
            };
            let mut validation = Validation::new(key.algorithm.jwt());
            validation.leeway = settings.leeway.as_secs();
            validation.validate_exp = true;
            validation.validate_nbf = true;
            validation.validate_aud = true;
            validation.set_audience(&[settings.audience.as_str()]);
            let mut required = vec!["exp", "aud", "sub"];
            if let Some(issuer) = &settings.issuer {
                validation.set_issuer(&[issuer.as_str()]);
                required.push("iss");
            }
            validation.set_required_spec_claims(&required);
            keys.push(VerifyingKey {
                kid: key.kid.clone(),
                algorithm: key.algorithm,
                decoding,
                validation,
            });
        }
        let private_videos = settings
            .private_videos
            .iter()
            .filter_map(|pattern| VideoPattern::parse(pattern).ok())
            .collect();
        Ok(Some(Verifier {
            keys,
            private_videos,
        }))
    }

    /// Whether `video`'s stream needs a token with the `view` action.
    pub fn is_private(&self, video: &str) -> bool {
        any_matches(&self.private_videos, video)
    }

    /// Verifies `token` (absent or empty: [`AuthError::Missing`]) and checks that it allows
    /// `action` on `video`.
    pub fn authorize(
        &self,
        token: Option<&str>,
        video: &str,
        action: Action,
    ) -> Result<Grant, AuthError> {
        let token = token
            .filter(|token| !token.is_empty())
            .ok_or(AuthError::Missing)?;
        let grant = self.verify(token)?;
        grant.allows(video, action)?;
        Ok(grant)
    }

    /// Verifies a token: its key, algorithm, signature and registered claims.
    pub fn verify(&self, token: &str) -> Result<Grant, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed("longer than 8 KiB"));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| bad_header(token))?;
        let key = self.key_for(header.kid.as_deref())?;
        if header.alg != key.algorithm.jwt() {
            return Err(AuthError::AlgorithmRejected);
        }
        let data = jsonwebtoken::decode::<ScopeClaims>(token, &key.decoding, &key.validation)
            .map_err(|error| classify(error.kind()))?;
        grant_of(data.claims)
    }

    fn key_for(&self, kid: Option<&str>) -> Result<&VerifyingKey, AuthError> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|key| key.kid == kid)
                .ok_or(AuthError::UnknownKey),
            None => match self.keys.as_slice() {
                [only] => Ok(only),
                _ => Err(AuthError::KeyIdRequired),
            },
        }
    }
}

/// A header the JWT library refuses: an `alg` it does not know (`none` among them) is an
/// algorithm refusal, anything else a malformed token.
fn bad_header(token: &str) -> AuthError {
    let Some((encoded, _)) = token.split_once('.') else {
        return AuthError::Malformed("not three base64url parts separated by dots");
    };
    let Ok(json) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded) else {
        return AuthError::Malformed("the header is not base64url");
    };
    let Ok(header) = serde_json::from_slice::<serde_json::Value>(&json) else {
        return AuthError::Malformed("the header is not json");
    };
    if header.get("alg").is_some_and(serde_json::Value::is_string) {
        return AuthError::AlgorithmRejected;
    }
    AuthError::Malformed("the header has no valid alg")
}

fn classify(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            AuthError::AlgorithmRejected
        }
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(match claim.as_str() {
            "exp" => "exp",
            "aud" => "aud",
            "sub" => "sub",
            "iss" => "iss",
            "nbf" => "nbf",
            _ => "(unknown)",
        }),
        ErrorKind::InvalidClaimFormat(_) => {
            AuthError::Malformed("a registered claim has the wrong type")
        }
        ErrorKind::InvalidToken => {
            AuthError::Malformed("not three base64url parts separated by dots")
        }
        ErrorKind::Base64(_) => AuthError::Malformed("a part is not base64url"),
        ErrorKind::Json(_) => AuthError::Malformed("the claims are not the expected json"),
        ErrorKind::Utf8(_) => AuthError::Malformed("a part is not utf-8"),
        // Key or provider trouble while checking the signature: the token does not verify.
        _ => AuthError::BadSignature,
    }
}

fn grant_of(claims: ScopeClaims) -> Result<Grant, AuthError> {
    let subject = claims.sub.ok_or(AuthError::MissingClaim("sub"))?;
    if subject.is_empty()
        || subject.len() > MAX_SUBJECT_BYTES
        || subject.chars().any(char::is_control)
    {
        return Err(AuthError::Malformed(
            "sub must be 1 to 128 bytes without control characters",
        ));
    }
    let videos = match claims.videos {
        Some(patterns) => Some(
            patterns
                .iter()
                .map(|pattern| VideoPattern::parse(pattern))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| AuthError::Malformed("videos holds an invalid pattern"))?,
        ),
        None => None,
    };
    // Unknown action names grant nothing (a newer issuer may know more actions).
    let actions = claims.actions.map(|names| {
        names
            .iter()
            .filter_map(|name| name.parse::<Action>().ok())
            .collect()
    });
    Ok(Grant {
        subject,
        videos,
        actions,
    })
}
