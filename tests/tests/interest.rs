//! The subscription table follows viewers: in when a video gets a first viewer, out after the
//! last one leaves, and out within the TTL when a frontend dies (its one lease expires); and
//! an idle frontend's upkeep of the table costs one lease renewal per period, however many
//! videos it watches.

mod common;

use std::time::Duration;

use common::{open, WAIT};
use fanfare_testkit::{wait, Cluster, DcShape};

async fn bucket(cluster: &Cluster) -> async_nats::jetstream::kv::Store {
    let client = cluster.nats_client("dc1").await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.get_key_value("SUBS_dc1").await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interest_follows_viewers_and_expires_for_a_killed_frontend() {
    let ttl = Duration::from_secs(3);
    let grace = Duration::from_secs(2);
    let cluster = Cluster::builder()
        .dc(
            "dc1",
            DcShape {
                nats: 1,
                dispatchers: 1,
                frontends: 2,
            },
        )
        .settings(move |settings| settings.interest_ttl = ttl)
        .options(move |options| options.dispatcher.stale_interest_grace = grace)
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
    // One viewer is still there: the entry must stay, also past the TTL (only the lease is
    // renewed).
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

    // A frontend killed outright cannot withdraw: its lease expires within the TTL, and with it
    // every interest it wrote.
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
        .expect("a dead frontend's interest stops counting");
    eprintln!(
        "interest of the killed frontend gone after {:?}",
        killed_at.elapsed()
    );
    let bucket = bucket(&cluster).await;
    assert!(
        bucket.get("f.dc1-fe2").await.unwrap().is_none(),
        "its lease expired"
    );
    // The key it left is cleared by the dispatcher once stale for the grace.
    wait::until("the stale interest key to be deleted", WAIT, || async {
        bucket
            .get("v.show.dc1-fe2")
            .await
            .ok()
            .filter(Option::is_none)
            .map(|_| ())
    })
    .await
    .unwrap();
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_frontend_renews_one_lease_whatever_its_number_of_videos() {
    let ttl = Duration::from_secs(3);
    let cluster = Cluster::builder()
        .dc("dc1", common::SMALL)
        .settings(move |settings| settings.interest_ttl = ttl)
        .start()
        .await
        .expect("cluster starts");
    let videos = 40;
    let mut viewers = Vec::new();
    for index in 0..videos {
        viewers.push(open(&cluster.events_url("dc1-fe1", &format!("quiet-{index}"))).await);
    }
    let bucket = bucket(&cluster).await;
    wait::until("every video in the table", WAIT, || async {
        let table = cluster.table("dc1-disp1").await.ok()?;
        (table.len() == videos).then_some(())
    })
    .await
    .unwrap();
    let writes = || async {
        let mut stream = bucket.stream.clone();
        stream.info().await.unwrap().state.last_sequence
    };
    let before = writes().await;
    // Three TTLs: nine renewal periods of a third of the TTL each.
    tokio::time::sleep(ttl * 3).await;
    let written = writes().await - before;
    eprintln!(
        "{written} writes to the table in {:?} with {videos} videos",
        ttl * 3
    );
    assert!(
        written <= 12,
        "one renewal per period, not one write per video: {written} writes"
    );
    assert_eq!(cluster.table("dc1-disp1").await.unwrap().len(), videos);
    drop(viewers);
    cluster.stop().await;
}
