use std::net::SocketAddr;
use std::time::Duration;

use fanfare_auth::AuthSettings;
use fanfare_fabric::NatsSettings;
use fanfare_telemetry::TelemetrySettings;
use serde::{Deserialize, Serialize};

use crate::limits::LimitSettings;

/// A frontend's whole configuration (`fanfare frontend --config FILE`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Node name, unique in the topology; dispatchers address this frontend by it.
    pub name: String,
    /// Datacenter of this frontend.
    pub dc: String,
    /// Address viewers and publishers connect to.
    pub listen: SocketAddr,
    pub nats: NatsSettings,
    /// Lifetime of this frontend's subscription-table entries; they are refreshed every third of
    /// it, so they vanish within this time after the frontend dies.
    #[serde(with = "humantime_serde")]
    pub interest_ttl: Duration,
    /// Interval of keep-alive comments on idle viewer streams.
    #[serde(with = "humantime_serde")]
    pub keepalive: Duration,
    /// How often a video's likes go to its viewers, as one `likes` event per viewer with the
    /// count since the last one. Longer: fewer writes per viewer under a flood of likes, staler
    /// counts. A comment always carries the likes before it, whatever this is.
    #[serde(with = "humantime_serde")]
    pub likes_every: Duration,
    /// A video's `viewers` event goes to its viewers at most this often (and only when the
    /// count changed).
    #[serde(with = "humantime_serde")]
    pub viewers_every: Duration,
    /// How often this frontend reports changed viewer counts to the other frontends (at
    /// most; nothing is sent when nothing changed).
    #[serde(with = "humantime_serde")]
    pub viewer_report_every: Duration,
    /// A report is sent at least this often, empty when nothing changed: three missed ones
    /// mark this frontend's counts as partial elsewhere.
    #[serde(with = "humantime_serde")]
    pub viewer_heartbeat: Duration,
    /// `retry:` hint sent to viewers: how long a browser waits before reconnecting.
    #[serde(with = "humantime_serde")]
    pub retry_hint: Duration,
    /// Comments a video may have queued for its slowest viewer before that viewer is cut off
    /// with a `disconnect` event (it resumes from its last event id). Likes never queue: a
    /// viewer that is behind gets them as one count.
    pub viewer_buffer: usize,
    /// Kernel send buffer of each viewer's socket, in bytes; bounds what a viewer that stops
    /// reading holds in the kernel (0: the kernel's autotuning, which lets it grow to
    /// megabytes).
    pub viewer_send_buffer: usize,
    /// Most comments one resume replays; a viewer further behind gets a `reset` event.
    pub max_replay: usize,
    /// Largest accepted publish body, in bytes.
    pub max_body_bytes: usize,
    /// Like requests waiting to be stored; beyond it publishers get 503.
    pub like_queue: usize,
    /// Group-commit passes of likes in flight to the origin stream at once (a pass stores
    /// one message per video, all at once). 1 lets groups grow with the load: while a pass is
    /// in flight, likes queue, and the next pass takes them all.
    pub like_commits_in_flight: usize,
    /// After SIGTERM: how long `/readyz` answers 503 while the frontend still serves.
    #[serde(with = "humantime_serde")]
    pub drain_grace: Duration,
    /// Then: the window over which viewer streams are ended in waves.
    #[serde(with = "humantime_serde")]
    pub drain_window: Duration,
    /// Trace export (`[telemetry] otlp_endpoint`); off unless an endpoint is set.
    pub telemetry: TelemetrySettings,
    /// Rate limits, connection caps, sizes and timeouts (`[limits]`).
    pub limits: LimitSettings,
    /// Who may publish and watch private videos (`[auth]`); on by default, so a config
    /// without keys must say `mode = "off"` to start.
    pub auth: AuthSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            name: "frontend".to_owned(),
            dc: "dc1".to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            nats: NatsSettings::default(),
            interest_ttl: Duration::from_secs(10),
            keepalive: Duration::from_secs(15),
            likes_every: Duration::from_millis(100),
            viewers_every: Duration::from_secs(1),
            viewer_report_every: Duration::from_millis(250),
            viewer_heartbeat: Duration::from_secs(1),
            retry_hint: Duration::from_secs(2),
            viewer_buffer: 1024,
            viewer_send_buffer: 256 * 1024,
            max_replay: 10_000,
            max_body_bytes: 16 * 1024,
            like_queue: 16_384,
            like_commits_in_flight: 1,
            drain_grace: Duration::from_secs(5),
            drain_window: Duration::from_secs(20),
            telemetry: TelemetrySettings::default(),
            limits: LimitSettings::default(),
            auth: AuthSettings::default(),
        }
    }
}

impl Settings {
    /// Checks what serde cannot; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        // Both become NATS subject tokens and stream names: nothing that could inject there.
        fanfare_model::names::check_name(&self.name).map_err(|error| format!("name: {error}"))?;
        fanfare_model::names::check_name(&self.dc).map_err(|error| format!("dc: {error}"))?;
        if self.interest_ttl < Duration::from_secs(1) {
            return Err("interest_ttl: must be at least 1s".to_owned());
        }
        if self.likes_every < Duration::from_millis(1) || self.likes_every > Duration::from_secs(10)
        {
            return Err("likes_every: must be 1ms to 10s".to_owned());
        }
        if self.viewers_every < Duration::from_millis(100)
            || self.viewer_report_every < Duration::from_millis(10)
            || self.viewer_heartbeat < Duration::from_millis(100)
        {
            return Err(
                "viewers_every, viewer_heartbeat: at least 100ms; viewer_report_every: at least 10ms"
                    .to_owned(),
            );
        }
        if self.viewer_heartbeat * 3 > self.interest_ttl {
            return Err("viewer_heartbeat: three of them must fit in interest_ttl".to_owned());
        }
        if self.keepalive < Duration::from_millis(100) {
            return Err("keepalive: must be at least 100ms".to_owned());
        }
        if self.viewer_buffer == 0 {
            return Err("viewer_buffer: must be at least 1".to_owned());
        }
        if (1..4096).contains(&self.viewer_send_buffer) {
            return Err(
                "viewer_send_buffer: must be 0 (kernel default) or at least 4096 bytes".to_owned(),
            );
        }
        if self.max_body_bytes < 64 {
            return Err("max_body_bytes: must be at least 64".to_owned());
        }
        if self.like_queue == 0 || self.like_commits_in_flight == 0 {
            return Err("like_queue and like_commits_in_flight: must be at least 1".to_owned());
        }
        if self.nats.urls.is_empty() {
            return Err("nats.urls: at least one url is required".to_owned());
        }
        self.limits.validate()?;
        if let Some(problem) = self.auth.check().first() {
            return Err(problem.to_string());
        }
        self.telemetry.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_inject_into_a_subject_are_refused() {
        let mut settings = Settings {
            auth: AuthSettings::off(),
            ..Settings::default()
        };
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

    #[test]
    fn a_config_without_keys_must_turn_auth_off_explicitly() {
        let settings = Settings::default();
        let problem = settings.validate().expect_err("auth on without keys");
        assert!(problem.starts_with("auth.keys: "), "{problem}");
        assert!(problem.contains("mode = \"off\""), "{problem}");
        let off = Settings {
            auth: AuthSettings::off(),
            ..Settings::default()
        };
        assert_eq!(off.validate(), Ok(()));
    }

    #[test]
    fn the_auth_section_parses_from_the_config_file() {
        let settings: Settings = toml::from_str(
            "[auth]\naudience = \"live\"\nleeway = \"10s\"\nprivate_videos = [\"vip-*\"]\n\
             [[auth.keys]]\nkid = \"k1\"\nalgorithm = \"EdDSA\"\npublic_key_file = \"/k.pem\"\n",
        )
        .expect("parses");
        assert!(settings.auth.is_on());
        assert_eq!(settings.auth.audience, "live");
        assert_eq!(settings.auth.leeway, Duration::from_secs(10));
        assert_eq!(settings.auth.keys[0].kid, "k1");
        assert_eq!(settings.validate(), Ok(()));
    }
}
