//! Cuttable gateway links between datacenters, without root.
//!
//! Each NATS server's gateway port (the one every server dials and gossips, via `advertise`)
//! is owned by a proxy that forwards to the server's internal gateway listener. A gateway
//! connection's first line from the dialling side is `CONNECT {"gateway":"<dc>",..}`, which
//! tells the proxy the pair of datacenters the connection links. Each unordered pair has a
//! [`LinkMode`]; changing it acts on live connections at once:
//! - `Up`: bytes flow;
//! - `Reset`: connections of the pair are closed and new ones closed after their CONNECT, so
//!   both sides see the link fail right away;
//! - `Drop`: a silent black hole: connections stay open but every byte is discarded, so the
//!   servers only notice through missed pings; a dropped connection is closed when the pair
//!   heals (it lost bytes, so it could not go on).
//!
//! With gateway TLS the `CONNECT` line is encrypted; the proxy then learns the dialling side
//! from the operating system instead (see [`DialerLookup`]): which process holds the other end
//! of the accepted connection, and which server's config that process runs.
//!
//! A plain TCP proxy would not partition anything: servers gossip each other's addresses and
//! would route around it. Here every gateway address any server knows is a proxy address.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkMode {
    Up,
    Reset,
    Drop,
}

/// An unordered pair of datacenters, stored sorted.
pub type Pair = (String, String);

pub fn pair(a: &str, b: &str) -> Pair {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

/// The mode of every pair that is not `Up`.
pub type LinkStates = BTreeMap<Pair, LinkMode>;

/// Shared control of all link proxies of one topology.
#[derive(Clone)]
pub struct LinkControl {
    /// Written by chaos commands, watched by every proxied connection.
    states: Arc<watch::Sender<LinkStates>>,
}

impl Default for LinkControl {
    fn default() -> Self {
        Self {
            states: Arc::new(watch::channel(LinkStates::new()).0),
        }
    }
}

impl LinkControl {
    pub fn set(&self, a: &str, b: &str, mode: LinkMode) {
        let key = pair(a, b);
        self.states.send_modify(|states| {
            if mode == LinkMode::Up {
                states.remove(&key);
            } else {
                states.insert(key, mode);
            }
        });
    }

    pub fn heal_all(&self) {
        self.states.send_modify(LinkStates::clear);
    }

    pub fn states(&self) -> LinkStates {
        self.states.borrow().clone()
    }

    fn watch(&self) -> watch::Receiver<LinkStates> {
        self.states.subscribe()
    }
}

fn mode_of(states: &LinkStates, key: &Pair) -> LinkMode {
    states.get(key).copied().unwrap_or(LinkMode::Up)
}

/// Longest first line accepted from a dialling server before the proxy gives up on it.
const MAX_CONNECT_LINE: usize = 64 * 1024;
const BUFFER: usize = 32 * 1024;

/// Finds the datacenter of the nats-server that dialled a proxied connection, without reading
/// its bytes: the socket whose local address is the connection's peer address
/// (`/proc/net/tcp`), the process holding that socket (`/proc/<pid>/fd`), and the server
/// whose config that process was started with (`nats-server -c <dir>/<server>.conf`).
/// Linux only; the processes must belong to the same user (they are the supervisor's
/// children).
#[derive(Debug, Clone)]
pub struct DialerLookup {
    /// Server name → datacenter.
    pub servers: BTreeMap<String, String>,
}

impl DialerLookup {
    pub fn datacenter_of(&self, peer: SocketAddr) -> Option<String> {
        let inode = socket_inode(peer)?;
        let pid = process_holding(inode)?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let config = args
            .windows(2)
            .find(|pair| pair[0] == b"-c")
            .map(|pair| String::from_utf8_lossy(pair[1]).into_owned())?;
        let server = std::path::Path::new(&config).file_stem()?.to_str()?;
        self.servers.get(server).cloned()
    }
}

/// `/proc/net/tcp` address notation: the IPv4 address as a little-endian hex word, the port in
/// hex (`0100007F:1F90` for 127.0.0.1:8080).
fn proc_address(addr: SocketAddr) -> Option<String> {
    let SocketAddr::V4(v4) = addr else {
        return None;
    };
    let ip = u32::from_le_bytes(v4.ip().octets());
    Some(format!("{ip:08X}:{:04X}", v4.port()))
}

/// The inode of the open socket whose local address is `local`. A closed connection that
/// used the same local port (TIME_WAIT, to another remote) is listed too, with inode 0: it is
/// held by no process, so it is skipped rather than returned.
fn socket_inode(local: SocketAddr) -> Option<u64> {
    let wanted = proc_address(local)?;
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    socket_inode_in(&table, &wanted)
}

fn socket_inode_in(table: &str, wanted: &str) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&wanted))
            .then(|| fields.get(9)?.parse().ok())
            .flatten()
            .filter(|&inode| inode != 0)
    })
}

fn process_holding(inode: u64) -> Option<u32> {
    let target = format!("socket:[{inode}]");
    for process in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = process
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|link| link.as_os_str() == target.as_str()) {
                return Some(pid);
            }
        }
    }
    None
}

/// Runs the proxy for the gateway of one server of datacenter `dc`: accepts on `listener`,
/// forwards to `upstream`, until `shutdown`. With `dialers`, the dialling datacenter is looked
/// up from the operating system instead of read from the `CONNECT` line (gateway TLS).
pub async fn run_proxy(
    dc: String,
    listener: TcpListener,
    upstream: SocketAddr,
    control: LinkControl,
    dialers: Option<Arc<DialerLookup>>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((inbound, peer)) = accepted else {
            continue;
        };
        let dc = dc.clone();
        let control = control.clone();
        let connection_shutdown = shutdown.clone();
        let dialers = dialers.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = connection_shutdown.cancelled() => {}
                _ = async {
                    match dialers {
                        Some(dialers) => {
                            let source = find_dialer(dialers, peer).await;
                            proxy_known(dc, source, inbound, upstream, control).await
                        }
                        None => proxy_connection(dc, inbound, upstream, control).await,
                    }
                } => {}
            }
        });
    }
}

/// The dialling datacenter of `peer`, looked up a few times: a lookup can miss while the
/// dialling server is still between `connect()` and its socket showing in `/proc`.
async fn find_dialer(dialers: Arc<DialerLookup>, peer: SocketAddr) -> Option<String> {
    for attempt in 0..LOOKUP_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(LOOKUP_RETRY).await;
        }
        let dialers = dialers.clone();
        let found = tokio::task::spawn_blocking(move || dialers.datacenter_of(peer))
            .await
            .ok()
            .flatten();
        if found.is_some() {
            return found;
        }
    }
    None
}

const LOOKUP_ATTEMPTS: u32 = 4;
const LOOKUP_RETRY: std::time::Duration = std::time::Duration::from_millis(20);

/// Proxies a connection whose dialling datacenter is already known. An unknown one (`None`)
/// is refused while any link of `dc` is cut, so a failed lookup cannot leak through a
/// partition (the server dials again), and is never cut otherwise.
async fn proxy_known(
    dc: String,
    source: Option<String>,
    inbound: TcpStream,
    upstream: SocketAddr,
    control: LinkControl,
) {
    let key = source.map(|source| pair(&source, &dc));
    let states = control.states();
    let mode = match &key {
        Some(key) => mode_of(&states, key),
        None if states.keys().any(|(a, b)| *a == dc || *b == dc) => LinkMode::Reset,
        None => LinkMode::Up,
    };
    if mode == LinkMode::Reset {
        return;
    }
    let Ok(outbound) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    let (_pair_sender, pair_known) = watch::channel::<Option<Pair>>(key);
    let dropped = mode == LinkMode::Drop;
    tokio::select! {
        _ = pump(out_read, in_write, pair_known.clone(), control.watch(), dropped) => {}
        _ = pump(in_read, out_write, pair_known.clone(), control.watch(), dropped) => {}
    }
}

async fn proxy_connection(
    dc: String,
    inbound: TcpStream,
    upstream: SocketAddr,
    control: LinkControl,
) {
    let Ok(outbound) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (mut in_read, in_write) = inbound.into_split();
    let (out_read, mut out_write) = outbound.into_split();
    // Unknown (None) until the dialling side's CONNECT names its datacenter.
    let (pair_sender, pair_known) = watch::channel::<Option<Pair>>(None);

    // The dialled server speaks first (INFO): that direction flows from the start.
    let downstream = pump(
        out_read,
        in_write,
        pair_known.clone(),
        control.watch(),
        false,
    );
    let upstream_side = async {
        let mut first = Vec::with_capacity(1024);
        let mut buf = vec![0u8; BUFFER];
        while !first.windows(2).any(|window| window == b"\r\n") {
            if first.len() > MAX_CONNECT_LINE {
                return;
            }
            match in_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(read) => first.extend_from_slice(&buf[..read]),
            }
        }
        let key = source_datacenter(&first).map(|source| pair(&source, &dc));
        let mode = key
            .as_ref()
            .map(|key| mode_of(&control.states(), key))
            .unwrap_or(LinkMode::Up);
        let _ = pair_sender.send(key);
        match mode {
            LinkMode::Reset => return,
            LinkMode::Drop => {}
            LinkMode::Up => {
                if out_write.write_all(&first).await.is_err() {
                    return;
                }
            }
        }
        pump(
            in_read,
            out_write,
            pair_known.clone(),
            control.watch(),
            mode == LinkMode::Drop,
        )
        .await;
    };
    // Whichever direction ends first ends the connection: both sockets close here.
    tokio::select! {
        _ = downstream => {}
        _ = upstream_side => {}
    }
}

/// The datacenter named by a gateway `CONNECT {"gateway":"dc1",..}` line.
fn source_datacenter(first: &[u8]) -> Option<String> {
    let end = first.windows(2).position(|window| window == b"\r\n")?;
    let line = std::str::from_utf8(&first[..end]).ok()?;
    let json = line.strip_prefix("CONNECT ")?;
    let connect: serde_json::Value = serde_json::from_str(json).ok()?;
    connect["gateway"].as_str().map(str::to_owned)
}

fn current_mode(
    pair: &watch::Receiver<Option<Pair>>,
    states: &watch::Receiver<LinkStates>,
) -> LinkMode {
    match &*pair.borrow() {
        Some(key) => mode_of(&states.borrow(), key),
        None => LinkMode::Up,
    }
}

/// Copies one direction while the pair is up; discards while it drops; ends on reset, on a
/// heal after dropping, or when either socket ends.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    pair: watch::Receiver<Option<Pair>>,
    mut states: watch::Receiver<LinkStates>,
    mut dropped: bool,
) {
    let mut buf = vec![0u8; BUFFER];
    loop {
        tokio::select! {
            read = from.read(&mut buf) => {
                let read = match read {
                    Ok(0) | Err(_) => return,
                    Ok(read) => read,
                };
                match current_mode(&pair, &states) {
                    LinkMode::Up if dropped => return,
                    LinkMode::Up => {
                        if to.write_all(&buf[..read]).await.is_err() {
                            return;
                        }
                    }
                    LinkMode::Drop => dropped = true,
                    LinkMode::Reset => return,
                }
            }
            changed = states.changed() => {
                if changed.is_err() {
                    return;
                }
                match current_mode(&pair, &states) {
                    LinkMode::Reset => return,
                    LinkMode::Drop => dropped = true,
                    LinkMode::Up if dropped => return,
                    LinkMode::Up => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_notation_is_little_endian_address_and_hex_port() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        assert_eq!(proc_address(addr).as_deref(), Some("0100007F:1F90"));
    }

    #[test]
    fn a_closed_connection_on_the_same_local_port_is_not_taken_for_the_open_one() {
        // /proc/net/tcp as it reads when an earlier connection from the same local port (to
        // another remote) is in TIME_WAIT and listed first: it has no inode.
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:9C40 0100007F:1A0B 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
   1: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 20 4 30 10 -1
";
        assert_eq!(socket_inode_in(table, "0100007F:9C40"), Some(4242));
        assert_eq!(socket_inode_in(table, "0100007F:9C41"), None);
    }

    #[tokio::test]
    async fn the_dialling_process_is_found_from_the_peer_address() {
        // This test process dials itself: the lookup must find this process, which was
        // started without `-c`, so it names no server and no datacenter.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let dialled = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (_accepted, peer) = listener.accept().await.expect("accept");
        assert_eq!(peer, dialled.local_addr().expect("local"));
        let inode = socket_inode(peer).expect("the dialling socket is in /proc/net/tcp");
        assert_eq!(process_holding(inode), Some(std::process::id()));
        let lookup = DialerLookup {
            servers: BTreeMap::new(),
        };
        assert_eq!(lookup.datacenter_of(peer), None);
    }

    #[test]
    fn pairs_are_unordered() {
        assert_eq!(pair("dc2", "dc1"), pair("dc1", "dc2"));
    }

    #[test]
    fn the_dialling_datacenter_comes_from_the_connect_line() {
        let line = b"CONNECT {\"echo\":false,\"gateway\":\"dc3\",\"verbose\":false}\r\nPING\r\n";
        assert_eq!(source_datacenter(line).as_deref(), Some("dc3"));
        assert_eq!(source_datacenter(b"PING\r\n"), None);
        assert_eq!(source_datacenter(b"CONNECT {}\r\n"), None);
    }

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let _ = socket.write_all(b"INFO {}\r\n").await;
                    let mut buf = [0u8; 1024];
                    while let Ok(read) = socket.read(&mut buf).await {
                        if read == 0 || socket.write_all(&buf[..read]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn read_some(stream: &mut TcpStream) -> Option<Vec<u8>> {
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(std::time::Duration::from_millis(300), stream.read(&mut buf))
            .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => Some(Vec::new()),
            Ok(Ok(read)) => Some(buf[..read].to_vec()),
            Err(_) => None,
        }
    }

    /// Up forwards, drop swallows silently (the socket stays open), heal after a drop closes,
    /// reset closes live connections and refuses new ones after their CONNECT.
    #[tokio::test]
    async fn link_modes_act_on_live_and_new_connections() {
        let upstream = echo_server().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = listener.local_addr().unwrap();
        let control = LinkControl::default();
        let shutdown = CancellationToken::new();
        tokio::spawn(run_proxy(
            "dc2".into(),
            listener,
            upstream,
            control.clone(),
            None,
            shutdown.clone(),
        ));
        let connect = b"CONNECT {\"gateway\":\"dc1\"}\r\n";

        let mut client = TcpStream::connect(proxy).await.unwrap();
        assert_eq!(read_some(&mut client).await.unwrap(), b"INFO {}\r\n");
        client.write_all(connect).await.unwrap();
        assert_eq!(read_some(&mut client).await.unwrap(), connect.to_vec());

        control.set("dc2", "dc1", LinkMode::Drop);
        client.write_all(b"PING\r\n").await.unwrap();
        assert_eq!(
            read_some(&mut client).await,
            None,
            "dropped: no answer, no close"
        );
        control.heal_all();
        assert_eq!(
            read_some(&mut client).await.unwrap(),
            Vec::<u8>::new(),
            "closed on heal"
        );

        let mut client = TcpStream::connect(proxy).await.unwrap();
        read_some(&mut client).await.unwrap();
        client.write_all(connect).await.unwrap();
        read_some(&mut client).await.unwrap();
        control.set("dc1", "dc2", LinkMode::Reset);
        assert_eq!(
            read_some(&mut client).await.unwrap(),
            Vec::<u8>::new(),
            "reset closes"
        );

        let mut client = TcpStream::connect(proxy).await.unwrap();
        read_some(&mut client).await.unwrap();
        client.write_all(connect).await.unwrap();
        assert_eq!(
            read_some(&mut client).await.unwrap(),
            Vec::<u8>::new(),
            "new link refused"
        );

        // Another pair is not affected.
        let mut client = TcpStream::connect(proxy).await.unwrap();
        read_some(&mut client).await.unwrap();
        client
            .write_all(b"CONNECT {\"gateway\":\"dc3\"}\r\n")
            .await
            .unwrap();
        assert!(!read_some(&mut client).await.unwrap().is_empty());
        shutdown.cancel();
    }
}
