//! Machines without Kubernetes: systemd units and the files each node reads, laid out as
//! they go on the hosts (`hosts/etc/fanfare/...` is `/etc/fanfare/...`).
//!
//! Every node runs as the system user `fanfare` from `/usr/local/bin/fanfare` (and
//! `/usr/local/bin/nats-server`), with its config at `/etc/fanfare/nodes/<node>.toml` or
//! `/etc/fanfare/nats/<server>.conf`, addresses exactly as the topology gives them. NATS
//! passwords and route URLs come from `/etc/fanfare/secrets/nats.env` (the datacenter's
//! `secrets/hosts/nats-<dc>.env`), node passwords from `/etc/fanfare/credentials`, auth keys
//! from `/etc/fanfare/auth`, TLS files from `/etc/fanfare/tls`. A frontend's stop timeout is its
//! drain grace and window plus a margin.

use std::path::Path;

use fanfare_fabric::NatsSettings;
use fanfare_topology::{TlsFiles, Topology};

use crate::doc::Doc;
use crate::helm::password_key;
use crate::kube::{frontend_stop_secs, STOP_MARGIN_SECS};
use crate::nodes::{self, Placement};
use crate::{DeployError, Files};

pub(crate) const ETC: &str = "/etc/fanfare";
const STATE: &str = "/var/lib/fanfare";
pub(crate) const BIN: &str = "/usr/local/bin";

fn unit(description: &str, exec: &str, extra: &[String], stop_secs: u64) -> String {
    let mut service = vec![
        "Type=exec".to_owned(),
        format!("ExecStart={exec}"),
        "User=fanfare".to_owned(),
        "Group=fanfare".to_owned(),
    ];
    service.extend(extra.iter().cloned());
    service.extend([
        "KillSignal=SIGTERM".to_owned(),
        format!("TimeoutStopSec={stop_secs}"),
        "Restart=on-failure".to_owned(),
        "RestartSec=1".to_owned(),
        "LimitNOFILE=1048576".to_owned(),
        "NoNewPrivileges=yes".to_owned(),
        "ProtectSystem=strict".to_owned(),
        "ProtectHome=yes".to_owned(),
        "PrivateTmp=yes".to_owned(),
    ]);
    format!(
        "[Unit]\nDescription={description}\nAfter=network-online.target\nWants=network-online.target\n\n[Service]\n{}\n\n[Install]\nWantedBy=multi-user.target\n",
        service.join("\n")
    )
}

pub(crate) fn render(topology: &Topology, files: &mut Files) -> Result<(), DeployError> {
    let header = |what: &str| crate::header(topology, what);
    let auth = topology.settings.nats.auth;
    let tls = topology
        .settings
        .nats
        .tls
        .then(|| TlsFiles::in_dir(&Path::new(ETC).join("tls")));
    let nats_env = if auth {
        vec![format!("EnvironmentFile={ETC}/secrets/nats.env")]
    } else {
        Vec::new()
    };
    let nats_unit = unit(
        "fanfare nats-server %i",
        &format!("{BIN}/nats-server --config {ETC}/nats/%i.conf"),
        &[nats_env, vec!["StateDirectory=fanfare/%i".to_owned()]].concat(),
        // nats-server's lame-duck mode takes up to its default 2m; a plain stop is quicker.
        30,
    );
    let frontend_unit = unit(
        "fanfare frontend %i",
        &format!("{BIN}/fanfare frontend --config {ETC}/nodes/%i.toml"),
        &[
            "# Trace export (see the README's \"Tracing\"):".to_owned(),
            "# Environment=OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318".to_owned(),
        ],
        frontend_stop_secs(topology),
    );
    let dispatcher_unit = unit(
        "fanfare dispatcher %i",
        &format!("{BIN}/fanfare dispatcher --config {ETC}/nodes/%i.toml"),
        &[],
        STOP_MARGIN_SECS * 2,
    );
    for (name, text) in [
        ("fanfare-nats@.service", nats_unit),
        ("fanfare-frontend@.service", frontend_unit),
        ("fanfare-dispatcher@.service", dispatcher_unit),
    ] {
        let what = format!(
            "systemd unit: systemctl enable --now {}",
            name.replace("@.", "@<node>.")
        );
        files.write(
            format!("hosts/systemd/{name}"),
            &format!("{}{text}", header(&what)),
        )?;
    }

    let rendered = topology.render_nats_configs_with_variables(
        &files.root().join("hosts/etc/fanfare/nats"),
        Path::new(STATE),
        tls.as_ref(),
    )?;
    files.record(rendered.into_iter().map(|config| config.path));

    let nats_settings = |dc: &fanfare_topology::Datacenter, user: &str| NatsSettings {
        urls: dc.client_urls(),
        user: auth.then(|| user.to_owned()),
        password_file: auth.then(|| Path::new(ETC).join("credentials").join(password_key(user))),
        tls_ca_file: tls.as_ref().map(TlsFiles::ca_file),
        ..NatsSettings::default()
    };
    let keys = nodes::keys_in(&topology.auth, &Path::new(ETC).join("auth"));
    let mut inventory = Vec::new();
    for dc in &topology.datacenters {
        crate::write_node_configs(topology, dc, files, &keys, |spot| crate::NodeFile {
            path: format!("hosts/etc/fanfare/nodes/{}.toml", spot.name),
            placement: Placement {
                listen: spot.address,
                nats: nats_settings(dc, spot.name),
            },
        })?;
        let units = |kind: &str, names: Vec<&str>| -> Doc {
            Doc::strs(
                names
                    .into_iter()
                    .map(|name| format!("fanfare-{kind}@{name}.service")),
            )
        };
        inventory.push((
            dc.name.clone(),
            Doc::map([
                (
                    "nats",
                    units("nats", dc.nats.iter().map(|n| n.name.as_str()).collect()),
                ),
                (
                    "dispatchers",
                    units(
                        "dispatcher",
                        dc.dispatchers.iter().map(|n| n.name.as_str()).collect(),
                    ),
                ),
                (
                    "frontends",
                    units(
                        "frontend",
                        dc.frontends.iter().map(|n| n.name.as_str()).collect(),
                    ),
                ),
                (
                    "secrets",
                    Doc::str(format!(
                        "secrets/hosts/nats-{}.env -> {ETC}/secrets/nats.env",
                        dc.name
                    )),
                ),
            ]),
        ));
    }
    let what = "Which units run in each datacenter (start NATS first, frontends last)";
    files.write(
        "hosts/units.yaml",
        &format!("{}{}", header(what), Doc::Map(inventory).to_yaml()),
    )
}
