//! Datacenters as separate hosts on one machine (`fanfare up --netns`, root only): each
//! datacenter gets a network namespace with an address of its own, joined to the others through
//! a veth pair and a bridge, and its NATS servers, dispatchers and frontends run inside it.
//! Gateways then cross real (virtual) links, and `fanfare chaos partition` cuts them in the
//! kernel, with nftables rules inside the namespaces, instead of in user-space proxies.
//!
//! Everything is named after the run directory (a 6-hex tag): namespaces
//! `fanfare-<tag>-<dc>`, the bridge `ff<tag>br`, host-side veths `ff<tag>v<i>`. Addresses come
//! from 198.18.0.0/15, the range set aside for network benchmarks (RFC 2544): the bridge is
//! `198.18.<n>.1` in the host's namespace, datacenter `i` is `198.18.<n>.<10 + i>`. Nothing
//! else is ever addressed. [`Namespaces::remove`] deletes it all (the namespaces take their
//! veths and rules with them); a start first deletes whatever a crashed run with the same run
//! directory left, found by those names.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use fanfare_topology::Topology;

use crate::links::{LinkMode, LinkStates};
use crate::SupervisorError;

/// Where `ip netns` keeps named namespaces.
const NETNS_DIR: &str = "/run/netns";
/// First address of the datacenters in their /24.
const FIRST_HOST: u8 = 10;
/// The nftables table fanfare owns inside each namespace.
const TABLE: &str = "fanfare";

/// One datacenter's namespace.
#[derive(Debug, Clone)]
struct Place {
    namespace: String,
    veth: String,
    address: Ipv4Addr,
}

/// The namespaces, bridge and links of one run.
#[derive(Debug)]
pub struct Namespaces {
    tag: String,
    bridge: String,
    /// Datacenter name → its namespace.
    places: BTreeMap<String, Place>,
    /// Set by [`Namespaces::remove`]; otherwise dropping removes them (a failed start, a
    /// dropped topology).
    removed: bool,
}

/// Whether this process may create namespaces (it runs as root).
pub fn is_root() -> bool {
    #[allow(unsafe_code)]
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    euid == 0
}

/// The namespace of datacenter `dc` for a run in `run_dir` (the name under `/run/netns`).
pub fn namespace_name(run_dir: &Path, dc: &str) -> String {
    format!("fanfare-{}-{dc}", tag_of(run_dir))
}

/// The tag of a run directory: 6 hex digits of a hash of its absolute path.
fn tag_of(run_dir: &Path) -> String {
    let path = std::path::absolute(run_dir).unwrap_or_else(|_| run_dir.to_path_buf());
    // FNV-1a: stable across builds and processes, unlike the std hasher.
    let mut hash: u32 = 0x811c_9dc5;
    for byte in path.as_os_str().as_encoded_bytes() {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("{:06x}", hash & 0x00ff_ffff)
}

async fn command(program: &str, args: &[&str], input: Option<&str>) -> Result<String, String> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("{program}: {error}"))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .await
            .map_err(|error| format!("{program}: {error}"))?;
    }
    let output = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait_with_output())
        .await
        .map_err(|_| format!("{program} {} did not finish within 10s", args.join(" ")))?
        .map_err(|error| format!("{program}: {error}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

async fn ip(args: &[&str]) -> Result<String, SupervisorError> {
    command("ip", args, None)
        .await
        .map_err(SupervisorError::Netns)
}

impl Namespaces {
    /// Creates a namespace per datacenter of `topology`, linked through one bridge, after
    /// removing what an earlier run in `run_dir` left.
    pub async fn create(topology: &Topology, run_dir: &Path) -> Result<Self, SupervisorError> {
        if !is_root() {
            return Err(SupervisorError::Netns(
                "fanfare up --netns needs root: it creates network namespaces, veth links, a \
                 bridge and nftables rules (run it as root, e.g. with sudo)"
                    .to_owned(),
            ));
        }
        for tool in ["ip", "nft"] {
            if command(tool, &["-V"], None).await.is_err() {
                return Err(SupervisorError::Netns(format!(
                    "{tool} not found: install iproute2 and nftables (scripts/install-deploy-tools \
                     does)"
                )));
            }
        }
        let tag = tag_of(run_dir);
        let bridge = format!("ff{tag}br");
        remove_leftovers(&tag, &bridge).await;
        let subnet = free_subnet(&tag).await?;
        let mut places = BTreeMap::new();
        for (index, dc) in topology.datacenters.iter().enumerate() {
            let host = FIRST_HOST as usize + index;
            let host = u8::try_from(host)
                .ok()
                .filter(|host| *host < 255)
                .ok_or_else(|| SupervisorError::Netns("too many datacenters".to_owned()))?;
            places.insert(
                dc.name.clone(),
                Place {
                    namespace: namespace_name(run_dir, &dc.name),
                    veth: format!("ff{tag}v{index}"),
                    address: Ipv4Addr::new(198, 18, subnet, host),
                },
            );
        }
        let mut namespaces = Self {
            tag,
            bridge,
            places,
            removed: false,
        };
        if let Err(error) = namespaces.build(subnet).await {
            namespaces.remove().await;
            return Err(error);
        }
        Ok(namespaces)
    }

    async fn build(&self, subnet: u8) -> Result<(), SupervisorError> {
        let bridge = self.bridge.as_str();
        let bridge_address = format!("198.18.{subnet}.1/24");
        ip(&["link", "add", bridge, "type", "bridge"]).await?;
        ip(&["addr", "add", &bridge_address, "dev", bridge]).await?;
        ip(&["link", "set", bridge, "up"]).await?;
        for place in self.places.values() {
            let ns = place.namespace.as_str();
            let peer = format!("{}p", place.veth);
            ip(&["netns", "add", ns]).await?;
            ip(&[
                "link",
                "add",
                &place.veth,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
            ])
            .await?;
            ip(&["link", "set", &place.veth, "master", bridge]).await?;
            ip(&["link", "set", &place.veth, "up"]).await?;
            ip(&["link", "set", &peer, "netns", ns]).await?;
            let inside = |args: &[&str]| {
                let mut all = vec!["-n", ns];
                all.extend_from_slice(args);
                all.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>()
            };
            let address = format!("{}/24", place.address);
            for args in [
                inside(&["link", "set", "lo", "up"]),
                inside(&["link", "set", &peer, "name", "eth0"]),
                inside(&["addr", "add", &address, "dev", "eth0"]),
                inside(&["link", "set", "eth0", "up"]),
            ] {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                ip(&args).await?;
            }
        }
        self.apply(&LinkStates::new()).await
    }

    /// The address datacenter `dc` lives at.
    pub fn address(&self, dc: &str) -> Option<Ipv4Addr> {
        self.places.get(dc).map(|place| place.address)
    }

    /// The namespace file processes of `dc` enter.
    pub fn path(&self, dc: &str) -> Option<PathBuf> {
        self.places
            .get(dc)
            .map(|place| Path::new(NETNS_DIR).join(&place.namespace))
    }

    /// `topology` with every node of a datacenter on that datacenter's address (same ports).
    pub fn relocate(&self, topology: &Topology) -> Topology {
        let mut moved = topology.clone();
        for dc in &mut moved.datacenters {
            let Some(address) = self.address(&dc.name) else {
                continue;
            };
            for server in &mut dc.nats {
                server.host = address.to_string();
            }
            for node in &mut dc.dispatchers {
                node.admin.set_ip(address.into());
            }
            for node in &mut dc.frontends {
                node.listen.set_ip(address.into());
            }
        }
        moved
    }

    /// Makes the kernel cut what `states` cuts: in each namespace, packets to and from every
    /// datacenter it has a cut link with are refused with a TCP reset (`Reset`: both sides
    /// see their connections fail at the next packet) or silently dropped (`Drop`).
    pub async fn apply(&self, states: &LinkStates) -> Result<(), SupervisorError> {
        for (dc, place) in &self.places {
            let mut input = String::new();
            let mut output = String::new();
            for ((a, b), mode) in states {
                let other = if a == dc {
                    b
                } else if b == dc {
                    a
                } else {
                    continue;
                };
                let Some(peer) = self.address(other) else {
                    continue;
                };
                let verdict = match mode {
                    LinkMode::Up => continue,
                    LinkMode::Reset => "reject with tcp reset",
                    LinkMode::Drop => "drop",
                };
                // Non-TCP packets (none flow here) are dropped either way.
                input.push_str(&format!(
                    "    ip saddr {peer} meta l4proto tcp {verdict}\n    ip saddr {peer} drop\n"
                ));
                output.push_str(&format!(
                    "    ip daddr {peer} meta l4proto tcp {verdict}\n    ip daddr {peer} drop\n"
                ));
            }
            let script = format!(
                "table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n{input}  }}\n  chain output {{\n    type filter hook output priority 0; policy accept;\n{output}  }}\n}}\n"
            );
            command(
                "ip",
                &["netns", "exec", &place.namespace, "nft", "-f", "-"],
                Some(&script),
            )
            .await
            .map_err(SupervisorError::Netns)?;
        }
        Ok(())
    }

    /// Deletes the namespaces (with their veths and rules) and the bridge. Errors are logged:
    /// stopping goes on.
    pub async fn remove(&mut self) {
        self.removed = true;
        for place in self.places.values() {
            if let Err(error) = ip(&["netns", "delete", &place.namespace]).await {
                tracing::warn!(%error, "cannot delete a network namespace");
            }
        }
        if let Err(error) = ip(&["link", "delete", &self.bridge]).await {
            tracing::warn!(%error, "cannot delete the bridge");
        }
        tracing::info!(tag = %self.tag, "network namespaces removed");
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        if !self.removed {
            self.remove_blocking();
        }
    }
}

impl Namespaces {
    /// [`Namespaces::remove`] without a runtime: no await is possible in a drop.
    fn remove_blocking(&self) {
        let names = self
            .places
            .values()
            .map(|place| vec!["netns", "delete", place.namespace.as_str()]);
        for args in names.chain([vec!["link", "delete", self.bridge.as_str()]]) {
            let outcome = std::process::Command::new("ip")
                .args(&args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
            if !outcome.is_ok_and(|status| status.success()) {
                tracing::warn!(command = %args.join(" "), "cannot remove a network namespace part");
            }
        }
    }
}

/// Deletes the namespaces and the bridge named with `tag` that a crashed run left.
async fn remove_leftovers(tag: &str, bridge: &str) {
    let prefix = format!("fanfare-{tag}-");
    if let Ok(entries) = std::fs::read_dir(NETNS_DIR) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) {
                tracing::warn!(namespace = %name, "removing a network namespace an earlier run left");
                let _ = ip(&["netns", "delete", &name]).await;
            }
        }
    }
    if Path::new("/sys/class/net").join(bridge).exists() {
        tracing::warn!(%bridge, "removing a bridge an earlier run left");
        let _ = ip(&["link", "delete", bridge]).await;
    }
}

/// A /24 of 198.18.0.0/16 no interface of this machine has an address in, starting from one
/// picked by `tag` (so concurrent runs rarely try the same).
async fn free_subnet(tag: &str) -> Result<u8, SupervisorError> {
    let used = ip(&["-o", "-4", "addr", "show"]).await?;
    let start = u8::from_str_radix(&tag[tag.len() - 2..], 16).unwrap_or(0);
    (0..=255u8)
        .map(|offset| start.wrapping_add(offset))
        .find(|n| !used.contains(&format!(" 198.18.{n}.")))
        .ok_or_else(|| SupervisorError::Netns("no free /24 in 198.18.0.0/16".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernel_limits_and_follow_the_run_directory() {
        let tag = tag_of(Path::new("/tmp/run-a"));
        assert_eq!(tag.len(), 6);
        assert_eq!(tag, tag_of(Path::new("/tmp/run-a")));
        assert_ne!(tag, tag_of(Path::new("/tmp/run-b")));
        // Interface names are at most 15 bytes.
        assert!(format!("ff{tag}br").len() <= 15);
        assert!(format!("ff{tag}v99p").len() <= 15);
    }
}
