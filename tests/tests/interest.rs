//! The subscription table follows viewers: in when a video gets a first viewer, out after the
//! last one leaves, and gone within the TTL when a frontend dies.

mod common;

use std::time::Duration;

use common::{open, WAIT};
use fanfare_testkit::{Cluster, DcShape};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interest_follows_viewers_and_expires_for_a_killed_frontend() {
    let ttl = Duration::from_secs(3);
    let cluster = Cluster::builder()
        .dc(
            "dc1",
            DcShape {
                nats: 1,
                dispatchers: 1,
                frontends: 2,
            },
        )
        .settings(|settings| settings.interest_ttl = Duration::from_secs(3))
        .start()
        .await
        .expect("cluster starts");

    let first = open(&cluster.events_url("dc1-fe1", "show")).await;
    let second = open(&cluster.events_url("dc1-fe1", "show")).await;
    cluster
        .wait_for_interest("dc1", "show", &["dc1-fe1"], WAIT)
        .await
        .unwrap();
    drop(first);
    // One viewer is still there: the entry must stay, also across refreshes past the TTL.
    tokio::time::sleep(ttl + Duration::from_secs(1)).await;
    assert_eq!(
        cluster
            .table("dc1-disp1")
            .await
            .unwrap()
            .get("show")
            .cloned()
            .unwrap_or_default(),
        ["dc1-fe1".to_owned()].into_iter().collect(),
        "interest kept while a viewer remains"
    );
    drop(second);
    cluster
        .wait_for_interest("dc1", "show", &[], WAIT)
        .await
        .unwrap();

    // A frontend killed outright cannot withdraw: its entry expires within the TTL.
    let _orphan = open(&cluster.events_url("dc1-fe2", "show")).await;
    cluster
        .wait_for_interest("dc1", "show", &["dc1-fe2"], WAIT)
        .await
        .unwrap();
    cluster.kill("dc1-fe2", libc::SIGKILL).await.unwrap();
    let killed_at = tokio::time::Instant::now();
    cluster
        .wait_for_interest("dc1", "show", &[], ttl * 3)
        .await
        .expect("a dead frontend's interest expires");
    let client = cluster.nats_client("dc1").await.unwrap();
    let js = async_nats::jetstream::new(client);
    let bucket = js.get_key_value("SUBS_dc1").await.unwrap();
    let entry = bucket.get("show.dc1-fe2").await.unwrap();
    assert!(
        entry.is_none(),
        "the bucket itself no longer holds the entry"
    );
    eprintln!(
        "interest of the killed frontend gone after {:?}",
        killed_at.elapsed()
    );
    cluster.stop().await;
}
