//! Values for the official NATS Helm chart (nats-io/k8s, chart `nats`, 1.x/2.x values
//! layout), one release per datacenter: `helm install nats nats/nats -n fanfare-<dc> -f
//! helm/<dc>.yaml`.
//!
//! Each release is one NATS cluster named after its datacenter (stream placement asks for
//! that cluster by name), with JetStream on file storage, a gateway to every datacenter, and
//! the users and permissions of [`fanfare_topology::client_users`] — the very list `fanfare
//! topology render` writes, so the two cannot differ. Passwords are `<< $VAR >>` references
//! (the chart writes them unquoted, nats-server reads the variable from the environment),
//! and the container takes each variable from the `fanfare-nats-server` Secret. Server names
//! get the datacenter as a prefix (`dc1-nats-0`): a supercluster needs them unique, and every
//! release's pods are named alike.

use fanfare_topology::{
    password_variable, Datacenter, Topology, GATEWAY_USER, ROUTES_VARIABLE, ROUTE_USER,
};

use crate::doc::Doc;
use crate::{namespace, DeployError, Files};

/// The release name: the chart then names the client Service `nats` and the StatefulSet's
/// pods `nats-0`, `nats-1`, ..
pub(crate) const RELEASE: &str = "nats";
pub(crate) const CLIENT_PORT: u16 = 4222;
pub(crate) const CLUSTER_PORT: u16 = 6222;
pub(crate) const GATEWAY_PORT: u16 = 7222;
pub(crate) const MONITOR_PORT: u16 = 8222;
pub(crate) const EXPORTER_PORT: u16 = 7777;
/// The official image, at the version fanfare is tested with.
pub(crate) const NATS_IMAGE_TAG: &str = "2.15.1-alpine";
/// Secret with every user's password (`<user>.password`) and the route URLs (`routes`).
pub(crate) const SERVER_SECRET: &str = "fanfare-nats-server";
/// Secret with the NATS server certificate (`tls.crt`, `tls.key`) and the CA (`ca.crt`).
pub(crate) const TLS_SECRET: &str = "fanfare-nats-tls";
/// Size of each server's JetStream volume.
const JETSTREAM_VOLUME: &str = "10Gi";

/// The URL other datacenters dial to reach `dc`'s gateways: its client Service, which the
/// values expose on the gateway port, by its cluster-local name (one Kubernetes cluster with
/// a namespace per datacenter). With a cluster per datacenter, override `gateways` with
/// addresses the other clusters reach (see deploy/README.md).
pub(crate) fn gateway_url(dc: &str) -> String {
    format!(
        "nats://{RELEASE}.{}.svc.cluster.local:{GATEWAY_PORT}",
        namespace(dc)
    )
}

/// The secret key of `user`'s password.
pub(crate) fn password_key(user: &str) -> String {
    format!("{user}.password")
}

pub(crate) fn render(topology: &Topology, files: &mut Files) -> Result<(), DeployError> {
    for dc in &topology.datacenters {
        let header = crate::header(
            topology,
            &format!(
                "Values of the NATS Helm chart for datacenter {} (namespace {}):\n#   helm install {RELEASE} nats/nats -n {} -f helm/{}.yaml",
                dc.name,
                namespace(&dc.name),
                namespace(&dc.name),
                dc.name
            ),
        );
        let text = format!("{header}{}", values(topology, dc).to_yaml());
        files.write(format!("helm/{}.yaml", dc.name), &text)?;
    }
    Ok(())
}

fn secret_env(key: &str) -> Doc {
    Doc::map([(
        "valueFrom",
        Doc::map([(
            "secretKeyRef",
            Doc::map([("name", Doc::str(SERVER_SECRET)), ("key", Doc::str(key))]),
        )]),
    )])
}

/// `<< $VAR >>`: the chart writes it unquoted, a variable reference.
fn variable(name: &str) -> Doc {
    Doc::str(format!("<< ${name} >>"))
}

fn authorization(user: &str) -> Doc {
    Doc::map([
        ("user", Doc::str(user)),
        ("password", variable(&password_variable(user))),
        ("timeout", Doc::int(2)),
    ])
}

fn tls(topology: &Topology) -> Option<Doc> {
    topology.settings.nats.tls.then(|| {
        Doc::map([
            ("enabled", Doc::Bool(true)),
            ("secretName", Doc::str(TLS_SECRET)),
        ])
    })
}

/// `entries` with `("tls", ..)` added when TLS is on.
fn with_tls(topology: &Topology, mut entries: Vec<(String, Doc)>) -> Doc {
    if let Some(tls) = tls(topology) {
        entries.push(("tls".to_owned(), tls));
    }
    Doc::Map(entries)
}

fn entries<const N: usize>(items: [(&str, Doc); N]) -> Vec<(String, Doc)> {
    items.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

pub(crate) fn values(topology: &Topology, dc: &Datacenter) -> Doc {
    let auth = topology.settings.nats.auth;
    let gateways = Doc::list(topology.datacenters.iter().map(|other| {
        Doc::map([
            ("name", Doc::str(&other.name)),
            ("urls", Doc::strs([gateway_url(&other.name)])),
        ])
    }));
    let mut cluster_merge = entries([("name", Doc::str(&dc.name))]);
    let mut gateway_merge = entries([("name", Doc::str(&dc.name))]);
    if auth {
        cluster_merge.push(("authorization".to_owned(), authorization(ROUTE_USER)));
        // A route presents only the credentials in its URL: the whole list is a secret.
        cluster_merge.push(("routes".to_owned(), variable(ROUTES_VARIABLE)));
        // A gateway dials with its own authorization user when the URL names none.
        gateway_merge.push(("authorization".to_owned(), authorization(GATEWAY_USER)));
    }
    gateway_merge.push(("gateways".to_owned(), gateways));

    let mut top_merge = entries([
        (
            "ping_interval",
            Doc::str(
                humantime::format_duration(topology.settings.gateway_ping_interval).to_string(),
            ),
        ),
        ("server_tags", Doc::strs([format!("dc:{}", dc.name)])),
    ]);
    if auth {
        let users =
            fanfare_topology::client_users(topology)
                .into_iter()
                .map(|(user, permissions)| {
                    Doc::map([
                        ("user", Doc::str(&user)),
                        ("password", variable(&password_variable(&user))),
                        (
                            "permissions",
                            Doc::map([
                                (
                                    "publish",
                                    Doc::map([("allow", Doc::strs(permissions.publish))]),
                                ),
                                (
                                    "subscribe",
                                    Doc::map([("allow", Doc::strs(permissions.subscribe))]),
                                ),
                                ("allow_responses", Doc::Bool(permissions.allow_responses)),
                            ]),
                        ),
                    ])
                });
        top_merge.push((
            "authorization".to_owned(),
            Doc::map([("users", Doc::list(users))]),
        ));
    }

    let config = entries([
        ("serverNamePrefix", Doc::str(format!("{}-", dc.name))),
        (
            "nats",
            with_tls(topology, entries([("port", Doc::int(CLIENT_PORT))])),
        ),
        (
            "cluster",
            with_tls(
                topology,
                entries([
                    ("enabled", Doc::Bool(true)),
                    ("port", Doc::int(CLUSTER_PORT)),
                    ("replicas", Doc::int(dc.nats.len() as i64)),
                    ("merge", Doc::Map(cluster_merge)),
                ]),
            ),
        ),
        (
            "gateway",
            with_tls(
                topology,
                entries([
                    ("enabled", Doc::Bool(true)),
                    ("port", Doc::int(GATEWAY_PORT)),
                    ("merge", Doc::Map(gateway_merge)),
                ]),
            ),
        ),
        (
            "jetstream",
            Doc::map([
                ("enabled", Doc::Bool(true)),
                (
                    "fileStore",
                    Doc::map([
                        ("enabled", Doc::Bool(true)),
                        ("dir", Doc::str("/data")),
                        (
                            "pvc",
                            Doc::map([
                                ("enabled", Doc::Bool(true)),
                                ("size", Doc::str(JETSTREAM_VOLUME)),
                            ]),
                        ),
                    ]),
                ),
                (
                    "memoryStore",
                    Doc::map([("enabled", Doc::Bool(true)), ("maxSize", Doc::str("256Mi"))]),
                ),
            ]),
        ),
        (
            "monitor",
            Doc::map([
                ("enabled", Doc::Bool(true)),
                ("port", Doc::int(MONITOR_PORT)),
            ]),
        ),
        ("merge", Doc::Map(top_merge)),
    ]);
    let mut env = Vec::new();
    if auth {
        for user in fanfare_topology::client_users(topology)
            .into_iter()
            .map(|(user, _)| user)
            .chain([ROUTE_USER.to_owned(), GATEWAY_USER.to_owned()])
        {
            env.push((password_variable(&user), secret_env(&password_key(&user))));
        }
        env.push((ROUTES_VARIABLE.to_owned(), secret_env("routes")));
    }

    let mut values = entries([
        ("fullnameOverride", Doc::str(RELEASE)),
        ("config", Doc::Map(config)),
        (
            "container",
            Doc::map([
                ("image", Doc::map([("tag", Doc::str(NATS_IMAGE_TAG))])),
                ("env", Doc::Map(env)),
            ]),
        ),
        (
            "service",
            Doc::map([(
                "ports",
                Doc::map([
                    ("gateway", Doc::map([("enabled", Doc::Bool(true))])),
                    ("monitor", Doc::map([("enabled", Doc::Bool(true))])),
                ]),
            )]),
        ),
        (
            "promExporter",
            Doc::map([
                ("enabled", Doc::Bool(true)),
                ("port", Doc::int(EXPORTER_PORT)),
            ]),
        ),
        (
            "podTemplate",
            Doc::map([(
                "merge",
                Doc::map([(
                    "metadata",
                    Doc::map([(
                        "annotations",
                        Doc::map([
                            ("prometheus.io/scrape", Doc::str("true")),
                            ("prometheus.io/port", Doc::str(EXPORTER_PORT.to_string())),
                        ]),
                    )]),
                )]),
            )]),
        ),
        ("natsBox", Doc::map([("enabled", Doc::Bool(false))])),
    ]);
    if topology.settings.nats.tls {
        values.push((
            "tlsCA".to_owned(),
            Doc::map([
                ("enabled", Doc::Bool(true)),
                ("secretName", Doc::str(TLS_SECRET)),
                ("key", Doc::str("ca.crt")),
            ]),
        ));
    }
    Doc::Map(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(name: &str) -> Topology {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../topology")
            .join(name);
        Topology::load(&path).unwrap_or_else(|e| panic!("{e}"))
    }

    fn text(doc: Option<&Doc>) -> &str {
        doc.and_then(Doc::as_str).unwrap_or_default()
    }

    #[test]
    fn each_datacenter_is_one_cluster_with_a_gateway_to_every_datacenter() {
        let t = shipped("local-3dc-ha.toml");
        let values = values(&t, &t.datacenters[1]);
        assert_eq!(text(values.at(&["config", "serverNamePrefix"])), "dc2-");
        assert_eq!(
            text(values.at(&["config", "cluster", "merge", "name"])),
            "dc2"
        );
        assert_eq!(
            values.at(&["config", "cluster", "replicas"]),
            Some(&Doc::Int(3))
        );
        assert_eq!(
            text(values.at(&["config", "gateway", "merge", "name"])),
            "dc2"
        );
        let Some(Doc::List(gateways)) = values.at(&["config", "gateway", "merge", "gateways"])
        else {
            panic!("gateways")
        };
        let names: Vec<&str> = gateways.iter().map(|g| text(g.get("name"))).collect();
        assert_eq!(names, ["dc1", "dc2", "dc3"]);
        assert_eq!(
            values.at(&["config", "jetstream", "fileStore", "enabled"]),
            Some(&Doc::Bool(true))
        );
    }

    #[test]
    fn users_and_permissions_are_those_of_the_topology_with_passwords_from_the_environment() {
        let t = shipped("local-3dc.toml");
        let values = values(&t, &t.datacenters[0]);
        let Some(Doc::List(users)) = values.at(&["config", "merge", "authorization", "users"])
        else {
            panic!("users")
        };
        let expected = fanfare_topology::client_users(&t);
        assert_eq!(users.len(), expected.len());
        for (doc, (user, permissions)) in users.iter().zip(&expected) {
            assert_eq!(text(doc.get("user")), user);
            assert_eq!(
                text(doc.get("password")),
                format!("<< ${} >>", password_variable(user))
            );
            assert_eq!(
                doc.at(&["permissions", "publish", "allow"]),
                Some(&Doc::strs(permissions.publish.clone()))
            );
            let env = values.at(&["container", "env", &password_variable(user)]);
            assert!(env.is_some(), "no env for {user}");
        }
    }
}
