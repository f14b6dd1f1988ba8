//! Kustomize manifests of the frontends and dispatchers: a base shared by every datacenter and
//! one overlay per datacenter (`kubectl apply -k kubernetes/overlays/<dc>`), in the
//! datacenter's namespace next to its NATS release.
//!
//! Frontends and dispatchers are StatefulSets, not Deployments: every node of a topology has
//! its own NATS user whose permissions name the node (its subscription-table keys, its batch
//! subject), so each pod must be exactly one topology node, and never two pods at once. Pod
//! `fanfare-frontend-<i>` runs the datacenter's `i`-th frontend of the topology with its config
//! `nodes/fanfare-frontend-<i>.toml` from the `fanfare-nodes` ConfigMap. The frontends'
//! HorizontalPodAutoscaler therefore scales between half of the topology's frontends and all of
//! them; to allow more, declare more frontends and render again.
//!
//! The Secrets are not part of the overlays (they are made from `secrets/kubernetes/<dc>`, or
//! by whatever the cluster uses for secrets): the overlays name them, and build without them.

use std::path::Path;

use fanfare_fabric::NatsSettings;
use fanfare_topology::{Datacenter, Topology};

use crate::doc::Doc;
use crate::helm::{self, password_key};
use crate::nodes::{self, Placement};
use crate::{namespace, DeployError, Files};

pub(crate) const FRONTEND: &str = "fanfare-frontend";
pub(crate) const DISPATCHER: &str = "fanfare-dispatcher";
pub(crate) const FRONTEND_PORT: u16 = 8080;
pub(crate) const DISPATCHER_PORT: u16 = 9090;
/// The fanfare image (see deploy/README.md for how it is built); overlays may retag it.
pub(crate) const IMAGE: &str = "fanfare";
pub(crate) const IMAGE_TAG: &str = env!("CARGO_PKG_VERSION");
/// Secrets of one datacenter, made from `secrets/kubernetes/<dc>`.
pub(crate) const FRONTEND_SECRET: &str = "fanfare-nats-frontends";
pub(crate) const DISPATCHER_SECRET: &str = "fanfare-nats-dispatchers";
pub(crate) const AUTH_SECRET: &str = "fanfare-auth-keys";
const NODES_CONFIG_MAP: &str = "fanfare-nodes";
/// Where the pods find what the volumes hold.
const NODES_DIR: &str = "/etc/fanfare/nodes";
const NATS_DIR: &str = "/etc/fanfare/nats";
const AUTH_DIR: &str = "/etc/fanfare/auth";
const TLS_DIR: &str = "/etc/fanfare/tls";
/// Seconds a stopping node has beyond its own drain before the kubelet kills it: accepted
/// publishes are stored, interest is withdrawn, the dispatch pin is handed over.
pub(crate) const STOP_MARGIN_SECS: u64 = 10;

/// The name pod `index` of `role` gets (and its config file, with `.toml`).
pub(crate) fn pod_name(role: &str, index: usize) -> String {
    format!("{role}-{index}")
}

/// Seconds a frontend needs to stop: its drain grace and window, and the margin.
pub(crate) fn frontend_stop_secs(topology: &Topology) -> u64 {
    let drain = &topology.settings.frontend;
    (drain.drain_grace + drain.drain_window)
        .as_secs_f64()
        .ceil() as u64
        + STOP_MARGIN_SECS
}

/// Frontends the autoscaler keeps at least: half the topology's, rounded up.
fn min_frontends(dc: &Datacenter) -> usize {
    dc.frontends.len().div_ceil(2).max(1)
}

pub(crate) fn render(topology: &Topology, files: &mut Files) -> Result<(), DeployError> {
    let header = |what: &str| crate::header(topology, what);
    let base = Doc::map([
        ("apiVersion", Doc::str("kustomize.config.k8s.io/v1beta1")),
        ("kind", Doc::str("Kustomization")),
        (
            "labels",
            Doc::list([Doc::map([(
                "pairs",
                Doc::map([("app.kubernetes.io/part-of", Doc::str("fanfare"))]),
            )])]),
        ),
        ("resources", Doc::strs(["frontend.yaml", "dispatcher.yaml"])),
        (
            "images",
            Doc::list([Doc::map([
                ("name", Doc::str(IMAGE)),
                ("newTag", Doc::str(IMAGE_TAG)),
            ])]),
        ),
    ]);
    files.write(
        "kubernetes/base/kustomization.yaml",
        &format!(
            "{}{}",
            header("fanfare frontends and dispatchers, shared by every datacenter"),
            base.to_yaml()
        ),
    )?;
    files.write(
        "kubernetes/base/frontend.yaml",
        &documents(
            &header("Frontends: SSE viewers and publishers"),
            &frontend_objects(topology),
        ),
    )?;
    files.write(
        "kubernetes/base/dispatcher.yaml",
        &documents(
            &header("Dispatchers: one holds each dispatch partition, the others stand by"),
            &dispatcher_objects(topology),
        ),
    )?;
    for dc in &topology.datacenters {
        overlay(topology, dc, files)?;
    }
    Ok(())
}

/// Several objects in one YAML stream.
fn documents(header: &str, objects: &[Doc]) -> String {
    let mut out = header.to_owned();
    for object in objects {
        out.push_str("---\n");
        out.push_str(&object.to_yaml());
    }
    out
}

fn metadata(name: &str) -> Doc {
    Doc::map([
        ("name", Doc::str(name)),
        (
            "labels",
            Doc::map([("app.kubernetes.io/name", Doc::str(name))]),
        ),
    ])
}

fn selector(name: &str) -> Doc {
    Doc::map([(
        "matchLabels",
        Doc::map([("app.kubernetes.io/name", Doc::str(name))]),
    )])
}

fn service(name: &str, selected: &str, port: u16, target: &str, headless: bool) -> Doc {
    let mut spec = vec![
        (
            "selector".to_owned(),
            Doc::map([("app.kubernetes.io/name", Doc::str(selected))]),
        ),
        (
            "ports".to_owned(),
            Doc::list([Doc::map([
                ("name", Doc::str(target)),
                ("port", Doc::int(port)),
                ("targetPort", Doc::str(target)),
            ])]),
        ),
    ];
    if headless {
        spec.insert(0, ("clusterIP".to_owned(), Doc::str("None")));
        // Pods are reachable by name before they are ready (NATS batches, debugging).
        spec.push(("publishNotReadyAddresses".to_owned(), Doc::Bool(true)));
    }
    Doc::map([
        ("apiVersion", Doc::str("v1")),
        ("kind", Doc::str("Service")),
        ("metadata", metadata(name)),
        ("spec", Doc::Map(spec)),
    ])
}

fn probe(path: &str, port: &str, period: u64, failures: u64) -> Doc {
    Doc::map([
        (
            "httpGet",
            Doc::map([("path", Doc::str(path)), ("port", Doc::str(port))]),
        ),
        ("periodSeconds", Doc::int(period as i64)),
        ("failureThreshold", Doc::int(failures as i64)),
    ])
}

fn resources(cpu: &str, memory: &str, memory_limit: &str) -> Doc {
    Doc::map([
        (
            "requests",
            Doc::map([("cpu", Doc::str(cpu)), ("memory", Doc::str(memory))]),
        ),
        ("limits", Doc::map([("memory", Doc::str(memory_limit))])),
    ])
}

fn volume_mount(name: &str, path: &str) -> Doc {
    Doc::map([
        ("name", Doc::str(name)),
        ("mountPath", Doc::str(path)),
        ("readOnly", Doc::Bool(true)),
    ])
}

fn secret_volume(name: &str, secret: &str) -> Doc {
    Doc::map([
        ("name", Doc::str(name)),
        (
            "secret",
            Doc::map([
                ("secretName", Doc::str(secret)),
                ("defaultMode", Doc::int(0o440)),
            ]),
        ),
    ])
}

/// A pod's volumes and mounts: its node config, its role's NATS passwords, the auth keys
/// (frontends, when authentication is on) and the NATS CA (when TLS is on).
fn volumes(topology: &Topology, nats_secret: &str, with_auth: bool) -> (Doc, Doc) {
    let mut mounts = vec![volume_mount("nodes", NODES_DIR)];
    let mut volumes = vec![Doc::map([
        ("name", Doc::str("nodes")),
        (
            "configMap",
            Doc::map([("name", Doc::str(NODES_CONFIG_MAP))]),
        ),
    ])];
    if topology.settings.nats.auth {
        mounts.push(volume_mount("nats-credentials", NATS_DIR));
        volumes.push(secret_volume("nats-credentials", nats_secret));
    }
    if with_auth && !topology.auth.keys.is_empty() {
        mounts.push(volume_mount("auth-keys", AUTH_DIR));
        volumes.push(secret_volume("auth-keys", AUTH_SECRET));
    }
    if topology.settings.nats.tls {
        mounts.push(volume_mount("nats-ca", TLS_DIR));
        volumes.push(Doc::map([
            ("name", Doc::str("nats-ca")),
            (
                "secret",
                Doc::map([
                    ("secretName", Doc::str(helm::TLS_SECRET)),
                    (
                        "items",
                        Doc::list([Doc::map([
                            ("key", Doc::str("ca.crt")),
                            ("path", Doc::str("ca.crt")),
                        ])]),
                    ),
                ]),
            ),
        ]));
    }
    (Doc::List(mounts), Doc::List(volumes))
}

struct Workload<'a> {
    name: &'a str,
    subcommand: &'a str,
    port_name: &'a str,
    port: u16,
    stop_secs: u64,
    readiness_period: u64,
    resources: Doc,
    nats_secret: &'a str,
    with_auth: bool,
}

fn stateful_set(topology: &Topology, workload: Workload<'_>) -> Doc {
    let (mounts, volumes) = volumes(topology, workload.nats_secret, workload.with_auth);
    let container = Doc::map([
        ("name", Doc::str(workload.subcommand)),
        ("image", Doc::str(IMAGE)),
        (
            "args",
            Doc::strs([
                workload.subcommand.to_owned(),
                "--config".to_owned(),
                format!("{NODES_DIR}/$(POD_NAME).toml"),
            ]),
        ),
        (
            "env",
            Doc::list([Doc::map([
                ("name", Doc::str("POD_NAME")),
                (
                    "valueFrom",
                    Doc::map([(
                        "fieldRef",
                        Doc::map([("fieldPath", Doc::str("metadata.name"))]),
                    )]),
                ),
            ])]),
        ),
        (
            "ports",
            Doc::list([Doc::map([
                ("name", Doc::str(workload.port_name)),
                ("containerPort", Doc::int(workload.port)),
            ])]),
        ),
        (
            "readinessProbe",
            probe("/readyz", workload.port_name, workload.readiness_period, 1),
        ),
        (
            "livenessProbe",
            probe("/healthz", workload.port_name, 10, 3),
        ),
        ("resources", workload.resources),
        ("volumeMounts", mounts),
        (
            "securityContext",
            Doc::map([
                ("allowPrivilegeEscalation", Doc::Bool(false)),
                ("readOnlyRootFilesystem", Doc::Bool(true)),
                ("capabilities", Doc::map([("drop", Doc::strs(["ALL"]))])),
            ]),
        ),
    ]);
    let pod = Doc::map([
        (
            "metadata",
            Doc::map([
                (
                    "labels",
                    Doc::map([("app.kubernetes.io/name", Doc::str(workload.name))]),
                ),
                (
                    "annotations",
                    Doc::map([
                        ("prometheus.io/scrape", Doc::str("true")),
                        ("prometheus.io/port", Doc::str(workload.port.to_string())),
                        ("prometheus.io/path", Doc::str("/metrics")),
                    ]),
                ),
            ]),
        ),
        (
            "spec",
            Doc::map([
                (
                    "terminationGracePeriodSeconds",
                    Doc::int(workload.stop_secs as i64),
                ),
                // Service links would put every Service of the namespace into the environment.
                ("enableServiceLinks", Doc::Bool(false)),
                (
                    "securityContext",
                    Doc::map([
                        ("runAsNonRoot", Doc::Bool(true)),
                        ("runAsUser", Doc::int(10001)),
                        ("runAsGroup", Doc::int(10001)),
                        ("fsGroup", Doc::int(10001)),
                    ]),
                ),
                ("containers", Doc::list([container])),
                ("volumes", volumes),
            ]),
        ),
    ]);
    Doc::map([
        ("apiVersion", Doc::str("apps/v1")),
        ("kind", Doc::str("StatefulSet")),
        ("metadata", metadata(workload.name)),
        (
            "spec",
            Doc::map([
                (
                    "serviceName",
                    Doc::str(format!("{}-headless", workload.name)),
                ),
                ("replicas", Doc::int(1)),
                // Pods start and stop together; a rolling update still goes one at a time.
                ("podManagementPolicy", Doc::str("Parallel")),
                ("selector", selector(workload.name)),
                ("template", pod),
            ]),
        ),
    ])
}

fn disruption_budget(name: &str) -> Doc {
    Doc::map([
        ("apiVersion", Doc::str("policy/v1")),
        ("kind", Doc::str("PodDisruptionBudget")),
        ("metadata", metadata(name)),
        (
            "spec",
            Doc::map([
                ("maxUnavailable", Doc::int(1)),
                ("selector", selector(name)),
            ]),
        ),
    ])
}

fn frontend_objects(topology: &Topology) -> Vec<Doc> {
    let grace = topology.settings.frontend.drain_grace.as_secs().max(1);
    let workload = Workload {
        name: FRONTEND,
        subcommand: "frontend",
        port_name: "http",
        port: FRONTEND_PORT,
        stop_secs: frontend_stop_secs(topology),
        // Notice `/readyz` turning false well within the drain grace.
        readiness_period: (grace / 2).clamp(1, 10),
        resources: resources("1", "1Gi", "2Gi"),
        nats_secret: FRONTEND_SECRET,
        with_auth: topology.auth.is_on(),
    };
    let autoscaler = Doc::map([
        ("apiVersion", Doc::str("autoscaling/v2")),
        ("kind", Doc::str("HorizontalPodAutoscaler")),
        ("metadata", metadata(FRONTEND)),
        (
            "spec",
            Doc::map([
                (
                    "scaleTargetRef",
                    Doc::map([
                        ("apiVersion", Doc::str("apps/v1")),
                        ("kind", Doc::str("StatefulSet")),
                        ("name", Doc::str(FRONTEND)),
                    ]),
                ),
                // Each overlay sets both to what its datacenter declares.
                ("minReplicas", Doc::int(1)),
                ("maxReplicas", Doc::int(1)),
                (
                    "metrics",
                    Doc::list([Doc::map([
                        ("type", Doc::str("Resource")),
                        (
                            "resource",
                            Doc::map([
                                ("name", Doc::str("cpu")),
                                (
                                    "target",
                                    Doc::map([
                                        ("type", Doc::str("Utilization")),
                                        ("averageUtilization", Doc::int(70)),
                                    ]),
                                ),
                            ]),
                        ),
                    ])]),
                ),
                (
                    "behavior",
                    Doc::map([(
                        "scaleDown",
                        Doc::map([
                            // Every scale-down moves viewers: do it rarely, one pod at a time.
                            ("stabilizationWindowSeconds", Doc::int(600)),
                            (
                                "policies",
                                Doc::list([Doc::map([
                                    ("type", Doc::str("Pods")),
                                    ("value", Doc::int(1)),
                                    ("periodSeconds", Doc::int(300)),
                                ])]),
                            ),
                        ]),
                    )]),
                ),
            ]),
        ),
    ]);
    vec![
        service(FRONTEND, FRONTEND, 80, "http", false),
        service(
            &format!("{FRONTEND}-headless"),
            FRONTEND,
            FRONTEND_PORT,
            "http",
            true,
        ),
        stateful_set(topology, workload),
        disruption_budget(FRONTEND),
        autoscaler,
    ]
}

fn dispatcher_objects(topology: &Topology) -> Vec<Doc> {
    let workload = Workload {
        name: DISPATCHER,
        subcommand: "dispatcher",
        port_name: "admin",
        port: DISPATCHER_PORT,
        stop_secs: STOP_MARGIN_SECS * 2,
        readiness_period: 5,
        resources: resources("500m", "256Mi", "1Gi"),
        nats_secret: DISPATCHER_SECRET,
        with_auth: false,
    };
    vec![
        service(
            &format!("{DISPATCHER}-headless"),
            DISPATCHER,
            DISPATCHER_PORT,
            "admin",
            true,
        ),
        stateful_set(topology, workload),
        disruption_budget(DISPATCHER),
    ]
}

/// How a pod of `dc` reaches NATS and authenticates: the release's client Service, its role's
/// password file and the CA.
fn pod_nats(topology: &Topology, user: &str) -> NatsSettings {
    let auth = topology.settings.nats.auth;
    NatsSettings {
        urls: vec![format!("nats://{}:{}", helm::RELEASE, helm::CLIENT_PORT)],
        user: auth.then(|| user.to_owned()),
        password_file: auth.then(|| Path::new(NATS_DIR).join(password_key(user))),
        tls_ca_file: topology
            .settings
            .nats
            .tls
            .then(|| Path::new(TLS_DIR).join("ca.crt")),
        ..NatsSettings::default()
    }
}

fn overlay(topology: &Topology, dc: &Datacenter, files: &mut Files) -> Result<(), DeployError> {
    let dir = format!("kubernetes/overlays/{}", dc.name);
    let any = std::net::Ipv4Addr::UNSPECIFIED;
    let keys = nodes::keys_in(&topology.auth, Path::new(AUTH_DIR));
    let written = crate::write_node_configs(topology, dc, files, &keys, |spot| {
        let (role, port) = if spot.frontend {
            (FRONTEND, FRONTEND_PORT)
        } else {
            (DISPATCHER, DISPATCHER_PORT)
        };
        crate::NodeFile {
            path: format!("{dir}/nodes/{}.toml", pod_name(role, spot.index)),
            placement: Placement {
                listen: (any, port).into(),
                nats: pod_nats(topology, spot.name),
            },
        }
    })?;
    let config_files: Vec<String> = written
        .iter()
        .map(|path| path.trim_start_matches(&format!("{dir}/")).to_owned())
        .collect();
    let ns = namespace(&dc.name);
    let namespace_doc = Doc::map([
        ("apiVersion", Doc::str("v1")),
        ("kind", Doc::str("Namespace")),
        ("metadata", Doc::map([("name", Doc::str(&ns))])),
    ]);
    files.write(
        format!("{dir}/namespace.yaml"),
        &format!(
            "{}{}",
            crate::header(topology, "The datacenter's namespace"),
            namespace_doc.to_yaml()
        ),
    )?;
    let autoscaler_patch = Doc::map([
        ("apiVersion", Doc::str("autoscaling/v2")),
        ("kind", Doc::str("HorizontalPodAutoscaler")),
        ("metadata", Doc::map([("name", Doc::str(FRONTEND))])),
        (
            "spec",
            Doc::map([
                ("minReplicas", Doc::int(min_frontends(dc) as i64)),
                ("maxReplicas", Doc::int(dc.frontends.len() as i64)),
            ]),
        ),
    ]);
    let kustomization = Doc::map([
        ("apiVersion", Doc::str("kustomize.config.k8s.io/v1beta1")),
        ("kind", Doc::str("Kustomization")),
        ("namespace", Doc::str(&ns)),
        (
            "labels",
            Doc::list([Doc::map([(
                "pairs",
                Doc::map([("fanfare.dev/datacenter", Doc::str(&dc.name))]),
            )])]),
        ),
        ("resources", Doc::strs(["namespace.yaml", "../../base"])),
        (
            "replicas",
            Doc::list([
                Doc::map([
                    ("name", Doc::str(FRONTEND)),
                    ("count", Doc::int(dc.frontends.len() as i64)),
                ]),
                Doc::map([
                    ("name", Doc::str(DISPATCHER)),
                    ("count", Doc::int(dc.dispatchers.len() as i64)),
                ]),
            ]),
        ),
        (
            "configMapGenerator",
            Doc::list([Doc::map([
                ("name", Doc::str(NODES_CONFIG_MAP)),
                ("files", Doc::strs(config_files)),
            ])]),
        ),
        (
            "patches",
            Doc::list([Doc::map([("patch", Doc::str(autoscaler_patch.to_yaml()))])]),
        ),
    ]);
    let what = format!(
        "Datacenter {}: kubectl apply -k kubernetes/overlays/{} (after its NATS release and Secrets)",
        dc.name, dc.name
    );
    files.write(
        format!("{dir}/kustomization.yaml"),
        &format!(
            "{}{}",
            crate::header(topology, &what),
            kustomization.to_yaml()
        ),
    )
}
