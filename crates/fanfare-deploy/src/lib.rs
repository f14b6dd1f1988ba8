//! fanfare-deploy turns one topology file into everything a deployment needs beyond the
//! `fanfare` binary and the official nats-server: `fanfare deploy render TOPOLOGY --out DIR`.
//!
//! The output is deterministic and holds no secret, so it can be checked in and compared
//! (`deploy/<topology>/` in this repository is exactly this crate's output for the shipped
//! topologies):
//! - `helm/<dc>.yaml`: values of the official NATS Helm chart, one release per datacenter
//!   ([`helm`]);
//! - `kubernetes/base` and `kubernetes/overlays/<dc>`: kustomize manifests of the frontends
//!   and dispatchers ([`kube`]);
//! - `compose/`: the whole topology on one Docker host ([`compose`]);
//! - `hosts/`: systemd units and per-node files for machines without Kubernetes ([`hosts`]);
//! - `monitoring/`: Prometheus alert rules with their promtool tests, and a Grafana dashboard
//!   ([`monitoring`]).
//!
//! Secrets are referenced, never inlined: NATS configs name environment variables
//! ([`fanfare_topology::password_variable`]), node configs name password and key files, and
//! manifests name Kubernetes Secrets. `--with-secrets` also writes `DIR/secrets/`: the
//! passwords (kept when already there, so re-rendering does not rotate them), the auth keys,
//! throwaway TLS files when TLS is on, and the env files and kustomizations that hand them to
//! each target ([`secrets`]).
//!
//! Node configs come from [`nodes`], which `fanfare up` uses too.

mod compose;
pub mod doc;
mod helm;
mod hosts;
mod kube;
mod monitoring;
pub mod nodes;
mod secrets;

use std::path::{Path, PathBuf};

use fanfare_topology::Topology;

pub use doc::Doc;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Topology(#[from] fanfare_topology::TopologyError),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode the config of {node}: {message}")]
    NodeConfig { node: String, message: String },
}

/// What `fanfare deploy render` writes besides the checked-in files.
#[derive(Debug, Clone, Copy, Default)]
pub struct RenderOptions {
    /// Also write `DIR/secrets/` (see the crate docs).
    pub with_secrets: bool,
}

/// The directories of `DIR` that a render owns: emptied and written again each time.
/// `secrets/` is never emptied.
pub const GENERATED_DIRS: [&str; 5] = ["helm", "kubernetes", "compose", "hosts", "monitoring"];

/// Kubernetes namespace of a datacenter.
pub fn namespace(dc: &str) -> String {
    format!("fanfare-{dc}")
}

/// Writes every file for `topology` into `out_dir` and returns their paths, sorted.
pub fn render(
    topology: &Topology,
    out_dir: &Path,
    options: RenderOptions,
) -> Result<Vec<PathBuf>, DeployError> {
    let mut topology = topology.clone();
    // The configs name their source; a file name reads the same wherever the render runs.
    topology.source = Path::new(&topology.source)
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    for dir in GENERATED_DIRS {
        let path = out_dir.join(dir);
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(|source| DeployError::Write {
                path: path.clone(),
                source,
            })?;
        }
    }
    let mut files = Files::new(out_dir);
    helm::render(&topology, &mut files)?;
    kube::render(&topology, &mut files)?;
    compose::render(&topology, &mut files)?;
    hosts::render(&topology, &mut files)?;
    monitoring::render(&topology, &mut files)?;
    if options.with_secrets {
        secrets::render(&topology, &mut files)?;
    }
    let mut written = files.written;
    written.sort();
    Ok(written)
}

/// Writes files under one root and remembers them.
pub(crate) struct Files {
    root: PathBuf,
    written: Vec<PathBuf>,
}

impl Files {
    fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            written: Vec::new(),
        }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Writes `text` to `relative` (parents created).
    pub(crate) fn write(
        &mut self,
        relative: impl AsRef<Path>,
        text: &str,
    ) -> Result<(), DeployError> {
        let path = self.prepare(relative.as_ref())?;
        std::fs::write(&path, text).map_err(|source| DeployError::Write {
            path: path.clone(),
            source,
        })?;
        self.written.push(path);
        Ok(())
    }

    /// Writes `text` readable by its owner only (0600).
    pub(crate) fn write_private(
        &mut self,
        relative: impl AsRef<Path>,
        text: &str,
    ) -> Result<(), DeployError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.prepare(relative.as_ref())?;
        let failed = |source| DeployError::Write {
            path: path.clone(),
            source,
        };
        let _ = std::fs::remove_file(&path);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(failed)?;
        file.write_all(text.as_bytes()).map_err(failed)?;
        self.written.push(path);
        Ok(())
    }

    /// Records files written by someone else (the nats-server config renderer).
    pub(crate) fn record(&mut self, paths: impl IntoIterator<Item = PathBuf>) {
        self.written.extend(paths);
    }

    fn prepare(&self, relative: &Path) -> Result<PathBuf, DeployError> {
        let path = self.root.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| DeployError::Write {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        Ok(path)
    }
}

/// The header every generated text file starts with (`#` comments).
pub(crate) fn header(topology: &Topology, what: &str) -> String {
    format!(
        "# {what}\n# Generated by `fanfare deploy render` from {}; edit the topology and render again.\n",
        topology.source
    )
}

/// A node as a target places it: its name, role, place among its datacenter's nodes of that
/// role, and the address the topology gives it.
pub(crate) struct NodeSpot<'a> {
    pub(crate) name: &'a str,
    pub(crate) frontend: bool,
    pub(crate) index: usize,
    pub(crate) address: std::net::SocketAddr,
}

/// Where a target puts one node's config and how the node runs there.
pub(crate) struct NodeFile {
    /// Relative to the render's root.
    pub(crate) path: String,
    pub(crate) placement: nodes::Placement,
}

/// Writes the config of every dispatcher and frontend of `dc` where `target` says, each with
/// a header naming it; frontends verify tokens with `keys`. Returns the written paths,
/// frontends first.
pub(crate) fn write_node_configs(
    topology: &Topology,
    dc: &fanfare_topology::Datacenter,
    files: &mut Files,
    keys: &fanfare_auth::AuthSettings,
    target: impl Fn(NodeSpot<'_>) -> NodeFile,
) -> Result<Vec<String>, DeployError> {
    let mut written = Vec::new();
    let mut write = |name: &str, path: String, text: String| -> Result<(), DeployError> {
        let header = header(topology, &format!("Config of node {name}"));
        files.write(&path, &format!("{header}{text}"))?;
        written.push(path);
        Ok(())
    };
    for (index, node) in dc.frontends.iter().enumerate() {
        let spot = NodeSpot {
            name: &node.name,
            frontend: true,
            index,
            address: node.listen,
        };
        let file = target(spot);
        let base = fanfare_frontend::Settings::default();
        let mut settings = nodes::frontend_settings(topology, node, base, file.placement);
        settings.auth = keys.clone();
        write(
            &node.name,
            file.path,
            nodes::config_text(&node.name, &settings)?,
        )?;
    }
    for (index, node) in dc.dispatchers.iter().enumerate() {
        let spot = NodeSpot {
            name: &node.name,
            frontend: false,
            index,
            address: node.admin,
        };
        let file = target(spot);
        let base = fanfare_dispatcher::Settings::default();
        let settings = nodes::dispatcher_settings(topology, node, base, file.placement);
        write(
            &node.name,
            file.path,
            nodes::config_text(&node.name, &settings)?,
        )?;
    }
    Ok(written)
}
