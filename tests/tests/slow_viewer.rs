//! A viewer that stops reading, next to 1,000 that read.
//!
//! What it proves: the non-reading viewer is cut off once more comments are queued for it than
//! its buffer holds; meanwhile every reading viewer still gets every comment, their latency and
//! the frontend's memory stay where they were without the slow viewer (compared within this
//! run, with a wide margin: a machine shared with builds is noisy); and the cut-off viewer
//! resumes from the last event id it got with no gap and no duplicate.

mod common;

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::{QUIET, SMALL, WAIT};
use fanfare_bench::report::ServerProcess;
use fanfare_bench::{BenchOptions, BenchReport, CommentLoad, FrontendChoice};
use fanfare_testkit::sse::{SseItem, SseParser, SseStream};
use fanfare_testkit::Cluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const READERS: usize = 1_000;
/// Comments a video may queue for one viewer before it is cut off (small, so the test is).
const VIEWER_BUFFER: usize = 32;
/// Each bench phase is bounded by this.
const RUN_BOUND: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_stops_reading_is_cut_off_without_slowing_the_others_and_resumes() {
    let cluster = Cluster::builder()
        .dc("dc1", SMALL)
        .options(|options| {
            options.frontend.viewer_buffer = VIEWER_BUFFER;
            // Small socket buffers, so the slow viewer's socket fills after a few comments.
            options.frontend.viewer_send_buffer = 4096;
        })
        .start()
        .await
        .unwrap();
    let frontend = cluster.topology().datacenters[0].frontends[0].name.clone();
    let pid = cluster.pid(&frontend).expect("the frontend runs");
    let video = fanfare_bench::fresh_video_id();

    // Phase A: the readers alone.
    let baseline = bench(&cluster, &frontend, pid, &video, 20.0, 3).await;
    let rss_baseline = rss_kib(pid);

    // The slow viewer: it reads the response head, then never reads again.
    let addr: SocketAddr = cluster
        .frontend(&frontend)
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let (mut slow, mut slow_bytes) = open_and_stop_reading(addr, &video).await.unwrap();
    let lagged_before = lagged(&cluster, &frontend).await;

    // Phase B: the same load with the slow viewer there, long enough to overflow its buffer.
    let with_slow = bench(&cluster, &frontend, pid, &video, 25.0, 8).await;
    let rss_with_slow = rss_kib(pid);

    // The slow viewer was cut off...
    let deadline = tokio::time::Instant::now() + WAIT;
    while lagged(&cluster, &frontend).await <= lagged_before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the viewer that stopped reading was never cut off"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // ... and its connection closed: what it had not read yet, then the end.
    tokio::time::timeout(WAIT, slow.read_to_end(&mut slow_bytes))
        .await
        .expect("the slow viewer's connection is closed")
        .expect("reading what the slow viewer was sent");
    let (received, last_id) = comments_in_response(&slow_bytes);
    let last_id = last_id.expect("the slow viewer got some comments before it stalled");

    // The readers did not notice.
    for report in [&baseline, &with_slow] {
        assert_eq!(report.connected, READERS as u64, "{}", report.to_text());
        assert_eq!(report.missing, 0, "{}", report.to_text());
        assert_eq!(report.duplicated, 0, "{}", report.to_text());
        assert!(report.ok, "{}", report.to_text());
    }
    let p99 = |report: &BenchReport| report.latency_ms.as_ref().expect("latencies").p99;
    let (p99_baseline, p99_with_slow) = (p99(&baseline), p99(&with_slow));
    eprintln!(
        "readers' p99: {p99_baseline:.1} ms alone, {p99_with_slow:.1} ms next to the slow viewer; \
         frontend RSS {rss_baseline} KiB, then {rss_with_slow} KiB"
    );
    assert!(
        p99_with_slow <= 4.0 * p99_baseline + 50.0,
        "the readers' p99 went from {p99_baseline:.1} ms to {p99_with_slow:.1} ms"
    );
    assert!(
        rss_with_slow <= rss_baseline + rss_baseline / 4 + 4096,
        "the frontend's memory grew from {rss_baseline} KiB to {rss_with_slow} KiB"
    );

    // The cut-off viewer resumes from its last event id: with what it got before, it has every
    // comment since it joined, once, in order.
    let url = cluster.events_url(&frontend, &video);
    let resumed = comment_ids(&url, Some(&last_id)).await;
    let everything = comment_ids(&url, Some("dc1:0")).await;
    let mut seen = received;
    seen.extend(resumed);
    assert!(
        seen.len() >= with_slow.publish_accepted as usize,
        "the slow viewer joined before phase B: it must have all of its {} comments, has {}",
        with_slow.publish_accepted,
        seen.len()
    );
    assert!(
        everything.ends_with(&seen),
        "what the slow viewer got before and after its cut-off is not the video's comments \
         since it joined, each once: {} seen, {} in the video",
        seen.len(),
        everything.len()
    );
    cluster.stop().await;
}

/// One bench phase: `READERS` raw viewers on `frontend`, `per_sec` comments for `seconds`.
async fn bench(
    cluster: &Cluster,
    frontend: &str,
    pid: u32,
    video: &str,
    per_sec: f64,
    seconds: u64,
) -> BenchReport {
    let mut options = BenchOptions::for_fanfare(
        cluster.topology(),
        &FrontendChoice::Named(vec![frontend.to_owned()]),
        frontend,
        Path::new("/nonexistent"),
        video.to_owned(),
    )
    .unwrap();
    options.viewers = READERS;
    options.comments = Some(CommentLoad {
        per_sec,
        duration: Duration::from_secs(seconds),
    });
    options.publish_concurrency = 4;
    options.drain = Duration::from_secs(20);
    options.server_processes = vec![ServerProcess {
        name: frontend.to_owned(),
        pid,
    }];
    options.viewer_processes = vec![frontend.to_owned()];
    let report = tokio::time::timeout(
        RUN_BOUND,
        fanfare_bench::run(options, CancellationToken::new()),
    )
    .await
    .expect("the bench phase ends within its bound")
    .expect("the bench phase runs");
    eprintln!("{}", report.to_text());
    report
}

/// Opens a viewer stream with a tiny receive buffer and reads until its first event (the
/// response head and the stream's opening); returns the socket, never read again until the
/// end, and what was read.
async fn open_and_stop_reading(addr: SocketAddr, video: &str) -> io::Result<(TcpStream, Vec<u8>)> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(2048)?;
    let mut stream = socket.connect(addr).await?;
    let request = format!(
        "GET /v1/videos/{video}/events HTTP/1.1\r\nHost: fanfare\r\nAccept: text/event-stream\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut read = Vec::new();
    while !read.windows(6).any(|window| window == b"retry:") {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        read.extend_from_slice(&buf[..n]);
    }
    Ok((stream, read))
}

/// The comment ids in a raw chunked SSE response (its last chunk may be cut short), and the
/// last event id.
fn comments_in_response(raw: &[u8]) -> (Vec<String>, Option<String>) {
    let head_end = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    assert!(
        raw.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&raw[..head_end])
    );
    let body = dechunk(&raw[head_end..]);
    let mut parser = SseParser::new();
    let mut ids = Vec::new();
    for item in parser.feed(&body) {
        if let SseItem::Event(event) = item {
            if event.event == "comment" {
                ids.push(comment_id(&event.data));
            }
        }
    }
    (ids, parser.last_event_id().map(str::to_owned))
}

/// The body of a chunked transfer, as far as it goes.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = raw.windows(2).position(|window| window == b"\r\n") else {
            return body;
        };
        let size = std::str::from_utf8(&raw[..line_end])
            .ok()
            .and_then(|hex| usize::from_str_radix(hex, 16).ok())
            .expect("a chunk size line");
        if size == 0 {
            return body;
        }
        raw = &raw[line_end + 2..];
        let take = size.min(raw.len());
        body.extend_from_slice(&raw[..take]);
        if take < size || raw.len() < size + 2 {
            return body;
        }
        raw = &raw[size + 2..];
    }
}

fn comment_id(data: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(data).expect("comment data is JSON");
    value["comment_id"]
        .as_str()
        .expect("a comment id")
        .to_owned()
}

/// The comment ids a stream opened with `last_event_id` replays (it is read until quiet).
async fn comment_ids(url: &str, last_event_id: Option<&str>) -> Vec<String> {
    let headers: Vec<(&str, &str)> = last_event_id
        .map(|id| vec![("Last-Event-ID", id)])
        .unwrap_or_default();
    let mut stream = SseStream::connect(url, &headers).await.unwrap();
    let mut ids = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        match stream.next_event(QUIET).await {
            Ok(Some(event)) if event.event == "comment" => ids.push(comment_id(&event.data)),
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    ids
}

async fn lagged(cluster: &Cluster, frontend: &str) -> f64 {
    cluster
        .metric(frontend, "fanfare_frontend_viewers_lagged_total")
        .await
        .unwrap()
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}
