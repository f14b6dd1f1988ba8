//! Minimal HTTP GET for the local monitoring and health endpoints the supervisor polls
//! (nats-server's `/gatewayz`, `/jsz`, nodes' `/readyz`). Loopback only, one request per
//! connection, bounded in time.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest answer read; monitoring pages of a local topology are far smaller.
const MAX_RESPONSE: usize = 4 * 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(2);

/// Status code and body of `GET http://{authority}{path}`, or None when it could not be had.
pub async fn get(authority: &str, path: &str) -> Option<(u16, String)> {
    tokio::time::timeout(TIMEOUT, fetch(authority, path))
        .await
        .ok()
        .flatten()
}

async fn fetch(authority: &str, path: &str) -> Option<(u16, String)> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    exchange(authority, request).await
}

/// Status code and body of `POST http://{authority}{path}` with a JSON body; `timeout` bounds
/// the whole exchange (a restart may take a while).
pub async fn post_json(
    authority: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> Option<(u16, String)> {
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tokio::time::timeout(timeout, exchange(authority, request))
        .await
        .ok()
        .flatten()
}

async fn exchange(authority: &str, request: String) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(authority).await.ok()?;
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream
        .take(MAX_RESPONSE as u64)
        .read_to_end(&mut response)
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// Authority (`host:port`) of an `http://host:port` URL.
pub fn authority(url: &str) -> &str {
    url.trim_start_matches("http://").trim_end_matches('/')
}
