//! Every benchmark scenario script in `scripts/bench/` at smoke size (`BENCH_SMOKE=1`), as
//! its users run it: the script starts its own `fanfare up`, runs `fanfare bench --json` and
//! stops it. Proves the scripts still run against today's binary and that each scenario
//! delivers everything once; says nothing about speed (timings on a shared machine are not
//! asserted).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::up::load_topology;
use fanfare_testkit::cluster::{fanfare_bin, nats_server_bin, workspace_root, PortBlock};
use fanfare_testkit::DcShape;
use fanfare_topology::Settings;
use serde_json::Value;

/// Bound on one script at smoke size (it starts and stops a whole topology).
const SCRIPT_BOUND: Duration = Duration::from_secs(240);

/// The scenario scripts: every `*.sh` of `scripts/bench` but the shared library.
fn scenario_scripts() -> Vec<PathBuf> {
    let dir = workspace_root().join("scripts/bench");
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("scripts/bench exists")
        .map(|entry| entry.expect("readable").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "sh"))
        .filter(|path| path.file_name().is_some_and(|name| name != "lib.sh"))
        .collect();
    scripts.sort();
    scripts
}

#[test]
fn every_scenario_script_runs_at_smoke_size_and_loses_nothing() {
    let scripts = scenario_scripts();
    let names: BTreeSet<String> = scripts
        .iter()
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    // The scenarios of the benchmark issue, so that a renamed or lost script fails here.
    for expected in [
        "compare",
        "connect-10k",
        "cross-dc-1k",
        "growth",
        "idle-10k",
        "likes-3dc",
        "many-videos",
        "one-video-1k",
        "one-video-5k",
        "viewer-counts",
    ] {
        assert!(
            names.contains(expected),
            "scripts/bench/{expected}.sh is missing"
        );
    }

    // Three datacenters with two frontends each (the growth scenario uses dc1-fe2), on ports
    // no other test holds.
    let ports = PortBlock::acquire().unwrap();
    let shape = DcShape {
        nats: 1,
        dispatchers: 1,
        frontends: 2,
    };
    let settings = Settings {
        partitions: 2,
        ..Settings::default()
    };
    let datacenters = [("dc1", shape), ("dc2", shape), ("dc3", shape)];
    let dir = tempfile::tempdir().unwrap();
    let (_, topology_file) =
        load_topology(&ports, settings, &datacenters, dir.path(), "bench-scripts");

    for script in &scripts {
        let name = script.file_stem().unwrap().to_string_lossy().into_owned();
        let stdout = run_script(script, &topology_file, dir.path());
        let reports: Vec<Value> = stdout
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|error| panic!("{name}: not JSON ({error}): {line}"))
            })
            .collect();
        assert!(!reports.is_empty(), "{name} printed no report");
        for report in &reports {
            check_report(&name, report);
        }
        eprintln!("{name}: {} report(s) ok", reports.len());
    }
}

/// Runs one script in its own process group, bounded by [`SCRIPT_BOUND`]; returns its
/// standard output. On timeout the whole group gets SIGTERM (its `fanfare up` stops its
/// nodes), then SIGKILL.
fn run_script(script: &Path, topology_file: &Path, scratch: &Path) -> String {
    use std::os::unix::process::CommandExt;
    let name = script.file_stem().unwrap().to_string_lossy().into_owned();
    let stdout_file = scratch.join(format!("{name}.out"));
    let stderr_file = scratch.join(format!("{name}.err"));
    let mut child = Command::new("bash")
        .arg(script)
        .current_dir(workspace_root())
        .env("BENCH_SMOKE", "1")
        .env("BENCH_TOPOLOGY", topology_file)
        .env("FANFARE_BIN", fanfare_bin().unwrap())
        .env("NATS_SERVER_BIN", nats_server_bin().unwrap())
        .env("TMPDIR", scratch)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_file).unwrap())
        .stderr(std::fs::File::create(&stderr_file).unwrap())
        .process_group(0)
        .spawn()
        .expect("bash runs the script");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait on the script") {
            break Some(status);
        }
        if started.elapsed() > SCRIPT_BOUND {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stderr = std::fs::read_to_string(&stderr_file).unwrap_or_default();
    let Some(status) = status else {
        stop_group(&mut child);
        panic!("{name} did not finish within {SCRIPT_BOUND:?}; its stderr:\n{stderr}");
    };
    assert!(
        status.success(),
        "{name} failed ({status}); its stderr:\n{stderr}"
    );
    std::fs::read_to_string(&stdout_file).unwrap()
}

fn stop_group(child: &mut std::process::Child) {
    let Ok(pgid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        // SAFETY: kill(2) has no memory-safety preconditions; the group is our own child's.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(-pgid, signal);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// What every scenario must show: every viewer connected, nothing missing or duplicated, and
/// for likes every viewer on the exact total. A report of `compare.sh` names its system; a
/// peer's (nchan, Pushpin, nginx) is checked by [`check_peer_report`].
fn check_report(name: &str, report: &Value) {
    let field = |key: &str| report[key].as_u64().unwrap_or(u64::MAX);
    if report["scenario"] == "viewer-counts" {
        // Every round's joins and leaves reached the other datacenter's count.
        assert_eq!(report["ok"], Value::Bool(true), "{name}: {report}");
        let rounds = field("rounds") as usize;
        assert!(rounds > 0, "{name}: {report}");
        for key in ["join_ms", "leave_ms"] {
            assert_eq!(
                report[key].as_array().map(Vec::len),
                Some(rounds),
                "{name}: {report}"
            );
        }
        return;
    }
    if let Some(system) = report["system"].as_str() {
        if system != "fanfare" {
            return check_peer_report(name, system, report);
        }
    }
    assert_eq!(report["ok"], Value::Bool(true), "{name}: {report}");
    if field("viewers") == 0 {
        // A topology measured idle with nobody connected.
        let idle = &report["idle"];
        assert!(idle["seconds"].as_f64() > Some(0.0), "{name}: {report}");
        assert!(
            idle["processes"]
                .as_array()
                .is_some_and(|all| !all.is_empty()),
            "{name}: every process measured: {report}"
        );
        return;
    }
    assert_eq!(field("connected"), field("viewers"), "{name}: {report}");
    assert_eq!(field("missing"), 0, "{name}: {report}");
    assert_eq!(field("duplicated"), 0, "{name}: {report}");
    assert_eq!(field("received"), field("expected"), "{name}: {report}");
    if !report["likes"].is_null() {
        let likes = &report["likes"];
        assert_eq!(likes["failed"].as_u64(), Some(0), "{name}: {report}");
        assert!(likes["accepted"].as_u64() > Some(0), "{name}: {report}");
        assert_eq!(
            likes["viewers_exact_total"].as_u64(),
            Some(field("connected")),
            "{name}: {report}"
        );
    }
}

/// A peer in `compare.sh` ran the scenario with the same generator: its subscribers connected
/// and received, or (nginx `return 204`) it answered the like requests. What a peer loses is
/// its own business and shows in the report, not here.
fn check_peer_report(name: &str, system: &str, report: &Value) {
    let field = |key: &str| report[key].as_u64().unwrap_or(u64::MAX);
    let scenario = report["scenario"].as_str().unwrap_or_default();
    match scenario {
        _ if scenario.starts_with("likes") => {
            let likes = &report["likes"];
            assert_eq!(
                likes["failed"].as_u64(),
                Some(0),
                "{name} {system}: {report}"
            );
            assert!(
                likes["accepted"].as_u64() > Some(0),
                "{name} {system}: {report}"
            );
        }
        _ => {
            assert!(field("viewers") > 0, "{name} {system}: {report}");
            assert_eq!(
                field("connected"),
                field("viewers"),
                "{name} {system}: {report}"
            );
            if field("expected") > 0 {
                assert!(field("received") > 0, "{name} {system}: {report}");
            }
        }
    }
}
