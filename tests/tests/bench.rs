//! `fanfare bench` end to end at smoke size: a real `fanfare up` on two small datacenters and
//! the bench library's raw viewers and publishers. Counts only: every comment reaches every
//! viewer once, and every viewer ends on the exact like total. Timings on a shared machine are
//! not something to assert.

mod common;

use std::time::Duration;

use common::up::{load_topology, start_up};
use common::SMALL;
use fanfare_bench::{BenchOptions, CommentLoad, FrontendChoice};
use fanfare_testkit::cluster::{fanfare_bin, PortBlock};
use fanfare_topology::Settings;
use tokio_util::sync::CancellationToken;

/// Each bench run is bounded by this.
const RUN_BOUND: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_smoke_delivers_every_comment_once_and_exact_like_totals_in_every_datacenter() {
    let ports = PortBlock::acquire().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        partitions: 2,
        ..Settings::default()
    };
    let datacenters = [("dc1", SMALL), ("dc2", SMALL)];
    let (topology, topology_file) =
        load_topology(&ports, settings, &datacenters, dir.path(), "bench");
    let run_dir = dir.path().join("run");
    let up = start_up(&topology_file, &run_dir);
    let publish_frontend = topology.endpoints().datacenters[0].frontends[0]
        .name
        .clone();

    // 50 viewers in dc1, 20 comments/s for 1 s, held by two processes: the report merges a
    // viewer process's stats with the bench's own.
    let mut comments = BenchOptions::for_fanfare(
        &topology,
        &FrontendChoice::Datacenters(vec!["dc1".to_owned()]),
        &publish_frontend,
        &run_dir,
        fanfare_bench::fresh_video_id(),
    )
    .unwrap();
    comments.viewers = 50;
    comments.processes = 2;
    comments.viewer_command = vec![
        fanfare_bin().unwrap().into_os_string(),
        "bench".into(),
        "--viewer-share".into(),
    ];
    comments.comments = Some(CommentLoad {
        per_sec: 20.0,
        duration: Duration::from_secs(1),
    });
    comments.publish_concurrency = 4;
    comments.drain = Duration::from_secs(15);
    let report = tokio::time::timeout(
        RUN_BOUND,
        fanfare_bench::run(comments, CancellationToken::new()),
    )
    .await
    .expect("the comment bench ends within its bound")
    .expect("the comment bench runs");
    let text = report.to_text();
    eprintln!("{text}");
    assert_eq!(report.connected, 50, "{text}");
    assert_eq!(report.publish_accepted, 20, "{text}");
    assert_eq!(report.expected, 50 * 20, "{text}");
    assert_eq!(report.received, report.expected, "{text}");
    assert_eq!(report.missing, 0, "{text}");
    assert_eq!(report.duplicated, 0, "{text}");
    assert!(report.latency_ms.is_some(), "{text}");
    let server = report.server.as_ref().expect("pids read from state.json");
    assert!(!server.pids.is_empty(), "{text}");
    assert!(report.ok, "{text}");

    // Likes posted to dc1 for 1 s, viewers in both datacenters: every one ends on the total.
    let mut likes = BenchOptions::for_fanfare(
        &topology,
        &FrontendChoice::Datacenters(vec!["dc1".to_owned(), "dc2".to_owned()]),
        &publish_frontend,
        &run_dir,
        fanfare_bench::fresh_video_id(),
    )
    .unwrap();
    likes.viewers = 10;
    likes.likes = Some(Duration::from_secs(1));
    likes.publish_concurrency = 4;
    likes.drain = Duration::from_secs(15);
    let report = tokio::time::timeout(
        RUN_BOUND,
        fanfare_bench::run(likes, CancellationToken::new()),
    )
    .await
    .expect("the like bench ends within its bound")
    .expect("the like bench runs");
    drop(up);
    let text = report.to_text();
    eprintln!("{text}");
    let like_report = report.likes.as_ref().expect("a like report");
    assert_eq!(report.connected, 10, "{text}");
    assert!(like_report.accepted > 0, "{text}");
    assert_eq!(like_report.failed, 0, "{text}");
    assert_eq!(like_report.viewers_exact_total, 10, "{text}");
    assert_eq!(
        like_report.final_total_min,
        Some(like_report.accepted),
        "{text}"
    );
    assert!(report.ok, "{text}");
}
