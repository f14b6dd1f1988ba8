//! Graceful drain for rolling restarts: every frontend of a datacenter is restarted one after
//! the other (SIGTERM) while viewers watch and a publisher publishes. Each draining frontend
//! says it is not ready, goes on serving for its grace, then ends its streams in waves, each
//! with its own `retry:`; its viewers resume on the other frontend with their `Last-Event-ID`.
//! Nothing is lost, nothing is duplicated, and the reconnects are spread, not all at once.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{comment, WAIT};
use fanfare_testkit::sse::{SseError, SseStream};
use fanfare_testkit::{http, wait, Cluster, DcShape};
use serde_json::Value;

const VIEWERS_PER_FRONTEND: usize = 8;

/// What one roaming viewer saw.
#[derive(Default)]
struct Roamed {
    comment_ids: Vec<String>,
    /// The `retry:` hint of each stream that a frontend ended.
    retry_hints: Vec<u64>,
}

/// A viewer that, whenever its stream ends, waits its `retry:` hint and resumes on the other
/// frontend with its last event id, as a browser behind a load balancer would.
async fn roam(urls: [String; 2], start: usize, stop: Arc<AtomicBool>, roamed: Arc<Mutex<Roamed>>) {
    let mut current = start;
    let mut last_id: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        let headers: Vec<(&str, &str)> = last_id
            .as_deref()
            .map(|id| vec![("last-event-id", id)])
            .unwrap_or_default();
        let Ok(mut stream) = SseStream::connect(&urls[current], &headers).await else {
            // That frontend is restarting: the other one.
            current = 1 - current;
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        loop {
            match stream.next_event(Duration::from_millis(250)).await {
                Ok(Some(event)) if event.event == "comment" => {
                    let data: Value = serde_json::from_str(&event.data).unwrap();
                    roamed
                        .lock()
                        .unwrap()
                        .comment_ids
                        .push(data["comment_id"].as_str().unwrap().to_owned());
                }
                Ok(Some(_)) => {}
                Err(SseError::Timeout) if !stop.load(Ordering::Relaxed) => {}
                Ok(None) => {
                    // The frontend ended the stream: its last hint says when to come back.
                    let hint = stream.reconnection_time().unwrap_or(0);
                    roamed.lock().unwrap().retry_hints.push(hint);
                    tokio::time::sleep(Duration::from_millis(hint)).await;
                    break;
                }
                _ => break,
            }
        }
        last_id = stream.last_event_id().map(str::to_owned).or(last_id);
        current = 1 - current;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_every_frontend_one_by_one_under_load_loses_and_duplicates_nothing() {
    let two = DcShape {
        nats: 1,
        dispatchers: 1,
        frontends: 2,
    };
    let mut cluster = Cluster::builder()
        .dc("dc1", two)
        .dc("dc2", common::SMALL)
        .start()
        .await
        .expect("cluster starts");
    let video = "rolling";
    let urls = [
        cluster.events_url("dc1-fe1", video),
        cluster.events_url("dc1-fe2", video),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let mut viewers = Vec::new();
    for index in 0..2 * VIEWERS_PER_FRONTEND {
        let roamed = Arc::new(Mutex::new(Roamed::default()));
        viewers.push(roamed.clone());
        tokio::spawn(roam(urls.clone(), index % 2, stop.clone(), roamed));
    }
    cluster
        .wait_for_interest("dc1", video, &["dc1-fe1", "dc1-fe2"], WAIT)
        .await
        .unwrap();

    // A publisher in dc2, all along.
    let publishing = Arc::new(AtomicBool::new(true));
    let publisher = {
        let url = cluster.frontend("dc2-fe1");
        let publishing = publishing.clone();
        tokio::spawn(async move {
            let mut published = Vec::new();
            let mut index = 0;
            while publishing.load(Ordering::Relaxed) {
                published.push(
                    comment(&url, "rolling", &format!("c{index}"))
                        .await
                        .unwrap(),
                );
                index += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            published
        })
    };

    for frontend in ["dc1-fe1", "dc1-fe2"] {
        // Not ready as soon as the drain begins, while it still serves.
        let ready_url = format!("{}/readyz", cluster.frontend(frontend));
        let pid = cluster.pid(frontend).expect("running");
        let signalled = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(signalled.success());
        wait::until(
            &format!("{frontend} to say it is draining"),
            WAIT,
            || async {
                let response = http::get(&ready_url).await.ok()?;
                (response.status == 503 && response.text() == "draining\n").then_some(())
            },
        )
        .await
        .unwrap();
        // It exits by itself once its streams have ended; then a fresh start (`restart`
        // finds it stopped).
        assert!(
            cluster.wait_exited(frontend, WAIT).await,
            "{frontend} did not finish draining"
        );
        cluster.restart(frontend).await.unwrap();
    }

    publishing.store(false, Ordering::Relaxed);
    let published = publisher.await.unwrap();
    let arrived = wait::until("every viewer to have every comment", WAIT, || async {
        viewers
            .iter()
            .all(|viewer| viewer.lock().unwrap().comment_ids.len() >= published.len())
            .then_some(())
    })
    .await;
    if let Err(error) = arrived {
        for (index, viewer) in viewers.iter().enumerate() {
            let viewer = viewer.lock().unwrap();
            let missing: Vec<&String> = published
                .iter()
                .filter(|id| !viewer.comment_ids.contains(id))
                .collect();
            eprintln!(
                "viewer {index}: {} of {} comments, hints {:?}, first missing {:?}",
                viewer.comment_ids.len(),
                published.len(),
                viewer.retry_hints,
                missing
                    .first()
                    .map(|id| published.iter().position(|p| p == *id))
            );
        }
        panic!("{error}");
    }
    tokio::time::sleep(common::QUIET).await;
    stop.store(true, Ordering::Relaxed);

    let mut hints = BTreeSet::new();
    let mut drained = 0;
    for (index, viewer) in viewers.iter().enumerate() {
        let viewer = viewer.lock().unwrap();
        assert_eq!(
            viewer.comment_ids, published,
            "viewer {index}: every comment once, in order"
        );
        drained += viewer.retry_hints.len();
        hints.extend(viewer.retry_hints.iter().copied());
    }
    // Every viewer was moved at least once (each frontend drained in turn), and the hints
    // differ: the reconnects are spread over the window rather than all at once.
    assert!(
        drained >= viewers.len(),
        "{drained} streams ended by a drain"
    );
    assert!(
        hints.len() > viewers.len() / 2,
        "retry hints spread: {hints:?}"
    );
    eprintln!(
        "{} comments to {} viewers through two rolling restarts; {drained} drained streams, retry hints {:?} ms",
        published.len(),
        viewers.len(),
        hints
    );
    cluster.stop().await;
}
