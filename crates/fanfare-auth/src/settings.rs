//! The `[auth]` configuration: shared by the frontend's settings and the topology file, so a
//! topology can hand its frontends the keys they verify tokens with.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Shortest accepted HS256 secret, in bytes (RFC 7518 §3.2: at least the hash size).
pub const MIN_SECRET_BYTES: usize = 32;
/// Largest accepted leeway on `exp` and `nbf`.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// Whether publishing (and private videos) need a token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every publish request needs a valid bearer token.
    #[default]
    On,
    /// Anyone can publish as anyone: for a local topology on a developer's machine only.
    Off,
}

/// Signature algorithm of one key. Each key verifies exactly one algorithm: a token whose
/// header names another is rejected (no `none`, no HS256 signed with an RSA public key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyAlgorithm {
    /// HMAC-SHA256 with a shared secret (`secret` or `secret_file`).
    HS256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, verified with an RSA public key (PEM).
    RS256,
    /// Ed25519, verified with an Ed25519 public key (PEM).
    EdDSA,
}

impl KeyAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::HS256 => "HS256",
            KeyAlgorithm::RS256 => "RS256",
            KeyAlgorithm::EdDSA => "EdDSA",
        }
    }

    pub(crate) fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            KeyAlgorithm::HS256 => jsonwebtoken::Algorithm::HS256,
            KeyAlgorithm::RS256 => jsonwebtoken::Algorithm::RS256,
            KeyAlgorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        }
    }
}

/// `[auth]`: how frontends authenticate publishers and viewers of private videos.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// `on` (default) or `off`.
    pub mode: AuthMode,
    /// The `aud` claim every token must carry.
    pub audience: String,
    /// When set, the `iss` claim every token must carry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Videos whose viewer stream needs a token with the `view` action: exact ids or
    /// `prefix*` patterns.
    pub private_videos: Vec<String>,
    /// Keys tokens are verified with, picked by the token's `kid` header.
    pub keys: Vec<KeySettings>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            mode: AuthMode::On,
            audience: "fanfare".to_owned(),
            issuer: None,
            leeway: Duration::from_secs(30),
            private_videos: Vec::new(),
            keys: Vec::new(),
        }
    }
}

/// One verification key (`[[auth.keys]]`). HS256 takes `secret` or `secret_file`; RS256 and
/// EdDSA take `public_key` or `public_key_file` (PEM). A secret file's trailing newline is
/// not part of the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySettings {
    /// Key id: a token picks its key by its `kid` header.
    pub kid: String,
    pub algorithm: KeyAlgorithm,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_file: Option<PathBuf>,
}

/// Never prints an inline secret.
impl fmt::Debug for KeySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySettings")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("secret_file", &self.secret_file)
            .field("public_key", &self.public_key.as_ref().map(|_| "<pem>"))
            .field("public_key_file", &self.public_key_file)
            .finish()
    }
}

/// One problem of an `[auth]` section: the field (relative to `auth`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsProblem {
    pub field: String,
    pub message: String,
}

impl fmt::Display for SettingsProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "auth.{}: {}", self.field, self.message)
    }
}

/// What to do when authentication is on and no key is configured.
pub const NO_KEYS_HINT: &str = "authentication is on but no keys are configured: add \
    [[auth.keys]] entries (kid, algorithm = \"HS256\" | \"RS256\" | \"EdDSA\", and secret_file \
    or public_key_file), or set [auth] mode = \"off\" to let anyone publish (local testing only)";

impl AuthSettings {
    /// Authentication off: what local topologies and most tests run with.
    pub fn off() -> Self {
        Self {
            mode: AuthMode::Off,
            ..Self::default()
        }
    }

    pub fn is_on(&self) -> bool {
        self.mode == AuthMode::On
    }

    /// Checks what can be checked without reading key files; every problem is reported.
    pub fn check(&self) -> Vec<SettingsProblem> {
        let mut problems = Vec::new();
        let mut problem =
            |field: String, message: String| problems.push(SettingsProblem { field, message });
        if self.mode == AuthMode::Off {
            if !self.private_videos.is_empty() {
                problem(
                    "private_videos".to_owned(),
                    "private videos need authentication: set [auth] mode = \"on\" with keys"
                        .to_owned(),
                );
            }
            return problems;
        }
        if self.keys.is_empty() {
            problem("keys".to_owned(), NO_KEYS_HINT.to_owned());
        }
        if self.audience.trim().is_empty() {
            problem("audience".to_owned(), "must not be empty".to_owned());
        }
        if self.issuer.as_deref().is_some_and(|iss| iss.is_empty()) {
            problem(
                "issuer".to_owned(),
                "must not be empty (leave it out to accept any issuer)".to_owned(),
            );
        }
        if self.leeway > MAX_LEEWAY {
            problem(
                "leeway".to_owned(),
                format!("must be at most {}s", MAX_LEEWAY.as_secs()),
            );
        }
        for (i, pattern) in self.private_videos.iter().enumerate() {
            if let Err(message) = crate::scope::VideoPattern::parse(pattern) {
                problem(format!("private_videos[{i}]"), message);
            }
        }
        for (i, key) in self.keys.iter().enumerate() {
            if key.kid.is_empty() || key.kid.len() > 128 || key.kid.chars().any(char::is_control) {
                problem(
                    format!("keys[{i}].kid"),
                    "must be 1 to 128 characters, no control characters".to_owned(),
                );
            }
            if self.keys[..i].iter().any(|other| other.kid == key.kid) {
                problem(
                    format!("keys[{i}].kid"),
                    format!("duplicate kid {:?}", key.kid),
                );
            }
            if let Err(message) = key.check_material() {
                problem(format!("keys[{i}]"), message);
            }
        }
        problems
    }

    /// Makes relative key file paths relative to `base` (the directory of the file that named
    /// them), so a node started elsewhere finds them.
    pub fn resolve_paths(&mut self, base: &Path) {
        for key in &mut self.keys {
            for path in [&mut key.secret_file, &mut key.public_key_file]
                .into_iter()
                .flatten()
            {
                if path.is_relative() {
                    *path = base.join(&*path);
                }
            }
        }
    }
}

impl KeySettings {
    /// An HS256 key whose secret is in `path`.
    pub fn hs256_file(kid: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self::empty(kid.into(), KeyAlgorithm::HS256).with(|key| key.secret_file = Some(path.into()))
    }

    /// An RS256 or EdDSA key whose PEM public key is in `path`.
    pub fn public_key_file(
        kid: impl Into<String>,
        algorithm: KeyAlgorithm,
        path: impl Into<PathBuf>,
    ) -> Self {
        Self::empty(kid.into(), algorithm).with(|key| key.public_key_file = Some(path.into()))
    }

    fn empty(kid: String, algorithm: KeyAlgorithm) -> Self {
        Self {
            kid,
            algorithm,
            secret: None,
            secret_file: None,
            public_key: None,
            public_key_file: None,
        }
    }

    fn with(mut self, adjust: impl FnOnce(&mut Self)) -> Self {
        adjust(&mut self);
        self
    }

    /// Exactly one source of key material, of the kind the algorithm needs.
    fn check_material(&self) -> Result<(), String> {
        let secrets = usize::from(self.secret.is_some()) + usize::from(self.secret_file.is_some());
        let public =
            usize::from(self.public_key.is_some()) + usize::from(self.public_key_file.is_some());
        match self.algorithm {
            KeyAlgorithm::HS256 => {
                if public > 0 {
                    return Err("an HS256 key takes secret or secret_file, not a public key".into());
                }
                if secrets != 1 {
                    return Err("an HS256 key needs exactly one of secret and secret_file".into());
                }
                if let Some(secret) = &self.secret {
                    if secret.len() < MIN_SECRET_BYTES {
                        return Err(format!("secret: must be at least {MIN_SECRET_BYTES} bytes"));
                    }
                }
                Ok(())
            }
            KeyAlgorithm::RS256 | KeyAlgorithm::EdDSA => {
                if secrets > 0 {
                    return Err(format!(
                        "an {} key takes public_key or public_key_file, not a secret",
                        self.algorithm.as_str()
                    ));
                }
                if public != 1 {
                    return Err(format!(
                        "an {} key needs exactly one of public_key and public_key_file",
                        self.algorithm.as_str()
                    ));
                }
                Ok(())
            }
        }
    }
}

/// Reads a secret file: its bytes without one trailing newline (`echo secret > file`).
pub fn read_secret_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = std::fs::read(path)?;
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_is_on_by_default_and_without_keys_says_how_to_fix_it() {
        let settings = AuthSettings::default();
        assert!(settings.is_on());
        assert_eq!(settings.audience, "fanfare");
        assert_eq!(settings.leeway, Duration::from_secs(30));
        let problems = settings.check();
        assert_eq!(problems.len(), 1, "{problems:?}");
        let text = problems[0].to_string();
        assert!(text.starts_with("auth.keys: "), "{text}");
        assert!(text.contains("[[auth.keys]]"), "{text}");
        assert!(text.contains("mode = \"off\""), "{text}");
    }

    #[test]
    fn off_needs_nothing_but_refuses_private_videos() {
        assert!(AuthSettings::off().check().is_empty());
        let settings = AuthSettings {
            private_videos: vec!["vip-*".to_owned()],
            ..AuthSettings::off()
        };
        assert_eq!(settings.check()[0].field, "private_videos");
    }

    #[test]
    fn keys_need_material_of_their_kind_and_distinct_kids() {
        let secret = "s".repeat(MIN_SECRET_BYTES);
        let mut hs = KeySettings::empty("a".into(), KeyAlgorithm::HS256);
        hs.secret = Some(secret.clone());
        let mut rs_with_secret = KeySettings::empty("a".into(), KeyAlgorithm::RS256);
        rs_with_secret.secret = Some(secret);
        let mut short = KeySettings::empty("c".into(), KeyAlgorithm::HS256);
        short.secret = Some("short".into());
        let hs_with_public = KeySettings::public_key_file("d", KeyAlgorithm::HS256, "k.pem");
        let settings = AuthSettings {
            keys: vec![hs, rs_with_secret, short, hs_with_public],
            private_videos: vec!["a*b".into()],
            ..AuthSettings::default()
        };
        let fields: Vec<String> = settings.check().into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "private_videos[0]",
                "keys[1].kid",
                "keys[1]",
                "keys[2]",
                "keys[3]"
            ]
        );
    }

    #[test]
    fn relative_key_paths_resolve_against_the_base() {
        let mut settings = AuthSettings {
            keys: vec![
                KeySettings::hs256_file("a", "keys/a.secret"),
                KeySettings::public_key_file("b", KeyAlgorithm::EdDSA, "/abs/b.pem"),
            ],
            ..AuthSettings::default()
        };
        settings.resolve_paths(Path::new("/etc/fanfare"));
        assert_eq!(
            settings.keys[0].secret_file.as_deref(),
            Some(Path::new("/etc/fanfare/keys/a.secret"))
        );
        assert_eq!(
            settings.keys[1].public_key_file.as_deref(),
            Some(Path::new("/abs/b.pem"))
        );
    }

    #[test]
    fn debug_output_never_shows_an_inline_secret() {
        let mut key = KeySettings::empty("a".into(), KeyAlgorithm::HS256);
        key.secret = Some("very-secret-value-that-must-not-leak".into());
        let text = format!("{key:?}");
        assert!(!text.contains("very-secret"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }

    #[test]
    fn settings_round_trip_through_toml() {
        let settings = AuthSettings {
            issuer: Some("https://id.example".into()),
            private_videos: vec!["vip-*".into()],
            keys: vec![KeySettings::hs256_file("k1", "/s")],
            ..AuthSettings::default()
        };
        let text = toml::to_string(&settings).unwrap();
        let back: AuthSettings = toml::from_str(&text).unwrap();
        assert_eq!(back, settings);
        let minimal: AuthSettings = toml::from_str("mode = \"off\"").unwrap();
        assert_eq!(minimal, AuthSettings::off());
    }

    #[test]
    fn secret_files_lose_one_trailing_newline() {
        let dir = std::env::temp_dir().join(format!("fanfare-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        std::fs::write(&path, "abc\r\n").unwrap();
        assert_eq!(read_secret_file(&path).unwrap(), b"abc");
        std::fs::write(&path, "abc\n\n").unwrap();
        assert_eq!(read_secret_file(&path).unwrap(), b"abc\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
