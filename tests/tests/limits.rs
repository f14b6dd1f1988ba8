//! The frontend's limits, on a real cluster with small limits: rate limits per user and per
//! client address answer 429 with `Retry-After` and recover after it, connection caps per
//! address and per frontend refuse the connection beyond them, heads over the size limit get
//! 431, slow heads and idle API connections are closed, and every refusal is counted in
//! `fanfare_frontend_limited_total`. Refused publishes reach nothing in NATS and bystander
//! viewers are unaffected.
//!
//! Per-address limits are shown per address by connecting from the machine's other loopback
//! addresses (127.0.0.2, 127.0.0.3, ...), binding the client socket before connecting.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{receive, SMALL, WAIT};
use fanfare_frontend::LimitSettings;
use fanfare_testkit::{http, wait, Cluster};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const FRONTEND: &str = "dc1-fe1";

/// A response read off a raw socket.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn problem(&self) -> Value {
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        serde_json::from_slice(&self.body).unwrap_or_else(|error| panic!("{error}: {self:?}"))
    }

    /// `Retry-After` in seconds; panics if missing.
    fn retry_after(&self) -> u64 {
        self.header("retry-after")
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no numeric retry-after: {self:?}"))
    }
}

fn frontend_addr(cluster: &Cluster) -> SocketAddr {
    let url = cluster.frontend(FRONTEND);
    url.trim_start_matches("http://").parse().unwrap()
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    tokio::time::timeout(WAIT, socket.connect(to))
        .await
        .expect("connect within the wait")
        .unwrap_or_else(|error| panic!("connect from {from}: {error}"))
}

/// Reads a response head; returns it parsed and whatever body bytes came with it.
async fn read_head(stream: &mut TcpStream) -> RawResponse {
    let mut buf = Vec::new();
    let end = loop {
        if let Some(at) = buf.windows(4).position(|window| window == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 4096];
        let read = tokio::time::timeout(WAIT, stream.read(&mut chunk))
            .await
            .expect("a response head within the wait")
            .unwrap_or(0);
        assert!(read > 0, "closed before a response head: {buf:?}");
        buf.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    let headers = lines
        .filter(|line| !line.is_empty())
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_lowercase(), value.trim().to_owned()))
        .collect();
    RawResponse {
        status,
        headers,
        body: buf[end..].to_vec(),
    }
}

/// Reads one whole response with a `content-length` body (keep-alive stays possible).
async fn read_response(stream: &mut TcpStream) -> RawResponse {
    let mut response = read_head(stream).await;
    let length: usize = response
        .header("content-length")
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    while response.body.len() < length {
        let mut chunk = [0u8; 4096];
        let read = tokio::time::timeout(WAIT, stream.read(&mut chunk))
            .await
            .expect("a response body within the wait")
            .unwrap_or(0);
        assert!(read > 0, "closed inside a response body");
        response.body.extend_from_slice(&chunk[..read]);
    }
    response
}

/// Waits (bounded) until the server closes `stream`; fails if it sends anything meanwhile.
async fn wait_closed(stream: &mut TcpStream, what: &str) {
    let mut chunk = [0u8; 1024];
    let read = tokio::time::timeout(WAIT, stream.read(&mut chunk))
        .await
        .unwrap_or_else(|_| panic!("{what}: still open after {WAIT:?}"));
    // A reset is a close too.
    let read = read.unwrap_or(0);
    assert_eq!(
        read,
        0,
        "{what}: got {:?}",
        String::from_utf8_lossy(&chunk[..read])
    );
}

/// `POST {path}` with a JSON body from loopback address `from`, on a fresh connection.
async fn post_from(from: &str, to: SocketAddr, path: &str, body: &str) -> RawResponse {
    let mut stream = connect_from(from, to).await;
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: {to}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    read_response(&mut stream).await
}

async fn like_from(from: &str, to: SocketAddr, video: &str, user: &str) -> RawResponse {
    let body = serde_json::json!({ "user_id": user }).to_string();
    post_from(from, to, &format!("/v1/videos/{video}/likes"), &body).await
}

async fn comment_from(from: &str, to: SocketAddr, video: &str, user: &str) -> RawResponse {
    let body = serde_json::json!({ "user_id": user, "text": "hello" }).to_string();
    post_from(from, to, &format!("/v1/videos/{video}/comments"), &body).await
}

/// Opens a viewer stream from `from`; returns the socket and the response head.
async fn view_from(from: &str, to: SocketAddr, video: &str) -> (TcpStream, RawResponse) {
    let mut stream = connect_from(from, to).await;
    let request = format!(
        "GET /v1/videos/{video}/events HTTP/1.1\r\nhost: {to}\r\naccept: text/event-stream\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let response = read_head(&mut stream).await;
    (stream, response)
}

/// Reads the rest of a refused connection's answer (it closes after it).
async fn read_refusal(mut stream: TcpStream, mut response: RawResponse) -> RawResponse {
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut response.body)).await;
    response
}

/// Checks a 429 rate-limit problem naming `limit`; returns its `Retry-After`.
fn assert_rate_limited(response: &RawResponse, detail_part: &str) -> u64 {
    assert_eq!(response.status, 429, "{response:?}");
    let problem = response.problem();
    assert_eq!(
        problem["type"], "urn:fanfare:problem:rate-limited",
        "{problem}"
    );
    assert_eq!(problem["status"], 429);
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(detail_part),
        "{detail:?} names {detail_part:?}"
    );
    let retry_after = response.retry_after();
    assert!(retry_after >= 1, "{response:?}");
    retry_after
}

/// `fanfare_frontend_limited_total{limit=...}` of the frontend (0 when never counted).
async fn limited(cluster: &Cluster, limit: &str) -> u64 {
    let url = format!("{}/metrics", cluster.frontend(FRONTEND));
    // Right after a test drops connections the frontend may not have seen them close yet, and
    // refuse this very request at its connection cap: such refusals are counted too, and are
    // not the test's.
    let refused_here = std::sync::atomic::AtomicU64::new(0);
    let text = wait::until("the frontend's metrics", WAIT, || async {
        let response = http::get(&url).await.ok();
        if response
            .as_ref()
            .is_none_or(|response| response.status != 200)
        {
            refused_here.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let response = response?;
        (response.status == 200).then(|| response.text())
    })
    .await
    .unwrap();
    let label = format!("limit=\"{limit}\"");
    let counted: u64 = text
        .lines()
        .filter(|line| line.starts_with("fanfare_frontend_limited_total{") && line.contains(&label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|value| value as u64)
        .sum();
    if limit == "connections" {
        counted - refused_here.into_inner()
    } else {
        counted
    }
}

/// Messages in dc1's origin stream.
async fn origin_messages(cluster: &Cluster) -> u64 {
    let client = cluster.nats_client("dc1").await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("EVENTS_dc1").await.unwrap();
    stream.info().await.unwrap().state.messages
}

async fn sleep_for(retry_after: u64) {
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
}

/// Publishes with `publish` until a request is refused (at most `attempts`); returns how many
/// were accepted before it and the refusal.
async fn publish_until_refused<F, Fut>(attempts: usize, mut publish: F) -> (usize, RawResponse)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = RawResponse>,
{
    for attempt in 0..attempts {
        let response = publish(attempt).await;
        if response.status != 202 {
            return (attempt, response);
        }
    }
    panic!("{attempts} publishes were all accepted");
}

fn rate_limits() -> LimitSettings {
    LimitSettings {
        // One request every 5 s once the burst is spent: far longer than the few requests a
        // burst takes, so the refusal does not depend on the machine's speed.
        like_user_rate: 0.2,
        like_user_burst: 2,
        like_address_rate: 0.2,
        like_address_burst: 3,
        comment_user_rate: 0.2,
        comment_user_burst: 1,
        ..LimitSettings::unthrottled()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_over_a_rate_limit_get_429_reach_nothing_and_recover_after_retry_after() {
    let cluster = Cluster::builder()
        .dc("dc1", SMALL)
        .options(|options| options.frontend.limits = rate_limits())
        .start()
        .await
        .expect("cluster starts");
    let to = frontend_addr(&cluster);
    let mut bystander = cluster.watch(FRONTEND, "calm").await.unwrap();
    let mut accepted_likes = 0u64;

    // Per user: the burst of "ann" spread over two addresses, then a refusal that names the
    // user limit; another user from the same address is not affected.
    let (accepted, refused) = publish_until_refused(10, |attempt| {
        let from = if attempt % 2 == 0 {
            "127.0.0.2"
        } else {
            "127.0.0.3"
        };
        like_from(from, to, "calm", "ann")
    })
    .await;
    assert_eq!(accepted, 2, "the burst of 2 fits");
    accepted_likes += accepted as u64;
    let stored = origin_messages(&cluster).await;
    let retry_after = assert_rate_limited(&refused, "likes from this user");
    let refused_again = like_from("127.0.0.3", to, "calm", "ann").await;
    assert_rate_limited(&refused_again, "likes from this user");
    assert_eq!(
        origin_messages(&cluster).await,
        stored,
        "refused likes reach nothing"
    );
    let bob = like_from("127.0.0.3", to, "calm", "bob").await;
    assert_eq!(bob.status, 202, "{bob:?}");
    accepted_likes += 1;
    sleep_for(retry_after).await;
    let ann = like_from("127.0.0.3", to, "calm", "ann").await;
    assert_eq!(ann.status, 202, "ann again after Retry-After: {ann:?}");
    accepted_likes += 1;

    // Per address: distinct users from 127.0.0.4 share its burst of 3; the same user from
    // 127.0.0.5 is not affected.
    let (accepted, refused) = publish_until_refused(10, |attempt| async move {
        like_from("127.0.0.4", to, "calm", &format!("crowd-{attempt}")).await
    })
    .await;
    assert_eq!(accepted, 3, "the address's burst of 3 fits");
    accepted_likes += accepted as u64;
    let stored = origin_messages(&cluster).await;
    let retry_after = assert_rate_limited(&refused, "likes from this address");
    assert_eq!(origin_messages(&cluster).await, stored);
    let elsewhere = like_from("127.0.0.5", to, "calm", &format!("crowd-{accepted}")).await;
    assert_eq!(elsewhere.status, 202, "another address: {elsewhere:?}");
    accepted_likes += 1;
    sleep_for(retry_after).await;
    let again = like_from("127.0.0.4", to, "calm", "crowd-late").await;
    assert_eq!(again.status, 202, "127.0.0.4 after Retry-After: {again:?}");
    accepted_likes += 1;

    // Comments have their own limit: "cem" may post one, the second is refused, and it
    // reaches nothing.
    let first = comment_from("127.0.0.6", to, "calm", "cem").await;
    assert_eq!(first.status, 202, "{first:?}");
    let stored = origin_messages(&cluster).await;
    let second = comment_from("127.0.0.6", to, "calm", "cem").await;
    let retry_after = assert_rate_limited(&second, "comments from this user");
    assert_eq!(origin_messages(&cluster).await, stored);
    sleep_for(retry_after).await;
    let third = comment_from("127.0.0.6", to, "calm", "cem").await;
    assert_eq!(third.status, 202, "cem after Retry-After: {third:?}");

    // The bystander got every accepted like once, the next one too, and nothing refused.
    let next = like_from("127.0.0.7", to, "calm", "next").await;
    assert_eq!(next.status, 202, "{next:?}");
    accepted_likes += 1;
    let received = receive(&mut bystander, accepted_likes, 2).await;
    assert_eq!(received.likes, accepted_likes, "{received:?}");
    assert_eq!(received.comment_ids.len(), 2, "{received:?}");

    assert_eq!(limited(&cluster, "like_user_rate").await, 2);
    assert_eq!(limited(&cluster, "like_address_rate").await, 1);
    assert_eq!(limited(&cluster, "comment_user_rate").await, 1);
    assert_eq!(limited(&cluster, "comment_address_rate").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_address_or_per_frontend_cap_are_refused_until_one_closes() {
    let cluster = Cluster::builder()
        .dc("dc1", SMALL)
        .options(|options| {
            options.frontend.limits = LimitSettings {
                max_connections: 6,
                max_connections_per_address: 3,
                ..LimitSettings::unthrottled()
            }
        })
        .start()
        .await
        .expect("cluster starts");
    let to = frontend_addr(&cluster);

    let mut from_two = Vec::new();
    for _ in 0..3 {
        let (stream, response) = view_from("127.0.0.2", to, "v").await;
        assert_eq!(response.status, 200, "{response:?}");
        from_two.push(stream);
    }
    let (stream, response) = view_from("127.0.0.2", to, "v").await;
    let refused = read_refusal(stream, response).await;
    assert_eq!(refused.status, 429, "{refused:?}");
    assert_eq!(
        refused.problem()["type"],
        "urn:fanfare:problem:too-many-connections"
    );
    assert!(refused.retry_after() >= 1);
    let address_refusals = std::sync::atomic::AtomicU64::new(1);

    // Another address has its own count.
    let (from_three, response) = view_from("127.0.0.3", to, "v").await;
    assert_eq!(response.status, 200, "{response:?}");

    // Closing one stream of 127.0.0.2 frees its place (the frontend notices the close on its
    // own time: retry until then).
    drop(from_two.pop());
    let replacement = wait::until("a place for 127.0.0.2 again", WAIT, || async {
        let (stream, response) = view_from("127.0.0.2", to, "v").await;
        if response.status == 200 {
            return Some(stream);
        }
        assert_eq!(response.status, 429, "{response:?}");
        address_refusals.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        None
    })
    .await
    .unwrap();
    from_two.push(replacement);

    // Six open: four of 127.0.0.2 and .3, two more from .4 and .5. The seventh is refused
    // with 503 whatever its address.
    let (from_four, response) = view_from("127.0.0.4", to, "v").await;
    assert_eq!(response.status, 200, "{response:?}");
    let (from_five, response) = view_from("127.0.0.5", to, "v").await;
    assert_eq!(response.status, 200, "{response:?}");
    let (stream, response) = view_from("127.0.0.6", to, "v").await;
    let full = read_refusal(stream, response).await;
    assert_eq!(full.status, 503, "{full:?}");
    assert_eq!(full.problem()["type"], "urn:fanfare:problem:overloaded");
    assert!(full.retry_after() >= 1);
    // An API request is a connection too.
    let mut api = connect_from("127.0.0.7", to).await;
    api.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let response = read_head(&mut api).await;
    let full_api = read_refusal(api, response).await;
    assert_eq!(full_api.status, 503, "{full_api:?}");

    drop((from_two, from_three, from_four, from_five));
    // The frontend-cap count first: each read subtracts only its own refused fetches.
    assert_eq!(limited(&cluster, "connections").await, 2);
    assert_eq!(
        limited(&cluster, "address_connections").await,
        address_refusals.into_inner()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_heads_get_431_and_slow_heads_and_idle_api_connections_are_closed() {
    let cluster = Cluster::builder()
        .dc("dc1", SMALL)
        .options(|options| {
            options.frontend.limits = LimitSettings {
                max_head_bytes: 8192,
                header_read_timeout: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(2),
                max_comment_chars: 10,
                ..LimitSettings::unthrottled()
            };
            options.frontend.max_body_bytes = 1024;
        })
        .start()
        .await
        .expect("cluster starts");
    let to = frontend_addr(&cluster);
    let frontend = cluster.frontend(FRONTEND);
    let mut viewer = cluster.watch(FRONTEND, "calm").await.unwrap();
    let padding = "a".repeat(9000);

    // A head over 8192 bytes: 431 for a viewer request and for an API request alike.
    for request_line in [
        "GET /v1/videos/calm/events HTTP/1.1",
        "POST /v1/videos/calm/likes HTTP/1.1",
    ] {
        let mut stream = connect_from("127.0.0.2", to).await;
        let request = format!("{request_line}\r\nhost: x\r\nx-padding: {padding}\r\n\r\n");
        // The frontend may answer and close before all of it is written.
        let _ = stream.write_all(request.as_bytes()).await;
        let response = read_head(&mut stream).await;
        let response = read_refusal(stream, response).await;
        assert_eq!(response.status, 431, "{request_line}: {response:?}");
        assert_eq!(
            response.problem()["type"],
            "urn:fanfare:problem:header-too-large"
        );
    }
    // The same on a keep-alive connection's second request (answered by hyper, whose read
    // buffer has the same bound).
    let mut stream = connect_from("127.0.0.2", to).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut stream).await.status, 200);
    let request = format!("GET /healthz HTTP/1.1\r\nhost: x\r\nx-padding: {padding}\r\n\r\n");
    let _ = stream.write_all(request.as_bytes()).await;
    let response = read_head(&mut stream).await;
    assert_eq!(response.status, 431, "{response:?}");

    // Half a head is closed after the header-read timeout: as a first request, and after a
    // keep-alive request.
    let mut stream = connect_from("127.0.0.3", to).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    wait_closed(&mut stream, "half a first head").await;
    let mut stream = connect_from("127.0.0.3", to).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut stream).await.status, 200);
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    wait_closed(&mut stream, "half a keep-alive head").await;

    // An API connection without a further request is closed after the idle timeout.
    let mut stream = connect_from("127.0.0.4", to).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut stream).await.status, 200);
    wait_closed(&mut stream, "an idle keep-alive connection").await;

    // Bodies and comments over their limits are refused and reach nothing.
    let stored = origin_messages(&cluster).await;
    let url = format!("{frontend}/v1/videos/calm/comments");
    let oversized = serde_json::json!({ "user_id": "u", "text": "x".repeat(2000) }).to_string();
    let response = http::post(&url, Some("application/json"), oversized)
        .await
        .unwrap();
    assert_eq!(response.status, 413, "{}", response.text());
    let long = serde_json::json!({ "user_id": "u", "text": "12345678901" });
    let response = http::post_json(&url, &long).await.unwrap();
    assert_eq!(response.status, 400, "{}", response.text());
    let problem: Value = response.json().unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("1 to 10 characters")),
        "{problem}"
    );
    assert_eq!(origin_messages(&cluster).await, stored);

    // The viewer stream, open all along (longer than the idle timeout), still gets the next
    // comment, once.
    let fits = serde_json::json!({ "user_id": "u", "text": "1234567890" });
    let response = http::post_json(&url, &fits).await.unwrap();
    assert_eq!(response.status, 202, "{}", response.text());
    let received = receive(&mut viewer, 0, 1).await;
    assert_eq!(received.comment_ids.len(), 1, "{received:?}");

    assert_eq!(limited(&cluster, "header_size").await, 3);
    assert_eq!(limited(&cluster, "header_timeout").await, 2);
    assert!(limited(&cluster, "idle_timeout").await >= 1);
    assert_eq!(limited(&cluster, "body_size").await, 1);
    assert_eq!(limited(&cluster, "comment_length").await, 1);
}
