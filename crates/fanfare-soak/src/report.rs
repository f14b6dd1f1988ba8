//! What a soak found: [`SoakReport`] (serialized as is by `--json`), the verdict, and the
//! compact table a person reads.

use std::fmt::Write as _;

use serde::Serialize;

/// How many examples of each kind of problem a report keeps per datacenter: enough to find
/// the cause in the logs, not so many that the report drowns.
pub const EXAMPLES_KEPT: usize = 10;

#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    pub seed: u64,
    /// The chaos phase as asked for.
    pub duration_ms: u64,
    /// From the start of the chaos phase to the end of the settle wait.
    pub elapsed_ms: u64,
    /// How long the end took to converge after chaos stopped (`None`: not within `settle`).
    pub settled_after_ms: Option<u64>,
    pub interrupted: bool,
    pub videos: Vec<String>,
    pub actions: Vec<ActionRecord>,
    pub heals: Vec<HealRecord>,
    pub datacenters: Vec<DatacenterReport>,
    /// Each reason the verdict is not ok, in words.
    pub problems: Vec<String>,
    pub ok: bool,
}

/// One chaos action as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct ActionRecord {
    /// When it was done, from the start of the run.
    pub at_ms: u64,
    pub action: String,
    /// `None` when the topology carried it out; else why it failed.
    pub error: Option<String>,
}

/// A heal that ended a partition, and how long every connected viewer then took to have
/// every comment published before it.
#[derive(Debug, Clone, Serialize)]
pub struct HealRecord {
    pub at_ms: u64,
    /// The partition it ended.
    pub ended: String,
    pub converged_ms: Option<u64>,
    /// Why there is no convergence time.
    pub note: Option<String>,
}

/// Everything counted for one datacenter. Publishing counts are the publishers of this
/// datacenter; delivery counts are the viewers that started on its frontends (they may have
/// moved to another datacenter on a reconnect); staleness is by the datacenter whose frontend
/// delivered.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DatacenterReport {
    pub name: String,
    pub viewers: usize,
    pub comments_published: u64,
    pub comments_rejected: u64,
    pub comments_unknown: u64,
    /// Comments answered with an error that viewers received anyway.
    pub comments_rejected_but_delivered: u64,
    pub likes_accepted: u64,
    pub likes_rejected: u64,
    pub likes_unknown: u64,
    /// Published comments of each viewer's video, summed over this datacenter's viewers.
    pub deliveries_expected: u64,
    pub delivered: u64,
    pub missing: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub resets: u64,
    pub reconnects: u64,
    pub max_staleness_ms: Option<u64>,
    /// Viewers whose last like total is the video's true total.
    pub like_totals_correct: usize,
    pub losses: Vec<LossExample>,
    pub duplicates: Vec<DuplicateExample>,
    pub disorder: Vec<DisorderExample>,
    pub wrong_totals: Vec<TotalExample>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LossExample {
    pub viewer: String,
    pub video: String,
    pub comment_id: String,
    pub origin_dc: String,
    /// When its publisher got the 202, from the start of the run.
    pub accepted_at_ms: u64,
    /// The last chaos action before that, if any.
    pub after_action: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DuplicateExample {
    pub viewer: String,
    pub comment_id: String,
    pub times: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct DisorderExample {
    pub viewer: String,
    pub comment_id: String,
    pub origin_dc: String,
    pub seq: u64,
    pub after_seq: u64,
    pub at_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TotalExample {
    pub viewer: String,
    pub video: String,
    pub seen: Option<u64>,
    pub accepted: u64,
    pub unknown: u64,
}

/// Why a run is not ok, one line per datacenter and kind; empty means ok. Rejections and
/// unknown outcomes are expected under chaos and never fail a run; losing, duplicating or
/// reordering what was accepted does, and so does a wrong like total at the end.
pub fn problems(datacenters: &[DatacenterReport], interrupted: bool) -> Vec<String> {
    let mut problems = Vec::new();
    if interrupted {
        problems.push("the run was interrupted before its end".to_owned());
    }
    for dc in datacenters {
        let name = &dc.name;
        if dc.missing > 0 {
            problems.push(format!("{name}: {} comment deliveries missing", dc.missing));
        }
        if dc.duplicated > 0 {
            problems.push(format!("{name}: {} duplicate comments", dc.duplicated));
        }
        if dc.out_of_order > 0 {
            problems.push(format!("{name}: {} comments out of order", dc.out_of_order));
        }
        if dc.like_totals_correct != dc.viewers {
            problems.push(format!(
                "{name}: {} of {} viewers ended with a wrong like total",
                dc.viewers - dc.like_totals_correct,
                dc.viewers
            ));
        }
    }
    problems
}

fn clock(ms: u64) -> String {
    let tenths = ms / 100;
    format!("{}:{:02}.{}", tenths / 600, (tenths / 10) % 60, tenths % 10)
}

fn seconds(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

impl SoakReport {
    /// The report as a person reads it: actions, heals, one table row per datacenter, the
    /// verdict, and examples of whatever went wrong.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "soak: seed {}, chaos for {}, {} in all{}",
            self.seed,
            seconds(self.duration_ms),
            seconds(self.elapsed_ms),
            match self.settled_after_ms {
                Some(ms) => format!(", settled {} after chaos stopped", seconds(ms)),
                None => ", did not settle".to_owned(),
            }
        );
        let _ = writeln!(out, "videos: {}", self.videos.join(" "));
        let _ = writeln!(out, "\nactions ({}):", self.actions.len());
        for action in &self.actions {
            let error = action
                .error
                .as_deref()
                .map(|error| format!("  FAILED: {error}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {:>8}  {}{error}",
                clock(action.at_ms),
                action.action
            );
        }
        let _ = writeln!(out, "\nheals ({}):", self.heals.len());
        for heal in &self.heals {
            let outcome = match (heal.converged_ms, &heal.note) {
                (Some(ms), _) => format!("converged in {}", seconds(ms)),
                (None, Some(note)) => note.clone(),
                (None, None) => "not converged".to_owned(),
            };
            let _ = writeln!(
                out,
                "  {:>8}  after {:<22} {outcome}",
                clock(heal.at_ms),
                heal.ended
            );
        }
        let _ = writeln!(
            out,
            "\n{:<5} {:>4} {:>15} {:>15} {:>8} {:>9} {:>7} {:>4} {:>4} {:>6} {:>6} {:>9} {:>7}",
            "dc",
            "view",
            "comments p/r/u",
            "likes a/r/u",
            "expected",
            "delivered",
            "missing",
            "dup",
            "ooo",
            "resets",
            "reconn",
            "max-stale",
            "totals"
        );
        for dc in &self.datacenters {
            let _ = writeln!(
                out,
                "{:<5} {:>4} {:>15} {:>15} {:>8} {:>9} {:>7} {:>4} {:>4} {:>6} {:>6} {:>9} {:>7}",
                dc.name,
                dc.viewers,
                format!(
                    "{}/{}/{}",
                    dc.comments_published, dc.comments_rejected, dc.comments_unknown
                ),
                format!(
                    "{}/{}/{}",
                    dc.likes_accepted, dc.likes_rejected, dc.likes_unknown
                ),
                dc.deliveries_expected,
                dc.delivered,
                dc.missing,
                dc.duplicated,
                dc.out_of_order,
                dc.resets,
                dc.reconnects,
                dc.max_staleness_ms.map(seconds).unwrap_or("-".to_owned()),
                format!("{}/{}", dc.like_totals_correct, dc.viewers)
            );
        }
        for dc in &self.datacenters {
            if dc.comments_rejected_but_delivered > 0 {
                let _ = writeln!(
                    out,
                    "note: {}: {} comments answered with an error were delivered anyway",
                    dc.name, dc.comments_rejected_but_delivered
                );
            }
            for loss in &dc.losses {
                let _ = writeln!(
                    out,
                    "missing: {} ({}) never got {} from {} accepted at {}{}",
                    loss.viewer,
                    loss.video,
                    loss.comment_id,
                    loss.origin_dc,
                    clock(loss.accepted_at_ms),
                    loss.after_action
                        .as_deref()
                        .map(|action| format!(", after {action}"))
                        .unwrap_or_default()
                );
            }
            for duplicate in &dc.duplicates {
                let _ = writeln!(
                    out,
                    "duplicate: {} got {} {} times",
                    duplicate.viewer, duplicate.comment_id, duplicate.times
                );
            }
            for disorder in &dc.disorder {
                let _ = writeln!(
                    out,
                    "out of order: {} got {} ({}:{}) after {}:{} at {}",
                    disorder.viewer,
                    disorder.comment_id,
                    disorder.origin_dc,
                    disorder.seq,
                    disorder.origin_dc,
                    disorder.after_seq,
                    clock(disorder.at_ms)
                );
            }
            for total in &dc.wrong_totals {
                let seen = total
                    .seen
                    .map(|seen| seen.to_string())
                    .unwrap_or("nothing".to_owned());
                let _ = writeln!(
                    out,
                    "wrong total: {} ({}) saw {seen}, expected {}{}",
                    total.viewer,
                    total.video,
                    total.accepted,
                    if total.unknown > 0 {
                        format!("..={}", total.accepted + total.unknown)
                    } else {
                        String::new()
                    }
                );
            }
        }
        if self.ok {
            let _ = writeln!(out, "\nverdict: ok");
        } else {
            let _ = writeln!(out, "\nverdict: FAILED");
            for problem in &self.problems {
                let _ = writeln!(out, "  {problem}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(name: &str) -> DatacenterReport {
        DatacenterReport {
            name: name.to_owned(),
            viewers: 4,
            comments_published: 10,
            comments_rejected: 3,
            comments_unknown: 1,
            likes_accepted: 20,
            likes_rejected: 5,
            likes_unknown: 2,
            deliveries_expected: 40,
            delivered: 40,
            like_totals_correct: 4,
            ..DatacenterReport::default()
        }
    }

    #[test]
    fn rejections_and_unknown_outcomes_do_not_fail_a_run() {
        assert!(problems(&[clean("dc1"), clean("dc2")], false).is_empty());
    }

    #[test]
    fn a_loss_a_duplicate_a_reordering_or_a_wrong_total_each_fail_a_run() {
        let broken: [fn(&mut DatacenterReport); 4] = [
            |dc| dc.missing = 1,
            |dc| dc.duplicated = 1,
            |dc| dc.out_of_order = 1,
            |dc| dc.like_totals_correct = 3,
        ];
        for (index, breaking) in broken.iter().enumerate() {
            let mut dc2 = clean("dc2");
            breaking(&mut dc2);
            let found = problems(&[clean("dc1"), dc2], false);
            assert_eq!(found.len(), 1, "case {index}: {found:?}");
            assert!(
                found[0].starts_with("dc2: "),
                "names the datacenter: {found:?}"
            );
        }
    }

    #[test]
    fn an_interrupted_run_is_not_ok() {
        assert_eq!(problems(&[clean("dc1")], true).len(), 1);
    }

    #[test]
    fn clock_shows_minutes_seconds_and_tenths() {
        assert_eq!(clock(0), "0:00.0");
        assert_eq!(clock(83_450), "1:23.4");
    }
}
