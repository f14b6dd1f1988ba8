//! Datacenter partitions through the chaos links: each side keeps working with what it can
//! reach, and after the heal every viewer everywhere has everything exactly once, with the
//! exact like total.

mod common;

use std::time::Duration;

use common::{comment, like, receive, receive_within, Received, SMALL};
use fanfare_supervisor::LinkMode;
use fanfare_testkit::Cluster;

/// Bound on the wait for convergence after a heal. Not the performance claim (the tests print
/// the measured time and RELIABILITY.md has the figures): a bound so that a lost event fails
/// the test instead of hanging it.
const HEAL_WAIT: Duration = Duration::from_secs(45);

const DATACENTERS: [&str; 3] = ["dc1", "dc2", "dc3"];

/// Links refused and torn down: both sides notice at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_datacenter_serves_locally_and_catches_up_after_the_heal() {
    cut_then_heal(&["dc2"], LinkMode::Reset, Duration::ZERO, false).await;
}

/// The same isolation and heal with TLS on every NATS connection: the link proxies cannot read
/// the encrypted gateway `CONNECT` line and find the dialling server through the operating
/// system instead; the cut must still hold and the heal still converge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_datacenter_catches_up_after_the_heal_over_tls() {
    cut_then_heal(&["dc2"], LinkMode::Reset, Duration::ZERO, true).await;
}

/// A silent black hole held past the servers' ping-based detection (about 5.5 s with the
/// 2 s ping interval), so the gateways and the sources really fail before the heal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_cut_longer_than_detection_loses_and_duplicates_nothing() {
    cut_then_heal(&["dc2"], LinkMode::Drop, Duration::from_secs(8), false).await;
}

/// Only dc1–dc2 is cut, silently and past detection: dc3 keeps seeing both of them, and they
/// see dc3, but not each other (gateways do not relay between two other clusters).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pairwise_cut_leaves_the_third_datacenter_seeing_both() {
    cut_then_heal(
        &["dc1", "dc2"],
        LinkMode::Drop,
        Duration::from_secs(8),
        false,
    )
    .await;
}

/// Whether `a` and `b` can reach each other while `cut` is applied the way
/// `Cluster::partition` applies it (one datacenter: isolated; several: every link among them).
fn linked(cut: &[&str], a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match cut {
        [alone] => a != *alone && b != *alone,
        several => !(several.contains(&a) && several.contains(&b)),
    }
}

async fn cut_then_heal(cut: &[&str], mode: LinkMode, hold: Duration, tls: bool) {
    let cluster = Cluster::builder()
        .dc("dc1", SMALL)
        .dc("dc2", SMALL)
        .dc("dc3", SMALL)
        .settings(|settings| settings.nats.tls = tls)
        .start()
        .await
        .expect("cluster starts");
    let mut viewers = Vec::new();
    for dc in DATACENTERS {
        let frontend = format!("{dc}-fe1");
        viewers.push(cluster.watch(&frontend, "match").await.unwrap());
    }

    cluster.partition(cut, mode).await;
    // (comment id, origin) of everything published during the cut, 3 rounds per datacenter.
    let mut published: Vec<(String, &str)> = Vec::new();
    let mut likes = 0;
    for round in 0..3 {
        for dc in DATACENTERS {
            let frontend = cluster.frontend(&format!("{dc}-fe1"));
            let id = comment(&frontend, "match", &format!("{dc} #{round}"))
                .await
                .unwrap();
            published.push((id, dc));
            like(&frontend, "match", dc).await.unwrap();
            likes += 1;
        }
    }

    // During the cut: each datacenter sees exactly what it can reach.
    let mut during: Vec<Received> = Vec::new();
    for (viewer, dc) in viewers.iter_mut().zip(DATACENTERS) {
        let reachable: Vec<&str> = DATACENTERS
            .into_iter()
            .filter(|origin| linked(cut, dc, origin))
            .collect();
        let expected = 3 * reachable.len();
        let received = receive(viewer, expected as u64, expected).await;
        let mut origins: Vec<&str> = received
            .comments
            .iter()
            .map(|comment| comment["origin_dc"].as_str().unwrap_or_default())
            .collect();
        origins.sort();
        origins.dedup();
        assert_eq!(
            origins, reachable,
            "{dc} sees what it can reach during the cut"
        );
        assert_eq!(
            (received.likes, received.comment_ids.len()),
            (expected as u64, expected),
            "{dc} during the cut"
        );
        assert!(!received.has_duplicate_comment(), "{dc} during the cut");
        during.push(received);
    }

    // Hold the cut (a fixed duration is the point here, not a wait for a condition).
    tokio::time::sleep(hold).await;
    cluster.heal().await;
    let catch_up = viewers.iter_mut().zip(&during).map(|(viewer, during)| {
        let missing_likes = likes - during.likes;
        let missing_comments = published.len() - during.comment_ids.len();
        receive_within(viewer, missing_likes, missing_comments, HEAL_WAIT)
    });
    let after = futures::future::join_all(catch_up).await;
    for ((dc, during), after) in DATACENTERS.into_iter().zip(&during).zip(&after) {
        let mut all_ids: Vec<&String> = during.comment_ids.iter().collect();
        all_ids.extend(&after.comment_ids);
        all_ids.sort();
        let mut expected: Vec<&String> = published.iter().map(|(id, _)| id).collect();
        expected.sort();
        assert_eq!(all_ids, expected, "{dc}: every comment exactly once");
        assert_eq!(
            during.likes + after.likes,
            likes,
            "{dc}: every like exactly once"
        );
        let total = if after.likes > 0 {
            after.last_total
        } else {
            during.last_total
        };
        assert_eq!(total, likes, "{dc}: the like total is exact again");
        eprintln!(
            "{dc}: {} comments and {} likes arrived {:?} after the heal",
            after.comment_ids.len(),
            after.likes,
            after.complete_after
        );
    }
    tokio::time::timeout(Duration::from_secs(60), cluster.stop())
        .await
        .expect("cluster stops");
}
