//! The `fanfare` command line: topology validation, endpoints, and `fanfare up` as a user
//! runs it.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{like, open, receive, WAIT};
use fanfare_testkit::cluster::{fanfare_bin, nats_server_bin, workspace_root};
use fanfare_testkit::{http, wait};
use fanfare_topology::{Endpoints, Topology};

fn fanfare(args: &[&str]) -> std::process::Output {
    Command::new(fanfare_bin().unwrap())
        .args(args)
        .current_dir(workspace_root())
        .output()
        .expect("fanfare runs")
}

const VALID: &str = r#"
[auth]
mode = "off"
[[datacenter]]
name = "dc1"
[[datacenter]]
name = "dc2"
[[nats]]
name = "dc1-nats1"
dc = "dc1"
client_port = 4301
cluster_port = 4302
gateway_port = 4303
monitor_port = 4304
[[nats]]
name = "dc2-nats1"
dc = "dc2"
client_port = 4311
cluster_port = 4312
gateway_port = 4313
monitor_port = 4314
[[dispatcher]]
name = "dc1-disp1"
dc = "dc1"
admin = "127.0.0.1:4305"
[[dispatcher]]
name = "dc2-disp1"
dc = "dc2"
admin = "127.0.0.1:4315"
[[frontend]]
name = "dc1-fe1"
dc = "dc1"
listen = "127.0.0.1:4306"
[[frontend]]
name = "dc2-fe1"
dc = "dc2"
listen = "127.0.0.1:4316"
"#;

fn write_topology(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("topology.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn topology_check_accepts_the_shipped_files() {
    for file in ["topology/local-3dc.toml", "topology/local-3dc-ha.toml"] {
        let output = fanfare(&["topology", "check", file]);
        assert!(
            output.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn topology_check_rejects_broken_files_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            VALID.replace("listen = \"127.0.0.1:4316\"", "listen = \"127.0.0.1:4306\""),
            "frontend[1].listen",
            "already used by dc1-fe1",
        ),
        (
            VALID.replace("dc = \"dc2\"\nadmin", "dc = \"dc9\"\nadmin"),
            "dispatcher[1].dc",
            "unknown datacenter \"dc9\"",
        ),
        (
            VALID.replace("name = \"dc2-fe1\"", "name = \"dc1-fe1\""),
            "frontend[1].name",
            "duplicate node name",
        ),
        (
            VALID.replace("name = \"dc1-nats1\"", "name = \"DC1 nats\""),
            "nats[0].name",
            "invalid name",
        ),
        (
            format!("[settings]\npartitions = 0\n{VALID}"),
            "settings.partitions",
            "",
        ),
        (
            format!("[settings]\nparitions = 4\n{VALID}"),
            "paritions",
            "",
        ),
        (
            VALID.replace("[auth]\nmode = \"off\"\n", ""),
            "auth.keys",
            "authentication is on but no keys are configured",
        ),
        (
            VALID.replace(
                "mode = \"off\"",
                "mode = \"on\"\nprivate_videos = [\"a*b\"]",
            ),
            "auth.private_videos[0]",
            "'*' may only end a pattern",
        ),
    ];
    for (text, field, message) in cases {
        let path = write_topology(dir.path(), &text);
        let output = fanfare(&["topology", "check", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{field}: accepted");
        assert!(
            stderr.contains(path.to_str().unwrap()),
            "names the file: {stderr}"
        );
        assert!(stderr.contains(field), "names {field}: {stderr}");
        assert!(stderr.contains(message), "says {message:?}: {stderr}");
    }
}

#[test]
fn topology_endpoints_prints_the_contract_json() {
    let output = fanfare(&["topology", "endpoints", "topology/local-3dc.toml", "--json"]);
    assert!(output.status.success());
    let endpoints: Endpoints = serde_json::from_slice(&output.stdout).expect("contract json");
    let names: Vec<&str> = endpoints
        .datacenters
        .iter()
        .map(|dc| dc.name.as_str())
        .collect();
    assert_eq!(names, ["dc1", "dc2", "dc3"]);
    for dc in &endpoints.datacenters {
        assert_eq!(
            (dc.frontends.len(), dc.nats.len(), dc.dispatchers.len()),
            (2, 1, 2)
        );
        assert!(dc.frontends[0].url.starts_with("http://127.0.0.1:"));
        assert!(dc.nats[0].client_url.starts_with("nats://127.0.0.1:"));
    }
}

fn running(pid: u32) -> bool {
    // A zombie is not running: only its exit status is left.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// `fanfare up` on the default topology comes up, serves a like across datacenters, obeys
/// `fanfare chaos`, and on SIGTERM stops every process it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanfare_up_serves_the_default_topology_and_leaves_nothing_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let mut up = Command::new(fanfare_bin().unwrap())
        .args(["up", "topology/local-3dc.toml", "--quiet", "--run-dir"])
        .arg(&run_dir)
        .arg("--nats-server")
        .arg(nats_server_bin().unwrap())
        .current_dir(workspace_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fanfare up starts");
    let stdout = up.stdout.take().unwrap();
    // Its stderr still reaches the test output; the auth-off warning is noted on the way.
    let stderr = up.stderr.take().unwrap();
    let (warned_sender, warned) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("authentication is OFF") {
                let _ = warned_sender.send(());
            }
            eprintln!("{line}");
        }
    });
    let (ready_sender, ready) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line == "ready" {
                let _ = ready_sender.send(());
            }
        }
    });
    let came_up = ready.recv_timeout(Duration::from_secs(120)).is_ok();
    if !came_up {
        let _ = up.kill();
        panic!("fanfare up did not print ready within 120s");
    }
    // The local topology runs with auth off, and says so: fanfare up, and each frontend.
    assert!(
        warned.recv_timeout(WAIT).is_ok(),
        "fanfare up warns that authentication is off"
    );
    let frontend_log = std::fs::read_to_string(run_dir.join("logs/dc1-fe1.log")).unwrap();
    assert!(
        frontend_log.contains("authentication is OFF"),
        "{frontend_log}"
    );

    let output = fanfare(&["topology", "endpoints", "topology/local-3dc.toml", "--json"]);
    let endpoints: Endpoints = serde_json::from_slice(&output.stdout).unwrap();
    let dc2_frontend = &endpoints.datacenters[1].frontends[0].url;
    let dc1_frontend = &endpoints.datacenters[0].frontends[0].url;
    let mut viewer = open(&format!("{dc2_frontend}/v1/videos/up-test/events")).await;
    let topology = Topology::load(&workspace_root().join("topology/local-3dc.toml")).unwrap();
    let dc2 = topology.datacenter("dc2").unwrap();
    for dispatcher in &dc2.dispatchers {
        let url = format!("http://{}/v1/table", dispatcher.admin);
        wait::until("dc2's dispatchers to see the viewer", WAIT, || async {
            let table: serde_json::Value = http::get(&url).await.ok()?.json().ok()?;
            (table["up-test"][0] == dc2.frontends[0].name.as_str()).then_some(())
        })
        .await
        .unwrap();
    }
    like(dc1_frontend, "up-test", "walker").await.unwrap();
    let received = receive(&mut viewer, 1, 0).await;
    assert_eq!(
        received.likes, 1,
        "the like posted in dc1 reached the viewer in dc2, once"
    );
    assert_eq!(received.last_total, 1);

    // `fanfare publish` finds dc3's frontend in the topology and prints the answer.
    let published = fanfare(&[
        "publish",
        "--dc",
        "dc3",
        "comment",
        "up-test",
        "from the command line",
    ]);
    assert!(published.status.success(), "{published:?}");
    let answer = String::from_utf8_lossy(&published.stdout);
    assert!(answer.starts_with("202 "), "{answer}");
    let received = receive(&mut viewer, 0, 1).await;
    assert_eq!(received.comments.len(), 1, "the dc2 viewer got it, once");
    assert_eq!(received.comments[0]["text"], "from the command line");
    assert_eq!(received.comments[0]["origin_dc"], "dc3");
    let refused = fanfare(&["publish", "like", "a.b"]);
    assert!(!refused.status.success(), "an invalid video id fails");
    assert!(String::from_utf8_lossy(&refused.stdout).starts_with("400 "));

    // Chaos through the command line, against this running topology.
    let run_dir_arg = run_dir.to_str().unwrap();
    let chaos = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["chaos"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--run-dir", run_dir_arg]);
        let output = fanfare(&all);
        assert!(
            output.status.success(),
            "fanfare {all:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let status = fanfare(&["chaos", "status", "--json", "--run-dir", run_dir_arg]);
        serde_json::from_slice(&status.stdout).expect("status json")
    };
    let link_modes = |status: &serde_json::Value| -> Vec<String> {
        status["links"]
            .as_array()
            .unwrap()
            .iter()
            .map(|link| {
                format!(
                    "{}-{} {}",
                    link["between"][0], link["between"][1], link["mode"]
                )
            })
            .map(|text| text.replace('"', ""))
            .collect()
    };
    let status = chaos(&["status"]);
    assert_eq!(
        link_modes(&status),
        ["dc1-dc2 up", "dc1-dc3 up", "dc2-dc3 up"]
    );
    let status = chaos(&["partition", "dc1", "dc2", "--mode", "drop"]);
    assert_eq!(
        link_modes(&status),
        ["dc1-dc2 drop", "dc1-dc3 up", "dc2-dc3 up"]
    );
    let status = chaos(&["heal"]);
    assert_eq!(
        link_modes(&status),
        ["dc1-dc2 up", "dc1-dc3 up", "dc2-dc3 up"]
    );
    let pid_of = |status: &serde_json::Value, name: &str| {
        status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|node| node["name"] == name)
            .and_then(|node| node["pid"].as_u64())
    };
    let before = pid_of(&status, "dc3-fe2").expect("dc3-fe2 runs");
    let status = chaos(&["kill", "dc3-fe2"]);
    assert_eq!(pid_of(&status, "dc3-fe2"), None, "killed");
    let status = chaos(&["restart", "dc3-fe2"]);
    let after = pid_of(&status, "dc3-fe2").expect("dc3-fe2 runs again");
    assert_ne!(before, after);
    let bad = fanfare(&["chaos", "partition", "dc9", "--run-dir", run_dir_arg]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("dc9"));

    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("state.json")).unwrap())
            .unwrap();
    let pids: Vec<u32> = state["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|node| node["pid"].as_u64())
        .map(|pid| pid as u32)
        .collect();
    assert_eq!(pids.len(), 15, "3 nats servers, 6 dispatchers, 6 frontends");
    drop(viewer);

    let up_pid = libc::pid_t::try_from(up.id()).unwrap();
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child's.
    #[allow(unsafe_code)]
    let signalled = unsafe { libc::kill(up_pid, libc::SIGTERM) } == 0;
    assert!(signalled);
    let stop_deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = up.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > stop_deadline {
            let _ = up.kill();
            panic!("fanfare up did not stop within 60s of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "fanfare up exited with {status}");
    let left: Vec<u32> = pids.into_iter().filter(|pid| running(*pid)).collect();
    assert!(left.is_empty(), "processes left running: {left:?}");
}
