//! fanfare-soak: `fanfare chaos soak`, a long run of real traffic under seeded chaos that
//! checks fanfare's delivery guarantees end to end.
//!
//! How a run flows:
//! 1. [`run`] asks the running topology (`fanfare up`, through its chaos control endpoint) what
//!    runs, opens the viewers ([`viewer`]): `viewers_per_frontend` SSE connections on every
//!    frontend, spread over the videos so that each video has viewers in every datacenter, and
//!    waits until every dispatcher routes their videos to them;
//! 2. publishers ([`publisher`]) post comments and likes in every datacenter, while the chaos
//!    runner replays the schedule [`plan`] drew from the seed: partitions, heals, kills,
//!    restarts;
//! 3. after `duration`, chaos stops, every link is healed and every node restarted, publishing
//!    stops, and the soak waits up to `settle` for every viewer to have every accepted comment
//!    and its video's exact like total;
//! 4. the [`Ledger`](ledger) that everyone wrote to becomes a [`SoakReport`], whose verdict fails
//!    on any lost, duplicated or reordered comment or wrong final total.
//!
//! Everything hangs off one cancellation tree: the caller's `shutdown` ends the run early (it
//! still heals and restarts what it broke), and child tokens stop chaos, publishing and
//! viewers in that order.

mod chaos;
mod duration;
mod ledger;
mod liveness;
pub mod plan;
mod publisher;
pub mod report;
pub mod rng;
mod viewer;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fanfare_client::http;
use fanfare_supervisor::{call_chaos, ChaosCommand};
use fanfare_topology::Topology;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use duration::parse_duration;
pub use plan::{plan, ChaosAction, ClusterShape, PlannedAction};
pub use report::SoakReport;

use crate::ledger::Ledger;
use crate::liveness::Liveness;
use crate::publisher::DcPublisher;
use crate::rng::SeededRng;
use crate::viewer::{Frontend, Viewer};

/// How long set-up waits for every viewer to connect and every dispatcher to route to it.
const SETUP_WAIT: Duration = Duration::from_secs(60);
/// How long the end waits for requests still in flight (a comment may be on its last retry).
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(60);
/// How often convergence and the settled state are checked.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// How often a progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Everything a soak run needs.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// The topology `fanfare up` runs: frontends to talk to, nodes to break.
    pub topology: Topology,
    /// Its run directory, whose `state.json` holds the chaos control URL.
    pub run_dir: PathBuf,
    /// How long publishing and chaos go on.
    pub duration: Duration,
    /// Decides every chaos action and its time, and the viewers' and publishers' choices.
    pub seed: u64,
    pub videos: usize,
    pub viewers_per_frontend: usize,
    /// Per datacenter.
    pub comments_per_sec: f64,
    /// Per datacenter.
    pub likes_per_sec: f64,
    /// Mean time between disruptions (±25 %); zero: no chaos.
    pub chaos_every: Duration,
    /// How long the end waits for everything to arrive.
    pub settle: Duration,
    /// Makes video ids and comment keys unique to this run, so a second soak against the same
    /// topology never sees the first one's comments or likes.
    pub run_tag: String,
    /// Print a status line to stderr every 5 s.
    pub progress: bool,
}

impl SoakOptions {
    /// Options with the command line's defaults.
    pub fn new(topology: Topology, run_dir: PathBuf, seed: u64, run_tag: String) -> Self {
        Self {
            topology,
            run_dir,
            duration: Duration::from_secs(300),
            seed,
            videos: 3,
            viewers_per_frontend: 2,
            comments_per_sec: 5.0,
            likes_per_sec: 10.0,
            chaos_every: Duration::from_secs(20),
            settle: Duration::from_secs(60),
            run_tag,
            progress: false,
        }
    }

    fn validate(&self) -> Result<(), SoakError> {
        let invalid = |message: &str| Err(SoakError::InvalidOptions(message.to_owned()));
        if self.duration.is_zero() {
            return invalid("duration must be more than 0s");
        }
        if self.videos == 0 {
            return invalid("videos must be at least 1");
        }
        if self.viewers_per_frontend == 0 {
            return invalid("viewers per frontend must be at least 1");
        }
        let rate_ok = |rate: f64| rate.is_finite() && (0.0..=1000.0).contains(&rate);
        if !rate_ok(self.comments_per_sec) || !rate_ok(self.likes_per_sec) {
            return invalid("rates must be between 0 and 1000 per second");
        }
        let tag_ok = !self.run_tag.is_empty()
            && self.run_tag.len() <= 24
            && self
                .run_tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !tag_ok {
            return invalid("run tag must be 1 to 24 characters of A-Z, a-z, 0-9 and '-'");
        }
        if self
            .topology
            .datacenters
            .iter()
            .any(|dc| dc.frontends.is_empty())
        {
            return invalid("every datacenter needs a frontend");
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SoakError {
    #[error("invalid soak options: {0}")]
    InvalidOptions(String),
    /// The topology's chaos control endpoint cannot be reached: nothing was started.
    #[error("cannot reach the running topology: {0}")]
    Control(String),
}

/// Runs a soak against the topology that `fanfare up` runs in `options.run_dir`, and reports
/// what it found. Returns an error only when it cannot start; everything that goes wrong in
/// fanfare during the run is in the report. Cancelling `shutdown` ends the run early: the
/// links are still healed and killed nodes restarted, and the report says it was interrupted.
pub async fn run(
    options: SoakOptions,
    shutdown: CancellationToken,
) -> Result<SoakReport, SoakError> {
    options.validate()?;
    let status = call_chaos(&options.run_dir, &ChaosCommand::Status)
        .await
        .map_err(SoakError::Control)?;
    let liveness = Arc::new(Liveness::default());
    liveness.update(&status);

    let topology = &options.topology;
    let dc_names: Vec<String> = topology
        .datacenters
        .iter()
        .map(|dc| dc.name.clone())
        .collect();
    let videos: Vec<String> = (0..options.videos)
        .map(|index| format!("soak-{}-{index}", options.run_tag))
        .collect();
    let ledger = Arc::new(Ledger::new(&dc_names, &videos));
    let frontends: Arc<Vec<Frontend>> = Arc::new(
        topology
            .datacenters
            .iter()
            .enumerate()
            .flat_map(|(dc, datacenter)| {
                datacenter.frontends.iter().map(move |frontend| Frontend {
                    name: frontend.name.clone(),
                    dc,
                    url: frontend.url(),
                })
            })
            .collect(),
    );
    let mut rng = SeededRng::new(options.seed);
    let chaos_plan = plan(
        rng.next_u64(),
        &ClusterShape::of(topology),
        options.chaos_every,
        options.duration,
    );

    // Viewers: the k-th viewer of a datacenter watches video k mod videos, so with at least as
    // many viewers per datacenter as videos every video is watched everywhere.
    let viewers_token = shutdown.child_token();
    let viewer_tasks = TaskTracker::new();
    let mut watched: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    let mut per_dc = vec![0usize; dc_names.len()];
    for (index, frontend) in frontends.iter().enumerate() {
        for slot in 0..options.viewers_per_frontend {
            let video = per_dc[frontend.dc] % options.videos;
            per_dc[frontend.dc] += 1;
            watched
                .entry(index)
                .or_default()
                .insert(videos[video].clone());
            let viewer = Viewer {
                index: ledger.add_viewer(format!("{}/{slot}", frontend.name), frontend.dc, video),
                video: videos[video].clone(),
                first: index,
                frontends: frontends.clone(),
                rng: rng.fork(index as u64 * 1000 + slot as u64),
            };
            viewer_tasks.spawn(viewer.run(ledger.clone(), liveness.clone(), viewers_token.clone()));
        }
    }
    viewer_tasks.close();
    if options.progress && per_dc.iter().any(|&count| count < options.videos) {
        eprintln!("soak: fewer viewers than videos in a datacenter: some videos are not watched everywhere");
    }
    set_up(
        &options, &ledger, &watched, &frontends, &liveness, &shutdown,
    )
    .await;

    // The run proper: publishing and chaos, with an observer.
    let start = ledger.begin();
    let chaos_token = shutdown.child_token();
    let publish_token = shutdown.child_token();
    let observer_token = shutdown.child_token();
    let requests = TaskTracker::new();
    let mut publishing = Vec::new();
    for (dc, datacenter) in topology.datacenters.iter().enumerate() {
        let publisher = Arc::new(DcPublisher {
            dc,
            name: datacenter.name.clone(),
            frontends: datacenter
                .frontends
                .iter()
                .map(|frontend| (frontend.name.clone(), frontend.url()))
                .collect(),
            run_tag: options.run_tag.clone(),
            videos: videos.clone(),
            comments_per_sec: options.comments_per_sec,
            likes_per_sec: options.likes_per_sec,
            next_frontend: AtomicUsize::new(0),
            next_comment: AtomicU64::new(0),
            rng: Mutex::new(rng.fork(dc as u64)),
        });
        publishing.push(tokio::spawn(publisher::publish(
            publisher,
            liveness.clone(),
            ledger.clone(),
            requests.clone(),
            publish_token.clone(),
            shutdown.clone(),
        )));
    }
    let chaos = tokio::spawn({
        let (run_dir, ledger, liveness, token) = (
            options.run_dir.clone(),
            ledger.clone(),
            liveness.clone(),
            chaos_token.clone(),
        );
        async move { chaos::run_plan(chaos_plan, &run_dir, ledger, liveness, start, token).await }
    });
    let observer = tokio::spawn(observe(
        ledger.clone(),
        options.progress,
        observer_token.clone(),
    ));

    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep_until(start + options.duration) => {}
    }
    let interrupted = shutdown.is_cancelled();

    // The end: stop breaking things, repair them, stop publishing, let everything arrive.
    chaos_token.cancel();
    let _ = chaos.await;
    if let Err(error) = chaos::restore(&options.run_dir, &ledger, &liveness).await {
        eprintln!("soak: could not restore the topology: {error}");
    }
    let chaos_stopped = Instant::now();
    publish_token.cancel();
    for publisher in publishing {
        let _ = publisher.await;
    }
    requests.close();
    if tokio::time::timeout(IN_FLIGHT_WAIT, requests.wait())
        .await
        .is_err()
    {
        eprintln!("soak: requests still in flight after {IN_FLIGHT_WAIT:?}; not waiting for them");
    }
    let mut settled_after = None;
    if !interrupted {
        let deadline = chaos_stopped + options.settle;
        loop {
            if ledger.settled() {
                settled_after = Some(chaos_stopped.elapsed());
                break;
            }
            if Instant::now() >= deadline || shutdown.is_cancelled() {
                break;
            }
            tokio::time::sleep(CHECK_EVERY).await;
        }
    }
    ledger.check_convergence();
    observer_token.cancel();
    let _ = observer.await;
    ledger.close_heals();
    viewers_token.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), viewer_tasks.wait()).await;
    Ok(ledger.report(options.seed, options.duration, settled_after, interrupted))
}

/// Waits until every viewer is connected and every running dispatcher routes each watched
/// video to the frontends its viewers are on: comments published before that would not reach
/// them, which would be the soak's fault, not fanfare's. Bounded: after [`SETUP_WAIT`] it goes
/// on and says so.
async fn set_up(
    options: &SoakOptions,
    ledger: &Ledger,
    watched: &BTreeMap<usize, BTreeSet<String>>,
    frontends: &[Frontend],
    liveness: &Liveness,
    shutdown: &CancellationToken,
) {
    let deadline = Instant::now() + SETUP_WAIT;
    while !ledger.all_connected() {
        if Instant::now() >= deadline || shutdown.is_cancelled() {
            eprintln!("soak: not every viewer connected within {SETUP_WAIT:?}; starting anyway");
            return;
        }
        tokio::time::sleep(CHECK_EVERY).await;
    }
    for (dc, datacenter) in options.topology.datacenters.iter().enumerate() {
        for dispatcher in &datacenter.dispatchers {
            if !liveness.is_running(&dispatcher.name) {
                continue;
            }
            let url = format!("http://{}/v1/table", dispatcher.admin);
            loop {
                if routes_everything(&url, dc, watched, frontends).await {
                    break;
                }
                if Instant::now() >= deadline || shutdown.is_cancelled() {
                    eprintln!(
                        "soak: {} does not route every watched video after {SETUP_WAIT:?}; starting anyway",
                        dispatcher.name
                    );
                    return;
                }
                tokio::time::sleep(CHECK_EVERY).await;
            }
        }
    }
}

/// Whether the dispatcher table at `url` (`{"video":["frontend",..],..}`) routes every video
/// watched on a frontend of datacenter `dc` to that frontend.
async fn routes_everything(
    url: &str,
    dc: usize,
    watched: &BTreeMap<usize, BTreeSet<String>>,
    frontends: &[Frontend],
) -> bool {
    let Ok(response) = http::get(url).await else {
        return false;
    };
    let Ok(table) = response.json::<BTreeMap<String, BTreeSet<String>>>() else {
        return false;
    };
    watched
        .iter()
        .filter(|(index, _)| frontends[**index].dc == dc)
        .all(|(index, videos)| {
            videos.iter().all(|video| {
                table
                    .get(video)
                    .is_some_and(|routed| routed.contains(&frontends[*index].name))
            })
        })
}

/// Completes convergence times as they happen and prints progress, until `stop`.
async fn observe(ledger: Arc<Ledger>, progress: bool, stop: CancellationToken) {
    let mut checks = tokio::time::interval(CHECK_EVERY);
    let mut last_progress = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = checks.tick() => {}
        }
        ledger.check_convergence();
        if progress && last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            eprintln!("{}", ledger.progress_line());
        }
    }
}
