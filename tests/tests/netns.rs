//! Datacenters as separate hosts: every datacenter in its own network namespace with its own
//! address (`fanfare up --netns`), gateways crossing veth links and a bridge, and partitions
//! cut in the kernel by nftables. The same fan-out, partition and resume checks as on
//! loopback, then nothing of the namespaces is left.
//!
//! Root only, and never skipped: scripts/test runs as root in CI; without root the test fails
//! and says so.

mod common;

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use common::{comment, like, receive, receive_within, SMALL};
use fanfare_supervisor::LinkMode;
use fanfare_testkit::sse::SseStream;
use fanfare_testkit::Cluster;

const DATACENTERS: [&str; 3] = ["dc1", "dc2", "dc3"];
/// Bound on convergence after the heal (a lost event fails instead of hanging the test).
const HEAL_WAIT: Duration = Duration::from_secs(45);

fn inode(path: &std::path::Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .ino()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datacenters_in_their_own_namespaces_fan_out_survive_a_kernel_cut_and_resume() {
    assert!(
        fanfare_supervisor::netns::is_root(),
        "this test runs fanfare in network namespaces and needs root (scripts/test runs as \
         root in CI); run it as root"
    );
    let mut builder = Cluster::builder().netns();
    for dc in DATACENTERS {
        builder = builder.dc(dc, SMALL);
    }
    let cluster = builder.start().await.expect("cluster starts");

    // Every node lives at its datacenter's own address, in its datacenter's namespace.
    let mut namespaces = Vec::new();
    for dc in DATACENTERS {
        let namespace = cluster.namespace(dc).expect("a namespace per datacenter");
        let url = cluster.frontend(&format!("{dc}-fe1"));
        assert!(url.starts_with("http://198.18."), "{dc}: {url}");
        for node in [
            format!("{dc}-nats1"),
            format!("{dc}-disp1"),
            format!("{dc}-fe1"),
        ] {
            let pid = cluster.pid(&node).expect("running");
            let process_ns = std::path::PathBuf::from(format!("/proc/{pid}/ns/net"));
            assert_eq!(
                inode(&process_ns),
                inode(&namespace),
                "{node} runs in {dc}'s namespace"
            );
        }
        namespaces.push(namespace);
    }
    let dc1 = cluster.frontend("dc1-fe1");
    let dc2 = cluster.frontend("dc2-fe1");
    let dc3 = cluster.frontend("dc3-fe1");

    // Fan-out across the links: one like and one comment from dc1 reach every datacenter once.
    let mut viewers: Vec<SseStream> = Vec::new();
    for dc in DATACENTERS {
        viewers.push(cluster.watch(&format!("{dc}-fe1"), "hosts").await.unwrap());
    }
    let mut leaver = cluster.watch("dc1-fe1", "hosts").await.unwrap();
    let first = comment(&dc1, "hosts", "from dc1").await.unwrap();
    like(&dc1, "hosts", "ana").await.unwrap();
    for (viewer, dc) in viewers.iter_mut().zip(DATACENTERS) {
        let received = receive(viewer, 1, 1).await;
        assert_eq!(received.comment_ids, std::slice::from_ref(&first), "{dc}");
        assert_eq!(received.likes, 1, "{dc}");
    }
    assert_eq!(receive(&mut leaver, 1, 1).await.comment_ids, [first]);
    let last_id = leaver.last_event_id().unwrap().to_owned();
    drop(leaver);

    // dc2 cut off in the kernel: each side serves itself and sees only what it can reach.
    cluster.partition(&["dc2"], LinkMode::Reset).await;
    let mut missed = Vec::new();
    for index in 0..3 {
        missed.push(
            comment(&dc1, "hosts", &format!("dc1 during the cut {index}"))
                .await
                .unwrap(),
        );
    }
    let isolated = comment(&dc2, "hosts", "dc2 during the cut").await.unwrap();
    let from_dc3 = comment(&dc3, "hosts", "dc3 during the cut").await.unwrap();
    let during: Vec<_> = {
        let mut during = Vec::new();
        for (viewer, dc) in viewers.iter_mut().zip(DATACENTERS) {
            let expected = if dc == "dc2" { 1 } else { 4 };
            let received = receive(viewer, 0, expected).await;
            let mut origins: Vec<String> = received
                .comments
                .iter()
                .map(|c| c["origin_dc"].as_str().unwrap_or_default().to_owned())
                .collect();
            origins.sort();
            origins.dedup();
            let reachable = if dc == "dc2" {
                vec!["dc2"]
            } else {
                vec!["dc1", "dc3"]
            };
            assert_eq!(
                origins, reachable,
                "{dc} sees only what it can reach during the cut"
            );
            assert_eq!(received.comment_ids.len(), expected, "{dc} during the cut");
            during.push(received);
        }
        during
    };

    // Resume during the cut, through another datacenter, with the last event id.
    let mut back = SseStream::connect(
        &cluster.events_url("dc3-fe1", "hosts"),
        &[("Last-Event-ID", last_id.as_str())],
    )
    .await
    .expect("resume in dc3");
    let resumed = receive(&mut back, 0, missed.len() + 1).await;
    let mut expected_resume = missed.clone();
    expected_resume.push(from_dc3.clone());
    let mut got = resumed.comment_ids.clone();
    got.sort();
    expected_resume.sort();
    assert_eq!(
        got, expected_resume,
        "the resumed viewer gets what it missed, once"
    );

    // Heal: everyone gets the rest exactly once.
    cluster.heal().await;
    let all: Vec<String> = [missed.clone(), vec![isolated.clone(), from_dc3.clone()]].concat();
    for ((viewer, dc), during) in viewers.iter_mut().zip(DATACENTERS).zip(&during) {
        let missing = all.len() - during.comment_ids.len();
        let after = receive_within(viewer, 0, missing, HEAL_WAIT).await;
        let mut ids: Vec<String> = during
            .comment_ids
            .iter()
            .chain(&after.comment_ids)
            .cloned()
            .collect();
        ids.sort();
        let mut expected = all.clone();
        expected.sort();
        assert_eq!(
            ids, expected,
            "{dc}: every comment of the cut exactly once after the heal"
        );
        eprintln!("{dc}: caught up {:?} after the heal", after.complete_after);
    }
    drop(back);
    drop(viewers);
    tokio::time::timeout(Duration::from_secs(60), cluster.stop())
        .await
        .expect("cluster stops");
    for namespace in namespaces {
        assert!(
            !namespace.exists(),
            "{} is removed on stop",
            namespace.display()
        );
    }
}

/// `fanfare up --netns` killed with SIGKILL leaves its namespaces behind; the next start in
/// the same run directory removes them first, `fanfare chaos` cuts and heals in the kernel,
/// and a SIGTERM stop leaves nothing.
#[test]
fn a_crashed_netns_run_is_cleaned_up_by_the_next_start() {
    use std::process::Command;
    assert!(
        fanfare_supervisor::netns::is_root(),
        "this test runs fanfare up --netns and needs root (scripts/test runs as root in CI)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let topology = fanfare_topology::Topology::builder()
        .auth(fanfare_auth::AuthSettings::off())
        .dc("dc1", SMALL)
        .dc("dc2", SMALL)
        .build_with_free_ports()
        .expect("topology");
    let topology_file = dir.path().join("t.toml");
    std::fs::write(&topology_file, topology.to_toml_string()).expect("write");
    let run_dir = dir.path().join("run");
    let namespaces: Vec<std::path::PathBuf> = ["dc1", "dc2"]
        .iter()
        .map(|dc| {
            std::path::Path::new("/run/netns")
                .join(fanfare_supervisor::netns::namespace_name(&run_dir, dc))
        })
        .collect();
    let fanfare = fanfare_testkit::cluster::fanfare_bin().expect("fanfare");
    let up = || common::up::start_up_with(&topology_file, &run_dir, &["--netns"]);
    let chaos = |args: &[&str]| {
        let output = Command::new(&fanfare)
            .arg("chaos")
            .args(args)
            .arg("--run-dir")
            .arg(&run_dir)
            .output()
            .expect("fanfare chaos runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };

    let crashed = up();
    assert!(
        namespaces.iter().all(|ns| ns.exists()),
        "namespaces while running"
    );
    crashed.crash();
    assert!(
        namespaces.iter().all(|ns| ns.exists()),
        "a crash leaves the namespaces"
    );

    // The next start in the same run directory removes them first: creating them again
    // would fail otherwise.
    let again = up();
    let status = chaos(&["partition", "dc2", "--mode", "drop"]);
    assert!(status.contains("drop"), "{status}");
    let table = Command::new("ip")
        .args(["netns", "exec"])
        .arg(namespaces[0].file_name().expect("name"))
        .args(["nft", "list", "table", "inet", "fanfare"])
        .output()
        .expect("nft runs");
    let rules = String::from_utf8_lossy(&table.stdout);
    assert!(
        rules.contains("drop"),
        "dc1's namespace drops dc2's packets:\n{rules}"
    );
    chaos(&["heal"]);
    // SIGTERM and a clean stop.
    drop(again);
    assert!(
        namespaces.iter().all(|ns| !ns.exists()),
        "nothing is left after the stop"
    );
}
