//! One SSE connection for several videos (`GET /v1/events?videos=`), changed while it is open
//! by its connection id (`POST /v1/connections/{id}/subscriptions`), resumed with its own
//! `Last-Event-ID` in another datacenter, and every refusal a problem response.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{assert_problem, comment, WAIT};
use fanfare_auth::{mint, AuthSettings, Claims, KeySettings, SigningKey};
use fanfare_testkit::cluster::workspace_root;
use fanfare_testkit::sse::{SseEvent, SseStream};
use fanfare_testkit::{http, Cluster, DcShape};
use serde_json::{json, Value};

const DC: DcShape = DcShape {
    nats: 1,
    dispatchers: 1,
    frontends: 1,
};

fn data(event: &SseEvent) -> Value {
    serde_json::from_str(&event.data).unwrap_or(Value::Null)
}

/// Opens `GET /v1/events?videos=..` and reads its `connection` event.
async fn open_videos(
    cluster: &Cluster,
    frontend: &str,
    videos: &[&str],
    headers: &[(&str, &str)],
) -> (SseStream, String) {
    let url = format!(
        "{}/v1/events?videos={}",
        cluster.frontend(frontend),
        videos.join(",")
    );
    let mut stream = SseStream::connect(&url, headers)
        .await
        .expect("stream opens");
    let first = stream
        .next_event(WAIT)
        .await
        .expect("reads")
        .expect("an event");
    assert_eq!(first.event, "connection", "the first event: {first:?}");
    let connection = data(&first);
    assert_eq!(connection["frontend"], frontend);
    let id = connection["connection_id"].as_str().unwrap().to_owned();
    assert!(
        id.len() >= 24 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "at least 96 random bits: {id}"
    );
    (stream, id)
}

/// Waits until every dispatcher of `dc` routes each video to `frontend`.
async fn routed(cluster: &Cluster, dc: &str, frontend: &str, videos: &[&str]) {
    for video in videos {
        cluster
            .wait_for_interest(dc, video, &[frontend], WAIT)
            .await
            .unwrap();
    }
}

async fn change(
    cluster: &Cluster,
    frontend: &str,
    connection: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> http::HttpResponse {
    let url = format!(
        "{}/v1/connections/{connection}/subscriptions",
        cluster.frontend(frontend)
    );
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    http::request(
        "POST",
        &url,
        &all,
        serde_json::to_vec(&body).unwrap().into(),
    )
    .await
    .unwrap()
}

/// Reads comments until `wanted` (video, text) pairs all arrived, then a little longer;
/// returns every comment as (video, text) and the last event id.
async fn comments_until(
    stream: &mut SseStream,
    wanted: usize,
) -> (Vec<(String, String)>, Option<String>) {
    let count = |events: &[SseEvent]| events.iter().filter(|e| e.event == "comment").count();
    let (mut events, _) = stream
        .collect_until(WAIT, |events| count(events) >= wanted)
        .await;
    let (extra, _) = stream.collect_until(common::QUIET, |_| false).await;
    events.extend(extra);
    let comments = events
        .iter()
        .filter(|event| event.event == "comment")
        .map(|event| {
            let value = data(event);
            (
                value["video_id"].as_str().unwrap().to_owned(),
                value["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (comments, stream.last_event_id().map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_follows_several_videos_and_changes_them_by_connection_id() {
    let cluster = Cluster::builder()
        .dc("dc1", DC)
        .dc("dc2", DC)
        .start()
        .await
        .expect("cluster starts");
    let (mut stream, connection) = open_videos(&cluster, "dc1-fe1", &["a", "b"], &[]).await;
    routed(&cluster, "dc1", "dc1-fe1", &["a", "b"]).await;
    let publisher = cluster.frontend("dc2-fe1");
    comment(&publisher, "a", "a1").await.unwrap();
    comment(&publisher, "b", "b1").await.unwrap();
    let (got, _) = comments_until(&mut stream, 2).await;
    assert_eq!(
        got.into_iter().collect::<HashSet<_>>(),
        [("a".into(), "a1".into()), ("b".into(), "b1".into())]
            .into_iter()
            .collect(),
        "each comment once, with its video"
    );

    let answer = change(
        &cluster,
        "dc1-fe1",
        &connection,
        json!({"add": ["c"], "remove": ["a"]}),
        &[],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let body: Value = answer.json().unwrap();
    assert_eq!(body["connection_id"], connection.as_str());
    assert_eq!(body["videos"], json!(["b", "c"]));
    // Adding what it follows and removing what it does not change nothing.
    let again = change(
        &cluster,
        "dc1-fe1",
        &connection,
        json!({"add": ["b"], "remove": ["zzz"]}),
        &[],
    )
    .await;
    assert_eq!(again.json::<Value>().unwrap()["videos"], json!(["b", "c"]));
    routed(&cluster, "dc1", "dc1-fe1", &["c"]).await;
    cluster
        .wait_for_interest("dc1", "a", &[], WAIT)
        .await
        .expect("nobody here follows a any more");
    for (video, text) in [("a", "a2"), ("b", "b2"), ("c", "c2")] {
        comment(&publisher, video, text).await.unwrap();
    }
    let (got, last_id) = comments_until(&mut stream, 2).await;
    assert_eq!(
        got.into_iter().collect::<HashSet<_>>(),
        [("b".into(), "b2".into()), ("c".into(), "c2".into())]
            .into_iter()
            .collect(),
        "a removed video's comments stop, an added one's start"
    );
    let id = last_id.expect("comments carry ids");
    let position: fanfare_model::ConnectionPosition = id.parse().expect("a connection position");
    let followed: Vec<&str> = position.videos().iter().map(|(v, _)| v.as_str()).collect();
    assert_eq!(followed, ["b", "c"], "the id names what the stream follows");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_video_stream_resumes_in_another_datacenter_with_no_gap_and_no_duplicate() {
    let cluster = Cluster::builder()
        .dc("dc1", DC)
        .dc("dc2", DC)
        .dc("dc3", DC)
        .start()
        .await
        .expect("cluster starts");
    let (mut stream, _) = open_videos(&cluster, "dc1-fe1", &["x", "y"], &[]).await;
    routed(&cluster, "dc1", "dc1-fe1", &["x", "y"]).await;
    // Two origins, two videos.
    let (dc2, dc3) = (cluster.frontend("dc2-fe1"), cluster.frontend("dc3-fe1"));
    comment(&dc2, "x", "x1").await.unwrap();
    comment(&dc3, "y", "y1").await.unwrap();
    comment(&dc3, "x", "x2").await.unwrap();
    let (seen, last_id) = comments_until(&mut stream, 3).await;
    assert_eq!(seen.len(), 3);
    let last_id = last_id.unwrap();
    drop(stream);
    // Published while the viewer is away, in both videos from both origins.
    let mut missed = HashSet::new();
    for (publisher, video, text) in [
        (&dc2, "y", "y2"),
        (&dc3, "x", "x3"),
        (&dc2, "x", "x4"),
        (&dc3, "y", "y3"),
    ] {
        comment(publisher, video, text).await.unwrap();
        missed.insert((video.to_owned(), text.to_owned()));
    }
    // Back through dc2, with the URL of the old stream and the id it got last: the id decides
    // what it follows and where each video resumes. Whatever dc2 holds already is replayed;
    // the rest comes live.
    let url = format!("{}/v1/events?videos=x", cluster.frontend("dc2-fe1"));
    let mut resumed = SseStream::connect(&url, &[("last-event-id", &last_id)])
        .await
        .unwrap();
    let (replayed, _) = comments_until(&mut resumed, missed.len()).await;
    let unique: HashSet<(String, String)> = replayed.iter().cloned().collect();
    assert_eq!(unique.len(), replayed.len(), "no duplicate: {replayed:?}");
    assert_eq!(unique, missed, "no gap, and nothing seen before");
    // Then live, both videos.
    routed(&cluster, "dc2", "dc2-fe1", &["x", "y"]).await;
    comment(&dc3, "y", "y-live").await.unwrap();
    let (live, _) = comments_until(&mut resumed, 1).await;
    assert_eq!(live, [("y".to_owned(), "y-live".to_owned())]);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_unknown_connections_and_bad_requests_get_problems() {
    let cluster = Cluster::builder()
        .dc("dc1", DC)
        .options(|options| options.frontend.limits.max_videos_per_connection = 3)
        .start()
        .await
        .expect("cluster starts");
    let frontend = cluster.frontend("dc1-fe1");
    let too_many = http::get(&format!("{frontend}/v1/events?videos=a,b,c,d"))
        .await
        .unwrap();
    assert_problem(
        &too_many,
        400,
        "too-many-videos",
        "four videos, limit three",
    );
    let bad_id = http::get(&format!("{frontend}/v1/events?videos=a,b.c"))
        .await
        .unwrap();
    assert_problem(&bad_id, 400, "invalid-video-id", "a dot in a video id");
    let bad_position = http::request(
        "GET",
        &format!("{frontend}/v1/events?videos=a,b"),
        &[("last-event-id", "m1;dc1;a:x")],
        Default::default(),
    )
    .await
    .unwrap();
    assert_problem(
        &bad_position,
        400,
        "invalid-last-event-id",
        "a malformed id",
    );

    let unknown = change(
        &cluster,
        "dc1-fe1",
        "00000000000000000000000000000000",
        json!({"add": ["a"]}),
        &[],
    )
    .await;
    assert_problem(&unknown, 404, "unknown-connection", "an id nobody holds");

    let (_stream, connection) = open_videos(&cluster, "dc1-fe1", &["a", "b"], &[]).await;
    let over = change(
        &cluster,
        "dc1-fe1",
        &connection,
        json!({"add": ["c", "d"]}),
        &[],
    )
    .await;
    assert_problem(&over, 409, "too-many-videos", "four after the change");
    let swap = change(
        &cluster,
        "dc1-fe1",
        &connection,
        json!({"add": ["c", "d"], "remove": ["a"]}),
        &[],
    )
    .await;
    assert_eq!(swap.status, 200, "three after the change: {}", swap.text());
    for (body, slug, case) in [
        (
            json!({"add": ["a.b"]}),
            "invalid-video-id",
            "a bad id to add",
        ),
        (json!({"add": "a"}), "invalid-body", "not a list"),
        (
            json!({"add": ["a"], "extra": 1}),
            "invalid-body",
            "an unknown field",
        ),
    ] {
        let answer = change(&cluster, "dc1-fe1", &connection, body, &[]).await;
        assert_problem(&answer, 400, slug, case);
    }
    let url = format!("{frontend}/v1/connections/{connection}/subscriptions");
    let text = http::post(&url, Some("text/plain"), "{}").await.unwrap();
    assert_problem(&text, 415, "unsupported-media-type", "not json");
    let get = http::get(&url).await.unwrap();
    assert_problem(&get, 405, "method-not-allowed", "GET on the subscriptions");
    // Nothing of the refused changes took effect.
    let answer = change(&cluster, "dc1-fe1", &connection, json!({}), &[]).await;
    assert_eq!(
        answer.json::<Value>().unwrap()["videos"],
        json!(["b", "c", "d"])
    );
    cluster.stop().await;
}

fn signing_key() -> SigningKey {
    let secret = workspace_root().join("tests/fixtures/auth/hs256-one.secret");
    SigningKey::hs256_file(Some("k1"), &secret).unwrap()
}

fn bearer(user: &str, videos: &[&str]) -> String {
    let claims = Claims {
        videos: Some(videos.iter().map(|video| video.to_string()).collect()),
        ..Claims::new(user, "fanfare", Duration::from_secs(3600))
    };
    format!("Bearer {}", mint(&signing_key(), &claims).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_videos_are_added_only_with_the_owners_token_that_may_view_them() {
    let secret = workspace_root().join("tests/fixtures/auth/hs256-one.secret");
    let auth = AuthSettings {
        private_videos: vec!["vip-*".to_owned()],
        keys: vec![KeySettings::hs256_file("k1", secret)],
        ..AuthSettings::default()
    };
    let cluster = Cluster::builder()
        .dc("dc1", DC)
        .auth(auth)
        .start()
        .await
        .expect("cluster starts");
    let ana = bearer("ana", &["vip-*", "talk"]);
    let (_stream, connection) = open_videos(
        &cluster,
        "dc1-fe1",
        &["talk", "vip-1"],
        &[("authorization", &ana)],
    )
    .await;
    let no_token = change(
        &cluster,
        "dc1-fe1",
        &connection,
        json!({"add": ["vip-2"]}),
        &[],
    )
    .await;
    assert_problem(
        &no_token,
        401,
        "token-missing",
        "a private video without a token",
    );
    let out_of_scope = bearer("ana", &["talk"]);
    let refused = change(
        &cluster,
        "dc1-fe1",
        &connection,
        json!({"add": ["vip-2"]}),
        &[("authorization", &out_of_scope)],
    )
    .await;
    assert_problem(
        &refused,
        403,
        "token-video-out-of-scope",
        "a token not for vip-2",
    );
    let bo = bearer("bo", &["vip-*"]);
    let other_user = change(
        &cluster,
        "dc1-fe1",
        &connection,
        json!({"add": ["vip-2"]}),
        &[("authorization", &bo)],
    )
    .await;
    assert_problem(
        &other_user,
        403,
        "connection-owner-mismatch",
        "another user's valid token",
    );
    let owner = change(
        &cluster,
        "dc1-fe1",
        &connection,
        json!({"add": ["vip-2", "public"]}),
        &[("authorization", &ana)],
    )
    .await;
    assert_eq!(owner.status, 200, "{}", owner.text());
    assert_eq!(
        owner.json::<Value>().unwrap()["videos"],
        json!(["talk", "vip-1", "vip-2", "public"])
    );
    // Opening a stream of a private video without a token is refused outright.
    let url = format!(
        "{}/v1/events?videos=talk,vip-1",
        cluster.frontend("dc1-fe1")
    );
    let anonymous = http::get(&url).await.unwrap();
    assert_problem(
        &anonymous,
        401,
        "token-missing",
        "a private video in videos=",
    );
    cluster.stop().await;
}
