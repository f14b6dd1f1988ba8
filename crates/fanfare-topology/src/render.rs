//! nats-server (2.15) configuration rendering: one file per server, forming
//! one cluster per datacenter (JetStream enabled, tagged `dc:<name>`) joined
//! into a supercluster by gateways.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use crate::net::{self, connect_host, host_port, nats_quote};
use crate::security::{self, NatsCredentials, NatsSecrets, Permissions, TlsFiles};
use crate::{Datacenter, NatsServer, Topology, TopologyError};

/// One written nats-server config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedNatsConfig {
    /// Server name (also the file stem).
    pub server: String,
    pub dc: String,
    pub path: PathBuf,
}

/// Where each server's gateway really listens when a link proxy owns the topology's gateway
/// port: server name → internal port. The server then advertises the proxy's address (the
/// topology's `gateway_port`), so every gateway connection, dialled or gossiped, goes through
/// the proxy.
pub type GatewayInternalPorts = std::collections::BTreeMap<String, u16>;

/// Where the passwords in a rendered config come from.
#[derive(Clone, Copy)]
pub(crate) enum Passwords<'a> {
    /// Authentication off: no users, no route or gateway credentials.
    Off,
    /// The passwords themselves (the file is then written 0600).
    Inline(&'a NatsCredentials),
    /// References to variables the server reads from its environment
    /// ([`password_variable`], [`ROUTES_VARIABLE`]): the file holds no secret, so it can be
    /// generated once and checked in, and each deployment supplies the values.
    Variables,
}

impl<'a> Passwords<'a> {
    fn of(secrets: &'a NatsSecrets) -> Self {
        match &secrets.credentials {
            Some(credentials) => Passwords::Inline(credentials),
            None => Passwords::Off,
        }
    }

    /// The config value of `user`'s password, when authentication is on.
    fn value(self, user: &str) -> Option<String> {
        match self {
            Passwords::Off => None,
            Passwords::Inline(credentials) => Some(nats_quote(credentials.required(user))),
            Passwords::Variables => Some(format!("${}", password_variable(user))),
        }
    }

    /// `user:password@` for route URLs (nats-server presents nothing else on a route it
    /// dials). With variables the whole route list is a variable instead.
    fn url_userinfo(self, user: &str) -> String {
        match self {
            Passwords::Inline(credentials) => format!("{user}:{}@", credentials.required(user)),
            Passwords::Off | Passwords::Variables => String::new(),
        }
    }
}

/// The environment variable that holds `user`'s password in configs rendered with variables:
/// `FANFARE_NATS_PASSWORD_` and the user name in capitals, `-` as `_` (names are
/// `[a-z0-9-]`, so no two users share a variable).
pub fn password_variable(user: &str) -> String {
    let name: String = user
        .chars()
        .map(|c| match c {
            '-' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect();
    format!("FANFARE_NATS_PASSWORD_{name}")
}

/// The environment variable that holds a datacenter's route URLs, with the route user's
/// password in each, in configs rendered with variables: a route has no other way to present
/// credentials. Its value is a nats-server config array (see [`route_urls`]).
pub const ROUTES_VARIABLE: &str = "FANFARE_NATS_ROUTES";

/// The route URLs of `dc`'s servers, each `nats-route://<route user>:<password>@host:port`
/// when `credentials` are given.
pub fn route_urls(dc: &Datacenter, credentials: Option<&NatsCredentials>) -> Vec<String> {
    let passwords = credentials.map_or(Passwords::Off, Passwords::Inline);
    routes_of(dc, passwords)
}

/// [`route_urls`] as a nats-server config array, the value of [`ROUTES_VARIABLE`].
pub fn route_list(urls: &[String]) -> String {
    url_list(urls.iter().cloned())
}

fn routes_of(dc: &Datacenter, passwords: Passwords<'_>) -> Vec<String> {
    let userinfo = passwords.url_userinfo(security::ROUTE_USER);
    dc.nats
        .iter()
        .map(|n| {
            format!(
                "nats-route://{userinfo}{}",
                host_port(&connect_host(&n.host), n.cluster_port)
            )
        })
        .collect()
}

pub(crate) fn render_all(
    t: &Topology,
    out_dir: &Path,
    store_root: &Path,
    internal_ports: &GatewayInternalPorts,
    secrets: &NatsSecrets,
) -> Result<Vec<RenderedNatsConfig>, TopologyError> {
    render_with(
        t,
        out_dir,
        store_root,
        internal_ports,
        Passwords::of(secrets),
        secrets.tls.as_ref(),
    )
}

pub(crate) fn render_with(
    t: &Topology,
    out_dir: &Path,
    store_root: &Path,
    internal_ports: &GatewayInternalPorts,
    passwords: Passwords<'_>,
    tls: Option<&TlsFiles>,
) -> Result<Vec<RenderedNatsConfig>, TopologyError> {
    std::fs::create_dir_all(out_dir).map_err(|source| TopologyError::Render {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let store_root = std::path::absolute(store_root).map_err(|source| TopologyError::Render {
        path: store_root.to_path_buf(),
        source,
    })?;
    let gateways = gateways_list(t, passwords);
    let mut rendered = Vec::new();
    for dc in &t.datacenters {
        for server in &dc.nats {
            let path = out_dir.join(format!("{}.conf", server.name));
            let store_dir = store_root.join(&server.name);
            let store_dir = store_dir.to_str().ok_or_else(|| TopologyError::Render {
                path: path.clone(),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("store dir {} is not valid utf-8", store_dir.display()),
                ),
            })?;
            let internal_port = internal_ports.get(&server.name).copied();
            let rendering = ServerRendering {
                store_dir,
                gateways: &gateways,
                gateway_internal_port: internal_port,
                passwords,
                tls,
            };
            let text = server_config(t, dc, server, &rendering);
            if matches!(passwords, Passwords::Inline(_)) {
                // It holds every password: readable by its owner only.
                security::write_private(&path, &text)?;
            } else {
                std::fs::write(&path, text).map_err(|source| TopologyError::Render {
                    path: path.clone(),
                    source,
                })?;
            }
            rendered.push(RenderedNatsConfig {
                server: server.name.clone(),
                dc: dc.name.clone(),
                path,
            });
        }
    }
    Ok(rendered)
}

fn url_list(urls: impl Iterator<Item = String>) -> String {
    let quoted: Vec<String> = urls.map(|u| nats_quote(&u)).collect();
    format!("[{}]", quoted.join(", "))
}

/// The `gateways: [...]` entries, identical in every file and including each
/// server's own datacenter. With variables the URLs carry no credentials: a server dials
/// other gateways with its own gateway `authorization` user when the URL names none.
fn gateways_list(t: &Topology, passwords: Passwords<'_>) -> String {
    let userinfo = passwords.url_userinfo(security::GATEWAY_USER);
    let mut out = String::new();
    for dc in &t.datacenters {
        let urls = dc.nats.iter().map(|n| {
            format!(
                "nats://{userinfo}{}",
                host_port(&connect_host(&n.host), n.gateway_port)
            )
        });
        let _ = writeln!(
            out,
            "    {{name: {}, urls: {}}}",
            nats_quote(&dc.name),
            url_list(urls)
        );
    }
    out
}

/// What one server's config is rendered with, beyond the topology.
struct ServerRendering<'a> {
    store_dir: &'a str,
    gateways: &'a str,
    gateway_internal_port: Option<u16>,
    passwords: Passwords<'a>,
    tls: Option<&'a TlsFiles>,
}

/// The text of one server's config. Every string value is quoted: names such
/// as `123` or `true` would otherwise be read as numbers or booleans.
fn server_config(
    t: &Topology,
    dc: &Datacenter,
    server: &NatsServer,
    rendering: &ServerRendering<'_>,
) -> String {
    let passwords = rendering.passwords;
    let source: String = t
        .source
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let listen = |port| nats_quote(&host_port(&server.host, port));
    // Every server of the datacenter, itself included: nats-server skips a route to itself,
    // and a lone JetStream server refuses to start without any route configured.
    let routes = match passwords {
        Passwords::Variables => format!("${ROUTES_VARIABLE}"),
        _ => url_list(routes_of(dc, passwords).into_iter()),
    };
    let tls_block = |indent: &str| -> String {
        let Some(tls) = rendering.tls else {
            return String::new();
        };
        let path = |p: PathBuf| nats_quote(&p.display().to_string());
        format!(
            "{indent}tls {{\n{indent}  cert_file: {}\n{indent}  key_file: {}\n{indent}  ca_file: {}\n{indent}  timeout: 2\n{indent}}}\n",
            path(tls.cert_file(&server.name)),
            path(tls.key_file(&server.name)),
            path(tls.ca_file()),
        )
    };
    let authorization = |indent: &str, user: &str| -> String {
        let Some(password) = passwords.value(user) else {
            return String::new();
        };
        format!(
            "{indent}authorization {{\n{indent}  user: {}\n{indent}  password: {password}\n{indent}  timeout: 2\n{indent}}}\n",
            nats_quote(user),
        )
    };

    let mut out = String::new();
    let _ = writeln!(
        out,
        "# nats-server config for {} (datacenter {}), rendered by fanfare-topology from {source}",
        server.name, dc.name
    );
    if matches!(passwords, Passwords::Variables) {
        let _ = writeln!(
            out,
            "# passwords come from the environment: {}<USER> and {ROUTES_VARIABLE}",
            password_variable("")
        );
    }
    let _ = writeln!(out, "server_name: {}", nats_quote(&server.name));
    let _ = writeln!(out, "listen: {}", listen(server.client_port));
    let _ = writeln!(out, "http: {}", listen(server.monitor_port));
    let _ = writeln!(
        out,
        "ping_interval: {}",
        nats_quote(&net::format_duration(t.settings.gateway_ping_interval))
    );
    let _ = writeln!(
        out,
        "server_tags: [{}]",
        nats_quote(&format!("dc:{}", dc.name))
    );
    let _ = writeln!(out);
    out.push_str(&tls_block(""));
    if !matches!(passwords, Passwords::Off) {
        let _ = writeln!(out, "# one user per fanfare node, least privilege by role (see fanfare-topology security.rs)");
        let _ = writeln!(out, "authorization {{");
        let _ = writeln!(out, "  users = [");
        for (user, permissions) in security::client_users(t) {
            let password = passwords.value(&user).unwrap_or_default();
            let _ = writeln!(
                out,
                "    {{user: {}, password: {password}, permissions: {}}}",
                nats_quote(&user),
                permissions_block(&permissions)
            );
        }
        let _ = writeln!(out, "  ]");
        let _ = writeln!(out, "}}");
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "jetstream {{");
    let _ = writeln!(out, "  store_dir: {}", nats_quote(rendering.store_dir));
    let _ = writeln!(out, "  max_memory_store: 256MB");
    let _ = writeln!(out, "  max_file_store: 2GB");
    let _ = writeln!(out, "}}");
    if t.datacenters.iter().map(|d| d.nats.len()).sum::<usize>() == 1 {
        // The only server of the topology: clustered JetStream could never elect a meta
        // leader alone (no quorum), so it runs JetStream standalone.
        let _ = writeln!(out, "# the topology's only server: standalone JetStream");
        return out;
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "# required for JetStream in a supercluster, even alone"
    );
    let _ = writeln!(out, "cluster {{");
    let _ = writeln!(out, "  name: {}", nats_quote(&dc.name));
    let _ = writeln!(out, "  listen: {}", listen(server.cluster_port));
    out.push_str(&authorization("  ", security::ROUTE_USER));
    out.push_str(&tls_block("  "));
    let _ = writeln!(out, "  routes: {routes}");
    let _ = writeln!(out, "}}");
    let _ = writeln!(out);
    let _ = writeln!(out, "gateway {{");
    let _ = writeln!(out, "  name: {}", nats_quote(&dc.name));
    match rendering.gateway_internal_port {
        Some(internal) => {
            let _ = writeln!(
                out,
                "  # a link proxy owns the advertised port and forwards here"
            );
            let _ = writeln!(out, "  listen: {}", listen(internal));
            let _ = writeln!(
                out,
                "  advertise: {}",
                nats_quote(&host_port(&connect_host(&server.host), server.gateway_port))
            );
        }
        None => {
            let _ = writeln!(out, "  listen: {}", listen(server.gateway_port));
        }
    }
    out.push_str(&authorization("  ", security::GATEWAY_USER));
    out.push_str(&tls_block("  "));
    let _ = writeln!(out, "  gateways: [");
    out.push_str(rendering.gateways);
    let _ = writeln!(out, "  ]");
    let _ = writeln!(out, "}}");
    out
}

fn quoted_list(subjects: &[String]) -> String {
    let quoted: Vec<String> = subjects.iter().map(|s| nats_quote(s)).collect();
    format!("[{}]", quoted.join(", "))
}

/// `{publish: {allow: [..]}, subscribe: {allow: [..]}, allow_responses: ..}`: anything not
/// allowed is denied.
fn permissions_block(permissions: &Permissions) -> String {
    format!(
        "{{publish: {{allow: {}}}, subscribe: {{allow: {}}}, allow_responses: {}}}",
        quoted_list(&permissions.publish),
        quoted_list(&permissions.subscribe),
        permissions.allow_responses
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DcShape, Settings};
    use std::process::Command;
    use std::time::Duration;

    fn shipped(name: &str) -> Topology {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../topology")
            .join(name);
        Topology::load(&path).unwrap_or_else(|e| panic!("{e}"))
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn rendered_config_has_every_element_for_a_server() {
        let t = shipped("local-3dc-ha.toml");
        let out = tempfile::tempdir().expect("tempdir");
        let conf_dir = out.path().join("conf/nested");
        let rendered = t
            .render_nats_configs(&conf_dir, Path::new("/var/fanfare/js"))
            .expect("render");
        assert_eq!(rendered.len(), 9);
        let r = &rendered[0];
        assert_eq!(r.server, "dc1-nats1");
        assert_eq!(r.dc, "dc1");
        assert_eq!(r.path, conf_dir.join("dc1-nats1.conf"));
        let text = read(&r.path);
        for expected in [
            "server_name: \"dc1-nats1\"\n",
            "listen: \"127.0.0.1:4211\"\n",
            "http: \"127.0.0.1:8211\"\n",
            "ping_interval: \"2s\"\n",
            "server_tags: [\"dc:dc1\"]\n",
            "jetstream {\n  store_dir: \"/var/fanfare/js/dc1-nats1\"\n  max_memory_store: 256MB\n  max_file_store: 2GB\n}\n",
            "cluster {\n  name: \"dc1\"\n  listen: \"127.0.0.1:6211\"\n  routes: [\"nats-route://127.0.0.1:6211\", \"nats-route://127.0.0.1:6212\", \"nats-route://127.0.0.1:6213\"]\n}\n",
            "gateway {\n  name: \"dc1\"\n  listen: \"127.0.0.1:7211\"\n  gateways: [\n",
            "    {name: \"dc1\", urls: [\"nats://127.0.0.1:7211\", \"nats://127.0.0.1:7212\", \"nats://127.0.0.1:7213\"]}\n",
            "    {name: \"dc2\", urls: [\"nats://127.0.0.1:7221\", \"nats://127.0.0.1:7222\", \"nats://127.0.0.1:7223\"]}\n",
            "    {name: \"dc3\", urls: [\"nats://127.0.0.1:7231\", \"nats://127.0.0.1:7232\", \"nats://127.0.0.1:7233\"]}\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        // routes name only servers of the same datacenter
        assert!(!text.contains("nats-route://127.0.0.1:622"), "{text}");
    }

    #[test]
    fn gateways_list_is_identical_in_every_file() {
        let t = shipped("local-3dc.toml");
        let out = tempfile::tempdir().expect("tempdir");
        let rendered = t
            .render_nats_configs(out.path(), out.path())
            .expect("render");
        let gateway_blocks: Vec<String> = rendered
            .iter()
            .map(|r| {
                let text = read(&r.path);
                let start = text.find("  gateways: [").expect("gateways");
                text[start..].to_owned()
            })
            .collect();
        assert_eq!(gateway_blocks.len(), 3);
        assert!(gateway_blocks.iter().all(|g| g == &gateway_blocks[0]));
        for dc in ["dc1", "dc2", "dc3"] {
            assert!(gateway_blocks[0].contains(&format!("{{name: \"{dc}\"")));
        }
    }

    #[test]
    fn servers_behind_link_proxies_listen_inside_and_advertise_the_proxy() {
        let t = shipped("local-3dc.toml");
        let out = tempfile::tempdir().expect("tempdir");
        let internal: GatewayInternalPorts =
            [("dc1-nats1".to_owned(), 17221)].into_iter().collect();
        let rendered = t
            .render_nats_configs_behind_proxies(out.path(), out.path(), &internal)
            .expect("render");
        let text = read(&rendered[0].path);
        assert!(
            text.contains("  listen: \"127.0.0.1:17221\"\n  advertise: \"127.0.0.1:7221\"\n"),
            "{text}"
        );
        assert!(
            text.contains("{name: \"dc1\", urls: [\"nats://127.0.0.1:7221\"]}"),
            "{text}"
        );
        let other = read(&rendered[1].path);
        assert!(other.contains("  listen: \"127.0.0.1:7222\"\n"), "{other}");
    }

    #[test]
    fn the_only_server_of_a_topology_runs_standalone() {
        let t = Topology::builder()
            .auth(fanfare_auth::AuthSettings::off())
            .dc(
                "dc1",
                DcShape {
                    nats: 1,
                    dispatchers: 1,
                    frontends: 1,
                },
            )
            .build_with_free_ports()
            .expect("topology");
        let out = tempfile::tempdir().expect("tempdir");
        let rendered = t
            .render_nats_configs(out.path(), out.path())
            .expect("render");
        let text = read(&rendered[0].path);
        assert!(text.contains("jetstream {"), "{text}");
        assert!(!text.contains("cluster {"), "{text}");
        assert!(!text.contains("gateway {"), "{text}");
    }

    #[test]
    fn single_server_cluster_routes_to_itself() {
        let t = shipped("local-3dc.toml");
        let out = tempfile::tempdir().expect("tempdir");
        let rendered = t
            .render_nats_configs(out.path(), Path::new("/js"))
            .expect("render");
        let text = read(&rendered[1].path);
        assert!(
            text.contains("cluster {\n  name: \"dc2\"\n  listen: \"127.0.0.1:6222\"\n  routes: [\"nats-route://127.0.0.1:6222\"]\n}\n"),
            "{text}"
        );
    }

    #[test]
    fn relative_store_root_is_made_absolute_and_odd_paths_are_quoted() {
        let t = shipped("local-3dc.toml");
        let out = tempfile::tempdir().expect("tempdir");
        let rendered = t
            .render_nats_configs(out.path(), Path::new("rel dir/\"q\""))
            .expect("render");
        let text = read(&rendered[0].path);
        let cwd = std::env::current_dir().expect("cwd");
        let expected = nats_quote(&format!("{}/rel dir/\"q\"/dc1-nats1", cwd.display()));
        assert!(
            text.contains(&format!("store_dir: {expected}\n")),
            "{expected} not in\n{text}"
        );
    }

    #[test]
    fn ping_interval_follows_settings() {
        let settings = Settings {
            gateway_ping_interval: Duration::from_millis(1500),
            ..Settings::default()
        };
        let t = Topology::builder()
            .auth(fanfare_auth::AuthSettings::off())
            .dc(
                "dc1",
                DcShape {
                    nats: 1,
                    dispatchers: 1,
                    frontends: 1,
                },
            )
            .settings(settings)
            .build_with_free_ports()
            .expect("build");
        let out = tempfile::tempdir().expect("tempdir");
        let rendered = t
            .render_nats_configs(out.path(), out.path())
            .expect("render");
        assert!(read(&rendered[0].path).contains("ping_interval: \"1500ms\"\n"));
    }

    #[test]
    fn secured_config_has_users_route_and_gateway_credentials_and_tls() {
        let mut t = shipped("local-3dc-ha.toml");
        t.settings.nats.tls = true;
        let out = tempfile::tempdir().expect("tempdir");
        let secrets = NatsSecrets::prepare(&t, &out.path().join("secrets")).expect("secrets");
        let credentials = secrets.credentials.as_ref().expect("auth on by default");
        let rendered = t
            .render_nats_configs_secured(
                &out.path().join("conf"),
                Path::new("/js"),
                &GatewayInternalPorts::new(),
                &secrets,
            )
            .expect("render");
        let text = read(&rendered[0].path);
        let route = credentials.password(security::ROUTE_USER).expect("route");
        let gateway = credentials
            .password(security::GATEWAY_USER)
            .expect("gateway");
        let frontend = credentials.password("dc2-fe1").expect("frontend");
        for expected in [
            format!("  routes: [\"nats-route://fanfare_route:{route}@127.0.0.1:6211\""),
            format!("{{name: \"dc2\", urls: [\"nats://fanfare_gateway:{gateway}@127.0.0.1:7221\""),
            format!("  authorization {{\n    user: \"fanfare_route\"\n    password: \"{route}\"\n"),
            format!("  authorization {{\n    user: \"fanfare_gateway\"\n    password: \"{gateway}\"\n"),
            format!("{{user: \"dc2-fe1\", password: \"{frontend}\", permissions: {{publish: {{allow: [\"fanfare.events.dc2.*.*\""),
            "{user: \"fanfare_admin\"".to_owned(),
            "subscribe: {allow: [\"fanfare.dc2.fe.dc2-fe1\", \"_INBOX.dc2-fe1.>\", \"fanfare.viewers.report.>\", \"fanfare.viewers.sync.dc2.dc2-fe1\"]}, allow_responses: true}".to_owned(),
        ] {
            assert!(text.contains(&expected), "missing {expected:?} in\n{text}");
        }
        // tls in the client, cluster and gateway sections
        assert_eq!(text.matches("tls {\n").count(), 3, "{text}");
        assert!(text.contains("dc1-nats1-key.pem"), "{text}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&rendered[0].path)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "configs with passwords are private");
    }

    #[test]
    fn auth_turned_off_renders_no_users_and_no_credentials() {
        let mut t = shipped("local-3dc.toml");
        t.settings.nats.auth = false;
        let out = tempfile::tempdir().expect("tempdir");
        let secrets = NatsSecrets::prepare(&t, &out.path().join("secrets")).expect("secrets");
        assert!(secrets.credentials.is_none() && secrets.tls.is_none());
        assert!(!out.path().join("secrets/credentials").exists());
        let rendered = t
            .render_nats_configs_secured(
                &out.path().join("conf"),
                Path::new("/js"),
                &GatewayInternalPorts::new(),
                &secrets,
            )
            .expect("render");
        let text = read(&rendered[0].path);
        assert!(!text.contains("authorization"), "{text}");
        assert!(text.contains("nats-route://127.0.0.1:6221"), "{text}");
    }

    #[test]
    fn unwritable_out_dir_is_a_render_error() {
        let t = shipped("local-3dc.toml");
        let out = tempfile::tempdir().expect("tempdir");
        let file = out.path().join("a-file");
        std::fs::write(&file, "x").expect("write");
        match t.render_nats_configs(&file.join("sub"), out.path()) {
            Err(TopologyError::Render { path, .. }) => assert_eq!(path, file.join("sub")),
            other => panic!("expected render error, got {other:?}"),
        }
    }

    /// `NATS_SERVER_BIN`, else `nats-server` on `PATH`.
    fn nats_server_bin() -> Result<PathBuf, String> {
        const HOW: &str = "install it with scripts/install-nats-server, then set \
                           NATS_SERVER_BIN=/path/to/nats-server or put nats-server on PATH";
        if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
            let bin = PathBuf::from(bin);
            return if bin.is_file() {
                Ok(bin)
            } else {
                Err(format!(
                    "NATS_SERVER_BIN={} is not a file; {HOW}",
                    bin.display()
                ))
            };
        }
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join("nats-server"))
            .find(|p| p.is_file())
            .ok_or_else(|| format!("nats-server binary not found; {HOW}"))
    }

    #[test]
    fn nats_server_accepts_every_rendered_config() {
        let bin = nats_server_bin().unwrap_or_else(|why| panic!("{why}"));
        let mut generated = Topology::builder()
            .auth(fanfare_auth::AuthSettings::off())
            .dc(
                "dc1",
                DcShape {
                    nats: 3,
                    dispatchers: 1,
                    frontends: 1,
                },
            )
            .dc(
                "dc2",
                DcShape {
                    nats: 1,
                    dispatchers: 1,
                    frontends: 1,
                },
            )
            .build_with_free_ports()
            .expect("build");
        generated.source = "generated".into();
        for t in [
            shipped("local-3dc.toml"),
            shipped("local-3dc-ha.toml"),
            generated,
        ] {
            let out = tempfile::tempdir().expect("tempdir");
            let mut secured = t.clone();
            secured.settings.nats.tls = true;
            let secrets =
                NatsSecrets::prepare(&secured, &out.path().join("secrets")).expect("secrets");
            let plain = t
                .render_nats_configs(&out.path().join("conf"), &out.path().join("js store"))
                .expect("render");
            let with_security = secured
                .render_nats_configs_secured(
                    &out.path().join("secured"),
                    &out.path().join("js store"),
                    &GatewayInternalPorts::new(),
                    &secrets,
                )
                .expect("render secured");
            assert!(!plain.is_empty());
            for r in plain.into_iter().chain(with_security) {
                let output = Command::new(&bin)
                    .arg("-c")
                    .arg(&r.path)
                    .arg("-t")
                    .output()
                    .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
                assert!(
                    output.status.success(),
                    "{} -c {} -t failed ({}):\n{}{}\n--- config ---\n{}",
                    bin.display(),
                    r.path.display(),
                    output.status,
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr),
                    read(&r.path)
                );
            }
        }
    }
}
