//! Authentication on a real cluster with `[auth]` on: publishers need a valid token whose
//! subject becomes the user id, every refusal says why (401 for a bad token, 403 for one out
//! of its scope) and reaches nothing in NATS, private videos need a viewer token on every open
//! and resume, and no token ever shows up in a frontend's log.
//!
//! Keys are the test-only fixtures in `tests/fixtures/auth`.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use common::{assert_problem, receive, SMALL, WAIT};
use fanfare_auth::{
    mint, unix_now, Action, AuthSettings, Claims, KeyAlgorithm, KeySettings, SigningKey,
};
use fanfare_testkit::cluster::{fanfare_bin, workspace_root};
use fanfare_testkit::sse::{SseError, SseStream};
use fanfare_testkit::{http, wait, Cluster};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ISSUER: &str = "fanfare-tests";
const HOUR: Duration = Duration::from_secs(3600);

/// Runs the `fanfare` binary the cluster runs.
fn fanfare(args: &[&str]) -> std::process::Output {
    std::process::Command::new(fanfare_bin().unwrap())
        .args(args)
        .output()
        .expect("fanfare runs")
}

fn fixture(name: &str) -> PathBuf {
    workspace_root().join("tests/fixtures/auth").join(name)
}

/// Two HS256 kids (a rotation in progress), one RS256 and one EdDSA key; `vip-*` is private.
fn auth_settings() -> AuthSettings {
    AuthSettings {
        issuer: Some(ISSUER.to_owned()),
        private_videos: vec!["vip-*".to_owned()],
        keys: vec![
            KeySettings::hs256_file("hs-old", fixture("hs256-one.secret")),
            KeySettings::hs256_file("hs-new", fixture("hs256-two.secret")),
            KeySettings::public_key_file("rsa-1", KeyAlgorithm::RS256, fixture("rsa-public.pem")),
            KeySettings::public_key_file(
                "ed-1",
                KeyAlgorithm::EdDSA,
                fixture("ed25519-public.pem"),
            ),
        ],
        ..AuthSettings::default()
    }
}

fn pem_key(kid: &str, algorithm: KeyAlgorithm, file: &str) -> SigningKey {
    let pem = std::fs::read(fixture(file)).unwrap();
    SigningKey::from_pem(Some(kid), algorithm, &pem).unwrap()
}

fn hs_old() -> SigningKey {
    SigningKey::hs256_file(Some("hs-old"), &fixture("hs256-one.secret")).unwrap()
}

fn hs_new() -> SigningKey {
    SigningKey::hs256_file(Some("hs-new"), &fixture("hs256-two.secret")).unwrap()
}

fn rsa() -> SigningKey {
    pem_key("rsa-1", KeyAlgorithm::RS256, "rsa-private.pem")
}

fn ed() -> SigningKey {
    pem_key("ed-1", KeyAlgorithm::EdDSA, "ed25519-private.pem")
}

/// Claims this cluster accepts: right audience and issuer, valid for an hour, any scope.
fn claims(sub: &str) -> Claims {
    Claims {
        iss: Some(ISSUER.to_owned()),
        ..Claims::new(sub, "fanfare", HOUR)
    }
}

fn token(key: &SigningKey, claims: &Claims) -> String {
    mint(key, claims).unwrap()
}

async fn start() -> Cluster {
    Cluster::builder()
        .dc("dc1", SMALL)
        .auth(auth_settings())
        // Everything the frontend can log, so that a token in any log line would be caught.
        .options(|options| options.node_env = vec![("RUST_LOG".to_owned(), "trace".to_owned())])
        .start()
        .await
        .expect("cluster starts")
}

/// POSTs `body` to `url` with the token (if any) as a bearer token.
async fn post(url: &str, token: Option<&str>, body: Value) -> http::HttpResponse {
    let authorization = token.map(|token| format!("Bearer {token}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(authorization) = &authorization {
        headers.push(("authorization", authorization.as_str()));
    }
    http::request("POST", url, &headers, body.to_string().into())
        .await
        .unwrap()
}

/// Checks a refusal: status, problem type, and an RFC 6750 challenge.
fn assert_refused(response: &http::HttpResponse, status: u16, slug: &str, case: &str) {
    assert_problem(response, status, slug, case);
    let challenge = response.header("www-authenticate").unwrap_or_default();
    if slug == "user-id-mismatch" {
        return;
    }
    assert!(
        challenge.starts_with("Bearer realm=\"fanfare\""),
        "{case}: {challenge}"
    );
    let code = match status {
        401 if slug == "token-missing" => None,
        401 => Some("invalid_token"),
        _ => Some("insufficient_scope"),
    };
    if let Some(code) = code {
        assert!(
            challenge.contains(&format!("error=\"{code}\"")),
            "{case}: {challenge}"
        );
    }
}

async fn origin_messages(cluster: &Cluster) -> u64 {
    let client = cluster.nats_client("dc1").await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("EVENTS_dc1").await.unwrap();
    stream.info().await.unwrap().state.messages
}

/// A compact JWS with an unsigned body and the given header: what an attacker tries.
fn forged(header: &Value, claims: &Claims) -> String {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = b64(header.to_string().as_bytes());
    let body = b64(&serde_json::to_vec(claims).unwrap());
    format!("{header}.{body}.")
}

/// One refused publish: what it is, where it goes, its token, body, status and problem slug.
type Refusal<'a> = (&'a str, &'a str, Option<String>, Value, u16, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_need_a_valid_token_in_scope_and_every_refusal_reaches_nothing() {
    let cluster = start().await;
    let frontend = cluster.frontend("dc1-fe1");
    let likes = format!("{frontend}/v1/videos/calm/likes");
    let comments = format!("{frontend}/v1/videos/calm/comments");
    // A public video: watched with no token at all.
    let mut bystander = cluster.watch("dc1-fe1", "calm").await.unwrap();

    // Valid tokens of every algorithm and both rotating HS256 kids: accepted, and the
    // comment's user is the token's subject.
    for (key, sub) in [
        (hs_old(), "alice-hs-old"),
        (hs_new(), "alice-hs-new"),
        (rsa(), "alice-rsa"),
        (ed(), "alice-ed"),
    ] {
        let token = token(&key, &claims(sub));
        let response = post(&comments, Some(&token), json!({ "text": sub })).await;
        assert_eq!(response.status, 202, "{sub}: {}", response.text());
        let response = post(&likes, Some(&token), json!({ "user_id": sub })).await;
        assert_eq!(response.status, 202, "{sub} like: {}", response.text());
        let received = receive(&mut bystander, 1, 1).await;
        assert_eq!(received.likes, 1, "{sub}");
        assert_eq!(received.comments.len(), 1, "{sub}");
        assert_eq!(
            received.comments[0]["user_id"], sub,
            "the token's sub is the user"
        );
        assert_eq!(received.comments[0]["text"], sub);
    }

    let now = unix_now();
    let other_ed = pem_key("ed-1", KeyAlgorithm::EdDSA, "ed25519-other-private.pem");
    let alice = claims("alice");
    let cases: Vec<Refusal> = vec![
        (
            "missing token",
            &likes,
            None,
            json!({}),
            401,
            "token-missing",
        ),
        (
            "malformed token",
            &likes,
            Some("not.a.jwt".to_owned()),
            json!({}),
            401,
            "token-malformed",
        ),
        (
            "expired",
            &comments,
            Some(token(
                &ed(),
                &Claims {
                    exp: now - 600,
                    ..alice.clone()
                },
            )),
            json!({ "text": "late" }),
            401,
            "token-expired",
        ),
        (
            "not yet valid",
            &likes,
            Some(token(
                &hs_old(),
                &Claims {
                    nbf: Some(now + 600),
                    ..alice.clone()
                },
            )),
            json!({}),
            401,
            "token-not-yet-valid",
        ),
        (
            "wrong key",
            &comments,
            Some(token(&other_ed, &alice)),
            json!({ "text": "forged" }),
            401,
            "token-bad-signature",
        ),
        (
            "unknown kid",
            &likes,
            Some(token(&hs_old().with_kid(Some("hs-retired")), &alice)),
            json!({}),
            401,
            "token-unknown-key",
        ),
        (
            "no kid among several keys",
            &likes,
            Some(token(&hs_old().with_kid(None), &alice)),
            json!({}),
            401,
            "token-unknown-key",
        ),
        (
            "wrong audience",
            &likes,
            Some(token(
                &rsa(),
                &Claims {
                    aud: "elsewhere".to_owned(),
                    ..alice.clone()
                },
            )),
            json!({}),
            401,
            "token-wrong-audience",
        ),
        (
            "wrong issuer",
            &likes,
            Some(token(
                &rsa(),
                &Claims {
                    iss: Some("evil".to_owned()),
                    ..alice.clone()
                },
            )),
            json!({}),
            401,
            "token-wrong-issuer",
        ),
        (
            "alg none",
            &comments,
            Some(forged(&json!({ "alg": "none", "kid": "hs-old" }), &alice)),
            json!({ "text": "unsigned" }),
            401,
            "token-algorithm-rejected",
        ),
        (
            "hs256 under the rsa key's kid",
            &likes,
            Some(token(&hs_old().with_kid(Some("rsa-1")), &alice)),
            json!({}),
            401,
            "token-algorithm-rejected",
        ),
        (
            "video out of scope",
            &likes,
            Some(token(
                &hs_new(),
                &alice.clone().videos(&["other", "calmer*"]),
            )),
            json!({}),
            403,
            "token-video-out-of-scope",
        ),
        (
            "action out of scope",
            &comments,
            Some(token(
                &hs_new(),
                &alice.clone().videos(&["calm"]).actions(&[Action::Like]),
            )),
            json!({ "text": "not allowed" }),
            403,
            "token-action-out-of-scope",
        ),
        (
            "body user differs from sub",
            &comments,
            Some(token(&ed(), &alice)),
            json!({ "user_id": "mallory", "text": "as someone else" }),
            403,
            "user-id-mismatch",
        ),
    ];
    let valid_like = token(&ed(), &claims("witness"));
    for (case, url, token, body, status, slug) in cases {
        let before = origin_messages(&cluster).await;
        let response = post(url, token.as_deref(), body).await;
        assert_refused(&response, status, slug, case);
        assert_eq!(
            origin_messages(&cluster).await,
            before,
            "{case}: nothing reached the origin stream"
        );
        // The bystander is unaffected: it gets the next valid like, once.
        let response = post(&likes, Some(&valid_like), json!({})).await;
        assert_eq!(response.status, 202, "{case}: {}", response.text());
        let received = receive(&mut bystander, 1, 0).await;
        assert_eq!(
            (received.likes, received.comment_ids.len()),
            (1, 0),
            "{case}"
        );
    }

    // Another authorization scheme is a malformed token, not a missing one.
    let response = http::request(
        "POST",
        &likes,
        &[
            ("content-type", "application/json"),
            ("authorization", "Basic YWxpY2U6cGFzcw=="),
        ],
        "{}".into(),
    )
    .await
    .unwrap();
    assert_refused(&response, 401, "token-malformed", "basic auth");

    // `fanfare token` mints what `fanfare publish --token` sends; the user is the subject.
    let minted = fanfare(&[
        "token",
        "--secret-file",
        fixture("hs256-two.secret").to_str().unwrap(),
        "--kid",
        "hs-new",
        "--sub",
        "cli-user",
        "--iss",
        ISSUER,
        "--videos",
        "calm,calm-*",
        "--actions",
        "comment",
        "--ttl",
        "5m",
    ]);
    assert!(minted.status.success(), "{minted:?}");
    let cli_token = String::from_utf8(minted.stdout).unwrap().trim().to_owned();
    let published = fanfare(&[
        "publish",
        "--url",
        &frontend,
        "--token",
        &cli_token,
        "comment",
        "calm",
        "from the cli",
    ]);
    assert!(published.status.success(), "{published:?}");
    let received = receive(&mut bystander, 0, 1).await;
    assert_eq!(received.comments[0]["user_id"], "cli-user");
    let refused = fanfare(&[
        "publish", "--url", &frontend, "--token", &cli_token, "like", "calm",
    ]);
    assert!(
        !refused.status.success(),
        "a like is outside the token's actions"
    );
    let answer = String::from_utf8_lossy(&refused.stdout);
    assert!(answer.starts_with("403"), "{answer}");
    assert!(answer.contains("token-action-out-of-scope"), "{answer}");
    // Every token refusal above was counted (the user id mismatch is a body problem, not a
    // token's): 13 from the matrix, the basic scheme, the CLI's like.
    let refused = cluster
        .metric("dc1-fe1", "fanfare_frontend_auth_refused_total")
        .await
        .unwrap();
    assert_eq!(refused, 15.0);
    let log = cluster.node_log("dc1-fe1").unwrap();
    assert!(
        !log.contains("authentication is OFF"),
        "a frontend with keys does not warn that auth is off"
    );
    cluster.stop().await;
}

/// A raw `GET` with `Content-Length: 0`: the listener hands such a request to the axum
/// router instead of serving it itself, so this reaches the fallback handler. Returns the
/// response head (and whatever of the body came with it).
async fn fallback_get(frontend: &str, target: &str, extra_headers: &str) -> String {
    let authority = frontend.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(authority).await.unwrap();
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {authority}\r\nAccept: text/event-stream\r\n\
         Content-Length: 0\r\n{extra_headers}\r\n"
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(WAIT, async {
        loop {
            let read = socket.read(&mut buf).await.unwrap_or(0);
            if read == 0 {
                break;
            }
            received.extend_from_slice(&buf[..read]);
            let text = String::from_utf8_lossy(&received);
            // A problem body ends with '}'; a stream is recognised by its head.
            if text.contains("\r\n\r\n") && (text.ends_with('}') || text.contains("event-stream")) {
                break;
            }
        }
    })
    .await;
    String::from_utf8_lossy(&received).into_owned()
}

/// Opens a viewer stream, expecting a refusal; returns the status and problem type.
async fn refused_stream(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    match SseStream::connect(url, headers).await {
        Ok(_) => panic!("{url} opened"),
        Err(SseError::Status { status, body }) => {
            let problem: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            (status, problem["type"].as_str().unwrap_or(&body).to_owned())
        }
        Err(error) => panic!("{url}: {error}"),
    }
}

fn problem(slug: &str) -> String {
    format!("urn:fanfare:problem:{slug}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_videos_need_a_view_token_on_every_open_and_resume_and_tokens_are_never_logged() {
    let cluster = start().await;
    let frontend = cluster.frontend("dc1-fe1");
    let events = cluster.events_url("dc1-fe1", "vip-show");
    let publisher = token(&hs_new(), &claims("host"));
    let viewer = token(
        &ed(),
        &claims("fan").videos(&["vip-*"]).actions(&[Action::View]),
    );
    let for_another_video = token(
        &ed(),
        &claims("fan")
            .videos(&["vip-other"])
            .actions(&[Action::View]),
    );
    let publish_only = token(
        &ed(),
        &claims("fan").actions(&[Action::Like, Action::Comment]),
    );
    let expired = token(
        &ed(),
        &Claims {
            exp: unix_now() - 600,
            ..claims("fan")
        },
    );
    let mut all_tokens = vec![
        publisher.clone(),
        viewer.clone(),
        for_another_video.clone(),
        publish_only.clone(),
        expired.clone(),
    ];

    // Refused: no token, a token for another video, one without `view`, an expired one.
    assert_eq!(
        refused_stream(&events, &[]).await,
        (401, problem("token-missing"))
    );
    let query = |token: &str| format!("{events}?access_token={token}");
    assert_eq!(
        refused_stream(&query(&for_another_video), &[]).await,
        (403, problem("token-video-out-of-scope"))
    );
    assert_eq!(
        refused_stream(&query(&publish_only), &[]).await,
        (403, problem("token-action-out-of-scope"))
    );
    let bearer_expired = format!("Bearer {expired}");
    assert_eq!(
        refused_stream(&events, &[("authorization", &bearer_expired)]).await,
        (401, problem("token-expired"))
    );
    // The router's handler (the fallback path) refuses the same way.
    let head = fallback_get(&frontend, "/v1/videos/vip-show/events", "").await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(head.contains(&problem("token-missing")), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{head}"
    );

    // Allowed: the token in the query, in the cookie, in the Authorization header, and on the
    // fallback path; a public video with none.
    let mut by_query = SseStream::connect(&query(&viewer), &[]).await.unwrap();
    let cookie = format!("theme=dark; fanfare_token={viewer}");
    let mut by_cookie = SseStream::connect(&events, &[("cookie", &cookie)])
        .await
        .unwrap();
    let bearer = format!("Bearer {viewer}");
    let mut by_header = SseStream::connect(&events, &[("authorization", &bearer)])
        .await
        .unwrap();
    let head = fallback_get(
        &frontend,
        &format!("/v1/videos/vip-show/events?access_token={viewer}"),
        "",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let _public = SseStream::connect(&cluster.events_url("dc1-fe1", "open-show"), &[])
        .await
        .expect("a public video needs no token");
    cluster
        .wait_for_interest("dc1", "vip-show", &["dc1-fe1"], WAIT)
        .await
        .unwrap();

    let comments = format!("{frontend}/v1/videos/vip-show/comments");
    let first = post(&comments, Some(&publisher), json!({ "text": "first" })).await;
    assert_eq!(first.status, 202, "{}", first.text());
    for viewer_stream in [&mut by_query, &mut by_cookie, &mut by_header] {
        let received = receive(viewer_stream, 0, 1).await;
        assert_eq!(received.comments.len(), 1);
        assert_eq!(received.comments[0]["user_id"], "host");
    }
    let last_id = by_query
        .last_event_id()
        .expect("comments carry ids")
        .to_owned();
    drop(by_query);
    let second = post(&comments, Some(&publisher), json!({ "text": "second" })).await;
    assert_eq!(second.status, 202, "{}", second.text());
    let second_id = second.json::<Value>().unwrap()["comment_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // A resume is checked like any open: refused without a token, replayed with one.
    assert_eq!(
        refused_stream(&events, &[("Last-Event-ID", &last_id)]).await,
        (401, problem("token-missing"))
    );
    let resume_query = format!("{events}?last_event_id={last_id}");
    assert_eq!(
        refused_stream(&resume_query, &[]).await,
        (401, problem("token-missing"))
    );
    let mut resumed = SseStream::connect(&query(&viewer), &[("Last-Event-ID", &last_id)])
        .await
        .unwrap();
    let replayed = receive(&mut resumed, 0, 1).await;
    assert_eq!(replayed.comment_ids, [second_id], "only what was missed");

    // Tokens of a rejected publish, too.
    let refused_publish = token(&hs_old(), &claims("x").videos(&["elsewhere"]));
    let response = post(&comments, Some(&refused_publish), json!({ "text": "no" })).await;
    assert_eq!(response.status, 403);
    all_tokens.push(refused_publish);

    // Not a byte of any token in the frontend's log, at trace level, nor its signature alone.
    // Stopped first, so its log is complete (its last line says so).
    cluster.kill("dc1-fe1", libc::SIGTERM).await.unwrap();
    let log = wait::until("the frontend's complete log", WAIT, || async {
        cluster
            .node_log("dc1-fe1")
            .ok()
            .filter(|log| log.contains("frontend stopped"))
    })
    .await
    .unwrap();
    assert!(log.contains("frontend listening"), "the log was captured");
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "at a verbose level"
    );
    for token in &all_tokens {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!log.contains(token.as_str()), "a token leaked into the log");
        assert!(
            !log.contains(signature),
            "a token's signature leaked into the log"
        );
    }
    cluster.stop().await;
}
