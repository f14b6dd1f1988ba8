//! The whole topology on one Docker host: `docker compose -f compose/compose.yaml up`.
//!
//! Every NATS server, dispatcher and frontend is a service named after its node, on one network
//! where the service names resolve. The NATS configs are the topology's own
//! (`fanfare-topology` renders them) with each server's host replaced by its service name, so
//! servers bind their container's address and dial each other by name. Frontends publish their
//! port on the host's loopback, NATS servers their client and monitor ports (so `fanfare
//! provision TOPOLOGY` reaches them as the topology says); nothing else is published.
//!
//! Secrets come from `../secrets/` (written by `--with-secrets`): each datacenter's NATS
//! servers read their passwords and route URLs from `secrets/compose/nats-<dc>.env`, nodes read
//! their password file and the auth keys as Compose secrets.

use std::path::Path;

use fanfare_fabric::NatsSettings;
use fanfare_topology::{TlsFiles, Topology};

use crate::doc::Doc;
use crate::helm::{password_key, NATS_IMAGE_TAG};
use crate::kube::{frontend_stop_secs, IMAGE, IMAGE_TAG, STOP_MARGIN_SECS};
use crate::nodes::{self, Placement};
use crate::{DeployError, Files};

/// Where each container finds its files.
const NATS_CONF_DIR: &str = "/etc/nats";
const NODES_DIR: &str = "/etc/fanfare/nodes";
const SECRETS_DIR: &str = "/run/secrets";
pub(crate) const TLS_DIR: &str = "/etc/fanfare/tls";
const DATA_DIR: &str = "/data";

/// `topology` as Compose runs it: each NATS server's host is its service name.
pub(crate) fn compose_topology(topology: &Topology) -> Topology {
    let mut compose = topology.clone();
    for server in compose
        .datacenters
        .iter_mut()
        .flat_map(|dc| dc.nats.iter_mut())
    {
        server.host = server.name.clone();
    }
    compose
}

/// The Compose secret that holds `user`'s NATS password.
fn password_secret(user: &str) -> String {
    format!("nats-{user}")
}

fn key_secret(index: usize) -> String {
    format!("auth-key-{index}")
}

pub(crate) fn render(topology: &Topology, files: &mut Files) -> Result<(), DeployError> {
    let compose = compose_topology(topology);
    let tls = topology
        .settings
        .nats
        .tls
        .then(|| TlsFiles::in_dir(Path::new(TLS_DIR)));
    let rendered = compose.render_nats_configs_with_variables(
        &files.root().join("compose/nats"),
        Path::new(DATA_DIR),
        tls.as_ref(),
    )?;
    files.record(rendered.into_iter().map(|config| config.path));

    let auth = topology.settings.nats.auth;
    let secret_refs = |user: &str, with_keys: bool| -> Doc {
        let mut refs = Vec::new();
        if auth {
            refs.push(Doc::str(password_secret(user)));
        }
        if with_keys {
            refs.extend((0..topology.auth.keys.len()).map(|index| Doc::str(key_secret(index))));
        }
        Doc::List(refs)
    };
    let nats_settings = |dc: &fanfare_topology::Datacenter, user: &str| NatsSettings {
        urls: dc.client_urls(),
        user: auth.then(|| user.to_owned()),
        password_file: auth.then(|| Path::new(SECRETS_DIR).join(password_secret(user))),
        tls_ca_file: tls.as_ref().map(TlsFiles::ca_file),
        ..NatsSettings::default()
    };
    let tls_volume = || format!("../secrets/compose/tls:{TLS_DIR}:ro");

    let mut services = Vec::new();
    let mut volumes = Vec::new();
    for dc in &compose.datacenters {
        for server in &dc.nats {
            let mut mounts = vec![
                format!("./nats:{NATS_CONF_DIR}:ro"),
                format!("{}:{DATA_DIR}", data_volume(&server.name)),
            ];
            if tls.is_some() {
                mounts.push(tls_volume());
            }
            let mut service = vec![
                (
                    "image".to_owned(),
                    Doc::str(format!("nats:{NATS_IMAGE_TAG}")),
                ),
                (
                    "command".to_owned(),
                    Doc::strs([
                        "--config".to_owned(),
                        format!("{NATS_CONF_DIR}/{}.conf", server.name),
                    ]),
                ),
            ];
            if auth {
                service.push((
                    "env_file".to_owned(),
                    Doc::strs([format!("../secrets/compose/nats-{}.env", dc.name)]),
                ));
            }
            service.push(("volumes".to_owned(), Doc::strs(mounts)));
            // On the host's loopback: the client port for `fanfare provision`, the monitor port.
            let ports = [server.client_port, server.monitor_port];
            service.push((
                "ports".to_owned(),
                Doc::strs(ports.map(|port| format!("127.0.0.1:{port}:{port}"))),
            ));
            service.push(("restart".to_owned(), Doc::str("unless-stopped")));
            services.push((server.name.clone(), Doc::Map(service)));
            volumes.push((
                data_volume(&server.name),
                Doc::map(Vec::<(String, Doc)>::new()),
            ));
        }
    }
    let keys = keys_as_secrets(topology);
    for (dc, original) in compose.datacenters.iter().zip(&topology.datacenters) {
        crate::write_node_configs(topology, original, files, &keys, |spot| crate::NodeFile {
            path: format!("compose/nodes/{}.toml", spot.name),
            placement: Placement {
                listen: ([0, 0, 0, 0], spot.address.port()).into(),
                nats: nats_settings(dc, spot.name),
            },
        })?;
        let depends = Doc::strs(dc.nats.iter().map(|server| server.name.clone()));
        let tls_mount = || tls.is_some().then(tls_volume);
        for node in &original.dispatchers {
            let service = NodeService {
                subcommand: "dispatcher",
                node: &node.name,
                depends_on: depends.clone(),
                secrets: secret_refs(&node.name, false),
                port: None,
                stop_secs: STOP_MARGIN_SECS * 2,
                tls_volume: tls_mount(),
            };
            services.push((node.name.clone(), service.doc()));
        }
        for node in &original.frontends {
            let port = node.listen.port();
            let service = NodeService {
                subcommand: "frontend",
                node: &node.name,
                depends_on: depends.clone(),
                secrets: secret_refs(&node.name, true),
                port: Some(format!("127.0.0.1:{port}:{port}")),
                stop_secs: frontend_stop_secs(topology),
                tls_volume: tls_mount(),
            };
            services.push((node.name.clone(), service.doc()));
        }
    }

    let mut secrets = Vec::new();
    if auth {
        for (user, _) in fanfare_topology::client_users(topology) {
            if topology.node(&user).is_some() {
                secrets.push((
                    password_secret(&user),
                    Doc::map([(
                        "file",
                        Doc::str(format!("../secrets/credentials/{}", password_key(&user))),
                    )]),
                ));
            }
        }
    }
    for (index, key) in topology.auth.keys.iter().enumerate() {
        secrets.push((
            key_secret(index),
            Doc::map([(
                "file",
                Doc::str(format!(
                    "../secrets/auth/{}",
                    nodes::key_file_name(index, key)
                )),
            )]),
        ));
    }
    let mut top = vec![
        (
            "name".to_owned(),
            Doc::str(format!(
                "fanfare-{}",
                topology.source.trim_end_matches(".toml")
            )),
        ),
        ("services".to_owned(), Doc::Map(services)),
        ("volumes".to_owned(), Doc::Map(volumes)),
    ];
    if !secrets.is_empty() {
        top.push(("secrets".to_owned(), Doc::Map(secrets)));
    }
    let header = crate::header(
        topology,
        "The whole topology on one Docker host: docker compose -f compose/compose.yaml up\n# (secrets: fanfare deploy render --with-secrets writes ../secrets/)",
    );
    files.write(
        "compose/compose.yaml",
        &format!("{header}{}", Doc::Map(top).to_yaml()),
    )
}

fn data_volume(server: &str) -> String {
    format!("{server}-data")
}

/// The auth keys as the Compose secrets mount them.
fn keys_as_secrets(topology: &Topology) -> fanfare_auth::AuthSettings {
    let mut auth = nodes::keys_in(&topology.auth, Path::new(SECRETS_DIR));
    for (index, key) in auth.keys.iter_mut().enumerate() {
        let file = Some(Path::new(SECRETS_DIR).join(key_secret(index)));
        if key.secret_file.is_some() {
            key.secret_file = file;
        } else {
            key.public_key_file = file;
        }
    }
    auth
}

/// One dispatcher's or frontend's service.
struct NodeService<'a> {
    subcommand: &'a str,
    node: &'a str,
    depends_on: Doc,
    secrets: Doc,
    port: Option<String>,
    stop_secs: u64,
    tls_volume: Option<String>,
}

impl NodeService<'_> {
    fn doc(self) -> Doc {
        let mut mounts = vec![format!("./nodes:{NODES_DIR}:ro")];
        mounts.extend(self.tls_volume);
        let command = [
            self.subcommand.to_owned(),
            "--config".to_owned(),
            format!("{NODES_DIR}/{}.toml", self.node),
        ];
        let mut service = vec![
            ("image".to_owned(), Doc::str(format!("{IMAGE}:{IMAGE_TAG}"))),
            ("command".to_owned(), Doc::strs(command)),
            ("volumes".to_owned(), Doc::strs(mounts)),
            ("depends_on".to_owned(), self.depends_on),
            (
                "stop_grace_period".to_owned(),
                Doc::str(format!("{}s", self.stop_secs)),
            ),
            ("restart".to_owned(), Doc::str("unless-stopped")),
        ];
        if matches!(&self.secrets, Doc::List(items) if !items.is_empty()) {
            service.push(("secrets".to_owned(), self.secrets));
        }
        if let Some(port) = self.port {
            service.push(("ports".to_owned(), Doc::strs([port])));
        }
        Doc::Map(service)
    }
}
