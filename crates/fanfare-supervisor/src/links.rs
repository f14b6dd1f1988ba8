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

/// Runs the proxy for the gateway of one server of datacenter `dc`: accepts on `listener`,
/// forwards to `upstream`, until `shutdown`.
pub async fn run_proxy(
    dc: String,
    listener: TcpListener,
    upstream: SocketAddr,
    control: LinkControl,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((inbound, _)) = accepted else { continue };
        let dc = dc.clone();
        let control = control.clone();
        let connection_shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = connection_shutdown.cancelled() => {}
                _ = proxy_connection(dc, inbound, upstream, control) => {}
            }
        });
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
