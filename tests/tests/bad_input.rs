//! Bad input gets a clear `application/problem+json` answer with the right status, reaches
//! nothing in NATS, and does not disturb other viewers.

mod common;

use common::{comment_once, like, problem_body, receive, SMALL};
use fanfare_testkit::http;
use fanfare_testkit::Cluster;

fn assert_problem(response: &http::HttpResponse, status: u16, case: &str) {
    let problem = problem_body(response, status, case);
    assert!(
        problem["type"]
            .as_str()
            .is_some_and(|kind| !kind.is_empty()),
        "{case}: {problem}"
    );
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|detail| !detail.is_empty()),
        "{case}: {problem}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_problem_responses_and_reach_nothing() {
    let cluster = Cluster::builder()
        .dc("dc1", SMALL)
        .dc("dc2", SMALL)
        .start()
        .await
        .expect("cluster starts");
    let frontend = cluster.frontend("dc1-fe1");
    let mut bystander = cluster.watch("dc1-fe1", "calm").await.unwrap();
    // This cluster runs with [auth] mode = "off" (the test kit's default), and says so.
    let log = cluster.node_log("dc1-fe1").unwrap();
    assert!(log.contains("authentication is OFF"), "{log}");

    let json = Some("application/json");
    let like_body = r#"{"user_id":"u"}"#;
    let long_id = "v".repeat(65);
    let bad_ids = ["a.b", "a*", "a%3E", "a%20b", long_id.as_str(), "a.%3E"];
    for id in bad_ids {
        for kind in ["likes", "comments"] {
            let url = format!("{frontend}/v1/videos/{id}/{kind}");
            let response = http::post(&url, json, like_body).await.unwrap();
            assert_problem(&response, 400, &format!("POST {kind} with video id {id:?}"));
        }
        let response = http::get(&format!("{frontend}/v1/videos/{id}/events"))
            .await
            .unwrap();
        assert_problem(&response, 400, &format!("GET events with video id {id:?}"));
    }

    let likes = format!("{frontend}/v1/videos/calm/likes");
    let comments = format!("{frontend}/v1/videos/calm/comments");
    let oversized = format!(r#"{{"user_id":"u","text":"{}"}}"#, "x".repeat(64 * 1024));
    let cases: Vec<(&str, &str, Option<&str>, String, u16)> = vec![
        (
            "malformed json",
            &likes,
            json,
            "{\"user_id\":".to_owned(),
            400,
        ),
        (
            "unknown field",
            &likes,
            json,
            r#"{"user_id":"u","count":1000}"#.to_owned(),
            400,
        ),
        (
            "missing field",
            &comments,
            json,
            r#"{"user_id":"u"}"#.to_owned(),
            400,
        ),
        (
            "wrong json type",
            &likes,
            json,
            r#"{"user_id":7}"#.to_owned(),
            400,
        ),
        (
            "no user id with auth off",
            &likes,
            json,
            "{}".to_owned(),
            400,
        ),
        (
            "empty user id",
            &likes,
            json,
            r#"{"user_id":""}"#.to_owned(),
            400,
        ),
        (
            "empty comment",
            &comments,
            json,
            r#"{"user_id":"u","text":""}"#.to_owned(),
            400,
        ),
        (
            "wrong content type",
            &likes,
            Some("text/plain"),
            like_body.to_owned(),
            415,
        ),
        ("no content type", &likes, None, like_body.to_owned(), 415),
        ("oversized body", &comments, json, oversized, 413),
    ];
    for (case, url, content_type, body, status) in cases {
        let response = http::post(url, content_type, body).await.unwrap();
        assert_problem(&response, status, case);
    }
    let response = http::get(&format!("{frontend}/v1/nothing")).await.unwrap();
    assert_problem(&response, 404, "unknown route");
    let response = http::request("DELETE", &likes, &[], Default::default())
        .await
        .unwrap();
    assert_problem(&response, 405, "wrong method");

    // Nothing reached NATS: both origin streams are empty.
    let client = cluster.nats_client("dc1").await.unwrap();
    let js = async_nats::jetstream::new(client);
    for stream in ["EVENTS_dc1", "EVENTS_dc2"] {
        let mut stream = js.get_stream(stream).await.unwrap();
        let messages = stream.info().await.unwrap().state.messages;
        assert_eq!(
            messages,
            0,
            "{} holds {messages} messages",
            stream.cached_info().config.name
        );
    }

    // The bystander was not disturbed: it still gets the next like, and only that.
    like(&frontend, "calm", "u").await.unwrap();
    let received = receive(&mut bystander, 1, 0).await;
    assert_eq!((received.likes, received.comment_ids.len()), (1, 0));

    // A retried comment with the same Idempotency-Key is stored and delivered once.
    let first = comment_once(&frontend, "calm", "said once", "retry-me")
        .await
        .unwrap();
    let again = comment_once(&frontend, "calm", "said once", "retry-me")
        .await
        .unwrap();
    assert_eq!(first, again);
    let received = receive(&mut bystander, 0, 1).await;
    assert_eq!(received.comment_ids, [first]);
    let response = http::request(
        "POST",
        &comments,
        &[
            ("content-type", "application/json"),
            ("idempotency-key", "a.b"),
        ],
        r#"{"user_id":"u","text":"t"}"#.into(),
    )
    .await
    .unwrap();
    assert_problem(&response, 400, "idempotency key with a dot");
    cluster.stop().await;
}
