//! The flat file format: raw records as they appear in the TOML, the
//! validation that turns them into a [`Topology`], and the writer that turns a
//! [`Topology`] back into text.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::net::{self, HostKey};
use crate::{
    Datacenter, DispatcherNode, FrontendNode, NatsServer, Problem, Settings, Topology,
    TopologyError,
};

pub(crate) const MAX_PARTITIONS: u16 = 64;
/// JetStream refuses streams with more replicas than this.
pub(crate) const MAX_REPLICAS: usize = 5;
/// Names become NATS subject tokens, stream and bucket names: the rule is the wire model's.
const NAME_PATTERN: &str = fanfare_model::names::NAME_PATTERN;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFile {
    #[serde(default)]
    pub(crate) settings: Settings,
    #[serde(default)]
    pub(crate) datacenter: Vec<RawDatacenter>,
    #[serde(default)]
    pub(crate) nats: Vec<RawNats>,
    #[serde(default)]
    pub(crate) dispatcher: Vec<RawDispatcher>,
    #[serde(default)]
    pub(crate) frontend: Vec<RawFrontend>,
    /// Authentication every frontend runs with; on (and so needing keys) unless the file
    /// says `[auth] mode = "off"`.
    #[serde(default)]
    pub(crate) auth: fanfare_auth::AuthSettings,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDatacenter {
    pub(crate) name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNats {
    pub(crate) name: String,
    pub(crate) dc: String,
    #[serde(default = "default_host")]
    pub(crate) host: String,
    pub(crate) client_port: u16,
    pub(crate) cluster_port: u16,
    pub(crate) gateway_port: u16,
    pub(crate) monitor_port: u16,
}

/// Addresses are kept as strings here so that a bad one becomes a located
/// [`Problem`] collected with the others instead of stopping the parse.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDispatcher {
    pub(crate) name: String,
    pub(crate) dc: String,
    pub(crate) admin: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFrontend {
    pub(crate) name: String,
    pub(crate) dc: String,
    pub(crate) listen: String,
}

fn default_host() -> String {
    "127.0.0.1".to_owned()
}

fn is_valid_name(name: &str) -> bool {
    fanfare_model::names::is_valid_name(name)
}

fn check_name(field: &str, name: &str, problems: &mut Vec<Problem>) {
    if !is_valid_name(name) {
        problems.push(Problem::new(
            field,
            format!("invalid name {name:?}: must match {NAME_PATTERN}"),
        ));
    }
}

fn check_settings(s: &Settings, problems: &mut Vec<Problem>) {
    if !(1..=MAX_PARTITIONS).contains(&s.partitions) {
        problems.push(Problem::new(
            "settings.partitions",
            format!(
                "must be between 1 and {MAX_PARTITIONS}, got {}",
                s.partitions
            ),
        ));
    }
    let second = Duration::from_secs(1);
    if s.interest_ttl < second {
        problems.push(Problem::new(
            "settings.interest_ttl",
            format!(
                "must be at least 1s, got {}",
                net::format_duration(s.interest_ttl)
            ),
        ));
    }
    if !(second..=Duration::from_secs(60)).contains(&s.gateway_ping_interval) {
        problems.push(Problem::new(
            "settings.gateway_ping_interval",
            format!(
                "must be between 1s and 60s, got {}",
                net::format_duration(s.gateway_ping_interval)
            ),
        ));
    }
    if s.retention < second {
        problems.push(Problem::new(
            "settings.retention",
            format!(
                "must be at least 1s, got {}",
                net::format_duration(s.retention)
            ),
        ));
    }
    if s.frontend.drain_window.is_zero() {
        problems.push(Problem::new(
            "settings.frontend.drain_window",
            "must be more than 0s",
        ));
    }
    if s.replicas > MAX_REPLICAS {
        problems.push(Problem::new(
            "settings.replicas",
            format!(
                "must be at most {MAX_REPLICAS} (jetstream limit), got {}",
                s.replicas
            ),
        ));
    }
}

/// A listening socket, remembered to detect two owners of one port.
struct Listener {
    owner: String,
    field: String,
    host: HostKey,
}

#[derive(Default)]
struct Listeners {
    by_port: HashMap<u16, Vec<Listener>>,
}

impl Listeners {
    fn add(
        &mut self,
        owner: &str,
        field: String,
        host: HostKey,
        port: u16,
        problems: &mut Vec<Problem>,
    ) {
        if port == 0 {
            problems.push(Problem::new(field, "port 0 is not allowed"));
            return;
        }
        let same_port = self.by_port.entry(port).or_default();
        if let Some(prev) = same_port.iter().find(|l| l.host.clashes_with(&host)) {
            problems.push(Problem::new(
                field,
                format!(
                    "port {port} already used by {} ({})",
                    prev.owner, prev.field
                ),
            ));
            return;
        }
        same_port.push(Listener {
            owner: owner.to_owned(),
            field,
            host,
        });
    }
}

fn parse_addr(field: &str, text: &str, problems: &mut Vec<Problem>) -> Option<SocketAddr> {
    match text.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            problems.push(Problem::new(
                field,
                format!("invalid socket address {text:?}: expected ip:port, e.g. 127.0.0.1:8111"),
            ));
            None
        }
    }
}

/// Checks every rule, collecting all problems, and builds the topology tree.
pub(crate) fn validate(raw: RawFile, source: &str) -> Result<Topology, TopologyError> {
    let mut problems = Vec::new();
    check_settings(&raw.settings, &mut problems);
    for problem in raw.auth.check() {
        problems.push(Problem::new(
            format!("auth.{}", problem.field),
            problem.message,
        ));
    }

    // Datacenters: name -> index of first definition.
    if raw.datacenter.is_empty() {
        problems.push(Problem::new(
            "datacenter",
            "no datacenter defined: add at least one [[datacenter]]",
        ));
    }
    let mut dc_index: HashMap<&str, usize> = HashMap::new();
    for (i, dc) in raw.datacenter.iter().enumerate() {
        let field = format!("datacenter[{i}].name");
        check_name(&field, &dc.name, &mut problems);
        match dc_index.entry(dc.name.as_str()) {
            Entry::Occupied(first) => problems.push(Problem::new(
                field,
                format!(
                    "duplicate datacenter name {:?} (already defined by datacenter[{}])",
                    dc.name,
                    first.get()
                ),
            )),
            Entry::Vacant(slot) => {
                slot.insert(i);
            }
        }
    }

    // Nodes of every kind: names, uniqueness across kinds, datacenter refs.
    let node_refs = raw
        .nats
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("nats[{i}]"), &n.name, &n.dc))
        .chain(
            raw.dispatcher
                .iter()
                .enumerate()
                .map(|(i, n)| (format!("dispatcher[{i}]"), &n.name, &n.dc)),
        )
        .chain(
            raw.frontend
                .iter()
                .enumerate()
                .map(|(i, n)| (format!("frontend[{i}]"), &n.name, &n.dc)),
        )
        .collect::<Vec<_>>();
    let mut node_names: HashMap<&str, &str> = HashMap::new();
    for (label, name, dc) in &node_refs {
        let field = format!("{label}.name");
        check_name(&field, name, &mut problems);
        match node_names.entry(name.as_str()) {
            Entry::Occupied(first) => problems.push(Problem::new(
                field,
                format!(
                    "duplicate node name {name:?} (already used by {})",
                    first.get()
                ),
            )),
            Entry::Vacant(slot) => {
                slot.insert(label.as_str());
            }
        }
        if !dc_index.contains_key(dc.as_str()) {
            problems.push(Problem::new(
                format!("{label}.dc"),
                format!("unknown datacenter {dc:?}"),
            ));
        }
    }

    // Listeners: no port 0, no two owners of one host+port.
    let mut listeners = Listeners::default();
    for (i, n) in raw.nats.iter().enumerate() {
        if !net::is_valid_host(&n.host) {
            problems.push(Problem::new(
                format!("nats[{i}].host"),
                format!(
                    "invalid host {:?}: expected an ip address or a dns name",
                    n.host
                ),
            ));
        }
        let host = HostKey::of_host(&n.host);
        for (key, port) in [
            ("client_port", n.client_port),
            ("cluster_port", n.cluster_port),
            ("gateway_port", n.gateway_port),
            ("monitor_port", n.monitor_port),
        ] {
            let field = format!("nats[{i}].{key}");
            listeners.add(&n.name, field, host.clone(), port, &mut problems);
        }
    }
    let mut admins = Vec::with_capacity(raw.dispatcher.len());
    for (i, d) in raw.dispatcher.iter().enumerate() {
        let field = format!("dispatcher[{i}].admin");
        let addr = parse_addr(&field, &d.admin, &mut problems);
        if let Some(addr) = addr {
            let host = HostKey::of_ip(addr.ip());
            listeners.add(&d.name, field, host, addr.port(), &mut problems);
        }
        admins.push(addr);
    }
    let mut listens = Vec::with_capacity(raw.frontend.len());
    for (i, f) in raw.frontend.iter().enumerate() {
        let field = format!("frontend[{i}].listen");
        let addr = parse_addr(&field, &f.listen, &mut problems);
        if let Some(addr) = addr {
            let host = HostKey::of_ip(addr.ip());
            listeners.add(&f.name, field, host, addr.port(), &mut problems);
        }
        listens.push(addr);
    }

    // Per datacenter: at least one node of each kind, enough servers for replicas.
    for (i, dc) in raw.datacenter.iter().enumerate() {
        if dc_index.get(dc.name.as_str()) != Some(&i) {
            continue; // duplicate, already reported
        }
        let nats = raw.nats.iter().filter(|n| n.dc == dc.name).count();
        let dispatchers = raw.dispatcher.iter().filter(|n| n.dc == dc.name).count();
        let frontends = raw.frontend.iter().filter(|n| n.dc == dc.name).count();
        for (count, what) in [
            (nats, "[[nats]] server"),
            (dispatchers, "[[dispatcher]]"),
            (frontends, "[[frontend]]"),
        ] {
            if count == 0 {
                problems.push(Problem::new(
                    format!("datacenter[{i}]"),
                    format!("datacenter {:?} has no {what}", dc.name),
                ));
            }
        }
        let replicas = raw.settings.replicas;
        if nats > 0 && replicas > nats {
            problems.push(Problem::new(
                "settings.replicas",
                format!(
                    "replicas = {replicas} but datacenter {:?} has only {nats} nats server(s)",
                    dc.name
                ),
            ));
        }
    }

    if !problems.is_empty() {
        return Err(TopologyError::Invalid {
            source_name: source.to_owned(),
            problems,
        });
    }

    // Valid: group nodes under their datacenter, keeping file order.
    let mut datacenters: Vec<Datacenter> = raw
        .datacenter
        .into_iter()
        .map(|dc| Datacenter {
            name: dc.name,
            nats: Vec::new(),
            dispatchers: Vec::new(),
            frontends: Vec::new(),
        })
        .collect();
    let slot = |dc: &str, datacenters: &[Datacenter]| datacenters.iter().position(|d| d.name == dc);
    for n in raw.nats {
        if let Some(i) = slot(&n.dc, &datacenters) {
            datacenters[i].nats.push(NatsServer {
                name: n.name,
                dc: n.dc,
                host: n.host,
                client_port: n.client_port,
                cluster_port: n.cluster_port,
                gateway_port: n.gateway_port,
                monitor_port: n.monitor_port,
            });
        }
    }
    for (d, admin) in raw.dispatcher.into_iter().zip(admins) {
        if let (Some(i), Some(admin)) = (slot(&d.dc, &datacenters), admin) {
            datacenters[i].dispatchers.push(DispatcherNode {
                name: d.name,
                dc: d.dc,
                admin,
            });
        }
    }
    for (f, listen) in raw.frontend.into_iter().zip(listens) {
        if let (Some(i), Some(listen)) = (slot(&f.dc, &datacenters), listen) {
            datacenters[i].frontends.push(FrontendNode {
                name: f.name,
                dc: f.dc,
                listen,
            });
        }
    }

    Ok(Topology {
        source: source.to_owned(),
        settings: raw.settings,
        auth: raw.auth,
        datacenters,
    })
}

/// Writes the flat file format. `writeln!` into a `String` cannot fail, so
/// its results are ignored.
pub(crate) fn to_toml(t: &Topology) -> String {
    let q = net::toml_quote;
    let d = |v: Duration| q(&net::format_duration(v));
    let s = &t.settings;
    let mut out = String::new();
    let _ = writeln!(out, "# fanfare topology, written by fanfare-topology");
    let _ = writeln!(out);
    let _ = writeln!(out, "[settings]");
    let _ = writeln!(out, "partitions = {}", s.partitions);
    let _ = writeln!(out, "interest_ttl = {}", d(s.interest_ttl));
    let _ = writeln!(
        out,
        "gateway_ping_interval = {}",
        d(s.gateway_ping_interval)
    );
    let _ = writeln!(out, "retention = {}", d(s.retention));
    let _ = writeln!(out, "replicas = {}", s.replicas);
    let _ = writeln!(out, "frontend_limits = {}", q(s.frontend_limits.as_str()));
    let _ = writeln!(out, "\n[settings.nats]");
    let _ = writeln!(out, "auth = {}", s.nats.auth);
    if let Some(dir) = &s.nats.credentials_dir {
        let _ = writeln!(out, "credentials_dir = {}", q(&dir.display().to_string()));
    }
    let _ = writeln!(out, "tls = {}", s.nats.tls);
    let _ = writeln!(out, "\n[settings.frontend]");
    let _ = writeln!(out, "drain_grace = {}", d(s.frontend.drain_grace));
    let _ = writeln!(out, "drain_window = {}", d(s.frontend.drain_window));
    // The [auth] table (with its [[auth.keys]]) as serde writes it.
    #[derive(serde::Serialize)]
    struct AuthTable<'a> {
        auth: &'a fanfare_auth::AuthSettings,
    }
    if let Ok(auth) = toml::to_string(&AuthTable { auth: &t.auth }) {
        let _ = write!(out, "\n{auth}");
    }
    for dc in &t.datacenters {
        let _ = writeln!(out, "\n[[datacenter]]\nname = {}", q(&dc.name));
    }
    for n in t.datacenters.iter().flat_map(|dc| &dc.nats) {
        let _ = writeln!(
            out,
            "\n[[nats]]\nname = {}\ndc = {}\nhost = {}\nclient_port = {}\ncluster_port = {}\ngateway_port = {}\nmonitor_port = {}",
            q(&n.name),
            q(&n.dc),
            q(&n.host),
            n.client_port,
            n.cluster_port,
            n.gateway_port,
            n.monitor_port
        );
    }
    for n in t.datacenters.iter().flat_map(|dc| &dc.dispatchers) {
        let _ = writeln!(
            out,
            "\n[[dispatcher]]\nname = {}\ndc = {}\nadmin = {}",
            q(&n.name),
            q(&n.dc),
            q(&n.admin.to_string())
        );
    }
    for n in t.datacenters.iter().flat_map(|dc| &dc.frontends) {
        let _ = writeln!(
            out,
            "\n[[frontend]]\nname = {}\ndc = {}\nlisten = {}",
            q(&n.name),
            q(&n.dc),
            q(&n.listen.to_string())
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::fixtures::ONE_DC as DC1;

    fn problems(text: &str) -> Vec<Problem> {
        match Topology::from_toml_str(text, "t.toml") {
            Err(TopologyError::Invalid {
                source_name,
                problems,
            }) => {
                assert_eq!(source_name, "t.toml");
                problems
            }
            other => panic!("expected invalid topology, got {other:?}"),
        }
    }

    fn has(problems: &[Problem], field: &str, message: &str) -> bool {
        problems
            .iter()
            .any(|p| p.field == field && p.message.contains(message))
    }

    fn assert_has(problems: &[Problem], field: &str, message: &str) {
        assert!(
            has(problems, field, message),
            "no problem {field}: ...{message}... in {problems:#?}"
        );
    }

    #[test]
    fn minimal_valid_file_parses() {
        let t = Topology::from_toml_str(DC1, "t.toml").expect("valid");
        assert_eq!(t.datacenters.len(), 1);
        assert_eq!(t.datacenters[0].nats[0].host, "127.0.0.1");
    }

    #[test]
    fn empty_file_is_rejected_for_having_no_datacenter() {
        let p = problems("");
        assert_has(&p, "datacenter", "no datacenter");
    }

    #[test]
    fn duplicate_datacenter_name_is_rejected() {
        let p = problems(&format!("{DC1}\n[[datacenter]]\nname = \"dc1\"\n"));
        assert_has(
            &p,
            "datacenter[1].name",
            "duplicate datacenter name \"dc1\" (already defined by datacenter[0])",
        );
    }

    #[test]
    fn datacenter_without_nats_dispatcher_or_frontend_is_rejected() {
        let p = problems(&format!("{DC1}\n[[datacenter]]\nname = \"dc2\"\n"));
        assert_has(
            &p,
            "datacenter[1]",
            "datacenter \"dc2\" has no [[nats]] server",
        );
        assert_has(
            &p,
            "datacenter[1]",
            "datacenter \"dc2\" has no [[dispatcher]]",
        );
        assert_has(
            &p,
            "datacenter[1]",
            "datacenter \"dc2\" has no [[frontend]]",
        );
        assert_eq!(p.len(), 3, "{p:#?}");
    }

    #[test]
    fn node_in_unknown_datacenter_is_rejected() {
        let text = format!(
            "{DC1}\n[[frontend]]\nname = \"dc1-fe2\"\ndc = \"dc1\"\nlisten = \"127.0.0.1:8112\"\n\
             \n[[frontend]]\nname = \"dc1-fe3\"\ndc = \"dc9\"\nlisten = \"127.0.0.1:8113\"\n"
        );
        let p = problems(&text);
        assert_eq!(
            p,
            vec![Problem::new("frontend[2].dc", "unknown datacenter \"dc9\"")]
        );
        let err = Topology::from_toml_str(&text, "t.toml").expect_err("invalid");
        assert_eq!(
            err.to_string(),
            "t.toml: frontend[2].dc: unknown datacenter \"dc9\""
        );
    }

    #[test]
    fn duplicate_node_name_across_kinds_is_rejected() {
        let text = format!(
            "{DC1}\n[[frontend]]\nname = \"dc1-disp1\"\ndc = \"dc1\"\nlisten = \"127.0.0.1:8112\"\n"
        );
        let p = problems(&text);
        assert_has(
            &p,
            "frontend[1].name",
            "duplicate node name \"dc1-disp1\" (already used by dispatcher[0])",
        );
    }

    #[test]
    fn invalid_names_are_rejected() {
        let text = DC1
            .replace("name = \"dc1\"", "name = \"DC1\"")
            .replace("dc = \"dc1\"", "dc = \"DC1\"")
            .replace("\"dc1-fe1\"", "\"-fe\"")
            .replace("\"dc1-disp1\"", "\"disp_1\"")
            .replace("\"dc1-nats1\"", "\"n23456789012345678901234567890123\"");
        let p = problems(&text);
        assert_has(&p, "datacenter[0].name", "invalid name \"DC1\": must match");
        assert_has(&p, "frontend[0].name", "invalid name \"-fe\"");
        assert_has(&p, "dispatcher[0].name", "invalid name \"disp_1\"");
        assert_has(&p, "nats[0].name", "invalid name \"n2345");
        assert_eq!(p.len(), 4, "{p:#?}");
    }

    #[test]
    fn name_pattern_accepts_digits_dashes_and_up_to_32_chars() {
        assert!(is_valid_name("0"));
        assert!(is_valid_name("dc1-nats-1"));
        assert!(is_valid_name(&"a".repeat(32)));
        assert!(!is_valid_name(&"a".repeat(33)));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("a.b"));
        assert!(!is_valid_name("dc1\u{e9}"));
    }

    #[test]
    fn duplicate_port_is_rejected_naming_both_nodes() {
        let text = format!(
            "{DC1}\n[[frontend]]\nname = \"dc1-fe2\"\ndc = \"dc1\"\nlisten = \"127.0.0.1:8111\"\n"
        );
        let p = problems(&text);
        assert_eq!(
            p,
            vec![Problem::new(
                "frontend[1].listen",
                "port 8111 already used by dc1-fe1 (frontend[0].listen)"
            )]
        );
    }

    #[test]
    fn wildcard_and_loopback_on_same_port_clash() {
        let text = DC1.replace("\"127.0.0.1:9111\"", "\"0.0.0.0:8111\"");
        let p = problems(&text);
        assert_eq!(
            p,
            vec![Problem::new(
                "frontend[0].listen",
                "port 8111 already used by dc1-disp1 (dispatcher[0].admin)"
            )]
        );
    }

    #[test]
    fn nats_port_clashing_with_its_own_other_port_is_rejected() {
        let text = DC1.replace("monitor_port = 8221", "monitor_port = 4221");
        let p = problems(&text);
        assert_has(
            &p,
            "nats[0].monitor_port",
            "port 4221 already used by dc1-nats1 (nats[0].client_port)",
        );
    }

    #[test]
    fn same_port_on_different_hosts_is_allowed() {
        let text = format!(
            "{DC1}\n[[frontend]]\nname = \"dc1-fe2\"\ndc = \"dc1\"\nlisten = \"127.0.0.2:8111\"\n"
        );
        assert!(Topology::from_toml_str(&text, "t.toml").is_ok());
    }

    #[test]
    fn port_zero_is_rejected() {
        let text = DC1
            .replace("gateway_port = 7221", "gateway_port = 0")
            .replace("127.0.0.1:8111", "127.0.0.1:0");
        let p = problems(&text);
        assert_has(&p, "nats[0].gateway_port", "port 0 is not allowed");
        assert_has(&p, "frontend[0].listen", "port 0 is not allowed");
        assert_eq!(p.len(), 2, "{p:#?}");
    }

    #[test]
    fn unparsable_socket_address_is_a_located_problem() {
        let text = DC1.replace("\"127.0.0.1:9111\"", "\"localhost:9111\"");
        let p = problems(&text);
        assert_has(
            &p,
            "dispatcher[0].admin",
            "invalid socket address \"localhost:9111\"",
        );
    }

    #[test]
    fn invalid_nats_host_is_rejected() {
        let text = DC1.replace(
            "dc = \"dc1\"\nclient_port",
            "dc = \"dc1\"\nhost = \"a b\"\nclient_port",
        );
        let p = problems(&text);
        assert_has(&p, "nats[0].host", "invalid host \"a b\"");
    }

    #[test]
    fn settings_out_of_range_are_all_reported() {
        let text = format!(
            "[settings]\npartitions = 0\ninterest_ttl = \"500ms\"\n\
             gateway_ping_interval = \"61s\"\nretention = \"0s\"\nreplicas = 6\n{DC1}"
        );
        let p = problems(&text);
        assert_has(&p, "settings.partitions", "must be between 1 and 64, got 0");
        assert_has(
            &p,
            "settings.interest_ttl",
            "must be at least 1s, got 500ms",
        );
        assert_has(
            &p,
            "settings.gateway_ping_interval",
            "must be between 1s and 60s, got 61s",
        );
        assert_has(&p, "settings.retention", "must be at least 1s, got 0s");
        assert_has(&p, "settings.replicas", "must be at most 5");
        assert_has(
            &p,
            "settings.replicas",
            "replicas = 6 but datacenter \"dc1\" has only 1 nats server(s)",
        );
    }

    #[test]
    fn partitions_above_64_and_ping_below_1s_are_rejected() {
        let text = format!("[settings]\npartitions = 65\ngateway_ping_interval = \"999ms\"\n{DC1}");
        let p = problems(&text);
        assert_has(&p, "settings.partitions", "got 65");
        assert_has(&p, "settings.gateway_ping_interval", "got 999ms");
    }

    #[test]
    fn replicas_above_servers_in_a_dc_is_rejected() {
        let text = format!("[settings]\nreplicas = 2\n{DC1}");
        let p = problems(&text);
        assert_eq!(
            p,
            vec![Problem::new(
                "settings.replicas",
                "replicas = 2 but datacenter \"dc1\" has only 1 nats server(s)"
            )]
        );
    }

    #[test]
    fn settings_accept_humantime_durations() {
        let text = format!(
            "[settings]\npartitions = 64\ninterest_ttl = \"2m\"\n\
             gateway_ping_interval = \"60s\"\nretention = \"1h 30m\"\nreplicas = 1\n{DC1}"
        );
        let t = Topology::from_toml_str(&text, "t.toml").expect("valid");
        assert_eq!(t.settings.partitions, 64);
        assert_eq!(t.settings.interest_ttl, Duration::from_secs(120));
        assert_eq!(t.settings.gateway_ping_interval, Duration::from_secs(60));
        assert_eq!(t.settings.retention, Duration::from_secs(5400));
        assert_eq!(t.settings.replicas, 1);
    }

    #[test]
    fn all_problems_are_collected_not_just_the_first() {
        let text = format!(
            "[settings]\npartitions = 0\n{DC1}\n[[frontend]]\nname = \"X\"\ndc = \"dc9\"\nlisten = \"127.0.0.1:8111\"\n"
        );
        let p = problems(&text);
        assert_has(&p, "settings.partitions", "got 0");
        assert_has(&p, "frontend[1].name", "invalid name \"X\"");
        assert_has(&p, "frontend[1].dc", "unknown datacenter \"dc9\"");
        assert_has(
            &p,
            "frontend[1].listen",
            "port 8111 already used by dc1-fe1",
        );
        assert_eq!(p.len(), 4, "{p:#?}");
    }

    #[test]
    fn unknown_key_is_a_parse_error_with_location() {
        let text = DC1.replace("admin = ", "admn = ");
        match Topology::from_toml_str(&text, "t.toml") {
            Err(e @ TopologyError::Parse { .. }) => {
                let msg = e.to_string();
                assert!(msg.starts_with("t.toml: "), "{msg}");
                assert!(msg.contains("line"), "{msg}");
                assert!(msg.contains("admn"), "{msg}");
            }
            other => panic!("expected parse error, got {other:?}"),
        }
    }

    #[test]
    fn unknown_settings_key_and_bad_duration_are_parse_errors() {
        for settings in ["partitons = 8", "interest_ttl = \"ten seconds\""] {
            let text = format!("[settings]\n{settings}\n{DC1}");
            let err = Topology::from_toml_str(&text, "t.toml").expect_err("parse error");
            assert!(matches!(err, TopologyError::Parse { .. }), "{err:?}");
        }
    }

    #[test]
    fn nats_security_defaults_to_auth_without_tls_and_round_trips() {
        let t = Topology::from_toml_str(DC1, "<string>").expect("valid");
        assert!(t.settings.nats.auth, "auth is on unless turned off");
        assert!(!t.settings.nats.tls, "tls is off unless turned on");
        assert_eq!(t.settings.nats.credentials_dir, None);
        let text = format!(
            "[settings.nats]\nauth = false\ntls = true\ncredentials_dir = \"/etc/fanfare/nats\"\n{DC1}"
        );
        let t = Topology::from_toml_str(&text, "<string>").expect("valid");
        assert!(!t.settings.nats.auth);
        assert!(t.settings.nats.tls);
        assert_eq!(
            t.settings.nats.credentials_dir.as_deref(),
            Some(std::path::Path::new("/etc/fanfare/nats"))
        );
        let back = Topology::from_toml_str(&t.to_toml_string(), "<string>").expect("reparse");
        assert_eq!(back.settings, t.settings);
        let unknown = format!("[settings.nats]\npassword = \"x\"\n{DC1}");
        assert!(Topology::from_toml_str(&unknown, "<string>").is_err());
    }

    #[test]
    fn written_toml_round_trips_to_an_equal_topology() {
        let text = format!(
            "[settings]\npartitions = 3\ninterest_ttl = \"1500ms\"\nretention = \"36h\"\n{DC1}\n\
             [[datacenter]]\nname = \"dc2\"\n\
             [[nats]]\nname = \"dc2-nats1\"\ndc = \"dc2\"\nhost = \"::1\"\nclient_port = 4222\n\
             cluster_port = 6222\ngateway_port = 7222\nmonitor_port = 8222\n\
             [[dispatcher]]\nname = \"dc2-disp1\"\ndc = \"dc2\"\nadmin = \"[::1]:9121\"\n\
             [[frontend]]\nname = \"dc2-fe1\"\ndc = \"dc2\"\nlisten = \"0.0.0.0:8121\"\n"
        );
        let t = Topology::from_toml_str(&text, "a").expect("valid");
        let written = t.to_toml_string();
        let back = Topology::from_toml_str(&written, "b").expect("written text is valid");
        assert_eq!(back.settings, t.settings);
        assert_eq!(back.datacenters, t.datacenters);
        assert!(written.contains("interest_ttl = \"1500ms\""), "{written}");
        assert!(written.contains("retention = \"36h\""), "{written}");
    }
}
