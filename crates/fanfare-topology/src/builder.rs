//! Builds topologies on free loopback ports, for tests and tools that start a
//! whole deployment on one machine.

use std::collections::HashSet;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use crate::file::{RawDatacenter, RawDispatcher, RawFile, RawFrontend, RawNats};
use crate::{Settings, Topology, TopologyError};

/// Source name of built topologies.
pub(crate) const GENERATED_SOURCE: &str = "<generated>";

/// How many nodes of each kind a generated datacenter gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DcShape {
    pub nats: usize,
    pub dispatchers: usize,
    pub frontends: usize,
}

/// `Topology::builder().dc("dc1", shape).dc(..).settings(..).build_with_free_ports()`.
/// Nodes are named `<dc>-nats<n>`, `<dc>-disp<n>` and `<dc>-fe<n>` (from 1)
/// and listen on 127.0.0.1.
#[derive(Debug, Clone, Default)]
pub struct TopologyBuilder {
    dcs: Vec<(String, DcShape)>,
    settings: Settings,
    auth: fanfare_auth::AuthSettings,
}

impl TopologyBuilder {
    pub fn new() -> Self {
        TopologyBuilder::default()
    }

    /// Adds a datacenter (in order).
    pub fn dc(mut self, name: impl Into<String>, shape: DcShape) -> Self {
        self.dcs.push((name.into(), shape));
        self
    }

    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    /// Authentication of every frontend. The default is on, which needs keys: a caller
    /// without keys says `AuthSettings::off()` explicitly.
    pub fn auth(mut self, auth: fanfare_auth::AuthSettings) -> Self {
        self.auth = auth;
        self
    }

    /// Reserves one distinct free port per listener by binding 127.0.0.1:0
    /// (all reservations are held until every port is chosen, then released),
    /// and returns the validated topology with source `"<generated>"`.
    /// Another process may still grab a port between this call and the
    /// moment the node binds it.
    pub fn build_with_free_ports(self) -> Result<Topology, TopologyError> {
        let mut ports = PortReserver::default();
        self.build_with(|| ports.next())
    }

    /// Assigns ports counting up from `first`, skipping any that cannot be bound right now.
    /// For callers that own a block of ports (tests holding a lock on one), where picking
    /// from the kernel's ephemeral range could race with a parallel test.
    pub fn build_with_ports_from(self, first: u16) -> Result<Topology, TopologyError> {
        let mut next = first;
        self.build_with(|| loop {
            let port = next;
            next = next
                .checked_add(1)
                .ok_or_else(|| TopologyError::PortReservation {
                    source: std::io::Error::new(
                        std::io::ErrorKind::AddrNotAvailable,
                        "port range exhausted",
                    ),
                })?;
            if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return Ok(port);
            }
        })
    }

    fn build_with(
        self,
        mut next_port: impl FnMut() -> Result<u16, TopologyError>,
    ) -> Result<Topology, TopologyError> {
        let mut raw = RawFile {
            settings: self.settings,
            auth: self.auth,
            ..RawFile::default()
        };
        let loopback = Ipv4Addr::LOCALHOST;
        for (dc, shape) in self.dcs {
            for n in 1..=shape.nats {
                raw.nats.push(RawNats {
                    name: format!("{dc}-nats{n}"),
                    dc: dc.clone(),
                    host: loopback.to_string(),
                    client_port: next_port()?,
                    cluster_port: next_port()?,
                    gateway_port: next_port()?,
                    monitor_port: next_port()?,
                });
            }
            for n in 1..=shape.dispatchers {
                raw.dispatcher.push(RawDispatcher {
                    name: format!("{dc}-disp{n}"),
                    dc: dc.clone(),
                    admin: SocketAddr::from((loopback, next_port()?)).to_string(),
                });
            }
            for n in 1..=shape.frontends {
                raw.frontend.push(RawFrontend {
                    name: format!("{dc}-fe{n}"),
                    dc: dc.clone(),
                    listen: SocketAddr::from((loopback, next_port()?)).to_string(),
                });
            }
            raw.datacenter.push(RawDatacenter { name: dc });
        }
        crate::file::validate(raw, GENERATED_SOURCE)
    }
}

/// Holds bound listeners so the OS cannot hand the same port out twice.
#[derive(Default)]
struct PortReserver {
    held: Vec<TcpListener>,
    seen: HashSet<u16>,
}

impl PortReserver {
    const MAX_ATTEMPTS: usize = 64;

    fn next(&mut self) -> Result<u16, TopologyError> {
        for _ in 0..Self::MAX_ATTEMPTS {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .map_err(|source| TopologyError::PortReservation { source })?;
            let port = listener
                .local_addr()
                .map_err(|source| TopologyError::PortReservation { source })?
                .port();
            self.held.push(listener);
            if self.seen.insert(port) {
                return Ok(port);
            }
        }
        Err(TopologyError::PortReservation {
            source: io::Error::new(
                io::ErrorKind::AddrInUse,
                "the os kept returning ports already reserved",
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn shape(nats: usize, dispatchers: usize, frontends: usize) -> DcShape {
        DcShape {
            nats,
            dispatchers,
            frontends,
        }
    }

    #[test]
    fn builder_names_nodes_after_their_datacenter_and_kind() {
        let t = Topology::builder()
            .auth(fanfare_auth::AuthSettings::off())
            .dc("dc1", shape(1, 2, 2))
            .dc("dc2", shape(3, 1, 1))
            .build_with_free_ports()
            .expect("build");
        assert_eq!(t.source, "<generated>");
        let names: Vec<&str> = t.nodes().map(|n| n.name()).collect();
        assert_eq!(
            names,
            [
                "dc1-nats1",
                "dc1-disp1",
                "dc1-disp2",
                "dc1-fe1",
                "dc1-fe2",
                "dc2-nats1",
                "dc2-nats2",
                "dc2-nats3",
                "dc2-disp1",
                "dc2-fe1"
            ]
        );
        assert_eq!(
            t.datacenter("dc2")
                .expect("dc2")
                .effective_replicas(&t.settings),
            3
        );
    }

    #[test]
    fn builder_assigns_distinct_bindable_loopback_ports() {
        let t = Topology::builder()
            .auth(fanfare_auth::AuthSettings::off())
            .dc("dc1", shape(3, 2, 2))
            .dc("dc2", shape(3, 2, 2))
            .build_with_free_ports()
            .expect("build");
        let mut ports = Vec::new();
        for dc in &t.datacenters {
            for n in &dc.nats {
                assert_eq!(n.host, "127.0.0.1");
                ports.extend([
                    n.client_port,
                    n.cluster_port,
                    n.gateway_port,
                    n.monitor_port,
                ]);
            }
            ports.extend(dc.dispatchers.iter().map(|d| d.admin.port()));
            ports.extend(dc.frontends.iter().map(|f| f.listen.port()));
        }
        assert_eq!(ports.len(), 2 * (3 * 4 + 2 + 2));
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
        // reservations are released on return
        let bound: Vec<TcpListener> = ports
            .iter()
            .map(|p| TcpListener::bind((Ipv4Addr::LOCALHOST, *p)).expect("port is free"))
            .collect();
        assert_eq!(bound.len(), ports.len());
    }

    #[test]
    fn builder_keeps_settings_and_round_trips_through_toml() {
        let settings = Settings {
            partitions: 4,
            interest_ttl: Duration::from_secs(3),
            frontend_limits: crate::FrontendLimits::Unthrottled,
            ..Settings::default()
        };
        let t = Topology::builder()
            .dc("dc1", shape(1, 1, 1))
            .settings(settings.clone())
            .auth(fanfare_auth::AuthSettings::off())
            .build_with_free_ports()
            .expect("build");
        assert_eq!(t.settings, settings);
        let back = Topology::from_toml_str(&t.to_toml_string(), "<string>").expect("reparse");
        assert_eq!(back.datacenters, t.datacenters);
        assert_eq!(back.settings, t.settings);
        assert_eq!(back.auth, t.auth);
    }

    #[test]
    fn builder_writes_its_auth_keys_into_the_toml() {
        let auth = fanfare_auth::AuthSettings {
            private_videos: vec!["vip-*".to_owned()],
            keys: vec![fanfare_auth::KeySettings::hs256_file("k1", "/keys/k1")],
            ..fanfare_auth::AuthSettings::default()
        };
        let t = Topology::builder()
            .dc("dc1", shape(1, 1, 1))
            .auth(auth.clone())
            .build_with_free_ports()
            .expect("build");
        let text = t.to_toml_string();
        assert!(text.contains("[[auth.keys]]"), "{text}");
        let back = Topology::from_toml_str(&text, "<string>").expect("reparse");
        assert_eq!(back.auth, auth);
    }

    #[test]
    fn builder_validates_its_result() {
        let err = Topology::builder()
            .dc("dc1", shape(0, 1, 1))
            .dc("Bad", shape(1, 1, 1))
            .build_with_free_ports()
            .expect_err("invalid");
        let msg = err.to_string();
        assert!(
            msg.contains("<generated>: datacenter[0]: datacenter \"dc1\" has no [[nats]] server"),
            "{msg}"
        );
        assert!(
            msg.contains("<generated>: datacenter[1].name: invalid name \"Bad\""),
            "{msg}"
        );
    }

    #[test]
    fn builder_without_datacenters_is_invalid() {
        let err = Topology::builder()
            .build_with_free_ports()
            .expect_err("invalid");
        assert!(matches!(err, TopologyError::Invalid { .. }), "{err:?}");
    }
}
