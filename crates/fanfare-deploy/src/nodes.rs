//! What each dispatcher and frontend of a topology runs with: the topology's share of a
//! node's settings (name, datacenter, partitions, interest TTL, limits profile, drain, `[auth]`)
//! on top of a base, with the address and NATS connection of wherever the node runs. `fanfare
//! up` and every generated deployment build their node configs here, so they cannot drift.

use std::net::SocketAddr;

use fanfare_fabric::NatsSettings;
use fanfare_topology::{DispatcherNode, FrontendLimits, FrontendNode, Topology};

/// Where a node runs: the address it listens on and how it reaches its datacenter's NATS.
#[derive(Debug, Clone)]
pub struct Placement {
    pub listen: SocketAddr,
    pub nats: NatsSettings,
}

/// Frontend `node`'s settings: `base` with what the topology decides and `placement`.
pub fn frontend_settings(
    topology: &Topology,
    node: &FrontendNode,
    base: fanfare_frontend::Settings,
    placement: Placement,
) -> fanfare_frontend::Settings {
    let mut settings = base;
    settings.name = node.name.clone();
    settings.dc = node.dc.clone();
    settings.listen = placement.listen;
    settings.nats = placement.nats;
    settings.interest_ttl = topology.settings.interest_ttl;
    settings.drain_grace = topology.settings.frontend.drain_grace;
    settings.drain_window = topology.settings.frontend.drain_window;
    if topology.settings.frontend_limits == FrontendLimits::Unthrottled {
        settings.limits = fanfare_frontend::LimitSettings::unthrottled();
    }
    settings.auth = topology.auth.clone();
    settings
}

/// Dispatcher `node`'s settings: `base` with what the topology decides and `placement`
/// (`listen` is its admin address).
pub fn dispatcher_settings(
    topology: &Topology,
    node: &DispatcherNode,
    base: fanfare_dispatcher::Settings,
    placement: Placement,
) -> fanfare_dispatcher::Settings {
    let mut settings = base;
    settings.name = node.name.clone();
    settings.dc = node.dc.clone();
    settings.admin = placement.listen;
    settings.nats = placement.nats;
    settings.partitions = topology.settings.partitions;
    settings
}

/// A node config file: TOML as `fanfare frontend|dispatcher --config` reads it.
pub fn config_text<T: serde::Serialize>(
    node: &str,
    settings: &T,
) -> Result<String, crate::DeployError> {
    toml::to_string(settings).map_err(|error| crate::DeployError::NodeConfig {
        node: node.to_owned(),
        message: error.to_string(),
    })
}

/// `auth` with every key read from `dir/key-<i>` (HS256 secrets) or `dir/key-<i>.pem` (public
/// keys), `i` its place in `[[auth.keys]]`, instead of the topology's paths or inline values,
/// which stay on the machine that renders: a deployment mounts the keys there from a secret.
/// (A `kid` may hold any character, so it does not name files.)
pub fn keys_in(
    auth: &fanfare_auth::AuthSettings,
    dir: &std::path::Path,
) -> fanfare_auth::AuthSettings {
    let mut relocated = auth.clone();
    for (index, key) in relocated.keys.iter_mut().enumerate() {
        let file = dir.join(key_file_name(index, key));
        let is_secret = key.secret.is_some() || key.secret_file.is_some();
        key.secret = None;
        key.secret_file = None;
        key.public_key = None;
        key.public_key_file = None;
        if is_secret {
            key.secret_file = Some(file);
        } else {
            key.public_key_file = Some(file);
        }
    }
    relocated
}

/// The file name key `index` is mounted under: `key-<index>` for a shared secret,
/// `key-<index>.pem` for a public key.
pub fn key_file_name(index: usize, key: &fanfare_auth::KeySettings) -> String {
    if key.secret.is_some() || key.secret_file.is_some() {
        format!("key-{index}")
    } else {
        format!("key-{index}.pem")
    }
}
