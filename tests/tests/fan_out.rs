//! The fan-out fabric end to end: publish in one datacenter, viewers everywhere.

mod common;

use common::{comment, comment_once, like, open, receive, HA, SMALL, WAIT};
use fanfare_testkit::{wait, Cluster, DcShape};

const FULL: DcShape = DcShape {
    nats: 1,
    dispatchers: 2,
    frontends: 2,
};

/// A like and a comment posted in dc1 reach every viewer of the video in dc1, dc2 and dc3
/// exactly once; viewers of another video get nothing; and the dispatchers of each
/// datacenter sent each interaction only to the local frontends with viewers of the video.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactions_from_dc1_reach_viewers_in_every_datacenter_exactly_once() {
    let cluster = Cluster::builder()
        .dc("dc1", FULL)
        .dc("dc2", FULL)
        .dc("dc3", FULL)
        .start()
        .await
        .expect("cluster starts");

    // Viewers of "keynote": both frontends of dc1, fe1 of dc2 and dc3. dc2-fe2 watches only
    // "other"; dc3-fe2 has no viewer at all.
    let mut keynote_viewers = Vec::new();
    for frontend in ["dc1-fe1", "dc1-fe2", "dc2-fe1", "dc3-fe1"] {
        keynote_viewers.push((
            frontend,
            open(&cluster.events_url(frontend, "keynote")).await,
        ));
    }
    let mut other_viewer = cluster.watch("dc2-fe2", "other").await.unwrap();
    cluster
        .wait_for_interest("dc1", "keynote", &["dc1-fe1", "dc1-fe2"], WAIT)
        .await
        .unwrap();
    for dc in ["dc2", "dc3"] {
        let frontend = format!("{dc}-fe1");
        cluster
            .wait_for_interest(dc, "keynote", &[frontend.as_str()], WAIT)
            .await
            .unwrap();
    }

    let publisher = cluster.frontend("dc1-fe1");
    const LIKES: u64 = 10;
    const COMMENTS: usize = 5;
    let mut comment_ids = Vec::new();
    for index in 0..LIKES {
        like(&publisher, "keynote", &format!("user-{index}"))
            .await
            .unwrap();
    }
    for index in 0..COMMENTS {
        comment_ids.push(
            comment(&publisher, "keynote", &format!("comment {index}"))
                .await
                .unwrap(),
        );
    }

    for (frontend, viewer) in &mut keynote_viewers {
        let received = receive(viewer, LIKES, COMMENTS).await;
        assert_eq!(received.likes, LIKES, "likes summed at {frontend}");
        assert_eq!(received.last_total, LIKES, "like total at {frontend}");
        assert_eq!(
            received.comment_ids, comment_ids,
            "comments at {frontend}, in publish order"
        );
        assert!(
            received.other.is_empty(),
            "unexpected events at {frontend}: {:?}",
            received.other
        );
    }
    let other = receive(&mut other_viewer, 0, 0).await;
    assert_eq!(
        (other.likes, other.comment_ids.len()),
        (0, 0),
        "a viewer of another video got {other:?}"
    );

    // Likes may share stored messages (group commit), so count stored interactions from the
    // dispatchers' own consumption: every datacenter consumed each one once.
    let mut consumed_per_dc = Vec::new();
    for dc in ["dc1", "dc2", "dc3"] {
        let mut consumed = 0.0;
        let mut delivered = 0.0;
        for dispatcher in cluster.dispatchers(dc) {
            consumed += cluster
                .metric(&dispatcher, "fanfare_dispatcher_messages_total")
                .await
                .unwrap();
            delivered += cluster
                .metric(&dispatcher, "fanfare_dispatcher_deliveries_total")
                .await
                .unwrap();
        }
        let redelivered = {
            let mut total = 0.0;
            for dispatcher in cluster.dispatchers(dc) {
                total += cluster
                    .metric(&dispatcher, "fanfare_dispatcher_redeliveries_total")
                    .await
                    .unwrap();
            }
            total
        };
        let watching_frontends = if dc == "dc1" { 2.0 } else { 1.0 };
        let stored = consumed - redelivered;
        assert!(
            stored >= COMMENTS as f64 + 1.0,
            "{dc} consumed {stored} interactions"
        );
        assert_eq!(
            delivered,
            consumed * watching_frontends,
            "{dc}: each interaction goes to the {watching_frontends} local frontends watching it, no more"
        );
        consumed_per_dc.push(stored);
    }
    assert!(
        consumed_per_dc.windows(2).all(|pair| pair[0] == pair[1]),
        "every datacenter consumed the same interactions: {consumed_per_dc:?}"
    );
    for frontend in ["dc2-fe2", "dc3-fe2"] {
        let received = cluster
            .metric(frontend, "fanfare_frontend_deliveries_received_total")
            .await
            .unwrap();
        assert_eq!(
            received, 0.0,
            "{frontend} has no keynote viewer but received {received}"
        );
    }
    cluster.stop().await;
}

/// Comments published concurrently from two origins arrive at every viewer in publish order
/// per origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comments_from_each_origin_arrive_in_publish_order() {
    let cluster = Cluster::builder()
        .dc("dc1", SMALL)
        .dc("dc2", SMALL)
        .start()
        .await
        .expect("cluster starts");
    let mut viewers = vec![
        cluster.watch("dc1-fe1", "talk").await.unwrap(),
        cluster.watch("dc2-fe1", "talk").await.unwrap(),
    ];

    const PER_ORIGIN: usize = 40;
    let publish = |frontend: String| async move {
        let mut ids = Vec::new();
        for index in 0..PER_ORIGIN {
            ids.push(
                comment(&frontend, "talk", &format!("#{index}"))
                    .await
                    .unwrap(),
            );
        }
        ids
    };
    let (from_dc1, from_dc2) = tokio::join!(
        publish(cluster.frontend("dc1-fe1")),
        publish(cluster.frontend("dc2-fe1"))
    );

    for viewer in &mut viewers {
        let received = receive(viewer, 0, 2 * PER_ORIGIN).await;
        assert!(!received.has_duplicate_comment());
        for (origin, published) in [("dc1", &from_dc1), ("dc2", &from_dc2)] {
            let seen: Vec<String> = received
                .comments
                .iter()
                .filter(|comment| comment["origin_dc"] == origin)
                .map(|comment| {
                    comment["comment_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect();
            assert_eq!(&seen, published, "comments from {origin} in publish order");
        }
    }
    cluster.stop().await;
}

/// With two dispatchers per datacenter no viewer receives anything twice, and killing the
/// dispatcher that holds the video's partition mid-stream loses nothing published after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_dispatcher_loses_nothing_and_two_never_duplicate() {
    stopping_the_owning_dispatcher_loses_nothing(libc::SIGKILL).await;
}

/// The same with a graceful stop (SIGTERM): the dispatcher hands its partitions over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_dispatcher_hands_over_and_loses_nothing() {
    stopping_the_owning_dispatcher_loses_nothing(libc::SIGTERM).await;
}

async fn stopping_the_owning_dispatcher_loses_nothing(signal: i32) {
    let shape = DcShape {
        nats: 1,
        dispatchers: 2,
        frontends: 1,
    };
    let cluster = Cluster::builder()
        .dc("dc1", shape)
        .dc("dc2", shape)
        .settings(|settings| settings.partitions = 2)
        .start()
        .await
        .expect("cluster starts");
    let mut viewer = cluster.watch("dc2-fe1", "final").await.unwrap();
    let publisher = cluster.frontend("dc1-fe1");

    let mut published = Vec::new();
    for index in 0..10 {
        published.push(
            comment(&publisher, "final", &format!("before {index}"))
                .await
                .unwrap(),
        );
    }
    let before = receive(&mut viewer, 0, published.len()).await;
    assert_eq!(before.comment_ids, published);

    // The dispatcher of dc2 that delivered them holds the video's partition: kill it.
    let mut owner = None;
    for dispatcher in cluster.dispatchers("dc2") {
        let delivered = cluster
            .metric(&dispatcher, "fanfare_dispatcher_deliveries_total")
            .await
            .unwrap();
        if delivered > 0.0 {
            owner = Some(dispatcher);
        }
    }
    let owner = owner.expect("one dc2 dispatcher delivered the first comments");
    cluster.kill(&owner, signal).await.unwrap();

    let mut after = Vec::new();
    for index in 0..20 {
        after.push(
            comment(&publisher, "final", &format!("after {index}"))
                .await
                .unwrap(),
        );
        like(&publisher, "final", "fan").await.unwrap();
    }
    let received = receive(&mut viewer, 20, after.len()).await;
    assert_eq!(
        received.comment_ids, after,
        "every comment after the kill, once, in order"
    );
    assert_eq!(received.likes, 20, "every like after the kill, once");
    assert_eq!(received.last_total, 20);
    cluster.stop().await;
}

/// Datacenters of three NATS servers each (streams and buckets replicated three times) form,
/// provision and deliver like single-server ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_server_datacenters_deliver_across_datacenters() {
    let cluster = Cluster::builder()
        .dc("dc1", HA)
        .dc("dc2", HA)
        .start()
        .await
        .expect("cluster starts");
    let mut viewer = cluster.watch("dc2-fe1", "ha").await.unwrap();
    let publisher = cluster.frontend("dc1-fe1");
    like(&publisher, "ha", "u").await.unwrap();
    let id = comment(&publisher, "ha", "replicated").await.unwrap();
    let received = receive(&mut viewer, 1, 1).await;
    assert_eq!((received.likes, received.comment_ids), (1, vec![id]));
    cluster.stop().await;
}

/// One NATS server killed in each three-server datacenter at once: clients move to the
/// survivors, streams and consumers (three replicas) elect new leaders, and every comment
/// published before and after still reaches every viewer once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_nats_server_per_datacenter_loses_nothing() {
    let cluster = Cluster::builder()
        .dc("dc1", HA)
        .dc("dc2", HA)
        .start()
        .await
        .expect("cluster starts");
    let mut viewers = vec![
        cluster.watch("dc1-fe1", "ha").await.unwrap(),
        cluster.watch("dc2-fe1", "ha").await.unwrap(),
    ];
    let publisher = cluster.frontend("dc1-fe1");
    let mut published = Vec::new();
    for index in 0..5 {
        published.push(
            comment(&publisher, "ha", &format!("before {index}"))
                .await
                .unwrap(),
        );
    }
    cluster.kill("dc1-nats1", libc::SIGKILL).await.unwrap();
    cluster.kill("dc2-nats1", libc::SIGKILL).await.unwrap();
    for index in 0..10 {
        // While leaders move the frontend may answer 503 (with Retry-After): a publisher
        // retries with the same Idempotency-Key, so a comment stored before its
        // acknowledgement was lost is not stored twice.
        let text = format!("after {index}");
        let key = format!("ha-after-{index}");
        let id = wait::until("the comment to be accepted", WAIT, || async {
            comment_once(&publisher, "ha", &text, &key).await.ok()
        })
        .await
        .unwrap();
        published.push(id);
    }
    for viewer in &mut viewers {
        let received = receive(viewer, 0, published.len()).await;
        assert_eq!(
            received.comment_ids, published,
            "every comment once, in order"
        );
    }
    cluster.stop().await;
}
