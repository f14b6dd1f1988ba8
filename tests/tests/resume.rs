//! Resuming a viewer stream with `Last-Event-ID`: anywhere, with no gap and no duplicate, or an
//! explicit reset when the position is older than what is retained.

mod common;

use std::time::Duration;

use common::{comment, like, receive, SMALL, WAIT};
use fanfare_supervisor::LinkMode;
use fanfare_testkit::sse::SseStream;
use fanfare_testkit::{http, wait, Cluster, DcShape};

async fn resume(url: &str, last_event_id: &str) -> SseStream {
    SseStream::connect(url, &[("Last-Event-ID", last_event_id)])
        .await
        .unwrap_or_else(|error| panic!("cannot resume at {url}: {error}"))
}

/// A viewer in dc1 leaves, comments go on in dc1 and dc2, and it comes back through dc2's
/// frontend with its last id: it gets exactly what it missed, in order per origin, then the
/// live stream, with the like total right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_resumes_in_another_datacenter_with_no_gap_and_no_duplicate() {
    let cluster = Cluster::builder()
        .dc("dc1", SMALL)
        .dc("dc2", SMALL)
        .start()
        .await
        .expect("cluster starts");
    let dc1 = cluster.frontend("dc1-fe1");
    let dc2 = cluster.frontend("dc2-fe1");
    let mut leaver = cluster.watch("dc1-fe1", "talk").await.unwrap();
    // A witness in dc2 stays connected: once it has everything, dc2 has it too.
    let mut witness = cluster.watch("dc2-fe1", "talk").await.unwrap();

    let mut seen = Vec::new();
    for index in 0..3 {
        seen.push(
            comment(&dc1, "talk", &format!("before {index}"))
                .await
                .unwrap(),
        );
    }
    let before = receive(&mut leaver, 0, 3).await;
    assert_eq!(before.comment_ids, seen);
    let last_id = leaver
        .last_event_id()
        .expect("comments carry ids")
        .to_owned();
    drop(leaver);

    let mut missed = Vec::new();
    for index in 0..4 {
        missed.push(
            comment(&dc1, "talk", &format!("while away {index}"))
                .await
                .unwrap(),
        );
        like(&dc1, "talk", "fan").await.unwrap();
    }
    missed.push(comment(&dc2, "talk", "from dc2 while away").await.unwrap());
    let witnessed = receive(&mut witness, 4, 8).await;
    assert_eq!(witnessed.comment_ids.len(), 8, "dc2 has every comment");

    let mut back = resume(&cluster.events_url("dc2-fe1", "talk"), &last_id).await;
    let live = comment(&dc1, "talk", "after the return").await.unwrap();
    let resumed = receive(&mut back, 0, missed.len() + 1).await;
    let mut expected = missed.clone();
    expected.push(live);
    assert_eq!(
        resumed.comment_ids, expected,
        "what was missed, then live, once each"
    );
    let totals: Vec<&str> = resumed
        .other
        .iter()
        .map(|event| event.event.as_str())
        .collect();
    assert_eq!(totals, ["total"], "the stream opens with the like total");
    assert!(
        resumed.other[0].data.contains("\"total\":4"),
        "{:?}",
        resumed.other[0]
    );
    cluster.stop().await;
}

/// During a partition, a viewer of the majority side resumes through the other majority
/// datacenter with nothing missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_resumes_across_datacenters_during_a_partition() {
    let cluster = Cluster::builder()
        .dc("dc1", SMALL)
        .dc("dc2", SMALL)
        .dc("dc3", SMALL)
        .start()
        .await
        .expect("cluster starts");
    let dc1 = cluster.frontend("dc1-fe1");
    let mut leaver = cluster.watch("dc1-fe1", "cut").await.unwrap();
    let mut witness = cluster.watch("dc3-fe1", "cut").await.unwrap();
    cluster.partition(&["dc2"], LinkMode::Reset).await;

    let first = comment(&dc1, "cut", "first").await.unwrap();
    assert_eq!(receive(&mut leaver, 0, 1).await.comment_ids, [first]);
    let last_id = leaver.last_event_id().unwrap().to_owned();
    drop(leaver);
    let mut missed = Vec::new();
    for index in 0..3 {
        missed.push(
            comment(&dc1, "cut", &format!("missed {index}"))
                .await
                .unwrap(),
        );
    }
    assert_eq!(receive(&mut witness, 0, 4).await.comment_ids.len(), 4);

    let mut back = resume(&cluster.events_url("dc3-fe1", "cut"), &last_id).await;
    let resumed = receive(&mut back, 0, missed.len()).await;
    assert_eq!(resumed.comment_ids, missed);
    cluster.heal().await;
    cluster.stop().await;
}

/// Right after a heal, viewers get what they missed from the dispatchers' bridge while the
/// fan-out stream is still catching up (several seconds). A viewer that resumes in that window
/// is replayed those comments from the origin stream: nothing it missed is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_resuming_right_after_a_heal_gets_everything_it_missed() {
    let cluster = Cluster::builder()
        .dc("dc1", SMALL)
        .dc("dc2", SMALL)
        .start()
        .await
        .expect("cluster starts");
    let dc1 = cluster.frontend("dc1-fe1");
    let mut leaver = cluster.watch("dc2-fe1", "heal").await.unwrap();
    let mut witness = cluster.watch("dc2-fe1", "heal").await.unwrap();
    let first = comment(&dc1, "heal", "first").await.unwrap();
    assert_eq!(
        receive(&mut leaver, 0, 1).await.comment_ids,
        std::slice::from_ref(&first)
    );
    let last_id = leaver.last_event_id().unwrap().to_owned();
    drop(leaver);

    // Silent, and past the servers' detection, so dc2's source of dc1 really fails.
    cluster.partition(&["dc2"], LinkMode::Drop).await;
    let mut missed = Vec::new();
    for index in 0..3 {
        missed.push(
            comment(&dc1, "heal", &format!("missed {index}"))
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_secs(8)).await;
    cluster.heal().await;
    let healed = std::time::Instant::now();
    let witnessed = common::receive_within(&mut witness, 0, 4, Duration::from_secs(45)).await;
    assert_eq!(
        witnessed.comment_ids,
        [vec![first], missed.clone()].concat()
    );

    let mut back = resume(&cluster.events_url("dc2-fe1", "heal"), &last_id).await;
    let resumed = receive(&mut back, 0, missed.len()).await;
    eprintln!("resumed {:?} after the heal", healed.elapsed());
    assert_eq!(
        resumed.comment_ids, missed,
        "every missed comment, once, in order"
    );
    cluster.stop().await;
}

/// A position older than the retention window gets an explicit `reset` event, then the live
/// stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_older_than_retention_gets_a_reset_event() {
    let cluster = Cluster::builder()
        .dc("dc1", SMALL)
        .dc("dc2", SMALL)
        .settings(|settings| settings.retention = Duration::from_secs(2))
        .start()
        .await
        .expect("cluster starts");
    let dc1 = cluster.frontend("dc1-fe1");
    let mut viewer = cluster.watch("dc1-fe1", "old").await.unwrap();
    comment(&dc1, "old", "soon forgotten").await.unwrap();
    receive(&mut viewer, 0, 1).await;
    let old_id = viewer.last_event_id().unwrap().to_owned();
    drop(viewer);
    comment(&dc1, "old", "also forgotten").await.unwrap();

    // Wait until retention removed them from dc1's fan-out stream.
    let client = cluster.nats_client("dc1").await.unwrap();
    let js = async_nats::jetstream::new(client);
    wait::until("retention to expire the first comments", WAIT, || async {
        let mut stream = js.get_stream("FANOUT_dc1").await.ok()?;
        let state = stream.info().await.ok()?.state.clone();
        (state.messages == 0 && state.first_sequence > 2).then_some(())
    })
    .await
    .unwrap();
    comment(&dc1, "old", "fresh").await.unwrap();

    let mut back = resume(&cluster.events_url("dc1-fe1", "old"), &old_id).await;
    let resumed = receive(&mut back, 0, 0).await;
    let kinds: Vec<&str> = resumed
        .other
        .iter()
        .map(|event| event.event.as_str())
        .collect();
    assert_eq!(kinds, ["reset"], "told that the position is too old");
    assert!(
        resumed.comment_ids.len() <= 1,
        "at most the fresh comment, after the reset: {:?}",
        resumed.comment_ids
    );

    // A malformed position is a client error, not a silent fresh start.
    let response = http::request(
        "GET",
        &cluster.events_url("dc1-fe1", "old"),
        &[("Last-Event-ID", "not a position")],
        Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(response.status, 400);
    assert_eq!(
        response.header("content-type"),
        Some("application/problem+json")
    );
    cluster.stop().await;
}

/// A frontend killed outright: its viewer's stream ends, it reconnects to another frontend
/// with its last id (what a browser's EventSource does) and misses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_of_a_killed_frontend_resume_elsewhere_with_nothing_lost() {
    let cluster = Cluster::builder()
        .dc(
            "dc1",
            DcShape {
                nats: 1,
                dispatchers: 1,
                frontends: 2,
            },
        )
        .dc("dc2", SMALL)
        .start()
        .await
        .expect("cluster starts");
    let publisher = cluster.frontend("dc2-fe1");
    let mut viewer = cluster.watch("dc1-fe1", "live").await.unwrap();
    let mut witness = cluster.watch("dc1-fe2", "live").await.unwrap();
    let first = comment(&publisher, "live", "before the crash")
        .await
        .unwrap();
    assert_eq!(receive(&mut viewer, 0, 1).await.comment_ids, [first]);
    let last_id = viewer.last_event_id().unwrap().to_owned();

    cluster.kill("dc1-fe1", libc::SIGKILL).await.unwrap();
    let ended = tokio::time::timeout(WAIT, async {
        while let Ok(Some(_)) = viewer.next_item().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stream of a killed frontend ends");

    let mut missed = Vec::new();
    for index in 0..3 {
        missed.push(
            comment(&publisher, "live", &format!("while reconnecting {index}"))
                .await
                .unwrap(),
        );
    }
    assert_eq!(receive(&mut witness, 0, 4).await.comment_ids.len(), 4);
    let mut back = resume(&cluster.events_url("dc1-fe2", "live"), &last_id).await;
    assert_eq!(
        receive(&mut back, 0, missed.len()).await.comment_ids,
        missed
    );
    cluster.stop().await;
}
