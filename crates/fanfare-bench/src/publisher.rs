//! Publishers: comments at a fixed rate and likes as fast as the server takes them, each over
//! a fixed number of keep-alive HTTP/1.1 connections.
//!
//! Every worker owns one connection (a hyper `http1` handshake, reopened after an error) and
//! takes the next sequence number from a shared counter, so a slow response holds up only its
//! own worker while the others keep the rate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, USER_AGENT};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::now_micros;
use crate::target::HttpUrl;

/// Bound on one publish request, connect included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How a marker becomes a publish request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubFormat {
    /// fanfare's `POST /v1/videos/{id}/comments` with `{"user_id","text"}`.
    Fanfare,
    /// The marker is the whole body (nginx+nchan: subscribers get `data: <body>`).
    Raw,
    /// Pushpin's control API: one `http-stream` item on channel `<video>`.
    Pushpin,
}

/// Where and how to publish.
#[derive(Debug, Clone)]
pub struct PublishTarget {
    pub url: Arc<HttpUrl>,
    pub format: PubFormat,
    pub video: String,
}

impl PublishTarget {
    fn request(&self, body: Bytes, content_type: &'static str) -> Request<Full<Bytes>> {
        Request::post(self.url.path.as_str())
            .header(HOST, self.url.authority.as_str())
            .header(CONTENT_TYPE, content_type)
            .header(USER_AGENT, "fanfare-bench")
            .body(Full::new(body))
            .expect("a request from a parsed url and constant headers is valid")
    }

    /// The request that publishes `marker` as a comment.
    fn marker_request(&self, marker: &str) -> Request<Full<Bytes>> {
        match self.format {
            PubFormat::Fanfare => {
                let body = format!(r#"{{"user_id":"bench","text":"{marker}"}}"#);
                self.request(Bytes::from(body), "application/json")
            }
            PubFormat::Raw => self.request(Bytes::from(marker.to_owned()), "text/plain"),
            PubFormat::Pushpin => {
                let body = serde_json::json!({
                    "items": [{
                        "channel": self.video,
                        "formats": {"http-stream": {"content": format!("event: message\ndata: {marker}\n\n")}}
                    }]
                });
                self.request(Bytes::from(body.to_string()), "application/json")
            }
        }
    }

    /// The request that posts one like (to a generic target: the same body to its pub url).
    fn like_request(&self, body: &Bytes) -> Request<Full<Bytes>> {
        self.request(body.clone(), "application/json")
    }
}

/// One keep-alive connection, reopened on demand.
struct Connection {
    url: Arc<HttpUrl>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Connection {
    fn new(url: Arc<HttpUrl>) -> Self {
        Self { url, sender: None }
    }

    /// Sends one request and reads its whole response; true for a 2xx.
    async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<bool, String> {
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(request)).await;
        let outcome = outcome.unwrap_or_else(|_| Err("request timed out".to_owned()));
        if outcome.is_err() {
            self.sender = None;
        }
        outcome
    }

    async fn exchange(&mut self, request: Request<Full<Bytes>>) -> Result<bool, String> {
        if self.sender.as_ref().is_none_or(|sender| sender.is_closed()) {
            self.sender = Some(self.open().await?);
        }
        let sender = self.sender.as_mut().expect("opened above");
        sender
            .ready()
            .await
            .map_err(|error| format!("connection not ready: {error}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| format!("request failed: {error}"))?;
        let accepted = response.status().is_success();
        response
            .into_body()
            .collect()
            .await
            .map_err(|error| format!("reading the response: {error}"))?;
        Ok(accepted)
    }

    async fn open(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = TcpStream::connect(self.url.addr)
            .await
            .map_err(|error| format!("connecting to {}: {error}", self.url.addr))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| format!("http handshake: {error}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}

/// What a comment publisher did.
#[derive(Debug, Default)]
pub struct CommentOutcome {
    /// Sequence numbers the server accepted (2xx), unsorted.
    pub accepted: Vec<u64>,
    pub failed: u64,
    /// First and last send time, microseconds since the epoch.
    pub first_send_micros: u64,
    pub last_send_micros: u64,
    /// One error message per kind seen, for the report.
    pub errors: Vec<String>,
}

/// Counters the progress line reads while publishers run.
#[derive(Debug, Default)]
pub struct PublishProgress {
    pub sent: AtomicU64,
    pub accepted: AtomicU64,
}

/// Publishes comments `0..count` at `rate` per second from `concurrency` workers; comment
/// `seq` goes to `targets[seq % targets.len()]` (all on one server).
pub async fn publish_comments(
    targets: Arc<Vec<PublishTarget>>,
    count: u64,
    rate: f64,
    concurrency: usize,
    progress: Arc<PublishProgress>,
    stop: CancellationToken,
) -> CommentOutcome {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let targets = targets.clone();
            let next = next.clone();
            let progress = progress.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut outcome = CommentOutcome::default();
                let Some(first) = targets.first() else {
                    return outcome;
                };
                let mut connection = Connection::new(first.url.clone());
                loop {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    if seq >= count {
                        break;
                    }
                    let due = started + Duration::from_secs_f64(seq as f64 / rate);
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep_until(due) => {}
                    }
                    let sent = now_micros();
                    if outcome.first_send_micros == 0 {
                        outcome.first_send_micros = sent;
                    }
                    outcome.last_send_micros = sent;
                    let target = &targets[(seq % targets.len() as u64) as usize];
                    let request = target.marker_request(&format!("b{seq}@{sent}"));
                    progress.sent.fetch_add(1, Ordering::Relaxed);
                    match connection.send(request).await {
                        Ok(true) => {
                            progress.accepted.fetch_add(1, Ordering::Relaxed);
                            outcome.accepted.push(seq);
                        }
                        Ok(false) => {
                            outcome.failed += 1;
                            note_error(&mut outcome.errors, "rejected (non-2xx status)");
                        }
                        Err(error) => {
                            outcome.failed += 1;
                            note_error(&mut outcome.errors, &error);
                        }
                    }
                }
                outcome
            })
        })
        .collect();
    let mut total = CommentOutcome::default();
    for worker in workers {
        let Ok(outcome) = worker.await else { continue };
        total.accepted.extend(outcome.accepted);
        total.failed += outcome.failed;
        if outcome.first_send_micros != 0
            && (total.first_send_micros == 0 || outcome.first_send_micros < total.first_send_micros)
        {
            total.first_send_micros = outcome.first_send_micros;
        }
        total.last_send_micros = total.last_send_micros.max(outcome.last_send_micros);
        for error in outcome.errors {
            note_error(&mut total.errors, &error);
        }
    }
    total
}

/// Keeps one example of each error message, at most a few.
fn note_error(errors: &mut Vec<String>, error: &str) {
    if errors.len() < 5 && !errors.iter().any(|known| known == error) {
        errors.push(error.to_owned());
    }
}

/// Publishes one warm-up probe `w<n>@<micros>` and says whether it was accepted.
pub async fn publish_probe(target: &PublishTarget, n: u64) -> Result<bool, String> {
    let mut connection = Connection::new(target.url.clone());
    let request = target.marker_request(&format!("w{n}@{}", now_micros()));
    connection.send(request).await
}

/// What the like publisher did.
#[derive(Debug, Default)]
pub struct LikeOutcome {
    /// When each accepted like was answered, microseconds since the epoch, sorted: the k-th
    /// entry is when the video's k-th like was stored, as far as the publisher can tell.
    pub accepted_at: Vec<u64>,
    pub failed: u64,
    pub requests: u64,
    /// Seconds from the first request to the last answer.
    pub elapsed_s: f64,
    pub errors: Vec<String>,
}

/// Posts likes as fast as `concurrency` connections allow, for `duration`.
pub async fn publish_likes(
    target: PublishTarget,
    duration: Duration,
    concurrency: usize,
    progress: Arc<PublishProgress>,
    stop: CancellationToken,
) -> LikeOutcome {
    let started = Instant::now();
    let deadline = started + duration;
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|worker| {
            let target = target.clone();
            let progress = progress.clone();
            let stop = stop.clone();
            let body = Bytes::from(format!(r#"{{"user_id":"bench-{worker}"}}"#));
            tokio::spawn(async move {
                let mut outcome = LikeOutcome::default();
                let mut connection = Connection::new(target.url.clone());
                while Instant::now() < deadline && !stop.is_cancelled() {
                    outcome.requests += 1;
                    progress.sent.fetch_add(1, Ordering::Relaxed);
                    match connection.send(target.like_request(&body)).await {
                        Ok(true) => {
                            progress.accepted.fetch_add(1, Ordering::Relaxed);
                            outcome.accepted_at.push(now_micros());
                        }
                        Ok(false) => {
                            outcome.failed += 1;
                            note_error(&mut outcome.errors, "rejected (non-2xx status)");
                        }
                        Err(error) => {
                            outcome.failed += 1;
                            note_error(&mut outcome.errors, &error);
                            // Do not spin on a server that is down.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                outcome
            })
        })
        .collect();
    let mut total = LikeOutcome::default();
    for worker in workers {
        let Ok(outcome) = worker.await else { continue };
        total.accepted_at.extend(outcome.accepted_at);
        total.failed += outcome.failed;
        total.requests += outcome.requests;
        for error in outcome.errors {
            note_error(&mut total.errors, &error);
        }
    }
    total.elapsed_s = started.elapsed().as_secs_f64();
    total.accepted_at.sort_unstable();
    total
}
