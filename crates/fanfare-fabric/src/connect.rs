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
}

impl Default for NatsSettings {
    fn default() -> Self {
        Self {
            urls: vec!["nats://127.0.0.1:4222".to_owned()],
            connect_timeout: Duration::from_secs(10),
            subscription_capacity: 65_536,
        }
    }
}

/// Connects to the first reachable server of `settings.urls`, retrying until
/// `connect_timeout`. Later disconnects are healed by the client's own reconnect loop.
pub async fn connect(
    settings: &NatsSettings,
    client_name: &str,
) -> Result<async_nats::Client, FabricError> {
    let options = async_nats::ConnectOptions::new()
        .name(client_name)
        .retry_on_initial_connect()
        .subscription_capacity(settings.subscription_capacity)
        .connection_timeout(Duration::from_secs(2))
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("nats connected"),
                async_nats::Event::Disconnected => tracing::warn!("nats disconnected"),
                async_nats::Event::SlowConsumer(sid) => {
                    tracing::error!(sid, "nats subscription overflowed, messages dropped")
                }
                other => tracing::debug!(event = %other, "nats event"),
            }
        });
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
    let connecting = options.connect(addresses);
    match tokio::time::timeout(settings.connect_timeout, connecting).await {
        Ok(Ok(client)) => {
            // retry_on_initial_connect returns before the first connection; wait for it so
            // that callers start with a usable client.
            let deadline = tokio::time::Instant::now() + settings.connect_timeout;
            while client.connection_state() != async_nats::connection::State::Connected {
                if tokio::time::Instant::now() >= deadline {
                    return Err(FabricError::new(
                        FabricErrorKind::Connect,
                        format!("connecting to {urls}"),
                        "timed out",
                    ));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(client)
        }
        Ok(Err(error)) => Err(FabricError::new(
            FabricErrorKind::Connect,
            format!("connecting to {urls}"),
            error,
        )),
        Err(_) => Err(FabricError::new(
            FabricErrorKind::Connect,
            format!("connecting to {urls}"),
            "timed out",
        )),
    }
}
