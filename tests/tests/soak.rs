//! `fanfare chaos soak` end to end: a real `fanfare up` on three small datacenters, the soak
//! library driving real viewers and publishers through seeded chaos, and its report checked
//! for counts only (timings on a shared machine are not something to assert).

mod common;

use std::time::Duration;

use common::up::{load_topology, start_up};
use common::SMALL;
use fanfare_soak::SoakOptions;
use fanfare_testkit::cluster::PortBlock;
use fanfare_topology::Settings;
use tokio_util::sync::CancellationToken;

/// The whole test, start to stop, is bounded by this.
const TEST_BOUND: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_soak_under_chaos_loses_and_duplicates_nothing_in_any_datacenter() {
    let ports = PortBlock::acquire().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        interest_ttl: Duration::from_secs(3),
        partitions: 4,
        ..Settings::default()
    };
    let datacenters = [("dc1", SMALL), ("dc2", SMALL), ("dc3", SMALL)];
    let (topology, topology_file) =
        load_topology(&ports, settings, &datacenters, dir.path(), "soak");
    let run_dir = dir.path().join("run");
    let up = start_up(&topology_file, &run_dir);

    let mut options = SoakOptions::new(topology, run_dir, 11, "e2e".to_owned());
    options.duration = Duration::from_secs(30);
    options.chaos_every = Duration::from_secs(8);
    options.settle = Duration::from_secs(90);
    // One frontend per datacenter: two viewers each cover both videos everywhere.
    options.videos = 2;
    options.viewers_per_frontend = 2;
    let report = tokio::time::timeout(
        TEST_BOUND,
        fanfare_soak::run(options, CancellationToken::new()),
    )
    .await
    .expect("the soak ends within its bound")
    .expect("the soak reaches the topology");
    drop(up);

    let text = report.to_text();
    eprintln!("{text}");
    assert!(report.ok, "the verdict is ok:\n{text}");
    let chaos_actions = report
        .actions
        .iter()
        .filter(|action| !action.action.contains("end of chaos") && action.error.is_none())
        .count();
    assert!(chaos_actions >= 1, "chaos happened:\n{text}");
    assert_eq!(report.datacenters.len(), 3);
    for dc in &report.datacenters {
        assert!(dc.comments_published > 0, "{}: published:\n{text}", dc.name);
        assert!(
            dc.delivered > 0,
            "{}: its viewers received:\n{text}",
            dc.name
        );
        assert_eq!(dc.missing, 0, "{}: nothing missing:\n{text}", dc.name);
        assert_eq!(dc.duplicated, 0, "{}: nothing twice:\n{text}", dc.name);
        assert_eq!(dc.delivered, dc.deliveries_expected, "{}:\n{text}", dc.name);
    }
}
