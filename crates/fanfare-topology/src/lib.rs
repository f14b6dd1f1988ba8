//! fanfare-topology describes where every process of a fanfare deployment
//! lives: the datacenters and, per datacenter, its NATS servers, dispatchers
//! and frontends with their addresses. Data flows one way: a topology file
//! (TOML, flat `[[datacenter]]`, `[[nats]]`, `[[dispatcher]]` and
//! `[[frontend]]` arrays whose nodes name their datacenter) is parsed into raw
//! records, validated as a whole (every problem is collected and reported with
//! its field path, not just the first), then grouped into a [`Topology`] tree
//! of [`Datacenter`]s. The rest of the workspace reads that tree: processes
//! look up their own node with [`Topology::node`] and their datacenter's NATS
//! URLs with [`Datacenter::client_urls`]; the supervisor writes one
//! nats-server config per server with [`Topology::render_nats_configs`]; tests
//! build topologies on free ports with [`TopologyBuilder`], write them back
//! with [`Topology::to_toml_string`] and publish [`Endpoints`] as JSON. The
//! crate has no async and no network code (the builder only binds port 0 on
//! loopback to find free ports).

mod builder;
mod endpoints;
mod error;
mod file;
mod net;
mod render;
mod security;

/// Test fixtures shared by the modules' tests.
#[cfg(test)]
pub(crate) mod fixtures {
    /// One valid datacenter (one of each node); tests append or replace parts of it.
    pub(crate) const ONE_DC: &str = r#"
[auth]
mode = "off"

[[datacenter]]
name = "dc1"

[[nats]]
name = "dc1-nats1"
dc = "dc1"
client_port = 4221
cluster_port = 6221
gateway_port = 7221
monitor_port = 8221

[[dispatcher]]
name = "dc1-disp1"
dc = "dc1"
admin = "127.0.0.1:9111"

[[frontend]]
name = "dc1-fe1"
dc = "dc1"
listen = "127.0.0.1:8111"
"#;
}

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

pub use builder::{DcShape, TopologyBuilder};
pub use endpoints::{
    DatacenterEndpoints, DispatcherEndpoint, Endpoints, FrontendEndpoint, NatsEndpoint,
};
pub use error::{Problem, TopologyError};
pub use render::{
    password_variable, route_list, route_urls, GatewayInternalPorts, RenderedNatsConfig,
    ROUTES_VARIABLE,
};
pub use security::{
    admin_permissions, client_users, dispatcher_permissions, frontend_permissions, inbox_prefix,
    ClientSecrets, NatsCredentials, NatsSecrets, NatsSecurity, Permissions, TlsFiles, ADMIN_USER,
    GATEWAY_USER, ROUTE_USER,
};

/// A validated topology: datacenters in file order, each holding its nodes in
/// file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Where the topology came from: a file path, `"<string>"` or `"<generated>"`.
    pub source: String,
    pub settings: Settings,
    /// `[auth]`: what every frontend authenticates with (on unless the file says
    /// `mode = "off"`; key file paths relative to the topology file's folder).
    pub auth: fanfare_auth::AuthSettings,
    pub datacenters: Vec<Datacenter>,
}

/// Deployment-wide tunables, the `[settings]` table. Every field has a default.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Dispatch partitions per datacenter (1..=64).
    pub partitions: u16,
    /// How long a frontend's interest entry lives without refresh (>= 1s).
    #[serde(with = "humantime_serde")]
    pub interest_ttl: Duration,
    /// nats-server top-level `ping_interval`, which bounds how fast a broken
    /// gateway is detected (1s..=60s).
    #[serde(with = "humantime_serde")]
    pub gateway_ping_interval: Duration,
    /// Max age of the per-datacenter origin streams (>= 1s).
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Stream replicas; 0 means `min(3, nats servers in the datacenter)`.
    /// Otherwise at most 5 and at most the number of servers in every
    /// datacenter.
    pub replicas: usize,
    /// Which limits (`[limits]` of the frontend config) `fanfare up` gives its frontends.
    pub frontend_limits: FrontendLimits,
    /// NATS security, the `[settings.nats]` table: users per role (on by default), where
    /// their passwords come from, TLS (off by default).
    pub nats: NatsSecurity,
    /// What every frontend of the topology is given, the `[settings.frontend]` table.
    pub frontend: FrontendSettings,
}

/// `[settings.frontend]`: how the frontends stop on SIGTERM. `fanfare up` hands these to every
/// frontend, and `fanfare deploy render` sizes the stop timeouts of the generated manifests
/// and units from them (grace + window + a margin).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FrontendSettings {
    /// After SIGTERM: how long `/readyz` answers 503 while the frontend still serves, so load
    /// balancers stop sending new viewers before streams end.
    #[serde(with = "humantime_serde")]
    pub drain_grace: Duration,
    /// Then: the window over which viewer streams are ended in waves, so reconnects spread.
    #[serde(with = "humantime_serde")]
    pub drain_window: Duration,
}

impl Default for FrontendSettings {
    fn default() -> Self {
        FrontendSettings {
            drain_grace: Duration::from_secs(5),
            drain_window: Duration::from_secs(20),
        }
    }
}

/// The limits profile of a topology's frontends (`[settings] frontend_limits`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FrontendLimits {
    /// The frontend config's own limits (production defaults unless the config sets others).
    #[default]
    Production,
    /// Rate limits off and connection caps out of reach, for local runs and benchmarks that
    /// publish from a few addresses as fast as they can.
    Unthrottled,
}

impl FrontendLimits {
    pub fn as_str(self) -> &'static str {
        match self {
            FrontendLimits::Production => "production",
            FrontendLimits::Unthrottled => "unthrottled",
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            partitions: 8,
            interest_ttl: Duration::from_secs(10),
            gateway_ping_interval: Duration::from_secs(2),
            retention: Duration::from_secs(24 * 3600),
            replicas: 0,
            frontend_limits: FrontendLimits::Production,
            nats: NatsSecurity::default(),
            frontend: FrontendSettings::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datacenter {
    pub name: String,
    pub nats: Vec<NatsServer>,
    pub dispatchers: Vec<DispatcherNode>,
    pub frontends: Vec<FrontendNode>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsServer {
    pub name: String,
    pub dc: String,
    /// Bind address of every listener of this server, also used to reach it
    /// (a wildcard address is dialed on loopback).
    pub host: String,
    pub client_port: u16,
    pub cluster_port: u16,
    pub gateway_port: u16,
    pub monitor_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatcherNode {
    pub name: String,
    pub dc: String,
    /// Health/metrics/debug listener.
    pub admin: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontendNode {
    pub name: String,
    pub dc: String,
    /// Listener for viewers and publishers.
    pub listen: SocketAddr,
}

/// Any node of the topology, as returned by [`Topology::node`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRef<'a> {
    Nats(&'a NatsServer),
    Dispatcher(&'a DispatcherNode),
    Frontend(&'a FrontendNode),
}

impl<'a> NodeRef<'a> {
    pub fn name(&self) -> &'a str {
        match self {
            NodeRef::Nats(n) => &n.name,
            NodeRef::Dispatcher(n) => &n.name,
            NodeRef::Frontend(n) => &n.name,
        }
    }

    pub fn dc(&self) -> &'a str {
        match self {
            NodeRef::Nats(n) => &n.dc,
            NodeRef::Dispatcher(n) => &n.dc,
            NodeRef::Frontend(n) => &n.dc,
        }
    }

    /// `"nats"`, `"dispatcher"` or `"frontend"`, as in the file's table names.
    pub fn kind(&self) -> &'static str {
        match self {
            NodeRef::Nats(_) => "nats",
            NodeRef::Dispatcher(_) => "dispatcher",
            NodeRef::Frontend(_) => "frontend",
        }
    }
}

impl Topology {
    /// Starts a [`TopologyBuilder`] (free loopback ports, generated names).
    pub fn builder() -> TopologyBuilder {
        TopologyBuilder::new()
    }

    /// Reads, parses and validates a topology file.
    pub fn load(path: &Path) -> Result<Topology, TopologyError> {
        let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut topology = Topology::from_toml_str(&text, &path.display().to_string())?;
        // Frontends run elsewhere (a run directory): their key files are named from here.
        let base = path.parent().unwrap_or(Path::new("."));
        let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
        topology.auth.resolve_paths(&base);
        Ok(topology)
    }

    /// Parses and validates topology text; `source` names it in errors.
    pub fn from_toml_str(text: &str, source: &str) -> Result<Topology, TopologyError> {
        let raw: file::RawFile = toml::from_str(text).map_err(|e| TopologyError::Parse {
            source_name: source.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        file::validate(raw, source)
    }

    pub fn datacenter(&self, name: &str) -> Option<&Datacenter> {
        self.datacenters.iter().find(|dc| dc.name == name)
    }

    /// Finds a node of any kind by name (node names are unique across kinds).
    pub fn node(&self, name: &str) -> Option<NodeRef<'_>> {
        self.nodes().find(|n| n.name() == name)
    }

    /// Every node, datacenter by datacenter: nats servers, then dispatchers,
    /// then frontends.
    pub fn nodes(&self) -> impl Iterator<Item = NodeRef<'_>> {
        self.datacenters.iter().flat_map(|dc| {
            dc.nats
                .iter()
                .map(NodeRef::Nats)
                .chain(dc.dispatchers.iter().map(NodeRef::Dispatcher))
                .chain(dc.frontends.iter().map(NodeRef::Frontend))
        })
    }

    /// The public endpoint listing (see [`Endpoints`] for the JSON shape).
    pub fn endpoints(&self) -> Endpoints {
        endpoints::of(self)
    }

    /// Writes the topology back in the flat file format; the result parses
    /// with [`Topology::from_toml_str`] into an equal topology.
    pub fn to_toml_string(&self) -> String {
        file::to_toml(self)
    }

    /// Writes `<out_dir>/<server>.conf` for every NATS server, with JetStream
    /// stores under `<store_root>/<server>` (made absolute), and returns the
    /// written files in topology order. Creates `out_dir` if needed. No
    /// authentication and no TLS: see [`Topology::render_nats_configs_secured`].
    pub fn render_nats_configs(
        &self,
        out_dir: &Path,
        store_root: &Path,
    ) -> Result<Vec<RenderedNatsConfig>, TopologyError> {
        render::render_all(
            self,
            out_dir,
            store_root,
            &GatewayInternalPorts::new(),
            &NatsSecrets::none(),
        )
    }

    /// Like [`Topology::render_nats_configs_behind_proxies`], with `secrets`' users,
    /// route and gateway credentials and TLS files in every config (written 0600 when
    /// they hold passwords).
    pub fn render_nats_configs_secured(
        &self,
        out_dir: &Path,
        store_root: &Path,
        internal_ports: &GatewayInternalPorts,
        secrets: &NatsSecrets,
    ) -> Result<Vec<RenderedNatsConfig>, TopologyError> {
        render::render_all(self, out_dir, store_root, internal_ports, secrets)
    }

    /// Like [`Topology::render_nats_configs_secured`] for a deployment: the configs hold no
    /// password but references to environment variables ([`password_variable`] per user,
    /// [`ROUTES_VARIABLE`] for the route URLs), so they can be generated once and checked in;
    /// TLS files are named in `tls`'s directory when given.
    pub fn render_nats_configs_with_variables(
        &self,
        out_dir: &Path,
        store_root: &Path,
        tls: Option<&TlsFiles>,
    ) -> Result<Vec<RenderedNatsConfig>, TopologyError> {
        let passwords = if self.settings.nats.auth {
            render::Passwords::Variables
        } else {
            render::Passwords::Off
        };
        render::render_with(
            self,
            out_dir,
            store_root,
            &GatewayInternalPorts::new(),
            passwords,
            tls,
        )
    }

    /// Like [`Topology::render_nats_configs`], for servers whose gateway port is owned by a
    /// link proxy (`fanfare up`'s chaos links): each listed server listens on its internal port
    /// and advertises the topology's `gateway_port`.
    pub fn render_nats_configs_behind_proxies(
        &self,
        out_dir: &Path,
        store_root: &Path,
        internal_ports: &GatewayInternalPorts,
    ) -> Result<Vec<RenderedNatsConfig>, TopologyError> {
        render::render_all(
            self,
            out_dir,
            store_root,
            internal_ports,
            &NatsSecrets::none(),
        )
    }
}

impl Datacenter {
    /// `nats://host:client_port` of every NATS server in this datacenter.
    pub fn client_urls(&self) -> Vec<String> {
        self.nats.iter().map(NatsServer::client_url).collect()
    }

    /// Replicas for this datacenter's streams: the explicit setting, or
    /// `min(3, servers)` when the setting is 0 (never less than 1).
    pub fn effective_replicas(&self, settings: &Settings) -> usize {
        if settings.replicas == 0 {
            self.nats.len().clamp(1, 3)
        } else {
            settings.replicas
        }
    }
}

impl NatsServer {
    /// `nats://host:client_port`.
    pub fn client_url(&self) -> String {
        format!(
            "nats://{}",
            net::host_port(&net::connect_host(&self.host), self.client_port)
        )
    }

    /// `http://host:monitor_port`.
    pub fn monitor_url(&self) -> String {
        format!(
            "http://{}",
            net::host_port(&net::connect_host(&self.host), self.monitor_port)
        )
    }
}

impl DispatcherNode {
    /// `http://admin`, for health, metrics and debug requests.
    pub fn admin_url(&self) -> String {
        format!("http://{}", net::connect_addr(self.admin))
    }
}

impl FrontendNode {
    /// `http://listen`, e.g. `http://127.0.0.1:8111`.
    pub fn url(&self) -> String {
        format!("http://{}", net::connect_addr(self.listen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Topology {
        // A wildcard listener: URLs must still name a dialable address.
        let text = crate::fixtures::ONE_DC.replace("127.0.0.1:8111", "0.0.0.0:8111");
        Topology::from_toml_str(&text, "<string>").expect("valid topology")
    }

    #[test]
    fn settings_default_when_table_is_absent() {
        let t = small();
        assert_eq!(t.settings, Settings::default());
        assert_eq!(t.settings.partitions, 8);
        assert_eq!(t.settings.interest_ttl, Duration::from_secs(10));
        assert_eq!(t.settings.gateway_ping_interval, Duration::from_secs(2));
        assert_eq!(t.settings.retention, Duration::from_secs(86_400));
        assert_eq!(t.settings.replicas, 0);
        assert_eq!(t.source, "<string>");
    }

    #[test]
    fn node_lookup_finds_every_kind_by_name() {
        let t = small();
        assert!(matches!(t.node("dc1-nats1"), Some(NodeRef::Nats(_))));
        assert!(matches!(t.node("dc1-disp1"), Some(NodeRef::Dispatcher(_))));
        let fe = t.node("dc1-fe1").expect("frontend");
        assert_eq!(fe.kind(), "frontend");
        assert_eq!(fe.dc(), "dc1");
        assert!(t.node("dc1-fe9").is_none());
        assert!(t.datacenter("dc1").is_some());
        assert!(t.datacenter("dc2").is_none());
        assert_eq!(t.nodes().count(), 3);
    }

    #[test]
    fn urls_use_loopback_for_wildcard_listeners() {
        let t = small();
        let dc = t.datacenter("dc1").expect("dc1");
        assert_eq!(dc.client_urls(), vec!["nats://127.0.0.1:4221".to_owned()]);
        assert_eq!(dc.nats[0].monitor_url(), "http://127.0.0.1:8221");
        assert_eq!(dc.frontends[0].url(), "http://127.0.0.1:8111");
        assert_eq!(dc.dispatchers[0].admin_url(), "http://127.0.0.1:9111");
    }

    #[test]
    fn effective_replicas_defaults_to_min_of_three_and_server_count() {
        let t = small();
        let mut dc = t.datacenters[0].clone();
        let mut s = Settings::default();
        assert_eq!(dc.effective_replicas(&s), 1);
        for i in 2..=5 {
            let mut n = dc.nats[0].clone();
            n.name = format!("dc1-nats{i}");
            dc.nats.push(n);
        }
        assert_eq!(dc.effective_replicas(&s), 3);
        s.replicas = 5;
        assert_eq!(dc.effective_replicas(&s), 5);
    }

    #[test]
    fn load_reports_missing_file_as_read_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("missing.toml");
        match Topology::load(&path) {
            Err(TopologyError::Read { path: p, .. }) => assert_eq!(p, path),
            other => panic!("expected read error, got {other:?}"),
        }
    }

    #[test]
    fn load_makes_key_files_relative_to_the_topology_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.toml");
        let text = crate::fixtures::ONE_DC.replace(
            "[auth]\nmode = \"off\"",
            "[auth]\n[[auth.keys]]\nkid = \"k1\"\nalgorithm = \"HS256\"\nsecret_file = \"keys/k1\"",
        );
        std::fs::write(&path, text).expect("write");
        let t = Topology::load(&path).expect("load");
        assert!(t.auth.is_on());
        let secret = t.auth.keys[0].secret_file.clone().expect("a secret file");
        assert!(secret.is_absolute(), "{}", secret.display());
        assert!(secret.ends_with("keys/k1"), "{}", secret.display());
    }

    #[test]
    fn a_file_without_auth_must_configure_keys_or_turn_auth_off() {
        let text = crate::fixtures::ONE_DC.replace("[auth]\nmode = \"off\"", "");
        let err = Topology::from_toml_str(&text, "t.toml").expect_err("auth on without keys");
        let msg = err.to_string();
        assert!(
            msg.contains("t.toml: auth.keys: authentication is on"),
            "{msg}"
        );
        assert!(msg.contains("mode = \"off\""), "{msg}");
    }

    #[test]
    fn load_uses_the_path_as_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.toml");
        std::fs::write(&path, crate::fixtures::ONE_DC).expect("write");
        let t = Topology::load(&path).expect("load");
        assert_eq!(t.source, path.display().to_string());
    }

    fn shipped(name: &str) -> Topology {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../topology")
            .join(name);
        Topology::load(&path).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn shipped_local_3dc_has_three_dcs_with_one_nats_two_dispatchers_two_frontends() {
        let t = shipped("local-3dc.toml");
        assert!(
            !t.auth.is_on(),
            "the local topology runs with auth off, explicitly"
        );
        let names: Vec<_> = t.datacenters.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["dc1", "dc2", "dc3"]);
        for (i, dc) in t.datacenters.iter().enumerate() {
            let d = i + 1;
            assert_eq!(dc.nats.len(), 1);
            assert_eq!(dc.dispatchers.len(), 2);
            assert_eq!(dc.frontends.len(), 2);
            let n = &dc.nats[0];
            assert_eq!(n.name, format!("dc{d}-nats1"));
            assert_eq!(n.host, "127.0.0.1");
            assert_eq!(n.client_port, 4220 + d as u16);
            assert_eq!(n.cluster_port, 6220 + d as u16);
            assert_eq!(n.gateway_port, 7220 + d as u16);
            assert_eq!(n.monitor_port, 8220 + d as u16);
            for k in 1..=2 {
                let disp = &dc.dispatchers[k - 1];
                assert_eq!(disp.name, format!("dc{d}-disp{k}"));
                assert_eq!(disp.admin.to_string(), format!("127.0.0.1:91{d}{k}"));
                let fe = &dc.frontends[k - 1];
                assert_eq!(fe.name, format!("dc{d}-fe{k}"));
                assert_eq!(fe.url(), format!("http://127.0.0.1:81{d}{k}"));
            }
            assert_eq!(dc.effective_replicas(&t.settings), 1);
        }
    }

    #[test]
    fn shipped_local_3dc_ha_has_three_nats_servers_per_dc_and_replicas_three() {
        let t = shipped("local-3dc-ha.toml");
        assert!(!t.auth.is_on());
        assert_eq!(t.datacenters.len(), 3);
        assert_eq!(t.settings.replicas, 0);
        for (i, dc) in t.datacenters.iter().enumerate() {
            let d = i + 1;
            assert_eq!(dc.nats.len(), 3);
            assert_eq!(dc.dispatchers.len(), 2);
            assert_eq!(dc.frontends.len(), 2);
            for (k, n) in dc.nats.iter().enumerate() {
                let k = k + 1;
                assert_eq!(n.name, format!("dc{d}-nats{k}"));
                assert_eq!(n.client_url(), format!("nats://127.0.0.1:42{d}{k}"));
                assert_eq!(n.cluster_port.to_string(), format!("62{d}{k}"));
                assert_eq!(n.gateway_port.to_string(), format!("72{d}{k}"));
                assert_eq!(n.monitor_url(), format!("http://127.0.0.1:82{d}{k}"));
            }
            assert_eq!(dc.effective_replicas(&t.settings), 3);
        }
    }
}
