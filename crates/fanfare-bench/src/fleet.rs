//! The viewers of a run, in this process and in viewer processes.
//!
//! One process holds at most about 19,700 connections here (its open-file limit), and one
//! runtime may not keep up with reading a million events a second. With `processes` above 1,
//! the bench spawns `processes - 1` viewer processes (`fanfare bench --viewer-share JSON`),
//! each holding a [`ViewerShare`] of the viewers. A viewer process prints a status line every
//! [`STATUS_EVERY`], and on `stop` on its stdin (or its end) every viewer's stats as one last
//! line; the bench merges them with its own viewers' as if they had all been here. Latencies
//! stay comparable across processes: markers carry wall-clock send times.

use std::ffi::OsString;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::target::HttpUrl;
use crate::viewer::{self, ViewerPlan, ViewerSlot, ViewerStats};
use crate::{resources, BenchError};

/// How often a viewer process reports its counters.
const STATUS_EVERY: Duration = Duration::from_millis(100);
/// Bound on a viewer process handing over its stats after `stop`.
const FINAL_WAIT: Duration = Duration::from_secs(60);

/// Which viewers one process holds: viewers `first_index .. first_index + count` of the run
/// (the index picks the URL and the source address, as if one process held them all).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ViewerShare {
    pub urls: Vec<HttpUrl>,
    pub first_index: usize,
    pub count: usize,
    pub source_addrs: u8,
    pub connect_concurrency: usize,
    /// Comments each viewer is expected to get (sizes its bitset up front).
    pub expected: u64,
    /// Viewers spread over many videos, one each in turn; `urls` then hold `{video}`.
    #[serde(default)]
    pub videos: Option<VideoSpread>,
}

/// Viewer `i` watches video `<base>-<i mod count>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoSpread {
    pub base: String,
    pub count: usize,
}

impl VideoSpread {
    pub fn video(&self, index: usize) -> String {
        format!("{}-{}", self.base, index % self.count.max(1))
    }

    /// How many of `viewers` viewers watch video `index`.
    pub fn viewers_of(&self, index: usize, viewers: usize) -> usize {
        let count = self.count.max(1);
        viewers / count + usize::from(index % count < viewers % count)
    }
}

/// A share's counters, merged over processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareStatus {
    pub connected: u64,
    pub failed: u64,
    pub warmed: u64,
    /// Distinct comments received, summed over viewers.
    pub received: u64,
    /// Over connected viewers still streaming: the fewest distinct comments one has...
    pub min_unique: Option<u64>,
    /// ... and the lowest and highest last like total (`u64::MAX`: none seen yet).
    pub total_min: Option<u64>,
    pub total_max: Option<u64>,
}

impl ShareStatus {
    fn merge(self, other: ShareStatus) -> ShareStatus {
        let min = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        ShareStatus {
            connected: self.connected + other.connected,
            failed: self.failed + other.failed,
            warmed: self.warmed + other.warmed,
            received: self.received + other.received,
            min_unique: min(self.min_unique, other.min_unique),
            total_min: min(self.total_min, other.total_min),
            total_max: match (self.total_max, other.total_max) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
        }
    }

    /// Whether every streaming viewer has `comments` distinct comments and, with likes, the
    /// exact total `likes`.
    pub fn all_arrived(&self, comments: u64, likes: Option<u64>) -> bool {
        let Some(min_unique) = self.min_unique else {
            return true;
        };
        min_unique >= comments
            && likes.is_none_or(|likes| {
                likes == 0 || (self.total_min == Some(likes) && self.total_max == Some(likes))
            })
    }
}

/// Viewers running in this process.
pub(crate) struct LocalViewers {
    slots: Vec<Arc<ViewerSlot>>,
    handles: Vec<JoinHandle<ViewerStats>>,
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl LocalViewers {
    pub(crate) fn start(share: &ViewerShare, started: Instant, stop: CancellationToken) -> Self {
        let tracker = TaskTracker::new();
        let gate = Arc::new(Semaphore::new(share.connect_concurrency.max(1)));
        let urls: Vec<Arc<HttpUrl>> = share.urls.iter().cloned().map(Arc::new).collect();
        let requests: Vec<Arc<[u8]>> = urls.iter().map(|url| viewer::request_bytes(url)).collect();
        let mut slots = Vec::with_capacity(share.count);
        let mut handles = Vec::with_capacity(share.count);
        for index in share.first_index..share.first_index + share.count {
            let which = index % urls.len();
            let (url, request, video) = match &share.videos {
                None => (urls[which].clone(), requests[which].clone(), None),
                Some(spread) => {
                    let url = Arc::new(urls[which].with_video(&spread.video(index)));
                    let request = viewer::request_bytes(&url);
                    let video = u32::try_from(index % spread.count.max(1)).ok();
                    (url, request, video)
                }
            };
            let plan = ViewerPlan {
                source: crate::source_addr(&url, share.source_addrs, index),
                url,
                request,
                expected: share.expected,
                video,
            };
            let slot = Arc::new(ViewerSlot::new());
            slots.push(slot.clone());
            handles.push(tracker.spawn(viewer::watch(
                plan,
                started,
                gate.clone(),
                slot,
                stop.clone(),
            )));
        }
        tracker.close();
        Self {
            slots,
            handles,
            tracker,
            stop,
        }
    }

    pub(crate) fn status(&self) -> ShareStatus {
        let mut status = ShareStatus::default();
        for slot in &self.slots {
            let connected = slot.connected.load(Ordering::Relaxed);
            let failed = slot.failed.load(Ordering::Relaxed);
            let unique = slot.unique.load(Ordering::Relaxed);
            status.connected += u64::from(connected);
            status.failed += u64::from(failed && !connected);
            status.warmed += u64::from(slot.warmed.load(Ordering::Relaxed));
            status.received += unique;
            if connected && !failed {
                let total = slot.last_total.load(Ordering::Relaxed);
                status = status.merge(ShareStatus {
                    min_unique: Some(unique),
                    total_min: Some(total),
                    total_max: Some(total),
                    ..ShareStatus::default()
                });
            }
        }
        status
    }

    /// Stops the viewers and returns what each saw.
    pub(crate) async fn finish(self) -> Vec<ViewerStats> {
        self.stop.cancel();
        let mut stats = Vec::with_capacity(self.handles.len());
        for handle in self.handles {
            if let Ok(viewer_stats) = handle.await {
                stats.push(viewer_stats);
            }
        }
        self.tracker.wait().await;
        stats
    }
}

/// What a viewer process prints, one JSON object per line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ShareLine {
    Status(ShareStatus),
    Final { stats: Vec<ViewerStats>, cpu_s: f64 },
}

/// A viewer process and the last status it reported.
struct RemoteViewers {
    child: Child,
    stdin: Option<ChildStdin>,
    status: Arc<Mutex<ShareStatus>>,
    final_line: JoinHandle<Option<(Vec<ViewerStats>, f64)>>,
}

impl RemoteViewers {
    fn spawn(command: &[OsString], share: &ViewerShare) -> Result<Self, BenchError> {
        let (program, args) = command.split_first().ok_or_else(|| {
            BenchError::InvalidOptions("more than one process needs a viewer command".to_owned())
        })?;
        let share_json = serde_json::to_string(share)
            .map_err(|error| BenchError::InvalidOptions(error.to_string()))?;
        let mut child = Command::new(program)
            .args(args)
            .arg(share_json)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| {
                BenchError::InvalidOptions(format!(
                    "starting a viewer process ({}): {error}",
                    program.to_string_lossy()
                ))
            })?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        let status = Arc::new(Mutex::new(ShareStatus::default()));
        let reported = status.clone();
        let final_line = tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<ShareLine>(&line) {
                    Ok(ShareLine::Status(status)) => {
                        *reported.lock().unwrap_or_else(|p| p.into_inner()) = status;
                    }
                    Ok(ShareLine::Final { stats, cpu_s }) => return Some((stats, cpu_s)),
                    Err(error) => {
                        eprintln!("bench: unreadable line from a viewer process: {error}")
                    }
                }
            }
            None
        });
        Ok(Self {
            child,
            stdin,
            status,
            final_line,
        })
    }

    fn status(&self) -> ShareStatus {
        *self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the process to stop and hand over its stats; kills it if it does not.
    async fn finish(mut self) -> Result<(Vec<ViewerStats>, f64), String> {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"stop\n").await;
            let _ = stdin.flush().await;
        }
        let outcome = tokio::time::timeout(FINAL_WAIT, &mut self.final_line).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        let _ = self.child.start_kill();
        match outcome {
            Ok(Ok(Some(final_line))) => Ok(final_line),
            Ok(_) => Err("a viewer process ended without its stats".to_owned()),
            Err(_) => Err(format!(
                "a viewer process did not hand over its stats within {FINAL_WAIT:?}"
            )),
        }
    }
}

/// Every viewer of a run.
pub(crate) struct Fleet {
    local: LocalViewers,
    remote: Vec<RemoteViewers>,
}

/// What the viewer processes add to the report once they stopped.
pub(crate) struct FleetOutcome {
    pub stats: Vec<ViewerStats>,
    /// CPU seconds the viewer processes used.
    pub remote_cpu_s: f64,
    pub errors: Vec<String>,
}

impl Fleet {
    /// Splits `count` viewers over `processes` (this one included) and starts them.
    pub(crate) fn start(
        share: ViewerShare,
        processes: usize,
        command: &[OsString],
        started: Instant,
        stop: CancellationToken,
    ) -> Result<Self, BenchError> {
        let processes = processes.clamp(1, share.count.max(1));
        let shares = split(&share, processes);
        let mut remote = Vec::with_capacity(processes - 1);
        for share in &shares[1..] {
            remote.push(RemoteViewers::spawn(command, share)?);
        }
        let local = LocalViewers::start(&shares[0], started, stop);
        Ok(Self { local, remote })
    }

    pub(crate) fn status(&self) -> ShareStatus {
        self.remote
            .iter()
            .fold(self.local.status(), |status, remote| {
                status.merge(remote.status())
            })
    }

    pub(crate) async fn finish(self) -> FleetOutcome {
        let mut outcome = FleetOutcome {
            stats: self.local.finish().await,
            remote_cpu_s: 0.0,
            errors: Vec::new(),
        };
        for remote in self.remote {
            match remote.finish().await {
                Ok((stats, cpu_s)) => {
                    outcome.stats.extend(stats);
                    outcome.remote_cpu_s += cpu_s;
                }
                Err(error) => outcome.errors.push(error),
            }
        }
        outcome
    }
}

/// `processes` consecutive shares of `share`, as even as they come.
fn split(share: &ViewerShare, processes: usize) -> Vec<ViewerShare> {
    let mut shares = Vec::with_capacity(processes);
    let mut first = share.first_index;
    for index in 0..processes {
        let count = share.count / processes + usize::from(index < share.count % processes);
        shares.push(ViewerShare {
            first_index: first,
            count,
            connect_concurrency: (share.connect_concurrency / processes).max(1),
            ..share.clone()
        });
        first += count;
    }
    shares
}

/// A viewer process: holds `share_json`'s viewers, prints its status until `stop` arrives on
/// stdin (or stdin ends), then every viewer's stats.
pub async fn serve_share(share_json: &str) -> Result<(), BenchError> {
    let share: ViewerShare = serde_json::from_str(share_json)
        .map_err(|error| BenchError::InvalidOptions(format!("viewer share: {error}")))?;
    let limit = resources::raise_open_file_limit().map_err(BenchError::InvalidOptions)?;
    if share.count as u64 + crate::SPARE_FILES > limit {
        return Err(BenchError::TooManyViewers {
            viewers: share.count,
            limit,
        });
    }
    let cpu_start = resources::own_cpu_seconds();
    let viewers = LocalViewers::start(&share, Instant::now(), CancellationToken::new());
    let mut stdout = tokio::io::stdout();
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut ticks = tokio::time::interval(STATUS_EVERY);
    loop {
        tokio::select! {
            line = stdin.next_line() => match line {
                Ok(Some(line)) if line.trim() != "stop" => continue,
                _ => break,
            },
            _ = ticks.tick() => {
                write_line(&mut stdout, &ShareLine::Status(viewers.status())).await;
            }
        }
    }
    let stats = viewers.finish().await;
    let cpu_s = resources::own_cpu_seconds() - cpu_start;
    write_line(&mut stdout, &ShareLine::Final { stats, cpu_s }).await;
    Ok(())
}

async fn write_line(stdout: &mut tokio::io::Stdout, line: &ShareLine) {
    let Ok(mut json) = serde_json::to_vec(line) else {
        return;
    };
    json.push(b'\n');
    let _ = stdout.write_all(&json).await;
    let _ = stdout.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(count: usize) -> ViewerShare {
        ViewerShare {
            urls: vec![HttpUrl::parse("http://127.0.0.1:1/v1/videos/v/events").unwrap()],
            first_index: 0,
            count,
            source_addrs: 8,
            connect_concurrency: 512,
            expected: 0,
            videos: None,
        }
    }

    #[test]
    fn a_spread_gives_every_video_its_share_of_viewers() {
        let spread = VideoSpread {
            base: "v".into(),
            count: 3,
        };
        assert_eq!(spread.video(4), "v-1");
        let per_video: Vec<usize> = (0..3).map(|video| spread.viewers_of(video, 10)).collect();
        assert_eq!(per_video, [4, 3, 3]);
        assert_eq!(per_video.iter().sum::<usize>(), 10);
    }

    #[test]
    fn shares_cover_every_viewer_once_and_in_order() {
        let shares = split(&share(10), 3);
        let counts: Vec<usize> = shares.iter().map(|share| share.count).collect();
        let firsts: Vec<usize> = shares.iter().map(|share| share.first_index).collect();
        assert_eq!(counts, [4, 3, 3]);
        assert_eq!(firsts, [0, 4, 7]);
    }

    #[test]
    fn merged_status_has_arrived_only_when_every_share_has() {
        let done = ShareStatus {
            connected: 2,
            min_unique: Some(5),
            total_min: Some(9),
            total_max: Some(9),
            ..ShareStatus::default()
        };
        let behind = ShareStatus {
            min_unique: Some(4),
            ..done
        };
        let no_viewers = ShareStatus::default();
        assert!(done.all_arrived(5, Some(9)));
        assert!(done.merge(no_viewers).all_arrived(5, Some(9)));
        assert!(!done.merge(behind).all_arrived(5, Some(9)));
        let other_total = ShareStatus {
            total_max: Some(10),
            total_min: Some(10),
            ..done
        };
        assert!(!done.merge(other_total).all_arrived(5, Some(9)));
        assert!(done.merge(other_total).all_arrived(5, None));
    }
}
