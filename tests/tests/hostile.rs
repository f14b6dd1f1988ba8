//! Hostile content: comment text built to break SSE framing reaches viewers as one `comment`
//! event each, byte for byte, and nothing else; text fanfare refuses (control characters, too
//! long, invalid UTF-8) and ids built to inject into NATS subjects or headers get a 400 problem
//! and reach nothing in NATS; viewers of the video and of others are unaffected.

mod common;

use common::{assert_problem, comment, like, receive, QUIET, SMALL, WAIT};
use fanfare_model::{Position, COMMENT_TEXT_MAX_CHARS};
use fanfare_testkit::cluster::{fanfare_bin, workspace_root};
use fanfare_testkit::http;
use fanfare_testkit::sse::{SseEvent, SseStream};
use fanfare_testkit::Cluster;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Text that a naive encoder would turn into extra events, fields or broken frames, and text
/// that stresses Unicode handling: all of it is accepted and must arrive unchanged.
fn accepted_texts() -> Vec<(&'static str, String)> {
    let likes_json = r#"{"video_id":"hostile","count":1000000,"total":1000000}"#;
    vec![
        ("newlines", "first line\nsecond line\n".to_owned()),
        ("blank line and data", "\n\ndata: injected".to_owned()),
        ("bare cr", "carriage\rreturn\r".to_owned()),
        ("crlf", "crlf\r\n\r\nline".to_owned()),
        (
            "injected likes event",
            format!("\nevent: likes\ndata: {likes_json}\n\n"),
        ),
        ("id line", "id: x".to_owned()),
        (
            "id, retry and comment lines",
            "\nid: x\n\nretry: 0\n\n: comment\r\nid\n\n".to_owned(),
        ),
        (
            "html",
            "<script>alert('x')</script><img src=x onerror=\"alert(1)\">&amp;".to_owned(),
        ),
        ("tab", "tab\there".to_owned()),
        (
            "4-byte emoji",
            "\u{1F389}\u{1F980} party \u{1F469}\u{200D}\u{1F4BB}".to_owned(),
        ),
        (
            "combining marks",
            "e\u{301}\u{302}\u{303}\u{304}\u{305} z\u{36F}\u{36F}\u{36F}\u{36F}".to_owned(),
        ),
        (
            "rtl override and isolates",
            "\u{202E}gnp.exe\u{202C} \u{2067}\u{5E9}\u{5DC}\u{5D5}\u{5DD}\u{2069}".to_owned(),
        ),
        (
            "bom, line and paragraph separators",
            "\u{FEFF}bom \u{2028} \u{2029} \u{FFFD} \u{FFFF}".to_owned(),
        ),
        ("json-looking", r#""},"text":"forged","x":{"#.to_owned()),
        (
            "exactly the maximum length, in 4-byte characters",
            "\u{1F389}".repeat(COMMENT_TEXT_MAX_CHARS),
        ),
    ]
}

/// Text fanfare refuses with 400 `invalid-body`.
fn refused_texts() -> Vec<(&'static str, String)> {
    vec![
        ("nul", "nul\u{0}byte".to_owned()),
        ("escape sequence", "\u{1B}[2J\u{1B}[31mred".to_owned()),
        ("bell and backspace", "bell\u{7}back\u{8}".to_owned()),
        ("vertical tab and form feed", "vt\u{B}ff\u{C}".to_owned()),
        ("delete", "del\u{7F}".to_owned()),
        ("c1 next line", "c1\u{85}next".to_owned()),
        ("c1 csi", "c1\u{9B}2J".to_owned()),
        (
            "one character over the maximum",
            "\u{1F389}".repeat(COMMENT_TEXT_MAX_CHARS + 1),
        ),
    ]
}

/// Raw bodies fanfare refuses with 400 `invalid-body`.
fn refused_bodies() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "invalid utf-8 in the text",
            b"{\"user_id\":\"u\",\"text\":\"bad \xFF\xFE bytes\"}".to_vec(),
        ),
        (
            "truncated utf-8 sequence",
            b"{\"user_id\":\"u\",\"text\":\"cut \xF0\x9F\x8E\"}".to_vec(),
        ),
        (
            "overlong encoding of a dot",
            b"{\"user_id\":\"u\",\"text\":\"a\xC0\xAEb\"}".to_vec(),
        ),
        (
            "encoded surrogate",
            b"{\"user_id\":\"u\",\"text\":\"\xED\xA0\x80\"}".to_vec(),
        ),
        (
            "lone surrogate escape",
            br#"{"user_id":"u","text":"\ud800"}"#.to_vec(),
        ),
        (
            "escaped nul",
            br#"{"user_id":"u","text":"a\u0000b"}"#.to_vec(),
        ),
        (
            "array of the field values instead of an object",
            br#"["mallory","array"]"#.to_vec(),
        ),
        (
            "invalid utf-8 in the user id",
            b"{\"user_id\":\"\xC3\",\"text\":\"t\"}".to_vec(),
        ),
    ]
}

async fn origin_messages(js: &async_nats::jetstream::Context, dc: &str) -> u64 {
    let mut stream = js
        .get_stream(format!("EVENTS_{dc}"))
        .await
        .expect("origin stream");
    stream.info().await.expect("stream info").state.messages
}

/// Reads `viewer` until it has `count` events, then [`QUIET`] more for anything extra. Viewer
/// counts, which any stream gets as viewers come and go, are left out.
async fn events(viewer: &mut SseStream, count: usize) -> Vec<SseEvent> {
    let counted = |events: &[SseEvent]| events.iter().filter(|e| e.event != "viewers").count();
    let (mut events, _) = viewer
        .collect_until(WAIT, |events| counted(events) >= count)
        .await;
    let (extra, _) = viewer.collect_until(QUIET, |_| false).await;
    events.extend(extra);
    events.retain(|event| event.event != "viewers");
    events
}

/// Every event is a `comment` with the posted id and text, in order, and nothing else came.
fn assert_comments(events: &[SseEvent], expected: &[(String, String)], who: &str) {
    let names: Vec<&str> = events.iter().map(|event| event.event.as_str()).collect();
    assert!(
        names.iter().all(|name| *name == "comment"),
        "{who} got events other than comments: {names:?}"
    );
    assert_eq!(events.len(), expected.len(), "{who}: one event per comment");
    for (event, (comment_id, text)) in events.iter().zip(expected) {
        let data: Value = serde_json::from_str(&event.data)
            .unwrap_or_else(|error| panic!("{who}: data is not json ({error}): {:?}", event.data));
        assert_eq!(data["comment_id"], comment_id.as_str(), "{who}");
        assert_eq!(
            data["text"].as_str().map(str::as_bytes),
            Some(text.as_bytes()),
            "{who}: text of {comment_id} changed"
        );
        let id = event.id.as_deref().expect("comments carry ids");
        id.parse::<Position>()
            .unwrap_or_else(|error| panic!("{who}: id {id:?} is not a position: {error}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_comment_text_arrives_intact_as_one_event_and_refused_text_reaches_nothing() {
    let cluster = Cluster::builder()
        .dc("dc1", SMALL)
        .dc("dc2", SMALL)
        .start()
        .await
        .expect("cluster starts");
    let dc1 = cluster.frontend("dc1-fe1");
    let mut viewer = cluster.watch("dc1-fe1", "hostile").await.unwrap();
    let mut remote = cluster.watch("dc2-fe1", "hostile").await.unwrap();
    let mut bystander = cluster.watch("dc1-fe1", "calm").await.unwrap();
    let js = async_nats::jetstream::new(cluster.nats_client("dc1").await.unwrap());
    let comments_url = format!("{dc1}/v1/videos/hostile/comments");

    // Accepted and refused posts interleaved, so that a refusal in the middle of a run of
    // comments is seen not to disturb the ones around it.
    let mut refused: Vec<(String, Vec<u8>)> = refused_texts()
        .into_iter()
        .map(|(case, text)| {
            let body = serde_json::to_vec(&json!({ "user_id": "mallory", "text": text }));
            (format!("text: {case}"), body.unwrap())
        })
        .chain(
            refused_bodies()
                .into_iter()
                .map(|(case, body)| (format!("body: {case}"), body)),
        )
        .collect();
    let mut accepted = Vec::new();
    for (case, text) in accepted_texts() {
        let comment_id = comment(&dc1, "hostile", &text)
            .await
            .unwrap_or_else(|error| panic!("{case}: {error}"));
        accepted.push((comment_id, text));
        if let Some((case, body)) = refused.pop() {
            let before = origin_messages(&js, "dc1").await;
            let response = http::post(&comments_url, Some("application/json"), body)
                .await
                .unwrap();
            assert_problem(&response, 400, "invalid-body", &case);
            assert_eq!(
                origin_messages(&js, "dc1").await,
                before,
                "{case}: reached the origin stream"
            );
        }
    }
    for (case, body) in refused {
        let response = http::post(&comments_url, Some("application/json"), body)
            .await
            .unwrap();
        assert_problem(&response, 400, "invalid-body", &case);
    }
    assert_eq!(
        origin_messages(&js, "dc1").await,
        accepted.len() as u64,
        "only the accepted comments were stored"
    );

    let seen = events(&mut viewer, accepted.len()).await;
    assert_comments(&seen, &accepted, "the viewer in dc1");
    let seen_remote = events(&mut remote, accepted.len()).await;
    assert_comments(&seen_remote, &accepted, "the viewer in dc2");
    let calm = events(&mut bystander, 0).await;
    assert!(calm.is_empty(), "the bystander got {calm:?}");

    // Resuming still works after all that: from the last id, only what came next; from the id
    // of the third comment, the rest again, through the replay path, still byte for byte.
    let last_id = viewer.last_event_id().expect("a last id").to_owned();
    drop(viewer);
    let after = comment(&dc1, "hostile", "after the storm").await.unwrap();
    let url = cluster.events_url("dc1-fe1", "hostile");
    let mut back = SseStream::connect(&url, &[("Last-Event-ID", &last_id)])
        .await
        .expect("resume from the last id");
    let resumed = events(&mut back, 1).await;
    assert_comments(
        &resumed,
        &[(after.clone(), "after the storm".to_owned())],
        "the resumed viewer",
    );
    let third = seen[2].id.clone().expect("an id");
    let url_dc2 = cluster.events_url("dc2-fe1", "hostile");
    let mut replayed_viewer = SseStream::connect(&url_dc2, &[("Last-Event-ID", &third)])
        .await
        .expect("resume from the third comment in dc2");
    let mut rest = accepted[3..].to_vec();
    rest.push((after, "after the storm".to_owned()));
    let replayed = events(&mut replayed_viewer, rest.len()).await;
    assert_comments(&replayed, &rest, "the viewer replayed in dc2");

    // The bystander still works, and got nothing of the hostile video.
    like(&dc1, "calm", "u").await.unwrap();
    let received = receive(&mut bystander, 1, 0).await;
    assert_eq!(
        (
            received.likes,
            received.comment_ids.len(),
            received.other.len()
        ),
        (1, 0, 0)
    );
    cluster.stop().await;
}

/// Sends one raw HTTP/1.1 request (bytes as given: header values may hold what a client
/// library would refuse to send) and returns the status, content type and body.
async fn raw_request(base: &str, head: &[u8], body: &[u8]) -> (u16, String, Vec<u8>) {
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut request = head.to_vec();
    request.extend_from_slice(
        format!(
            "host: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    request.extend_from_slice(body);
    stream.write_all(&request).await.expect("send");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let content_type = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    (status, content_type, body.as_bytes().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_that_could_inject_into_subjects_or_headers_are_refused_and_reach_nothing() {
    let cluster = Cluster::builder()
        .dc("dc1", SMALL)
        .start()
        .await
        .expect("cluster starts");
    let frontend = cluster.frontend("dc1-fe1");
    let mut bystander = cluster.watch("dc1-fe1", "calm").await.unwrap();
    let js = async_nats::jetstream::new(cluster.nats_client("dc1").await.unwrap());
    let json_type = Some("application/json");
    let comment_body = r#"{"user_id":"u","text":"t"}"#;
    let like_body = r#"{"user_id":"u"}"#;

    // Video ids as a client would send them in a path (percent-encoded where they must be);
    // bad_input.rs covers a raw dot, `*`, `%3E`, `%20` and length.
    let bad_videos = [
        "a%2Eb",
        "a%2eb",
        "%2E%2E",
        "a%2A",
        "a%3Eb",
        "a%2Fb",
        "a%09b",
        "a%0Ab",
        "a%0D%0Ab",
        "a%00b",
        "a%E2%80%A4b",
        "a%EF%BC%8Eb",
        "vid%D0%B0",
        "a%EF%BC%9Eb",
        "a%C0%AEb",
        "a%FFb",
        "a%",
        "a%2",
    ];
    for video in bad_videos {
        for (kind, body) in [("likes", like_body), ("comments", comment_body)] {
            let url = format!("{frontend}/v1/videos/{video}/{kind}");
            let response = http::post(&url, json_type, body).await.unwrap();
            assert_problem(
                &response,
                400,
                "invalid-video-id",
                &format!("POST {kind} {video}"),
            );
        }
        let response = http::get(&format!("{frontend}/v1/videos/{video}/events"))
            .await
            .unwrap();
        assert_problem(
            &response,
            400,
            "invalid-video-id",
            &format!("GET events {video}"),
        );
    }

    // Idempotency keys become the Nats-Msg-Id header and the comment id. bad_input.rs covers a
    // dot; these are the other ways to escape a token or forge a header.
    let long_key = "k".repeat(65);
    let bad_keys: Vec<&[u8]> = vec![
        b"a*",
        b"a>",
        b"a b",
        b"a\tb",
        b"a%2Eb",
        b"a:b",
        b"a,b",
        b"a/b",
        "a\u{2024}b".as_bytes(),
        "a\u{FF0E}b".as_bytes(),
        "k\u{0435}y".as_bytes(),
        b"a\xFFb",
        long_key.as_bytes(),
    ];
    for key in bad_keys {
        let mut head = b"POST /v1/videos/calm/comments HTTP/1.1\r\n\
            content-type: application/json\r\nidempotency-key: "
            .to_vec();
        head.extend_from_slice(key);
        head.extend_from_slice(b"\r\n");
        let (status, content_type, body) =
            raw_request(&frontend, &head, comment_body.as_bytes()).await;
        let case = format!("idempotency key {:?}", String::from_utf8_lossy(key));
        assert_eq!(status, 400, "{case}: {}", String::from_utf8_lossy(&body));
        assert_eq!(content_type, "application/problem+json", "{case}");
        let problem: Value = serde_json::from_slice(&body).expect("problem json");
        assert_eq!(
            problem["type"], "urn:fanfare:problem:invalid-body",
            "{case}"
        );
    }

    // Last-Event-ID values that are not positions, in the header and in the query.
    let huge = "dc1:1,".repeat(2000);
    let bad_positions = [
        "dc1:+1",
        "dc1: 1",
        "dc1:1;dc2:2",
        "dc.1:1",
        "dc*:1",
        "dc>:1",
        "dc1:18446744073709551616",
        "dc1:1,dc1:2",
        huge.as_str(),
    ];
    let url = cluster.events_url("dc1-fe1", "calm");
    for position in bad_positions {
        let error = SseStream::connect(&url, &[("Last-Event-ID", position)])
            .await
            .expect_err("refused");
        let text = error.to_string();
        assert!(
            text.contains("400") && text.contains("invalid-last-event-id"),
            "Last-Event-ID {position:.40}: {text}"
        );
    }
    for position in [
        "dc1%3A1%0D%0Aevent%3A%20x",
        "dc1%3A1%00",
        "dc1%E2%80%A41%3A1",
    ] {
        let response = http::get(&format!("{url}?last_event_id={position}"))
            .await
            .unwrap();
        assert_problem(
            &response,
            400,
            "invalid-last-event-id",
            &format!("?last_event_id={position}"),
        );
    }

    assert_eq!(origin_messages(&js, "dc1").await, 0, "nothing reached NATS");
    like(&frontend, "calm", "u").await.unwrap();
    let received = receive(&mut bystander, 1, 0).await;
    assert_eq!((received.likes, received.comment_ids.len()), (1, 0));
    cluster.stop().await;
}

/// A topology whose datacenter or node name could inject into a subject is refused by
/// `fanfare topology check`, which names the field.
#[test]
fn topology_check_refuses_names_that_could_inject_into_subjects() {
    let valid = std::fs::read_to_string(workspace_root().join("topology/local-3dc.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("\"dc2\"", "\"dc2.x\"", "datacenter[1].name"),
        ("\"dc2\"", "\"dc*\"", "datacenter[1].name"),
        ("\"dc2\"", "\"dc>\"", "datacenter[1].name"),
        ("\"dc2\"", "\"dc 2\"", "datacenter[1].name"),
        ("\"dc2\"", "\"dc\\u2024\"", "datacenter[1].name"),
        ("\"dc2-fe1\"", "\"fe.>\"", "frontend[2].name"),
        ("\"dc2-fe1\"", "\"fe\\nname\"", "frontend[2].name"),
        ("\"dc2-disp1\"", "\"disp\\tone\"", "dispatcher[2].name"),
        ("\"dc2-nats1\"", "\"n%2E1\"", "nats[1].name"),
    ];
    for (index, (from, to, field)) in cases.into_iter().enumerate() {
        let text = valid.replace(from, to);
        let path = dir.path().join(format!("case{index}.toml"));
        std::fs::write(&path, text).unwrap();
        let output = std::process::Command::new(fanfare_bin().unwrap())
            .args(["topology", "check", path.to_str().unwrap()])
            .current_dir(workspace_root())
            .output()
            .expect("fanfare runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{to} accepted");
        assert!(
            stderr.contains(field) && stderr.contains("invalid name"),
            "{to}: {stderr}"
        );
    }
}
