//! NATS security of generated topologies: every node has its own NATS user, the servers refuse
//! wrong credentials, each role is refused what it must not do, and TLS carries the whole
//! fan-out when it is switched on.

mod common;

use std::time::Duration;

use common::{comment, like, open, receive, SMALL, WAIT};
use fanfare_testkit::cluster::fanfare_bin;
use fanfare_testkit::Cluster;
use fanfare_topology::ADMIN_USER;
use tokio::sync::mpsc;

/// Connects as NATS user `user` of `dc` with its own credentials, without the fabric's
/// connect, and hands back every server error the connection reports (permission violations
/// arrive as asynchronous `-ERR`s).
async fn connect_watching(
    cluster: &Cluster,
    dc: &str,
    user: &str,
) -> (async_nats::Client, mpsc::UnboundedReceiver<String>) {
    let settings = cluster.nats_settings(dc, user);
    let password_file = settings.password_file.expect("a password file per user");
    let password = std::fs::read_to_string(&password_file).expect("password file readable");
    let (errors, reported) = mpsc::unbounded_channel();
    let mut options = async_nats::ConnectOptions::with_user_and_password(user.to_owned(), password)
        .custom_inbox_prefix(format!("_INBOX.{user}"))
        .event_callback(move |event| {
            let errors = errors.clone();
            async move {
                if let async_nats::Event::ServerError(error) = event {
                    let _ = errors.send(error.to_string());
                }
            }
        });
    if let Some(ca) = settings.tls_ca_file {
        options = options.add_root_certificates(ca).require_tls(true);
    }
    let client = options
        .connect(settings.urls)
        .await
        .expect("a node's own credentials are accepted");
    (client, reported)
}

/// Waits for a server error that mentions `what` (other errors are skipped).
async fn violation(reported: &mut mpsc::UnboundedReceiver<String>, what: &str) -> String {
    let found = tokio::time::timeout(WAIT, async {
        while let Some(error) = reported.recv().await {
            if error.contains("Permissions Violation") && error.contains(what) {
                return Some(error);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(error)) => error,
        _ => panic!("no permissions violation for {what} within {WAIT:?}"),
    }
}

async fn origin_messages(cluster: &Cluster, stream: &str) -> u64 {
    let js = async_nats::jetstream::new(cluster.nats_client("dc1").await.unwrap());
    let mut stream = js.get_stream(stream).await.unwrap();
    stream.info().await.unwrap().state.messages
}

/// A frontend started with a wrong password is refused by the server: it exits non-zero at
/// once, saying that the credentials were refused, instead of retrying for ever; a raw client
/// with a wrong password, or none, cannot connect either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_refused_by_the_server() {
    let cluster = Cluster::builder()
        .dc("dc1", SMALL)
        .start()
        .await
        .expect("cluster starts");

    // The running frontend's own config, with a wrong password and a port of its own.
    let config = cluster.run_dir().join("nodes/dc1-fe1.toml");
    let text = std::fs::read_to_string(&config).expect("node config");
    let dir = tempfile::tempdir().expect("tempdir");
    let wrong = dir.path().join("wrong.password");
    std::fs::write(&wrong, "not-the-password-of-dc1-fe1").expect("write");
    let mut replaced = 0;
    let rewritten: Vec<String> = text
        .lines()
        .map(|line| {
            if line.starts_with("listen = ") {
                replaced += 1;
                "listen = \"127.0.0.1:0\"".to_owned()
            } else if line.starts_with("password_file = ") {
                replaced += 1;
                format!("password_file = {:?}", wrong.display().to_string())
            } else {
                line.to_owned()
            }
        })
        .collect();
    assert_eq!(replaced, 2, "listen and password_file in\n{text}");
    let impostor = dir.path().join("impostor.toml");
    std::fs::write(&impostor, rewritten.join("\n")).expect("write");

    let run = tokio::process::Command::new(fanfare_bin().unwrap())
        .args(["frontend", "--config"])
        .arg(&impostor)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(WAIT, run)
        .await
        .expect("a refused node exits instead of retrying")
        .expect("fanfare runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "exit status {}", output.status);
    assert!(
        stderr.contains("refused the credentials of user dc1-fe1")
            && stderr.contains("authorization violation"),
        "stderr: {stderr}"
    );

    // A raw client: wrong password, then no credentials at all.
    let url = cluster.nats_urls("dc1")[0].clone();
    let wrong_password =
        async_nats::ConnectOptions::with_user_and_password(ADMIN_USER.into(), "wrong".into())
            .connect(url.as_str())
            .await
            .expect_err("a wrong password is refused");
    assert_eq!(
        wrong_password.kind(),
        async_nats::ConnectErrorKind::AuthorizationViolation,
        "{wrong_password}"
    );
    let anonymous = async_nats::connect(url.as_str())
        .await
        .expect_err("no credentials are refused");
    assert_eq!(
        anonymous.kind(),
        async_nats::ConnectErrorKind::AuthorizationViolation,
        "{anonymous}"
    );
    cluster.stop().await;
}

/// Each role is refused, by the server, what it must not do: a frontend cannot send to
/// another frontend's inbox, read another frontend's inbox or a dispatcher's replies, pull a
/// dispatch partition or delete a stream; a dispatcher cannot publish interactions into an
/// origin stream. Nothing it tried reached the streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_is_refused_what_it_must_not_do() {
    let two_frontends = fanfare_testkit::DcShape {
        nats: 1,
        dispatchers: 1,
        frontends: 2,
    };
    let cluster = Cluster::builder()
        .dc("dc1", two_frontends)
        .dc("dc2", SMALL)
        .start()
        .await
        .expect("cluster starts");

    let (frontend, mut frontend_errors) = connect_watching(&cluster, "dc1", "dc1-fe1").await;

    // Another frontend's inbox: neither publish nor subscribe.
    frontend
        .publish("fanfare.dc1.fe.dc1-fe2", "forged batch".into())
        .await
        .unwrap();
    frontend.flush().await.unwrap();
    let error = violation(&mut frontend_errors, "fanfare.dc1.fe.dc1-fe2").await;
    assert!(error.contains("Publish"), "{error}");
    let _snoop = frontend.subscribe("fanfare.dc1.fe.dc1-fe2").await.unwrap();
    frontend.flush().await.unwrap();
    let error = violation(&mut frontend_errors, "fanfare.dc1.fe.dc1-fe2").await;
    assert!(error.contains("Subscription"), "{error}");

    // Dispatcher-only subjects: its replies and the dispatch partitions.
    let _replies = frontend.subscribe("_INBOX.dc1-disp1.>").await.unwrap();
    frontend.flush().await.unwrap();
    violation(&mut frontend_errors, "_INBOX.dc1-disp1.>").await;
    let js = async_nats::jetstream::new(frontend.clone());
    let pull = js
        .get_stream("FANOUT_dc1")
        .await
        .expect("a frontend may read the fan-out stream's info")
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>("dispatch-p0")
        .await;
    assert!(pull.is_err(), "a frontend opened a dispatch consumer");
    violation(
        &mut frontend_errors,
        "$JS.API.CONSUMER.INFO.FANOUT_dc1.dispatch-p0",
    )
    .await;

    // Administration: deleting an origin stream.
    let deleted = js.delete_stream("EVENTS_dc1").await;
    assert!(deleted.is_err(), "a frontend deleted a stream");
    violation(&mut frontend_errors, "$JS.API.STREAM.DELETE.EVENTS_dc1").await;
    assert_eq!(
        origin_messages(&cluster, "EVENTS_dc1").await,
        0,
        "stream still there, empty"
    );

    // A dispatcher publishing an interaction into dc1's origin stream.
    let (dispatcher, mut dispatcher_errors) = connect_watching(&cluster, "dc1", "dc1-disp1").await;
    let djs = async_nats::jetstream::new(dispatcher.clone());
    let interaction = serde_json::json!({
        "kind": "likes", "video_id": "forged", "count": 1000, "origin_dc": "dc1", "published_at": 0
    });
    let stored = djs
        .publish(
            "fanfare.events.dc1.forged.likes",
            interaction.to_string().into(),
        )
        .await;
    // Refused before it is sent on, so no ack ever comes.
    let acked = match stored {
        Ok(ack) => tokio::time::timeout(Duration::from_secs(5), ack).await,
        Err(error) => panic!("publish could not even be sent: {error}"),
    };
    assert!(
        !matches!(acked, Ok(Ok(_))),
        "the origin stream acknowledged a dispatcher's publish"
    );
    violation(&mut dispatcher_errors, "fanfare.events.dc1.forged.likes").await;
    assert_eq!(
        origin_messages(&cluster, "EVENTS_dc1").await,
        0,
        "nothing reached the origin stream"
    );

    // The frontend's own permissions still work: its datacenter's origin subjects.
    let published = js
        .publish(
            "fanfare.events.dc1.allowed.likes",
            interaction.to_string().into(),
        )
        .await
        .unwrap()
        .await
        .expect("a frontend may store interactions of its datacenter");
    assert_eq!(published.stream, "EVENTS_dc1");
    // ...and not another datacenter's.
    frontend
        .publish("fanfare.events.dc2.forged.likes", "x".into())
        .await
        .unwrap();
    frontend.flush().await.unwrap();
    violation(&mut frontend_errors, "fanfare.events.dc2.forged.likes").await;
    assert_eq!(origin_messages(&cluster, "EVENTS_dc2").await, 0);
    cluster.stop().await;
}

/// With TLS on client, route and gateway connections (throwaway CA per run), a like and a
/// comment posted in dc1 reach viewers in dc1 and dc2 exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_runs_over_tls() {
    let ha = fanfare_testkit::DcShape {
        nats: 2,
        dispatchers: 1,
        frontends: 1,
    };
    let cluster = Cluster::builder()
        .dc("dc1", ha)
        .dc("dc2", SMALL)
        .settings(|settings| settings.nats.tls = true)
        .start()
        .await
        .expect("cluster starts");
    let config = std::fs::read_to_string(cluster.run_dir().join("nats/dc1-nats1.conf")).unwrap();
    assert_eq!(
        config.matches("tls {").count(),
        3,
        "client, cluster and gateway tls in\n{config}"
    );

    let mut viewers = Vec::new();
    for frontend in ["dc1-fe1", "dc2-fe1"] {
        viewers.push((
            frontend,
            open(&cluster.events_url(frontend, "secure")).await,
        ));
    }
    for dc in ["dc1", "dc2"] {
        let frontend = format!("{dc}-fe1");
        cluster
            .wait_for_interest(dc, "secure", &[frontend.as_str()], WAIT)
            .await
            .unwrap();
    }
    let publisher = cluster.frontend("dc1-fe1");
    like(&publisher, "secure", "u1").await.unwrap();
    like(&publisher, "secure", "u2").await.unwrap();
    let id = comment(&publisher, "secure", "over tls").await.unwrap();
    for (frontend, viewer) in &mut viewers {
        let received = receive(viewer, 2, 1).await;
        assert_eq!(received.likes, 2, "likes at {frontend}");
        assert_eq!(
            received.comment_ids,
            vec![id.clone()],
            "comment at {frontend}"
        );
        assert!(received.other.is_empty(), "{:?}", received.other);
    }
    cluster.stop().await;
}
