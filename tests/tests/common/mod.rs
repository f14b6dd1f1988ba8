//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

pub mod up;

use std::collections::HashSet;
use std::time::Duration;

use fanfare_testkit::sse::{SseEvent, SseStream};
use fanfare_testkit::{http, DcShape};
use serde_json::{json, Value};

/// The smallest datacenter: one NATS server, one dispatcher, one frontend.
pub const SMALL: DcShape = DcShape {
    nats: 1,
    dispatchers: 1,
    frontends: 1,
};

/// Three NATS servers (streams replicated three times), one dispatcher, one frontend.
pub const HA: DcShape = DcShape {
    nats: 3,
    dispatchers: 1,
    frontends: 1,
};

/// Upper bound for anything one test waits on.
pub const WAIT: Duration = Duration::from_secs(30);
/// After the expected events arrived, how long a viewer keeps listening for anything extra (a
/// duplicate or a stray event) before the test judges it.
pub const QUIET: Duration = Duration::from_millis(1500);

/// A problem response (RFC 9457) with `status`; returns its body.
pub fn problem_body(response: &http::HttpResponse, status: u16, case: &str) -> Value {
    assert_eq!(response.status, status, "{case}: {}", response.text());
    assert_eq!(
        response.header("content-type"),
        Some("application/problem+json"),
        "{case}"
    );
    let problem: Value = response
        .json()
        .unwrap_or_else(|error| panic!("{case}: {error}"));
    assert_eq!(problem["status"], status, "{case}: {problem}");
    problem
}

/// A problem response (RFC 9457) with `status` and the problem type `slug`.
pub fn assert_problem(response: &http::HttpResponse, status: u16, slug: &str, case: &str) {
    let problem = problem_body(response, status, case);
    assert_eq!(
        problem["type"],
        format!("urn:fanfare:problem:{slug}"),
        "{case}: {problem}"
    );
}

pub async fn like(frontend: &str, video: &str, user: &str) -> anyhow::Result<()> {
    let url = format!("{frontend}/v1/videos/{video}/likes");
    let response = http::post_json(&url, &json!({ "user_id": user })).await?;
    anyhow::ensure!(
        response.status == 202,
        "like got {}: {}",
        response.status,
        response.text()
    );
    Ok(())
}

/// Posts a comment and returns its `comment_id`.
pub async fn comment(frontend: &str, video: &str, text: &str) -> anyhow::Result<String> {
    let url = format!("{frontend}/v1/videos/{video}/comments");
    let response = http::post_json(&url, &json!({ "user_id": "tester", "text": text })).await?;
    anyhow::ensure!(
        response.status == 202,
        "comment got {}: {}",
        response.status,
        response.text()
    );
    let body: Value = response.json()?;
    Ok(body["comment_id"].as_str().unwrap_or_default().to_owned())
}

/// Posts a comment with an `Idempotency-Key`: retried with the same key, it is stored once.
pub async fn comment_once(
    frontend: &str,
    video: &str,
    text: &str,
    key: &str,
) -> anyhow::Result<String> {
    let url = format!("{frontend}/v1/videos/{video}/comments");
    let body = json!({ "user_id": "tester", "text": text }).to_string();
    let response = http::request(
        "POST",
        &url,
        &[
            ("content-type", "application/json"),
            ("idempotency-key", key),
        ],
        body.into(),
    )
    .await?;
    anyhow::ensure!(
        response.status == 202,
        "comment got {}: {}",
        response.status,
        response.text()
    );
    let body: Value = response.json()?;
    Ok(body["comment_id"].as_str().unwrap_or_default().to_owned())
}

/// What one viewer received.
#[derive(Debug, Default)]
pub struct Received {
    pub likes: u64,
    pub last_total: u64,
    pub comment_ids: Vec<String>,
    pub comments: Vec<Value>,
    /// `viewers` events (every stream may get them as viewers come and go).
    pub viewers: Vec<Value>,
    pub other: Vec<SseEvent>,
    /// How long the expected events took to arrive (set by [`receive_within`]).
    pub complete_after: Duration,
}

impl Received {
    pub fn of(events: &[SseEvent]) -> Self {
        let mut received = Received::default();
        for event in events {
            let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
            match event.event.as_str() {
                "likes" => {
                    received.likes += data["count"].as_u64().unwrap_or(0);
                    received.last_total = data["total"].as_u64().unwrap_or(0);
                }
                "comment" => {
                    received
                        .comment_ids
                        .push(data["comment_id"].as_str().unwrap_or_default().to_owned());
                    received.comments.push(data);
                }
                "viewers" => received.viewers.push(data),
                _ => received.other.push(event.clone()),
            }
        }
        received
    }

    pub fn has_duplicate_comment(&self) -> bool {
        let unique: HashSet<&String> = self.comment_ids.iter().collect();
        unique.len() != self.comment_ids.len()
    }
}

/// Reads `viewer` until it has `likes` likes and `comments` comments, then listens for
/// [`QUIET`] more so that anything extra is caught too.
pub async fn receive(viewer: &mut SseStream, likes: u64, comments: usize) -> Received {
    receive_within(viewer, likes, comments, WAIT).await
}

/// [`receive`] with its own bound on the wait for the expected events.
pub async fn receive_within(
    viewer: &mut SseStream,
    likes: u64,
    comments: usize,
    wait: Duration,
) -> Received {
    let started = std::time::Instant::now();
    let (mut events, _) = viewer
        .collect_until(wait, |events| {
            let received = Received::of(events);
            received.likes >= likes && received.comment_ids.len() >= comments
        })
        .await;
    let complete_after = started.elapsed();
    let (extra, _) = viewer.collect_until(QUIET, |_| false).await;
    events.extend(extra);
    Received {
        complete_after,
        ..Received::of(&events)
    }
}

pub async fn open(url: &str) -> SseStream {
    SseStream::connect(url, &[])
        .await
        .unwrap_or_else(|error| panic!("cannot open {url}: {error}"))
}
