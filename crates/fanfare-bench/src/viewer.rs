//! One SSE viewer: a raw TCP connection, a hand-written `GET`, and the [`StreamScanner`] over
//! every read.
//!
//! A viewer keeps what it saw locally ([`ViewerStats`]) and publishes only a few counters to
//! its [`ViewerSlot`], which the progress line and the drain wait read; there is no lock and
//! no shared counter written per event.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::now_micros;
use crate::scan::{EventSink, StreamScanner};
use crate::target::HttpUrl;

/// Bytes read per `read` call; one buffer per connection, allocated once.
const READ_BUFFER: usize = 16 * 1024;
/// Attempts for a connect the server refused (its accept backlog was full for a moment).
const CONNECT_ATTEMPTS: u32 = 4;
/// Bound on connecting and reading the response head.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Sequence numbers above this are treated as noise rather than grown into a huge bitset.
const MAX_SEQ: u64 = 1 << 28;

/// What the rest of the bench may read about one viewer while it runs. Written only by that
/// viewer's task.
#[derive(Debug, Default)]
pub struct ViewerSlot {
    /// Distinct comment markers received.
    pub unique: AtomicU64,
    /// The last like total seen, `u64::MAX` while none was.
    pub last_total: AtomicU64,
    /// A warm-up probe arrived: the route from publisher to this viewer is set up.
    pub warmed: AtomicBool,
    /// The response head (200) arrived.
    pub connected: AtomicBool,
    /// Connecting failed or the stream broke before the end.
    pub failed: AtomicBool,
}

impl ViewerSlot {
    pub fn new() -> Self {
        Self {
            last_total: AtomicU64::new(u64::MAX),
            ..Self::default()
        }
    }
}

/// Everything one viewer saw, handed back when it stops (by a viewer process, as JSON).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ViewerStats {
    pub connected: bool,
    /// Why connecting or streaming failed, if it did.
    pub error: Option<String>,
    /// When the 200 head arrived, in microseconds since the bench started.
    pub connected_after_micros: u64,
    /// Bit `seq` is set once marker `seq` was received.
    pub seen: Vec<u64>,
    pub duplicated: u64,
    /// Receive time minus send time of each comment, in microseconds.
    pub latencies_micros: Vec<u32>,
    /// `data:` lines that carried a marker or a like total.
    pub events: u64,
    /// When the last marker arrived (microseconds since the epoch).
    pub last_receive_micros: u64,
    /// (receive time, total) each time the like total changed.
    pub totals: Vec<(u64, u64)>,
    pub last_total: Option<u64>,
    /// Which of a spread's videos it watched.
    #[serde(default)]
    pub video: Option<u32>,
    /// Set before each read's bytes are scanned: every event in one read arrived together.
    #[serde(skip)]
    now: u64,
    #[serde(skip)]
    unique: u64,
}

impl ViewerStats {
    fn new(expected: u64) -> Self {
        let words = usize::try_from(expected.div_ceil(64)).unwrap_or(0);
        Self {
            seen: vec![0; words],
            latencies_micros: Vec::with_capacity(usize::try_from(expected).unwrap_or(0)),
            ..Self::default()
        }
    }

    /// Whether marker `seq` was received.
    pub fn has(&self, seq: u64) -> bool {
        let word = (seq / 64) as usize;
        self.seen
            .get(word)
            .is_some_and(|bits| bits & (1 << (seq % 64)) != 0)
    }
}

impl EventSink for ViewerStats {
    fn on_marker(&mut self, seq: u64, sent_micros: u64) {
        self.events += 1;
        if seq >= MAX_SEQ {
            return;
        }
        let word = (seq / 64) as usize;
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        let bit = 1u64 << (seq % 64);
        if self.seen[word] & bit != 0 {
            self.duplicated += 1;
            return;
        }
        self.seen[word] |= bit;
        self.unique += 1;
        self.last_receive_micros = self.now;
        let latency = self.now.saturating_sub(sent_micros);
        self.latencies_micros
            .push(u32::try_from(latency).unwrap_or(u32::MAX));
    }

    fn on_warmup(&mut self) {}

    fn on_total(&mut self, total: u64) {
        self.events += 1;
        if self.last_total != Some(total) {
            self.totals.push((self.now, total));
            self.last_total = Some(total);
        }
    }
}

/// How one viewer connects.
#[derive(Debug, Clone)]
pub struct ViewerPlan {
    pub url: Arc<HttpUrl>,
    /// The `GET` request, written once per connection.
    pub request: Arc<[u8]>,
    /// Local address to bind before connecting, so that connections spread over several
    /// ephemeral port ranges.
    pub source: Option<IpAddr>,
    /// Comments expected, to size the bitset and latency vector up front.
    pub expected: u64,
    /// Which of a spread's videos it watches.
    pub video: Option<u32>,
}

/// The `GET` a viewer writes.
pub fn request_bytes(url: &HttpUrl) -> Arc<[u8]> {
    format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nUser-Agent: fanfare-bench\r\n\r\n",
        url.path, url.authority
    )
    .into_bytes()
    .into()
}

/// Runs one viewer until `stop` is cancelled or its stream ends.
///
/// `connect_gate` bounds how many viewers are between `connect` and their response head at
/// once, so a burst of thousands does not overflow the server's accept backlog; the permit
/// is released as soon as the head arrived.
pub async fn watch(
    plan: ViewerPlan,
    started: Instant,
    connect_gate: Arc<Semaphore>,
    slot: Arc<ViewerSlot>,
    stop: CancellationToken,
) -> ViewerStats {
    let mut stats = ViewerStats::new(plan.expected);
    stats.video = plan.video;
    let mut scanner = StreamScanner::new();
    let mut buffer = vec![0u8; READ_BUFFER];
    let stopped = stop.cancelled();
    tokio::pin!(stopped);

    let opened = {
        let Ok(_permit) = connect_gate.acquire().await else {
            return stats;
        };
        tokio::select! {
            _ = &mut stopped => return stats,
            opened = tokio::time::timeout(
                CONNECT_TIMEOUT,
                open(&plan, &mut scanner, &mut buffer, &mut stats),
            ) => opened.unwrap_or_else(|_| Err("connect timed out".to_owned())),
        }
    };
    let mut stream = match opened {
        Ok(stream) => stream,
        Err(error) => {
            stats.error = Some(error);
            slot.failed.store(true, Ordering::Relaxed);
            return stats;
        }
    };
    stats.connected = true;
    stats.connected_after_micros = started.elapsed().as_micros() as u64;
    slot.connected.store(true, Ordering::Relaxed);
    publish_to_slot(&stats, &slot);

    loop {
        let read = tokio::select! {
            biased;
            _ = &mut stopped => break,
            read = stream.read(&mut buffer) => read,
        };
        let count = match read {
            Ok(0) => {
                stats.error = Some("the server closed the stream".to_owned());
                break;
            }
            Ok(count) => count,
            Err(error) => {
                stats.error = Some(format!("reading the stream: {error}"));
                break;
            }
        };
        stats.now = now_micros();
        let warmed_before = stats.events;
        let mut sink = WarmupWatch {
            stats: &mut stats,
            warmed: false,
        };
        let scanned = scanner.feed(&buffer[..count], &mut sink);
        let warmed = sink.warmed;
        if warmed {
            slot.warmed.store(true, Ordering::Relaxed);
        }
        if let Err(error) = scanned {
            stats.error = Some(error.to_string());
            break;
        }
        if stats.events != warmed_before {
            publish_to_slot(&stats, &slot);
        }
        if scanner.ended() {
            stats.error = Some("the server ended the stream".to_owned());
            break;
        }
    }
    if stats.error.is_some() {
        slot.failed.store(true, Ordering::Relaxed);
    }
    stats
}

fn publish_to_slot(stats: &ViewerStats, slot: &ViewerSlot) {
    slot.unique.store(stats.unique, Ordering::Relaxed);
    if let Some(total) = stats.last_total {
        slot.last_total.store(total, Ordering::Relaxed);
    }
}

/// Forwards to the stats and notes whether a warm-up probe came by.
struct WarmupWatch<'a> {
    stats: &'a mut ViewerStats,
    warmed: bool,
}

impl EventSink for WarmupWatch<'_> {
    fn on_marker(&mut self, seq: u64, sent_micros: u64) {
        self.stats.on_marker(seq, sent_micros);
    }
    fn on_warmup(&mut self) {
        self.warmed = true;
    }
    fn on_total(&mut self, total: u64) {
        self.stats.on_total(total);
    }
}

/// Connects (retrying a refused connect), writes the request and reads up to the 200 head.
async fn open(
    plan: &ViewerPlan,
    scanner: &mut StreamScanner,
    buffer: &mut [u8],
    stats: &mut ViewerStats,
) -> Result<TcpStream, String> {
    let mut stream = connect(plan.url.addr, plan.source).await?;
    stream
        .write_all(&plan.request)
        .await
        .map_err(|error| format!("writing the request: {error}"))?;
    while !scanner.streaming() {
        let count = stream
            .read(buffer)
            .await
            .map_err(|error| format!("reading the response head: {error}"))?;
        if count == 0 {
            return Err("the server closed before the response head".to_owned());
        }
        stats.now = now_micros();
        scanner
            .feed(&buffer[..count], stats)
            .map_err(|error| error.to_string())?;
    }
    Ok(stream)
}

async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream, String> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(|error| format!("creating a socket: {error}"))?;
        if let Some(source) = source {
            socket
                .bind(SocketAddr::new(source, 0))
                .map_err(|error| format!("binding {source}: {error}"))?;
        }
        match socket.connect(addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(error)
                if attempt < CONNECT_ATTEMPTS
                    && matches!(
                        error.kind(),
                        ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset
                    ) =>
            {
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
            }
            Err(error) => return Err(format!("connecting to {addr}: {error}")),
        }
    }
}
