//! Global viewer counts (`event: viewers`): every stream of a video gets the number of its
//! viewers in every datacenter, as they join and leave anywhere; a killed frontend's viewers
//! go; a partition keeps the other side's last count, marked partial, and the heal makes it
//! exact again.

mod common;

use std::time::{Duration, Instant};

use common::{open, WAIT};
use fanfare_supervisor::LinkMode;
use fanfare_testkit::sse::SseStream;
use fanfare_testkit::{Cluster, DcShape};
use serde_json::Value;

const DC: DcShape = DcShape {
    nats: 1,
    dispatchers: 1,
    frontends: 2,
};

/// Reads `stream` until its latest `viewers` event says `viewers` (and `partial`); returns how
/// long that took. Every `viewers` event differs from the one before it on this stream.
async fn until_viewers(
    stream: &mut SseStream,
    viewers: u64,
    partial: bool,
    what: &str,
) -> Duration {
    let started = Instant::now();
    let mut last: Option<(u64, bool)> = None;
    loop {
        let remaining = WAIT.saturating_sub(started.elapsed());
        assert!(
            !remaining.is_zero(),
            "{what}: no viewers={viewers} partial={partial}; last {last:?}"
        );
        let Ok(Some(event)) = stream.next_event(remaining).await else {
            panic!("{what}: the stream ended or timed out; last {last:?}");
        };
        if event.event != "viewers" {
            continue;
        }
        let data: Value = serde_json::from_str(&event.data).unwrap();
        let shown = (
            data["viewers"].as_u64().unwrap(),
            data["partial"].as_bool().unwrap(),
        );
        assert_ne!(
            Some(shown),
            last,
            "{what}: a viewers event repeats the one before"
        );
        last = Some(shown);
        if shown == (viewers, partial) {
            return started.elapsed();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_counts_add_up_every_datacenter_and_follow_joins_leaves_and_a_killed_frontend() {
    let cluster = Cluster::builder()
        .dc("dc1", DC)
        .dc("dc2", DC)
        .dc("dc3", DC)
        .start()
        .await
        .expect("cluster starts");
    let url = |frontend: &str| cluster.events_url(frontend, "show");
    let mut watcher = open(&url("dc1-fe1")).await;
    until_viewers(&mut watcher, 1, false, "alone").await;
    let second = open(&url("dc1-fe2")).await;
    let third = open(&url("dc2-fe1")).await;
    let fourth = open(&url("dc3-fe1")).await;
    let joined = until_viewers(&mut watcher, 4, false, "four in three datacenters").await;
    eprintln!("joins in dc1, dc2 and dc3 counted in dc1 after {joined:?}");
    // A stream of another frontend and datacenter sees the same count.
    let mut elsewhere = open(&url("dc3-fe2")).await;
    until_viewers(&mut elsewhere, 5, false, "dc3-fe2 counts itself too").await;
    until_viewers(&mut watcher, 5, false, "dc1 sees dc3-fe2's viewer").await;
    drop(third);
    let left = until_viewers(&mut watcher, 4, false, "a leave in dc2").await;
    eprintln!("a leave in dc2 counted in dc1 after {left:?}");
    drop(second);
    until_viewers(&mut elsewhere, 3, false, "a leave in dc1, seen in dc3").await;
    // A frontend killed outright: its viewers go within its interest TTL.
    cluster.kill("dc3-fe1", libc::SIGKILL).await.unwrap();
    drop(fourth);
    let gone = until_viewers(&mut watcher, 2, false, "dc3-fe1 killed").await;
    eprintln!("a killed frontend's viewers gone after {gone:?}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_keeps_the_other_sides_count_as_partial_and_the_heal_makes_it_exact() {
    let cluster = Cluster::builder()
        .dc("dc1", DC)
        .dc("dc2", DC)
        .start()
        .await
        .expect("cluster starts");
    let url = |frontend: &str| cluster.events_url(frontend, "match");
    let mut dc1_viewer = open(&url("dc1-fe1")).await;
    let mut dc2_viewer = open(&url("dc2-fe1")).await;
    let _dc2_other = open(&url("dc2-fe2")).await;
    until_viewers(&mut dc1_viewer, 3, false, "before the cut").await;
    until_viewers(&mut dc2_viewer, 3, false, "before the cut, in dc2").await;

    cluster.partition(&["dc2"], LinkMode::Reset).await;
    // Each side keeps the other's last count, and says it is partial.
    until_viewers(&mut dc1_viewer, 3, true, "dc2 cut off, from dc1").await;
    until_viewers(&mut dc2_viewer, 3, true, "dc1 cut off, from dc2").await;
    // Local joins still count on each side.
    let _late = open(&url("dc1-fe2")).await;
    until_viewers(&mut dc1_viewer, 4, true, "a join in dc1 during the cut").await;

    let healed_at = Instant::now();
    cluster.heal().await;
    until_viewers(&mut dc2_viewer, 4, false, "dc2 after the heal").await;
    until_viewers(&mut dc1_viewer, 4, false, "dc1 after the heal").await;
    eprintln!(
        "counts exact again {:?} after the heal",
        healed_at.elapsed()
    );
    cluster.stop().await;
}
