//! fanfare-bench: `fanfare bench`, the load generator that measures delivery to many SSE
//! viewers of one video, against fanfare or a peer (nginx+nchan, Pushpin).
//!
//! How a run flows:
//! 1. [`run`] raises the open-file limit, samples the server processes, and opens `viewers`
//!    raw TCP connections ([`viewer`]), at most `connect_concurrency` connecting at once,
//!    each bound to a source address from 127.0.0.2 on, spread round-robin over the viewer
//!    URLs; it records when the last one got its 200;
//! 2. if anything will be published, it sends warm-up probes (`w<n>@<micros>` comments) until
//!    every viewer got one, so that fanfare's subscription table routes the video to every
//!    frontend before measuring starts;
//! 3. publishers ([`publisher`]) post comments carrying `b<seq>@<micros>` at a fixed rate,
//!    and/or likes as fast as the server answers;
//! 4. after publishing it waits up to `drain` for every viewer to have every accepted comment
//!    and the exact like total, then stops the viewers and merges what each saw into a
//!    [`BenchReport`].
//!
//! Viewers scan their streams incrementally ([`scan`]) without allocating per event, so that
//! the bench costs little next to the server it measures. One cancellation tree: the caller's
//! `shutdown` ends the run early, with a child token for the viewers and one for publishers.

pub mod fleet;
pub mod publisher;
pub mod report;
pub mod resources;
pub mod scan;
pub mod target;
pub mod viewer;

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fanfare_topology::Topology;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use publisher::PubFormat;
pub use report::BenchReport;

use crate::fleet::{Fleet, VideoSpread, ViewerShare};
use crate::publisher::{PublishProgress, PublishTarget};
use crate::report::{Freshness, LikesReport, Percentiles, ServerProcess, ServerReport};
use crate::resources::ProcessSample;
use crate::target::HttpUrl;
use crate::viewer::ViewerStats;

/// How often the progress line is printed and the wait loops check.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
const POLL_EVERY: Duration = Duration::from_millis(50);
/// Warm-up probes go out this often until every viewer has one.
const PROBE_EVERY: Duration = Duration::from_millis(250);
/// File descriptors kept free for publishers, the runtime and `/proc` reads.
pub(crate) const SPARE_FILES: u64 = 256;
/// Bound on waiting for every viewer to connect or fail.
const CONNECT_WAIT: Duration = Duration::from_secs(60);

/// What can stop a bench before it measures anything.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("invalid url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    #[error("{viewers} viewers need more open files than the limit of {limit}; run fewer or raise the hard limit (ulimit -Hn)")]
    TooManyViewers { viewers: usize, limit: u64 },
    #[error("no frontend named {0} in the topology")]
    UnknownFrontend(String),
    #[error("no datacenter named {0} in the topology")]
    UnknownDatacenter(String),
    #[error("reading {path}: {message}")]
    State { path: PathBuf, message: String },
}

/// Comments published at a fixed rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CommentLoad {
    pub per_sec: f64,
    pub duration: Duration,
}

impl CommentLoad {
    /// How many comments the run publishes: rate × duration, rounded.
    pub fn count(&self) -> u64 {
        (self.per_sec * self.duration.as_secs_f64()).round() as u64
    }
}

/// Everything a run needs, resolved to URLs and process ids.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// `fanfare` or `generic`, for the report.
    pub target: String,
    pub video: String,
    pub viewers: usize,
    /// Viewer URLs, used round-robin.
    pub viewer_urls: Vec<HttpUrl>,
    /// The same with `{video}` for the video: what a spread over many videos uses.
    pub viewer_templates: Vec<HttpUrl>,
    /// Where a comment on any video is posted, with `{video}` for the video.
    pub comment_template: HttpUrl,
    /// Spread the viewers over this many videos (`<video>-0` ..), one after the other, and
    /// post each comment to a different one of them, drawn at random. The hold comes before
    /// publishing then, and is measured: every server process's CPU while idle.
    pub videos: Option<usize>,
    /// Source addresses 127.0.0.2 ..= 127.0.0.(1 + n) cycled over; 0 binds none.
    pub source_addrs: u8,
    /// Viewers between connect and their response head at once.
    pub connect_concurrency: usize,
    pub comments: Option<CommentLoad>,
    /// Where comments (and warm-up probes) are published.
    pub comment_target: PublishTarget,
    /// Post likes for this long, as fast as possible.
    pub likes: Option<Duration>,
    pub like_target: PublishTarget,
    pub publish_concurrency: usize,
    /// After publishing, how long to wait for everything to arrive.
    pub drain: Duration,
    /// Bound on the warm-up before publishing.
    pub warmup_timeout: Duration,
    /// With nothing to publish: how long to hold the connections open before measuring.
    pub hold: Duration,
    /// Server processes to measure; `viewer_processes` names those holding the viewers.
    pub server_processes: Vec<ServerProcess>,
    pub viewer_processes: Vec<String>,
    /// Print a progress line to stderr every second.
    pub progress: bool,
    /// Processes holding the viewers, this one included; above 1, the others are started with
    /// `viewer_command` followed by their share as JSON (see [`fleet`]).
    pub processes: usize,
    /// Program and arguments that run a viewer process (`fanfare bench --viewer-share`).
    pub viewer_command: Vec<OsString>,
}

/// Which frontends of a topology the viewers use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontendChoice {
    /// These frontends, by name.
    Named(Vec<String>),
    /// Every frontend of these datacenters.
    Datacenters(Vec<String>),
}

impl BenchOptions {
    /// Options for fanfare: viewer URLs from the topology, publishing to `publish_frontend`,
    /// server processes from the `state.json` of the `fanfare up` in `run_dir` (if present).
    pub fn for_fanfare(
        topology: &Topology,
        choice: &FrontendChoice,
        publish_frontend: &str,
        run_dir: &Path,
        video: String,
    ) -> Result<Self, BenchError> {
        let endpoints = topology.endpoints();
        let all: Vec<(&str, &str, &str)> = endpoints
            .datacenters
            .iter()
            .flat_map(|dc| {
                dc.frontends
                    .iter()
                    .map(move |fe| (dc.name.as_str(), fe.name.as_str(), fe.url.as_str()))
            })
            .collect();
        let chosen: Vec<(&str, &str)> = match choice {
            FrontendChoice::Named(names) => names
                .iter()
                .map(|name| {
                    all.iter()
                        .find(|(_, fe, _)| fe == name)
                        .map(|(_, fe, url)| (*fe, *url))
                        .ok_or_else(|| BenchError::UnknownFrontend(name.clone()))
                })
                .collect::<Result<_, _>>()?,
            FrontendChoice::Datacenters(dcs) => {
                let mut chosen = Vec::new();
                for dc in dcs {
                    let before = chosen.len();
                    chosen.extend(
                        all.iter()
                            .filter(|(name, _, _)| name == dc)
                            .map(|(_, fe, url)| (*fe, *url)),
                    );
                    if chosen.len() == before {
                        return Err(BenchError::UnknownDatacenter(dc.clone()));
                    }
                }
                chosen
            }
        };
        if chosen.is_empty() {
            return Err(BenchError::InvalidOptions("no frontend chosen".to_owned()));
        }
        let viewer_urls = chosen
            .iter()
            .map(|(_, url)| HttpUrl::parse(&format!("{url}/v1/videos/{video}/events")))
            .collect::<Result<_, _>>()?;
        let viewer_templates = chosen
            .iter()
            .map(|(_, url)| HttpUrl::parse(&format!("{url}/v1/videos/{{video}}/events")))
            .collect::<Result<_, _>>()?;
        let publish_url = all
            .iter()
            .find(|(_, fe, _)| *fe == publish_frontend)
            .map(|(_, _, url)| *url)
            .ok_or_else(|| BenchError::UnknownFrontend(publish_frontend.to_owned()))?;
        let comment_target = PublishTarget {
            url: Arc::new(HttpUrl::parse(&format!(
                "{publish_url}/v1/videos/{video}/comments"
            ))?),
            format: PubFormat::Fanfare,
            video: video.clone(),
        };
        let like_target = PublishTarget {
            url: Arc::new(HttpUrl::parse(&format!(
                "{publish_url}/v1/videos/{video}/likes"
            ))?),
            format: PubFormat::Fanfare,
            video: video.clone(),
        };
        let server_processes = read_state_pids(run_dir).unwrap_or_default();
        let comment_template =
            HttpUrl::parse(&format!("{publish_url}/v1/videos/{{video}}/comments"))?;
        let mut options = Self::new("fanfare", video, viewer_urls, comment_target, like_target);
        options.viewer_templates = viewer_templates;
        options.comment_template = comment_template;
        options.server_processes = server_processes;
        options.viewer_processes = chosen.iter().map(|(fe, _)| (*fe).to_owned()).collect();
        Ok(options)
    }

    /// Options for a peer: `{video}` in both URL templates is replaced by `video`.
    pub fn for_generic(
        sub_url: &str,
        pub_url: &str,
        format: PubFormat,
        video: String,
        server_pids: &[u32],
    ) -> Result<Self, BenchError> {
        let viewer_urls = vec![HttpUrl::from_template(sub_url, &video)?];
        let url = Arc::new(HttpUrl::from_template(pub_url, &video)?);
        let comment_target = PublishTarget {
            url: url.clone(),
            format,
            video: video.clone(),
        };
        let like_target = comment_target.clone();
        let mut options = Self::new("generic", video, viewer_urls, comment_target, like_target);
        options.viewer_templates = vec![HttpUrl::parse(sub_url)?];
        options.comment_template = HttpUrl::parse(pub_url)?;
        options.server_processes = server_pids
            .iter()
            .map(|&pid| ServerProcess {
                name: format!("pid{pid}"),
                pid,
            })
            .collect();
        options.viewer_processes = options
            .server_processes
            .iter()
            .map(|process| process.name.clone())
            .collect();
        Ok(options)
    }

    fn new(
        target: &str,
        video: String,
        viewer_urls: Vec<HttpUrl>,
        comment_target: PublishTarget,
        like_target: PublishTarget,
    ) -> Self {
        Self {
            target: target.to_owned(),
            video,
            viewers: 100,
            viewer_templates: viewer_urls.clone(),
            comment_template: (*comment_target.url).clone(),
            videos: None,
            viewer_urls,
            source_addrs: 8,
            connect_concurrency: 512,
            comments: None,
            comment_target,
            likes: None,
            like_target,
            publish_concurrency: 64,
            drain: Duration::from_secs(3),
            warmup_timeout: Duration::from_secs(20),
            hold: Duration::from_secs(1),
            server_processes: Vec::new(),
            viewer_processes: Vec::new(),
            progress: false,
            processes: 1,
            viewer_command: Vec::new(),
        }
    }

    fn validate(&self) -> Result<(), BenchError> {
        let invalid = |message: &str| Err(BenchError::InvalidOptions(message.to_owned()));
        if self.viewers > 0 && self.viewer_urls.is_empty() {
            return invalid("viewers need at least one url");
        }
        if let Some(comments) = self.comments {
            if !(comments.per_sec.is_finite() && comments.per_sec > 0.0) {
                return invalid("comments per second must be more than 0");
            }
        }
        if self.connect_concurrency == 0 || self.publish_concurrency == 0 {
            return invalid("concurrency must be at least 1");
        }
        if self.processes == 0 {
            return invalid("processes must be at least 1");
        }
        if self.processes > 1 && self.viewer_command.is_empty() {
            return invalid("more than one process needs a viewer command");
        }
        if let Some(videos) = self.videos {
            if videos == 0 {
                return invalid("videos must be at least 1");
            }
            if self
                .comments
                .is_some_and(|load| load.count() > videos as u64)
            {
                return invalid(
                    "a spread posts each comment to another video: more comments than videos",
                );
            }
            if self.likes.is_some() {
                return invalid("likes go to one video: not with a spread over videos");
            }
        }
        Ok(())
    }
}

/// A fresh video id per run, so totals start at 0 and no earlier comment is replayed. Letters,
/// digits and `_` only: peers such as nchan route on `\\w+`.
pub fn fresh_video_id() -> String {
    format!("bench_{:x}", now_micros() % (1 << 44))
}

/// The nodes and pids in a running `fanfare up`'s `state.json`.
pub fn read_state_pids(run_dir: &Path) -> Result<Vec<ServerProcess>, BenchError> {
    let path = run_dir.join("state.json");
    let error = |message: String| BenchError::State {
        path: path.clone(),
        message,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| error(e.to_string()))?;
    let state: serde_json::Value = serde_json::from_str(&text).map_err(|e| error(e.to_string()))?;
    let mut processes: Vec<ServerProcess> = state["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|node| {
            Some(ServerProcess {
                name: node["name"].as_str()?.to_owned(),
                pid: u32::try_from(node["pid"].as_u64()?).ok()?,
            })
        })
        .collect();
    // The supervisor runs the chaos link proxies: part of the topology's cost.
    if let Some(pid) = state["supervisor_pid"]
        .as_u64()
        .and_then(|pid| u32::try_from(pid).ok())
    {
        processes.push(ServerProcess {
            name: "supervisor".to_owned(),
            pid,
        });
    }
    Ok(processes)
}

/// Microseconds since the Unix epoch: the clock markers carry, shared with the publisher.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros() as u64)
        .unwrap_or_default()
}

/// Runs one bench; see the crate docs for the phases.
pub async fn run(
    options: BenchOptions,
    shutdown: CancellationToken,
) -> Result<BenchReport, BenchError> {
    options.validate()?;
    let limit = resources::raise_open_file_limit().map_err(BenchError::InvalidOptions)?;
    let per_process = options.viewers.div_ceil(options.processes) as u64;
    if per_process + SPARE_FILES > limit {
        return Err(BenchError::TooManyViewers {
            viewers: options.viewers,
            limit,
        });
    }
    let client_cpu_start = resources::own_cpu_seconds();
    let server_before = sample_all(&options.server_processes);
    let expected_per_viewer = options.comments.map_or(0, |load| load.count());
    let spread = options.videos.map(|count| VideoSpread {
        base: options.video.clone(),
        count,
    });

    // Viewers.
    let viewers_stop = shutdown.child_token();
    let started = Instant::now();
    let share = ViewerShare {
        urls: if spread.is_some() {
            options.viewer_templates.clone()
        } else {
            options.viewer_urls.clone()
        },
        first_index: 0,
        count: options.viewers,
        source_addrs: options.source_addrs,
        connect_concurrency: options.connect_concurrency,
        expected: expected_per_viewer,
        videos: spread.clone(),
    };
    let fleet = Fleet::start(
        share,
        options.processes,
        &options.viewer_command,
        started,
        viewers_stop.clone(),
    )?;
    let publish_progress = Arc::new(PublishProgress::default());
    let mut progress = Progress::new(options.progress, &fleet, &publish_progress);

    let connect_deadline = Instant::now() + CONNECT_WAIT;
    while !shutdown.is_cancelled() && Instant::now() < connect_deadline {
        let status = fleet.status();
        if status.connected + status.failed >= options.viewers as u64 {
            break;
        }
        progress.tick("connecting");
        tokio::time::sleep(POLL_EVERY).await;
    }
    let connected_now = fleet.status().connected;
    if connected_now > 0 {
        progress.line("connected");
    }

    // Warm-up: publish probes until every connected viewer got one. With viewers asked for
    // and none connected there is nothing to measure: publishing would only add noise.
    let publishing = (options.comments.is_some() || options.likes.is_some())
        && (options.viewers == 0 || connected_now > 0);
    let mut warmup_errors = Vec::new();
    let mut idle = None;
    if spread.is_some() {
        // Many videos, each with its own viewers: routing is in place once a viewer has its
        // 200 head (the frontend registers its interest first). The hold is the idle window.
        let before = sample_all(&options.server_processes);
        let held = Instant::now();
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(options.hold) => {}
        }
        let after = sample_all(&options.server_processes);
        idle = Some(idle_report(
            &options.server_processes,
            &before,
            &after,
            held.elapsed(),
        ));
    } else if publishing && connected_now > 0 {
        let warm_deadline = Instant::now() + options.warmup_timeout;
        let mut probe = 0;
        let mut next_probe = Instant::now();
        while !shutdown.is_cancelled() && Instant::now() < warm_deadline {
            let status = fleet.status();
            if status.warmed >= status.connected {
                break;
            }
            if Instant::now() >= next_probe {
                if let Err(error) = publisher::publish_probe(&options.comment_target, probe).await {
                    if warmup_errors.len() < 3 {
                        warmup_errors.push(format!("warm-up probe: {error}"));
                    }
                }
                probe += 1;
                next_probe = Instant::now() + PROBE_EVERY;
            }
            progress.tick("warming up");
            tokio::time::sleep(POLL_EVERY).await;
        }
    } else if !publishing {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(options.hold) => {}
        }
    }
    let warmed = fleet.status().warmed;
    let server_connected = sample_all(&options.server_processes);

    // Publishing.
    let publish_stop = shutdown.child_token();
    let sampled: Vec<usize> = match (&spread, options.comments) {
        (Some(spread), Some(load)) => sample_videos(spread, load.count() as usize),
        _ => Vec::new(),
    };
    let targets = Arc::new(match &spread {
        None => vec![options.comment_target.clone()],
        Some(spread) => sampled
            .iter()
            .map(|index| {
                let video = spread.video(*index);
                PublishTarget {
                    url: Arc::new(options.comment_template.with_video(&video)),
                    format: options.comment_target.format,
                    video,
                }
            })
            .collect(),
    });
    let comments = options.comments.filter(|_| publishing).map(|load| {
        tokio::spawn(publisher::publish_comments(
            targets.clone(),
            load.count(),
            load.per_sec,
            options.publish_concurrency,
            publish_progress.clone(),
            publish_stop.clone(),
        ))
    });
    let likes = options.likes.filter(|_| publishing).map(|duration| {
        tokio::spawn(publisher::publish_likes(
            options.like_target.clone(),
            duration,
            options.publish_concurrency,
            publish_progress.clone(),
            publish_stop.clone(),
        ))
    });
    let comment_outcome = match comments {
        Some(handle) => {
            let outcome = wait_reporting(handle, &mut progress, "publishing").await;
            Some(outcome.unwrap_or_default())
        }
        None => None,
    };
    let like_outcome = match likes {
        Some(handle) => {
            let outcome = wait_reporting(handle, &mut progress, "publishing").await;
            Some(outcome.unwrap_or_default())
        }
        None => None,
    };

    // Drain: until every viewer has everything, or the drain time is up.
    let accepted_comments = comment_outcome
        .as_ref()
        .map_or(0, |outcome| outcome.accepted.len() as u64);
    let accepted_likes = like_outcome
        .as_ref()
        .map(|outcome| outcome.accepted_at.len() as u64);
    let spread_expected: u64 = match (&spread, &comment_outcome) {
        (Some(spread), Some(outcome)) => outcome
            .accepted
            .iter()
            .map(|seq| spread.viewers_of(sampled[*seq as usize], options.viewers) as u64)
            .sum(),
        _ => 0,
    };
    if publishing {
        let drain_deadline = Instant::now() + options.drain;
        while !shutdown.is_cancelled() && Instant::now() < drain_deadline {
            let status = fleet.status();
            let arrived = match &spread {
                None => status.all_arrived(accepted_comments, accepted_likes),
                Some(_) => status.received >= spread_expected,
            };
            if arrived {
                break;
            }
            progress.tick("draining");
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
    let server_after = sample_all(&options.server_processes);
    viewers_stop.cancel();
    publish_stop.cancel();
    let fleet = fleet.finish().await;
    let client_cpu_s = resources::own_cpu_seconds() - client_cpu_start + fleet.remote_cpu_s;
    let stats = fleet.stats;

    let spread_plan = spread.as_ref().map(|spread| (spread, sampled.as_slice()));
    let mut report = summarize(
        &options,
        stats,
        comment_outcome,
        like_outcome,
        warmed,
        client_cpu_s,
        spread_plan,
    );
    report.idle = idle;
    report.errors.extend(warmup_errors);
    report.errors.extend(fleet.errors);
    report.server = server_report(
        &options,
        &server_before,
        &server_connected,
        &server_after,
        report.connected,
        report.received,
    );
    Ok(report)
}

/// The local address viewer `index` binds: 127.0.0.2, .3, ... cycled, for a v4 loopback URL.
pub(crate) fn source_addr(url: &HttpUrl, count: u8, index: usize) -> Option<IpAddr> {
    if count == 0 || !url.addr.ip().is_loopback() || !url.addr.is_ipv4() {
        return None;
    }
    let host = 2 + (index % usize::from(count)) as u8;
    Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)))
}

/// Awaits a publisher while printing progress.
async fn wait_reporting<T>(
    mut handle: tokio::task::JoinHandle<T>,
    progress: &mut Progress<'_>,
    phase: &str,
) -> Option<T> {
    loop {
        tokio::select! {
            outcome = &mut handle => return outcome.ok(),
            _ = tokio::time::sleep(POLL_EVERY) => progress.tick(phase),
        }
    }
}

/// The once-a-second status line on stderr.
struct Progress<'a> {
    enabled: bool,
    fleet: &'a Fleet,
    publish: &'a PublishProgress,
    started: Instant,
    last: Instant,
    last_received: u64,
    last_sent: u64,
}

impl<'a> Progress<'a> {
    fn new(enabled: bool, fleet: &'a Fleet, publish: &'a PublishProgress) -> Self {
        let now = Instant::now();
        Self {
            enabled,
            fleet,
            publish,
            started: now,
            last: now,
            last_received: 0,
            last_sent: 0,
        }
    }

    fn tick(&mut self, phase: &str) {
        if self.last.elapsed() >= PROGRESS_EVERY {
            self.line(phase);
        }
    }

    fn line(&mut self, phase: &str) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        let seconds = now.duration_since(self.last).as_secs_f64().max(1e-3);
        let status = self.fleet.status();
        let (connected, failed, received) = (status.connected, status.failed, status.received);
        let sent = self.publish.sent.load(Ordering::Relaxed);
        eprintln!(
            "bench {:>5.1}s {phase}: connected {connected} (failed {failed}), received {received} ({:.0}/s), published {sent} ({:.0}/s, {} accepted)",
            now.duration_since(self.started).as_secs_f64(),
            (received - self.last_received.min(received)) as f64 / seconds,
            (sent - self.last_sent.min(sent)) as f64 / seconds,
            self.publish.accepted.load(Ordering::Relaxed),
        );
        self.last = now;
        self.last_received = received;
        self.last_sent = sent;
    }
}

fn sample_all(processes: &[ServerProcess]) -> Vec<Option<ProcessSample>> {
    processes
        .iter()
        .map(|process| resources::sample_process(process.pid))
        .collect()
}

/// Picks `count` distinct videos of `spread` at random (seeded by its base name, so a run's
/// choice can be told again).
fn sample_videos(spread: &VideoSpread, count: usize) -> Vec<usize> {
    let mut state = spread
        .base
        .bytes()
        .fold(0x9e37_79b9_7f4a_7c15u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3)
        })
        | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut videos: Vec<usize> = (0..spread.count).collect();
    let count = count.min(videos.len());
    for index in 0..count {
        let pick = index + (next() % (videos.len() - index) as u64) as usize;
        videos.swap(index, pick);
    }
    videos.truncate(count);
    videos
}

/// CPU of every server process over an idle window, as a share of one core.
fn idle_report(
    processes: &[ServerProcess],
    before: &[Option<ProcessSample>],
    after: &[Option<ProcessSample>],
    window: Duration,
) -> report::IdleReport {
    let seconds = window.as_secs_f64().max(1e-3);
    let cpu: Vec<report::ProcessCpu> = processes
        .iter()
        .zip(before.iter().zip(after))
        .filter_map(|(process, (before, after))| {
            let used = after.as_ref()?.cpu_s - before.as_ref()?.cpu_s;
            Some(report::ProcessCpu {
                name: process.name.clone(),
                percent_of_core: 100.0 * used / seconds,
            })
        })
        .collect();
    report::IdleReport {
        seconds,
        total_percent_of_core: cpu.iter().map(|process| process.percent_of_core).sum(),
        processes: cpu,
    }
}

/// Merges every viewer's stats and the publishers' outcomes. With a spread, each comment was
/// for the viewers of one video (`sampled[seq]`) only.
fn summarize(
    options: &BenchOptions,
    stats: Vec<ViewerStats>,
    comments: Option<publisher::CommentOutcome>,
    likes: Option<publisher::LikeOutcome>,
    warmed: u64,
    client_cpu_s: f64,
    spread: Option<(&VideoSpread, &[usize])>,
) -> BenchReport {
    let wants = |viewer: &ViewerStats, seq: u64| match spread {
        None => true,
        Some((_, sampled)) => sampled
            .get(seq as usize)
            .is_some_and(|video| viewer.video == u32::try_from(*video).ok()),
    };
    let mut report = BenchReport {
        target: options.target.clone(),
        video: options.video.clone(),
        videos: options.videos.map(|videos| videos as u64),
        viewers: options.viewers as u64,
        warmed,
        client_cpu_s,
        ..BenchReport::default()
    };
    let connected: Vec<&ViewerStats> = stats.iter().filter(|stats| stats.connected).collect();
    report.connected = connected.len() as u64;
    report.connect_failed = report.viewers - report.connected;
    report.connect_all_ms = connected
        .iter()
        .map(|stats| stats.connected_after_micros)
        .max()
        .map(|micros| micros as f64 / 1000.0);
    for stats in &stats {
        if let Some(error) = &stats.error {
            let known = report.errors.iter().any(|known| known == error);
            if !known && report.errors.len() < 5 {
                report.errors.push(error.clone());
            }
        }
    }

    let mut ok = report.connect_failed == 0;
    if let Some(comments) = &comments {
        report.published = comments.accepted.len() as u64 + comments.failed;
        report.publish_accepted = comments.accepted.len() as u64;
        report.publish_failed = comments.failed;
        report.publish_window_s = comments
            .last_send_micros
            .saturating_sub(comments.first_send_micros) as f64
            / 1e6;
        report.expected = connected
            .iter()
            .map(|viewer| {
                comments
                    .accepted
                    .iter()
                    .filter(|&&seq| wants(viewer, seq))
                    .count() as u64
            })
            .sum();
        let mut latencies = Vec::new();
        let mut last_receive = 0;
        for viewer in &connected {
            let received: u64 = viewer
                .seen
                .iter()
                .map(|bits| u64::from(bits.count_ones()))
                .sum();
            let missing = comments
                .accepted
                .iter()
                .filter(|&&seq| wants(viewer, seq) && !viewer.has(seq))
                .count() as u64;
            report.received += received;
            report.missing += missing;
            report.duplicated += viewer.duplicated;
            last_receive = last_receive.max(viewer.last_receive_micros);
            latencies.extend_from_slice(&viewer.latencies_micros);
        }
        let span = last_receive.saturating_sub(comments.first_send_micros) as f64 / 1e6;
        if span > 0.0 {
            report.deliveries_per_sec = report.received as f64 / span;
        }
        if report.publish_window_s > 0.0 {
            report.deliveries_per_sec_publish_window =
                report.received as f64 / report.publish_window_s;
        }
        report.latency_ms = Percentiles::of_micros(&mut latencies);
        for error in &comments.errors {
            report.errors.push(format!("publishing comments: {error}"));
        }
        ok &= report.missing == 0 && report.duplicated == 0;
    }
    if let Some(likes) = &likes {
        let accepted = likes.accepted_at.len() as u64;
        let finals: Vec<u64> = connected
            .iter()
            .map(|viewer| viewer.last_total.unwrap_or(0))
            .collect();
        let exact = finals.iter().filter(|&&total| total == accepted).count() as u64;
        report.likes = Some(LikesReport {
            requests: likes.requests,
            requests_per_sec: if likes.elapsed_s > 0.0 {
                likes.requests as f64 / likes.elapsed_s
            } else {
                0.0
            },
            accepted,
            failed: likes.failed,
            viewers_exact_total: exact,
            final_total_min: finals.iter().copied().min(),
            final_total_max: finals.iter().copied().max(),
        });
        let mut freshness = Vec::new();
        for viewer in &connected {
            for &(received_at, total) in &viewer.totals {
                let index = usize::try_from(total).unwrap_or(usize::MAX);
                if index == 0 {
                    continue;
                }
                let stored_at = likes
                    .accepted_at
                    .get(index - 1)
                    .copied()
                    .unwrap_or(u64::MAX);
                let age = received_at.saturating_sub(stored_at);
                freshness.push(u32::try_from(age).unwrap_or(u32::MAX));
            }
        }
        let samples = freshness.len() as u64;
        report.freshness_ms = Percentiles::of_micros(&mut freshness).map(|p| Freshness {
            p50: p.p50,
            p99: p.p99,
            max: p.max,
            samples,
        });
        for error in &likes.errors {
            report.errors.push(format!("posting likes: {error}"));
        }
        ok &= connected.is_empty() || exact == report.connected;
    }
    report.ok = ok;
    report
}

fn server_report(
    options: &BenchOptions,
    before: &[Option<ProcessSample>],
    connected: &[Option<ProcessSample>],
    after: &[Option<ProcessSample>],
    viewers_connected: u64,
    delivered: u64,
) -> Option<ServerReport> {
    if options.server_processes.is_empty() {
        return None;
    }
    // From when every viewer was connected (and warmed up) to the end: the publishing.
    let processes: Vec<report::ProcessCost> = options
        .server_processes
        .iter()
        .zip(connected.iter().zip(after))
        .filter_map(|(process, (before, after))| {
            let cpu_s = after.as_ref()?.cpu_s - before.as_ref()?.cpu_s;
            Some(report::ProcessCost {
                name: process.name.clone(),
                cpu_s,
                us_per_delivery: (delivered > 0).then(|| cpu_s * 1e6 / delivered as f64),
            })
        })
        .collect();
    let cpu_s = before
        .iter()
        .zip(after)
        .filter_map(|(before, after)| Some(after.as_ref()?.cpu_s - before.as_ref()?.cpu_s))
        .sum();
    let holds_viewers = |index: usize| {
        options
            .viewer_processes
            .contains(&options.server_processes[index].name)
    };
    let rss = |samples: &[Option<ProcessSample>]| -> u64 {
        samples
            .iter()
            .enumerate()
            .filter(|(index, _)| holds_viewers(*index))
            .filter_map(|(_, sample)| sample.map(|sample| sample.rss_kib))
            .sum()
    };
    let rss_before = rss(before);
    let rss_after = rss(connected);
    Some(ServerReport {
        pids: options.server_processes.clone(),
        cpu_s,
        viewer_processes: options.viewer_processes.clone(),
        rss_kib_before_connect: rss_before,
        rss_kib_after_connect: rss_after,
        memory_per_connection_kib: (viewers_connected > 0)
            .then(|| (rss_after as f64 - rss_before as f64) / viewers_connected as f64),
        processes,
    })
}
