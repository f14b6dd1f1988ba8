use std::net::SocketAddr;
use std::time::Duration;

use fanfare_fabric::NatsSettings;
use fanfare_telemetry::TelemetrySettings;
use serde::{Deserialize, Serialize};

/// A dispatcher's whole configuration (`fanfare dispatcher --config FILE`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Node name, unique in the topology.
    pub name: String,
    /// Datacenter this dispatcher serves.
    pub dc: String,
    /// Health, metrics and debug listener.
    pub admin: SocketAddr,
    pub nats: NatsSettings,
    /// Dispatch partitions of the datacenter (must match the provisioned consumers).
    pub partitions: u16,
    /// Most interactions one dispatch round takes from a partition.
    pub max_round: usize,
    /// Expiry of each pull request; below the consumers' pin timeout (4 s), so that the
    /// dispatcher that holds a partition's pin pulls again before the pin expires, however
    /// idle the partition is. Longer: fewer pull requests while idle (each also gets one idle
    /// heartbeat, at half the expiry).
    #[serde(with = "humantime_serde")]
    pub pull_expiry: Duration,
    /// How long interest keys of a frontend whose lease is gone (or was replaced under a new
    /// epoch) are left before this dispatcher deletes them. They stop counting at once; this
    /// only clears them from the bucket.
    #[serde(with = "humantime_serde")]
    pub stale_interest_grace: Duration,
    /// Trace export (`[telemetry] otlp_endpoint`); off unless an endpoint is set.
    pub telemetry: TelemetrySettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            name: "dispatcher".to_owned(),
            dc: "dc1".to_owned(),
            admin: SocketAddr::from(([127, 0, 0, 1], 9100)),
            nats: NatsSettings::default(),
            partitions: 8,
            max_round: 256,
            pull_expiry: Duration::from_secs(3),
            stale_interest_grace: Duration::from_secs(30),
            telemetry: TelemetrySettings::default(),
        }
    }
}

impl Settings {
    /// Checks what serde cannot; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        // Both become NATS subject tokens and stream names: nothing that could inject there.
        fanfare_model::names::check_name(&self.name).map_err(|error| format!("name: {error}"))?;
        fanfare_model::names::check_name(&self.dc).map_err(|error| format!("dc: {error}"))?;
        if self.partitions == 0 || self.partitions > 64 {
            return Err("partitions: must be between 1 and 64".to_owned());
        }
        if self.max_round == 0 {
            return Err("max_round: must be at least 1".to_owned());
        }
        if self.pull_expiry < Duration::from_millis(100) {
            return Err("pull_expiry: must be at least 100ms".to_owned());
        }
        if self.nats.urls.is_empty() {
            return Err("nats.urls: at least one url is required".to_owned());
        }
        self.telemetry.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_inject_into_a_subject_are_refused() {
        let mut settings = Settings::default();
        settings.nats.urls = vec!["nats://127.0.0.1:4222".to_owned()];
        assert_eq!(settings.validate(), Ok(()));
        for bad in ["fe.1", "fe*", ">", "fe 1", "fe\n1", ""] {
            let named = Settings {
                name: bad.to_owned(),
                ..settings.clone()
            };
            assert!(
                named.validate().unwrap_err().starts_with("name: "),
                "{bad:?}"
            );
            let placed = Settings {
                dc: bad.to_owned(),
                ..settings.clone()
            };
            assert!(
                placed.validate().unwrap_err().starts_with("dc: "),
                "{bad:?}"
            );
        }
    }
}
