//! The engine's behaviour, driven in process: ordering, de-duplication, coalescing, lag and
//! sharing.

use std::sync::Arc;

use fanfare_model::{Comment, ConnectionPosition, Delivery, DeliveryPayload, Position, VideoId};
use futures::FutureExt;

use crate::{Connection, Follow, Hub, HubConfig, StreamKind};

fn hub(buffer: usize) -> Hub {
    Hub::new(HubConfig {
        viewer_buffer: buffer,
    })
}

fn video(name: &str) -> VideoId {
    VideoId::parse(name).unwrap()
}

fn like(video: &VideoId, origin: &str, seq: u64, count: u64, total: u64) -> Delivery {
    Delivery {
        video_id: video.clone(),
        origin_dc: origin.into(),
        origin_seq: seq,
        payload: DeliveryPayload::Likes { count, total },
    }
}

fn comment(video: &VideoId, origin: &str, seq: u64) -> Delivery {
    Delivery {
        video_id: video.clone(),
        origin_dc: origin.into(),
        origin_seq: seq,
        payload: DeliveryPayload::Comment(Comment {
            video_id: video.clone(),
            comment_id: format!("c{seq}"),
            user_id: "u".into(),
            text: format!("t{seq}"),
            origin_dc: origin.into(),
            published_at: 0,
        }),
    }
}

fn single(hub: &Hub, video: &VideoId) -> (Connection, bool) {
    let connection = hub.connect(StreamKind::Single);
    let first = match hub.follow(&connection.handle(), video) {
        Follow::Started { first } => first,
        Follow::Already => panic!("a new connection follows nothing"),
    };
    (connection, first)
}

/// Whatever the writer has now, as text ("" when it would wait).
fn written(connection: &mut Connection) -> String {
    match connection.next_chunk().now_or_never() {
        Some(Some(chunk)) => String::from_utf8(chunk.to_bytes().to_vec()).unwrap(),
        Some(None) => "<end>".to_owned(),
        None => String::new(),
    }
}

/// Every event of `text` as (name, id, data).
fn events(text: &str) -> Vec<(String, Option<String>, String)> {
    text.split("\n\n")
        .filter(|block| block.starts_with("event: "))
        .map(|block| {
            let mut name = String::new();
            let mut id = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event: ") {
                    name = value.to_owned();
                } else if let Some(value) = line.strip_prefix("id: ") {
                    id = Some(value.to_owned());
                } else if let Some(value) = line.strip_prefix("data: ") {
                    data = value.to_owned();
                }
            }
            (name, id, data)
        })
        .collect()
}

fn likes_counts(text: &str) -> Vec<(u64, u64)> {
    events(text)
        .into_iter()
        .filter(|(name, _, _)| name == "likes")
        .map(|(_, _, data)| {
            let value: serde_json::Value = serde_json::from_str(&data).unwrap();
            (
                value["count"].as_u64().unwrap(),
                value["total"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn redelivered_interactions_reach_followers_once() {
    let hub = hub(16);
    let v = video("v");
    let (mut viewer, first) = single(&hub, &v);
    assert!(first);
    let _ = written(&mut viewer);
    let outcome = hub.deliver(vec![
        like(&v, "dc1", 1, 1, 1),
        like(&v, "dc1", 2, 1, 2),
        like(&v, "dc1", 2, 1, 2),
        like(&v, "dc2", 1, 1, 3),
        like(&v, "dc1", 1, 1, 1),
        comment(&v, "dc1", 3),
        comment(&v, "dc1", 3),
    ]);
    assert_eq!((outcome.delivered, outcome.duplicates), (4, 3));
    let text = written(&mut viewer);
    let kinds: Vec<String> = events(&text).into_iter().map(|(name, _, _)| name).collect();
    assert_eq!(kinds, ["likes", "comment"], "{text}");
    assert_eq!(likes_counts(&text), [(3, 3)]);
}

#[test]
fn likes_before_a_comment_go_out_before_it_and_later_ones_never_overtake_it() {
    let hub = hub(64);
    let v = video("v");
    let (mut viewer, _) = single(&hub, &v);
    let _ = written(&mut viewer);
    hub.deliver(
        (1..=10)
            .map(|seq| like(&v, "dc1", seq, 2, seq * 2))
            .collect(),
    );
    hub.deliver(vec![comment(&v, "dc1", 11), like(&v, "dc1", 12, 1, 21)]);
    hub.flush_likes();
    let text = written(&mut viewer);
    let order: Vec<String> = events(&text).into_iter().map(|(name, _, _)| name).collect();
    assert_eq!(order, ["likes", "comment", "likes"], "{text}");
    assert_eq!(likes_counts(&text), [(20, 20), (1, 21)]);
    assert_eq!(written(&mut viewer), "", "nothing more is owed");
}

#[test]
fn a_follower_is_not_sent_likes_from_before_it_joined() {
    let hub = hub(16);
    let v = video("v");
    let (_first, _) = single(&hub, &v);
    hub.deliver(vec![like(&v, "dc1", 1, 5, 5)]);
    let (mut second, first) = single(&hub, &v);
    assert!(!first);
    hub.flush_likes();
    let text = written(&mut second);
    assert!(likes_counts(&text).is_empty(), "{text}");
    assert_eq!(hub.position(&v).1, 5, "the total it opens with has them");
}

#[test]
fn a_follower_behind_owes_all_its_likes_as_one_event() {
    let hub = hub(4);
    let v = video("v");
    let (mut viewer, _) = single(&hub, &v);
    let _ = written(&mut viewer);
    for seq in 1..=1000 {
        hub.deliver(vec![like(&v, "dc1", seq, 1, seq)]);
        hub.flush_likes();
    }
    assert_eq!(likes_counts(&written(&mut viewer)), [(1000, 1000)]);
}

#[test]
fn up_to_date_followers_share_one_encoding_of_each_event() {
    let hub = hub(16);
    let v = video("v");
    let (mut a, _) = single(&hub, &v);
    let (mut b, _) = single(&hub, &v);
    let _ = (written(&mut a), written(&mut b));
    hub.deliver(vec![like(&v, "dc1", 1, 3, 3), comment(&v, "dc1", 2)]);
    hub.deliver(vec![like(&v, "dc1", 3, 1, 4)]);
    hub.flush_likes();
    let first = a.next_chunk().now_or_never().flatten().unwrap();
    let second = b.next_chunk().now_or_never().flatten().unwrap();
    let parts = |chunk: &crate::Chunk| -> Vec<usize> {
        let mut slices = [std::io::IoSlice::new(&[]); 16];
        let count = bytes::Buf::chunks_vectored(chunk, &mut slices);
        slices[..count]
            .iter()
            .map(|slice| slice.as_ptr() as usize)
            .collect()
    };
    let (first, second) = (parts(&first), parts(&second));
    assert_eq!(first.len(), 4, "likes, comment head, comment data, likes");
    assert_eq!(
        first, second,
        "the same bytes, by reference, in both writes"
    );
}

#[test]
fn deliveries_for_unfollowed_videos_are_counted_not_kept() {
    let hub = hub(16);
    let v = video("v");
    let outcome = hub.deliver(vec![like(&v, "dc1", 1, 1, 1)]);
    assert_eq!(outcome.unwatched, 1);
    assert!(!hub.is_watched(&v));
}

#[test]
fn the_last_follower_leaving_forgets_the_video_and_reports_it() {
    let hub = hub(16);
    let v = video("v");
    let (a, first) = single(&hub, &v);
    let (b, second_first) = single(&hub, &v);
    assert!(first && !second_first);
    drop(a);
    assert!(hub.take_unwatched().is_empty());
    assert_eq!(hub.followers(&v), 1);
    drop(b);
    assert_eq!(hub.take_unwatched(), std::slice::from_ref(&v));
    assert!(!hub.is_watched(&v));
    let counts = hub.take_recounted();
    assert_eq!(counts, [(v, 0)], "one recount, with the count now");
}

#[test]
fn a_single_video_comment_id_is_the_video_position_after_it() {
    let hub = hub(16);
    let v = video("v");
    let (mut viewer, _) = single(&hub, &v);
    hub.seed(&v, &"dc1:0,dc2:0,dc3:0".parse().unwrap(), 0);
    let _ = written(&mut viewer);
    hub.deliver(vec![like(&v, "dc1", 4, 1, 1), comment(&v, "dc2", 9)]);
    let text = written(&mut viewer);
    let comment = events(&text)
        .into_iter()
        .find(|(name, _, _)| name == "comment")
        .unwrap();
    assert_eq!(comment.1.as_deref(), Some("dc1:4,dc2:9,dc3:0"));
}

#[test]
fn a_resumed_position_ahead_of_this_datacenter_is_kept_in_ids() {
    let hub = hub(16);
    let v = video("v");
    let (mut viewer, _) = single(&hub, &v);
    hub.seed(&v, &"dc1:0,dc2:0".parse().unwrap(), 0);
    viewer
        .handle()
        .set_position(&hub, &v, &"dc1:0,dc2:50".parse().unwrap());
    let _ = written(&mut viewer);
    hub.deliver(vec![comment(&v, "dc1", 3)]);
    let text = written(&mut viewer);
    let (_, id, _) = events(&text).remove(0);
    assert_eq!(
        id.as_deref(),
        Some("dc1:3,dc2:50"),
        "never behind what it was sent"
    );
    hub.deliver(vec![comment(&v, "dc2", 20)]);
    assert_eq!(
        written(&mut viewer),
        "",
        "older than the resumed position: skipped"
    );
}

#[test]
fn a_multi_video_stream_resumes_each_video_from_its_own_position() {
    let hub = hub(16);
    let (a, b) = (video("a"), video("b"));
    let mut connection = hub.connect(StreamKind::Multi {
        connection_id: Arc::from("k1"),
    });
    let handle = connection.handle();
    for v in [&a, &b] {
        assert_eq!(hub.follow(&handle, v), Follow::Started { first: true });
        hub.seed(v, &"dc1:0,dc2:0".parse().unwrap(), 0);
    }
    assert_eq!(hub.follow(&handle, &a), Follow::Already);
    let opening = written(&mut connection);
    let (name, id, data) = events(&opening).remove(0);
    assert_eq!(name, "subscriptions");
    assert!(data.contains(r#""videos":["a","b"]"#), "{data}");
    assert_eq!(id.as_deref(), Some("m1;dc1,dc2;a:0,0;b:0,0"));
    // b's later dc1 interaction arrives before a's earlier one: each video keeps its own.
    hub.deliver(vec![comment(&b, "dc1", 7)]);
    hub.deliver(vec![comment(&a, "dc1", 5)]);
    let text = written(&mut connection);
    let ids: Vec<String> = events(&text)
        .into_iter()
        .filter_map(|(_, id, _)| id)
        .collect();
    assert_eq!(ids, ["m1;dc1,dc2;a:0,0;b:7,0", "m1;dc1,dc2;a:5,0;b:7,0"]);
    let position: ConnectionPosition = ids[1].parse().unwrap();
    assert_eq!(position.videos()[0].1.seq("dc1"), 5);
}

#[test]
fn unfollowing_stops_a_video_and_says_so_with_a_new_id() {
    let hub = hub(16);
    let (a, b) = (video("a"), video("b"));
    let mut connection = hub.connect(StreamKind::Multi {
        connection_id: Arc::from("k2"),
    });
    let handle = connection.handle();
    hub.follow(&handle, &a);
    hub.follow(&handle, &b);
    let _ = written(&mut connection);
    hub.deliver(vec![comment(&a, "dc1", 1)]);
    assert!(hub.unfollow(&handle, &a), "it followed a");
    assert!(!hub.unfollow(&handle, &a));
    assert_eq!(hub.take_unwatched(), std::slice::from_ref(&a));
    let text = written(&mut connection);
    let names: Vec<String> = events(&text).into_iter().map(|(name, _, _)| name).collect();
    assert_eq!(
        names,
        ["subscriptions"],
        "a's queued comment is dropped: {text}"
    );
    assert_eq!(handle.videos(), [b]);
    assert!(hub.connection("k2").is_some());
    drop(connection);
    assert!(hub.connection("k2").is_none(), "gone with its writer");
}

#[test]
fn a_connection_more_than_its_buffer_behind_gets_what_was_queued_then_a_disconnect() {
    let hub = hub(4);
    let v = video("v");
    let (mut slow, _) = single(&hub, &v);
    let (mut fast, _) = single(&hub, &v);
    let _ = (written(&mut slow), written(&mut fast));
    for seq in 1..=3 {
        hub.deliver(vec![comment(&v, "dc1", seq)]);
    }
    let _ = written(&mut fast);
    for seq in 4..=6 {
        hub.deliver(vec![comment(&v, "dc1", seq)]);
    }
    assert!(slow.is_lagging());
    assert!(
        !fast.is_lagging(),
        "one slow connection costs the others nothing"
    );
    let text = written(&mut slow);
    let names: Vec<String> = events(&text).into_iter().map(|(name, _, _)| name).collect();
    assert_eq!(
        names,
        ["comment", "comment", "comment", "comment", "disconnect"]
    );
    assert!(text.contains(r#""reason":"too-slow""#));
    assert_eq!(written(&mut slow), "<end>");
    assert_eq!(hub.counters().lagged_connections, 1);
    assert_eq!(events(&written(&mut fast)).len(), 3);
}

#[test]
fn viewer_counts_are_written_when_they_change_and_to_new_followers() {
    let hub = hub(16);
    let v = video("v");
    let (mut a, _) = single(&hub, &v);
    hub.show_viewers(&v, 1, false);
    assert!(written(&mut a).contains(r#"{"video_id":"v","viewers":1,"partial":false}"#));
    hub.show_viewers(&v, 1, false);
    assert_eq!(written(&mut a), "", "unchanged: nothing");
    let (mut b, _) = single(&hub, &v);
    assert!(
        written(&mut b).contains(r#""viewers":1"#),
        "a new follower gets the count"
    );
    hub.show_viewers(&v, 2, true);
    assert!(written(&mut a).contains(r#""viewers":2,"partial":true"#));
}

#[tokio::test]
async fn keep_alives_go_to_idle_connections_and_close_ends_after_what_is_queued() {
    let hub = hub(16);
    let v = video("v");
    let (mut viewer, _) = single(&hub, &v);
    let mut idle = hub.connect(StreamKind::Multi {
        connection_id: Arc::from("k3"),
    });
    let _ = (written(&mut viewer), written(&mut idle));
    hub.keep_alive();
    assert_eq!(written(&mut viewer), ": keep-alive\n\n");
    assert_eq!(
        written(&mut idle),
        ": keep-alive\n\n",
        "following nothing, still alive"
    );
    hub.deliver(vec![comment(&v, "dc1", 1)]);
    hub.close();
    assert!(written(&mut viewer).starts_with("event: comment"));
    assert_eq!(written(&mut viewer), "<end>");
    assert_eq!(written(&mut idle), "<end>");
    let mut late = hub.connect(StreamKind::Single);
    assert!(
        late.next_chunk().await.is_none(),
        "a connection after close ends at once"
    );
}

#[test]
fn a_drain_ends_streams_a_wave_at_a_time_each_with_its_retry_hint() {
    let hub = hub(16);
    let v = video("v");
    let mut viewers: Vec<Connection> = (0..5).map(|_| single(&hub, &v).0).collect();
    for viewer in &mut viewers {
        let _ = written(viewer);
    }
    let mut hints = 100..;
    assert_eq!(hub.close_some(2, || hints.next().unwrap()), 2);
    let ended: Vec<String> = viewers.iter_mut().map(written).collect();
    let closing: Vec<&String> = ended
        .iter()
        .filter(|text| text.starts_with("retry: "))
        .collect();
    assert_eq!(closing.len(), 2, "{ended:?}");
    assert_eq!(*closing[0], "retry: 100\n\n");
    assert_eq!(*closing[1], "retry: 101\n\n");
    assert_eq!(hub.close_some(10, || 7), 3, "the rest, once each");
    assert_eq!(hub.close_some(10, || 7), 0, "nothing left open");
    for viewer in &mut viewers {
        let _ = written(viewer);
        assert_eq!(written(viewer), "<end>");
    }
}

#[tokio::test]
async fn a_writer_waits_for_work_and_wakes_for_it() {
    let hub = hub(16);
    let v = video("v");
    let (mut viewer, _) = single(&hub, &v);
    let _ = written(&mut viewer);
    let waiting = tokio::spawn(async move { viewer.next_chunk().await.map(|chunk| chunk.len()) });
    tokio::task::yield_now().await;
    hub.deliver(vec![comment(&v, "dc1", 1)]);
    let written = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
        .await
        .expect("woken")
        .unwrap();
    assert!(written.unwrap_or(0) > 0);
}

#[tokio::test]
async fn likes_waiting_resolves_only_when_likes_wait() {
    let hub = hub(16);
    let v = video("v");
    let (_viewer, _) = single(&hub, &v);
    assert!(
        hub.likes_waiting().now_or_never().is_none(),
        "an idle hub needs no flush"
    );
    hub.deliver(vec![like(&v, "dc1", 1, 1, 1)]);
    assert!(hub.likes_waiting().now_or_never().is_some());
    hub.flush_likes();
    assert!(hub.likes_waiting().now_or_never().is_none());
}

#[tokio::test]
async fn a_second_follower_waits_for_the_seed_of_the_first() {
    let hub = hub(16);
    let v = video("v");
    let (_first, _) = single(&hub, &v);
    let (_second, first) = single(&hub, &v);
    assert!(!first);
    let seeding = hub.clone();
    let video_id = v.clone();
    tokio::spawn(async move {
        tokio::task::yield_now().await;
        seeding.seed(&video_id, &"dc1:9".parse().unwrap(), 4);
    });
    hub.seeded(&v, std::time::Duration::from_secs(5)).await;
    assert_eq!(hub.position(&v), ("dc1:9".parse::<Position>().unwrap(), 4));
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config { cases: 128, ..Default::default() })]

    /// Whatever the interleaving of likes, comments, flushes and reads: a follower's like
    /// counts add up to the likes delivered after it joined, each comment arrives once and in
    /// order, and every `likes` total is one the video had.
    #[test]
    fn counts_add_up_and_comments_arrive_once_in_order(
        steps in proptest::collection::vec(0u8..5, 1..200),
    ) {
        let hub = hub(1024);
        let v = video("v");
        let (mut viewer, _) = single(&hub, &v);
        let mut text = written(&mut viewer);
        let mut seq = 0;
        let mut liked = 0;
        let mut comments = 0;
        for step in steps {
            match step {
                0 | 1 => {
                    seq += 1;
                    liked += 1;
                    hub.deliver(vec![like(&v, "dc1", seq, 1, liked)]);
                }
                2 => {
                    seq += 1;
                    comments += 1;
                    hub.deliver(vec![comment(&v, "dc1", seq)]);
                }
                3 => hub.flush_likes(),
                _ => text.push_str(&written(&mut viewer)),
            }
        }
        hub.flush_likes();
        text.push_str(&written(&mut viewer));
        let counted: u64 = likes_counts(&text).iter().map(|(count, _)| count).sum();
        proptest::prop_assert_eq!(counted, liked);
        let seqs: Vec<u64> = events(&text)
            .into_iter()
            .filter(|(name, _, _)| name == "comment")
            .map(|(_, id, _)| id.unwrap().parse::<Position>().unwrap().seq("dc1"))
            .collect();
        proptest::prop_assert_eq!(seqs.len() as u64, comments);
        proptest::prop_assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]));
        let totals: Vec<u64> = likes_counts(&text).iter().map(|(_, total)| *total).collect();
        proptest::prop_assert!(totals.windows(2).all(|pair| pair[0] <= pair[1]));
    }
}
