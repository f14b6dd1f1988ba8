//! The bench's result: counts, latency and freshness percentiles, rates and resource use, as
//! one JSON object and as a few lines for a human.

use serde::{Deserialize, Serialize};

/// Everything one run measured. Field names are what scripts and BENCHMARKS.md quote.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BenchReport {
    pub target: String,
    pub video: String,
    /// Videos the viewers were spread over (`<video>-0` ..), if they were.
    #[serde(default)]
    pub videos: Option<u64>,
    pub viewers: u64,
    pub connected: u64,
    pub connect_failed: u64,
    /// From the first connect to the last 200 head; `None` if no viewer connected.
    pub connect_all_ms: Option<f64>,
    /// Viewers that got a warm-up probe before publishing started.
    pub warmed: u64,
    /// Comments sent, accepted (2xx) and not.
    pub published: u64,
    pub publish_accepted: u64,
    pub publish_failed: u64,
    /// Seconds from the first publish to the last.
    pub publish_window_s: f64,
    /// Connected viewers × accepted comments.
    pub expected: u64,
    /// Distinct comments received, over all viewers.
    pub received: u64,
    pub missing: u64,
    pub duplicated: u64,
    /// Received over the time from the first publish to the last receive.
    pub deliveries_per_sec: f64,
    /// Everything received divided by the publish window's length: equal to the offered rate
    /// when all arrives, however long the drain took. Not what arrived during the window;
    /// `deliveries_per_sec` is the delivered rate.
    pub deliveries_per_sec_publish_window: f64,
    pub latency_ms: Option<Percentiles>,
    pub freshness_ms: Option<Freshness>,
    pub likes: Option<LikesReport>,
    /// CPU seconds of the bench itself (user + system, children included).
    pub client_cpu_s: f64,
    pub server: Option<ServerReport>,
    /// Every server process's CPU while the viewers were connected and nothing was published
    /// (a spread over videos only).
    #[serde(default)]
    pub idle: Option<IdleReport>,
    /// A few distinct error messages from viewers and publishers.
    pub errors: Vec<String>,
    /// Nothing missing or duplicated, every viewer connected, every like total exact.
    pub ok: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// Percentiles of microsecond samples, in milliseconds; sorts `samples`.
    pub fn of_micros(samples: &mut [u32]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |quantile: f64| {
            let index = ((samples.len() as f64 * quantile).ceil() as usize).clamp(1, samples.len());
            f64::from(samples[index - 1]) / 1000.0
        };
        Some(Self {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: at(1.0),
        })
    }
}

/// How old a like total was when a viewer saw it: receive time minus when the publisher got
/// the 202 for the like that made that total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Freshness {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub samples: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LikesReport {
    pub requests: u64,
    pub requests_per_sec: f64,
    pub accepted: u64,
    pub failed: u64,
    /// Viewers whose last total equals `accepted`.
    pub viewers_exact_total: u64,
    pub final_total_min: Option<u64>,
    pub final_total_max: Option<u64>,
}

/// CPU of the server processes over an idle window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IdleReport {
    pub seconds: f64,
    /// Every process's share of one core, summed.
    pub total_percent_of_core: f64,
    pub processes: Vec<ProcessCpu>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProcessCpu {
    pub name: String,
    pub percent_of_core: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerProcess {
    pub name: String,
    pub pid: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerReport {
    pub pids: Vec<ServerProcess>,
    /// CPU seconds all those processes used during the run.
    pub cpu_s: f64,
    /// Processes that hold the viewers (fanfare: the frontends used).
    pub viewer_processes: Vec<String>,
    /// Their resident memory summed, before the viewers connected and after.
    pub rss_kib_before_connect: u64,
    pub rss_kib_after_connect: u64,
    /// (after − before) / connected viewers.
    pub memory_per_connection_kib: Option<f64>,
    /// Each process's CPU seconds from when every viewer was connected to the end (the
    /// publishing and the drain), and per delivered comment (microseconds): what every part
    /// of the topology costs for what reached viewers.
    #[serde(default)]
    pub processes: Vec<ProcessCost>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProcessCost {
    pub name: String,
    pub cpu_s: f64,
    /// CPU microseconds per delivered comment (`None` when none was delivered).
    pub us_per_delivery: Option<f64>,
}

impl BenchReport {
    /// A few lines for a human.
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "bench {} video {}: {}/{} viewers connected ({} failed)",
            self.target, self.video, self.connected, self.viewers, self.connect_failed
        );
        if let Some(videos) = self.videos {
            text.push_str(&format!(", spread over {videos} videos"));
        }
        if let Some(ms) = self.connect_all_ms {
            text.push_str(&format!(", all within {ms:.0} ms"));
        }
        text.push('\n');
        if self.published > 0 {
            text.push_str(&format!(
                "comments: {} published ({} accepted, {} failed) over {:.2} s\n",
                self.published, self.publish_accepted, self.publish_failed, self.publish_window_s
            ));
            text.push_str(&format!(
                "deliveries: {} of {} expected, {} missing, {} duplicated; {:.0}/s ({:.0}/s over the publish window)\n",
                self.received,
                self.expected,
                self.missing,
                self.duplicated,
                self.deliveries_per_sec,
                self.deliveries_per_sec_publish_window
            ));
        }
        if let Some(latency) = self.latency_ms {
            text.push_str(&format!(
                "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}\n",
                latency.p50, latency.p90, latency.p99, latency.max
            ));
        }
        if let Some(likes) = &self.likes {
            text.push_str(&format!(
                "likes: {} requests ({:.0}/s), {} accepted, {} failed; {} viewers with the exact total\n",
                likes.requests,
                likes.requests_per_sec,
                likes.accepted,
                likes.failed,
                likes.viewers_exact_total
            ));
        }
        if let Some(freshness) = self.freshness_ms {
            text.push_str(&format!(
                "like freshness ms: p50 {:.2}  p99 {:.2}  max {:.2} ({} samples)\n",
                freshness.p50, freshness.p99, freshness.max, freshness.samples
            ));
        }
        if let Some(idle) = &self.idle {
            text.push_str(&format!(
                "idle for {:.1} s: {:.2} % of one core over every server process (",
                idle.seconds, idle.total_percent_of_core
            ));
            let shares: Vec<String> = idle
                .processes
                .iter()
                .map(|process| format!("{} {:.2}", process.name, process.percent_of_core))
                .collect();
            text.push_str(&shares.join(", "));
            text.push_str(")\n");
        }
        text.push_str(&format!("client cpu: {:.2} s\n", self.client_cpu_s));
        if let Some(server) = &self.server {
            text.push_str(&format!(
                "server: {} processes, {:.2} cpu s; {} rss {} KiB -> {} KiB",
                server.pids.len(),
                server.cpu_s,
                server.viewer_processes.join(","),
                server.rss_kib_before_connect,
                server.rss_kib_after_connect
            ));
            if let Some(per) = server.memory_per_connection_kib {
                text.push_str(&format!(" ({per:.2} KiB per connection)"));
            }
            text.push('\n');
        }
        for error in &self.errors {
            text.push_str(&format!("error: {error}\n"));
        }
        text.push_str(if self.ok { "ok\n" } else { "NOT ok\n" });
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let mut samples: Vec<u32> = (1..=100).rev().map(|ms| ms * 1000).collect();
        let percentiles = Percentiles::of_micros(&mut samples).unwrap();
        assert_eq!(percentiles.p50, 50.0);
        assert_eq!(percentiles.p90, 90.0);
        assert_eq!(percentiles.p99, 99.0);
        assert_eq!(percentiles.max, 100.0);
        assert_eq!(Percentiles::of_micros(&mut []), None);
    }
}
