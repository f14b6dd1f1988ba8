use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{FabricError, FabricErrorKind};

/// How a node reaches its datacenter's NATS servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSettings {
    /// Client URLs of the servers of the node's own datacenter.
    pub urls: Vec<String>,
    /// How long start-up waits for a first connection.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Capacity of each subscription's buffer (messages); a full buffer drops messages and is
    /// reported as a slow consumer.
    pub subscription_capacity: usize,
    /// NATS user; none: connect without authentication. Replies to this user arrive under the
    /// inbox prefix `_INBOX.<user>`, the only inboxes its permissions let it read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The user's password inline; prefer `password_file`. Never logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Password>,
    /// File holding the user's password (trailing newline ignored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// CA certificate (PEM) to verify the servers with; when set, TLS is required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
}

/// A password: `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Password(String);

impl Password {
    pub fn new(password: impl Into<String>) -> Self {
        Self(password.into())
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl Default for NatsSettings {
    fn default() -> Self {
        Self {
            urls: vec!["nats://127.0.0.1:4222".to_owned()],
            connect_timeout: Duration::from_secs(10),
            subscription_capacity: 65_536,
            user: None,
            password: None,
            password_file: None,
            tls_ca_file: None,
        }
    }
}

impl NatsSettings {
    /// The password to present: inline, else read from `password_file`.
    fn resolve_password(&self) -> Result<Option<Password>, FabricError> {
        if let Some(password) = &self.password {
            return Ok(Some(password.clone()));
        }
        let Some(path) = &self.password_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|error| {
            FabricError::new(
                FabricErrorKind::Connect,
                format!("reading the nats password file {}", path.display()),
                error,
            )
        })?;
        Ok(Some(Password(
            text.trim_end_matches(['\n', '\r']).to_owned(),
        )))
    }

    fn options(
        &self,
        client_name: &str,
        password: Option<&Password>,
    ) -> async_nats::ConnectOptions {
        let mut options = async_nats::ConnectOptions::new()
            .name(client_name)
            .subscription_capacity(self.subscription_capacity)
            .connection_timeout(Duration::from_secs(2))
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("nats connected"),
                    async_nats::Event::Disconnected => tracing::warn!("nats disconnected"),
                    async_nats::Event::SlowConsumer(sid) => {
                        tracing::error!(sid, "nats subscription overflowed, messages dropped")
                    }
                    // Permission violations: the server refused something this node tried.
                    async_nats::Event::ServerError(error) => {
                        tracing::error!(%error, "nats server error")
                    }
                    other => tracing::debug!(event = %other, "nats event"),
                }
            });
        if let Some(user) = &self.user {
            options = options
                .user_and_password(
                    user.clone(),
                    password.map(|p| p.expose().to_owned()).unwrap_or_default(),
                )
                .custom_inbox_prefix(format!("_INBOX.{user}"));
        }
        if let Some(ca) = &self.tls_ca_file {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        options
    }
}

/// Pause between connection attempts while no server of the datacenter answers yet.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// Connects to the first reachable server of `settings.urls`, retrying until
/// `connect_timeout`. Later disconnects are healed by the client's own reconnect loop.
/// Credentials the server refuses fail at once with [`FabricErrorKind::Unauthorized`]: trying
/// again would not help.
pub async fn connect(
    settings: &NatsSettings,
    client_name: &str,
) -> Result<async_nats::Client, FabricError> {
    let urls = settings.urls.join(",");
    let addresses = settings
        .urls
        .iter()
        .map(|url| url.parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| {
            FabricError::new(
                FabricErrorKind::Connect,
                format!("parsing nats urls {urls}"),
                error,
            )
        })?;
    let password = settings.resolve_password()?;
    if settings.user.is_some() && password.is_none() {
        return Err(FabricError::plain(
            FabricErrorKind::Connect,
            "nats user is set without password or password_file",
        ));
    }
    let deadline = tokio::time::Instant::now() + settings.connect_timeout;
    loop {
        let attempt = settings
            .options(client_name, password.as_ref())
            .connect(addresses.clone());
        let outcome = tokio::time::timeout_at(deadline, attempt).await;
        let error = match outcome {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(error)) => error,
            Err(_) => {
                return Err(FabricError::new(
                    FabricErrorKind::Connect,
                    format!("connecting to {urls}"),
                    "timed out",
                ))
            }
        };
        use async_nats::ConnectErrorKind as Kind;
        if matches!(
            error.kind(),
            Kind::AuthorizationViolation | Kind::Authentication
        ) {
            let user = settings.user.as_deref().unwrap_or("<none>");
            return Err(FabricError::new(
                FabricErrorKind::Unauthorized,
                format!("nats at {urls} refused the credentials of user {user}"),
                error,
            ));
        }
        if tokio::time::Instant::now() + RETRY_PAUSE >= deadline {
            return Err(FabricError::new(
                FabricErrorKind::Connect,
                format!(
                    "connecting to {urls} (gave up after {:?})",
                    settings.connect_timeout
                ),
                error,
            ));
        }
        tracing::debug!(%error, "nats not reachable yet, retrying");
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show_in_debug_output() {
        let settings = NatsSettings {
            user: Some("dc1-fe1".to_owned()),
            password: Some(Password::new("s3cret-s3cret-s3cret")),
            ..Default::default()
        };
        let debug = format!("{settings:?}");
        assert!(debug.contains("dc1-fe1"), "{debug}");
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn a_password_file_is_read_without_its_trailing_newline() {
        let dir = std::env::temp_dir().join(format!("fanfare-fabric-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("user.password");
        std::fs::write(&file, "from-a-file\n").expect("write");
        let settings = NatsSettings {
            user: Some("user".to_owned()),
            password_file: Some(file),
            ..Default::default()
        };
        let password = settings.resolve_password().expect("read").expect("some");
        assert_eq!(password.expose(), "from-a-file");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
