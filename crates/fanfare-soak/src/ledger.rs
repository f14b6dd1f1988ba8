//! The soak's bookkeeping: what was published, what each viewer received, what chaos did.
//!
//! Publishers, viewers, the chaos runner and the observer all write here through one mutex.
//! It is held only for a few map updates and never across an `.await`, so at the soak's rates
//! (tens of events a second) it costs nothing worth measuring. Published comments of a video
//! are kept in the order their 202 arrived, which lets each viewer keep a cursor: everything
//! before it has been received, so convergence checks do not rescan the whole history.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::report::{
    self, ActionRecord, DatacenterReport, DisorderExample, DuplicateExample, HealRecord,
    LossExample, SoakReport, TotalExample, EXAMPLES_KEPT,
};

/// What became of one publish request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Answered 202 (or 200): stored.
    Accepted,
    /// Answered with an error or refused: not stored, as far as the API says.
    Rejected,
    /// Timed out or cut mid-way, and retries did not settle it: maybe stored, maybe not.
    Unknown,
}

struct PublishedComment {
    id: String,
    origin_dc: String,
    accepted_at: Duration,
}

#[derive(Default)]
struct VideoLedger {
    name: String,
    /// In the order their 202 arrived.
    published: Vec<PublishedComment>,
    likes_accepted: u64,
    likes_unknown: u64,
}

#[derive(Default)]
struct DcCounters {
    name: String,
    comments: [u64; 3],
    likes: [u64; 3],
    max_staleness_ms: Option<u64>,
}

fn slot(outcome: Outcome) -> usize {
    match outcome {
        Outcome::Accepted => 0,
        Outcome::Rejected => 1,
        Outcome::Unknown => 2,
    }
}

struct ViewerRecord {
    name: String,
    home_dc: usize,
    video: usize,
    connected: bool,
    /// Comment id -> how many times it arrived.
    received: HashMap<String, u32>,
    /// Every published comment of the video before this index has been received.
    cursor: usize,
    /// Per origin, the sequence of the last comment received from it.
    last_seq: BTreeMap<String, u64>,
    out_of_order: Vec<DisorderExample>,
    out_of_order_count: u64,
    resets: u64,
    reconnects: u64,
    latest_total: Option<u64>,
}

struct PendingHeal {
    record: usize,
    at: Duration,
}

struct State {
    /// Time zero of the run: every offset in the report counts from it.
    start: Instant,
    dcs: Vec<DcCounters>,
    videos: Vec<VideoLedger>,
    viewers: Vec<ViewerRecord>,
    /// Comment id -> the datacenter whose publisher was told it was rejected.
    rejected_comments: HashMap<String, usize>,
    actions: Vec<ActionRecord>,
    heals: Vec<HealRecord>,
    pending_heals: Vec<PendingHeal>,
    /// The partition in force and since when.
    partition: Option<(String, Duration)>,
}

pub(crate) struct Ledger {
    state: Mutex<State>,
}

/// Whether `total` is a right final like total given what publishers know: every accepted
/// like counted, and at most the ones whose outcome stayed unknown on top.
fn total_is_right(seen: Option<u64>, accepted: u64, unknown: u64) -> bool {
    let seen = seen.unwrap_or(0);
    accepted <= seen && seen <= accepted + unknown
}

impl Ledger {
    pub(crate) fn new(dcs: &[String], videos: &[String]) -> Self {
        let state = State {
            start: Instant::now(),
            dcs: dcs
                .iter()
                .map(|name| DcCounters {
                    name: name.clone(),
                    ..DcCounters::default()
                })
                .collect(),
            videos: videos
                .iter()
                .map(|name| VideoLedger {
                    name: name.clone(),
                    ..VideoLedger::default()
                })
                .collect(),
            viewers: Vec::new(),
            rejected_comments: HashMap::new(),
            actions: Vec::new(),
            heals: Vec::new(),
            pending_heals: Vec::new(),
            partition: None,
        };
        Self {
            state: Mutex::new(state),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets time zero: the start of publishing and chaos, after the viewers are set up.
    pub(crate) fn begin(&self) -> Instant {
        let now = Instant::now();
        self.lock().start = now;
        now
    }

    /// Time since the run started.
    pub(crate) fn elapsed(&self) -> Duration {
        self.lock().start.elapsed()
    }

    /// Adds a viewer; returns its index.
    pub(crate) fn add_viewer(&self, name: String, home_dc: usize, video: usize) -> usize {
        let mut state = self.lock();
        state.viewers.push(ViewerRecord {
            name,
            home_dc,
            video,
            connected: false,
            received: HashMap::new(),
            cursor: 0,
            last_seq: BTreeMap::new(),
            out_of_order: Vec::new(),
            out_of_order_count: 0,
            resets: 0,
            reconnects: 0,
            latest_total: None,
        });
        state.viewers.len() - 1
    }

    pub(crate) fn comment_outcome(&self, dc: usize, video: usize, id: &str, outcome: Outcome) {
        let mut state = self.lock();
        state.dcs[dc].comments[slot(outcome)] += 1;
        match outcome {
            Outcome::Accepted => {
                // Taken under the lock, so the list stays in accept order.
                let accepted_at = state.start.elapsed();
                let origin_dc = state.dcs[dc].name.clone();
                state.videos[video].published.push(PublishedComment {
                    id: id.to_owned(),
                    origin_dc,
                    accepted_at,
                });
            }
            Outcome::Rejected => {
                state.rejected_comments.insert(id.to_owned(), dc);
            }
            Outcome::Unknown => {}
        }
    }

    pub(crate) fn like_outcome(&self, dc: usize, video: usize, outcome: Outcome) {
        let mut state = self.lock();
        state.dcs[dc].likes[slot(outcome)] += 1;
        match outcome {
            Outcome::Accepted => state.videos[video].likes_accepted += 1,
            Outcome::Unknown => state.videos[video].likes_unknown += 1,
            Outcome::Rejected => {}
        }
    }

    pub(crate) fn viewer_connected(&self, viewer: usize, reconnect: bool) {
        let mut state = self.lock();
        let record = &mut state.viewers[viewer];
        record.connected = true;
        if reconnect {
            record.reconnects += 1;
        }
    }

    pub(crate) fn all_connected(&self) -> bool {
        self.lock().viewers.iter().all(|viewer| viewer.connected)
    }

    pub(crate) fn viewer_disconnected(&self, viewer: usize) {
        self.lock().viewers[viewer].connected = false;
    }

    /// A comment arrived at `viewer` through a frontend of datacenter `via_dc`, with origin
    /// sequence `seq` (from the event id).
    pub(crate) fn comment_received(
        &self,
        viewer: usize,
        via_dc: usize,
        comment_id: &str,
        origin_dc: &str,
        seq: u64,
        staleness_ms: u64,
    ) {
        let mut state = self.lock();
        let at_ms = state.start.elapsed().as_millis() as u64;
        let max = &mut state.dcs[via_dc].max_staleness_ms;
        *max = Some(max.unwrap_or(0).max(staleness_ms));
        let record = &mut state.viewers[viewer];
        *record.received.entry(comment_id.to_owned()).or_insert(0) += 1;
        let last = record.last_seq.entry(origin_dc.to_owned()).or_insert(0);
        if seq <= *last {
            record.out_of_order_count += 1;
            if record.out_of_order.len() < EXAMPLES_KEPT {
                let example = DisorderExample {
                    viewer: record.name.clone(),
                    comment_id: comment_id.to_owned(),
                    origin_dc: origin_dc.to_owned(),
                    seq,
                    after_seq: *last,
                    at_ms,
                };
                record.out_of_order.push(example);
            }
        } else {
            *last = seq;
        }
    }

    pub(crate) fn total_seen(&self, viewer: usize, total: u64) {
        self.lock().viewers[viewer].latest_total = Some(total);
    }

    pub(crate) fn reset_received(&self, viewer: usize) {
        self.lock().viewers[viewer].resets += 1;
    }

    /// Records a chaos action done at `at`; partitions and heals also start and end the
    /// convergence measurements.
    pub(crate) fn action_done(
        &self,
        at: Duration,
        action: String,
        is_partition: bool,
        is_heal: bool,
        error: Option<String>,
    ) {
        let mut state = self.lock();
        let carried_out = error.is_none();
        state.actions.push(ActionRecord {
            at_ms: at.as_millis() as u64,
            action: action.clone(),
            error,
        });
        if !carried_out {
            return;
        }
        if is_partition {
            let unfinished: Vec<usize> = state.pending_heals.drain(..).map(|p| p.record).collect();
            for index in unfinished {
                state.heals[index].note = Some("not converged before the next partition".into());
            }
            state.partition = Some((action, at));
        } else if is_heal {
            if let Some((ended, _)) = state.partition.take() {
                state.heals.push(HealRecord {
                    at_ms: at.as_millis() as u64,
                    ended,
                    converged_ms: None,
                    note: None,
                });
                let record = state.heals.len() - 1;
                state.pending_heals.push(PendingHeal { record, at });
            }
        }
    }

    /// Moves each viewer's cursor past what it has received.
    fn advance_cursors(state: &mut State) {
        let State {
            viewers, videos, ..
        } = state;
        for viewer in viewers.iter_mut() {
            let published = &videos[viewer.video].published;
            while viewer.cursor < published.len()
                && viewer.received.contains_key(&published[viewer.cursor].id)
            {
                viewer.cursor += 1;
            }
        }
    }

    /// Completes the convergence time of every heal after which every connected viewer now
    /// has every comment accepted before the heal.
    pub(crate) fn check_convergence(&self) {
        let mut state = self.lock();
        let now = state.start.elapsed();
        if state.pending_heals.is_empty() {
            return;
        }
        Self::advance_cursors(&mut state);
        let State {
            viewers,
            videos,
            pending_heals,
            heals,
            ..
        } = &mut *state;
        pending_heals.retain(|pending| {
            let converged = viewers
                .iter()
                .filter(|viewer| viewer.connected)
                .all(|viewer| {
                    let published = &videos[viewer.video].published;
                    let before = published.partition_point(|c| c.accepted_at < pending.at);
                    viewer.cursor >= before
                });
            if converged {
                heals[pending.record].converged_ms = Some((now - pending.at).as_millis() as u64);
            }
            !converged
        });
    }

    /// Marks heals still unconverged at the end.
    pub(crate) fn close_heals(&self) {
        let mut state = self.lock();
        let unfinished: Vec<usize> = state.pending_heals.drain(..).map(|p| p.record).collect();
        for index in unfinished {
            state.heals[index].note = Some("not converged before the end".into());
        }
    }

    /// True when every viewer has every published comment of its video and the right like
    /// total: the end state the settle phase waits for.
    pub(crate) fn settled(&self) -> bool {
        let mut state = self.lock();
        Self::advance_cursors(&mut state);
        state.viewers.iter().all(|viewer| {
            let video = &state.videos[viewer.video];
            viewer.cursor >= video.published.len()
                && total_is_right(
                    viewer.latest_total,
                    video.likes_accepted,
                    video.likes_unknown,
                )
        })
    }

    /// One line for the progress output.
    pub(crate) fn progress_line(&self) -> String {
        let state = self.lock();
        let elapsed = state.start.elapsed().as_secs();
        let published: u64 = state.dcs.iter().map(|dc| dc.comments[0]).sum();
        let likes: u64 = state.dcs.iter().map(|dc| dc.likes[0]).sum();
        let delivered: u64 = state
            .viewers
            .iter()
            .map(|viewer| viewer.received.len() as u64)
            .sum();
        let connected = state
            .viewers
            .iter()
            .filter(|viewer| viewer.connected)
            .count();
        let partition = match &state.partition {
            Some((what, since)) => format!("{what} since {}s", since.as_secs()),
            None => "none".to_owned(),
        };
        format!(
            "soak {}:{:02}  published {published} comments {likes} likes  delivered {delivered}  \
             viewers {connected}/{} connected  partition {partition}",
            elapsed / 60,
            elapsed % 60,
            state.viewers.len()
        )
    }

    /// Builds the report from everything recorded.
    pub(crate) fn report(
        &self,
        seed: u64,
        duration: Duration,
        settled_after: Option<Duration>,
        interrupted: bool,
    ) -> SoakReport {
        let mut state = self.lock();
        let elapsed = state.start.elapsed();
        Self::advance_cursors(&mut state);
        let state = &*state;
        let mut datacenters: Vec<DatacenterReport> = state
            .dcs
            .iter()
            .map(|dc| DatacenterReport {
                name: dc.name.clone(),
                comments_published: dc.comments[0],
                comments_rejected: dc.comments[1],
                comments_unknown: dc.comments[2],
                likes_accepted: dc.likes[0],
                likes_rejected: dc.likes[1],
                likes_unknown: dc.likes[2],
                max_staleness_ms: dc.max_staleness_ms,
                ..DatacenterReport::default()
            })
            .collect();
        let action_before = |at: Duration| {
            let at_ms = at.as_millis() as u64;
            state
                .actions
                .iter()
                .rev()
                .find(|action| action.at_ms <= at_ms)
                .map(|action| format!("{} at {}s", action.action, action.at_ms / 1000))
        };
        for viewer in &state.viewers {
            let dc = &mut datacenters[viewer.home_dc];
            let video = &state.videos[viewer.video];
            dc.viewers += 1;
            dc.deliveries_expected += video.published.len() as u64;
            for comment in &video.published {
                if viewer.received.contains_key(&comment.id) {
                    dc.delivered += 1;
                    continue;
                }
                dc.missing += 1;
                if dc.losses.len() < EXAMPLES_KEPT {
                    dc.losses.push(LossExample {
                        viewer: viewer.name.clone(),
                        video: video.name.clone(),
                        comment_id: comment.id.clone(),
                        origin_dc: comment.origin_dc.clone(),
                        accepted_at_ms: comment.accepted_at.as_millis() as u64,
                        after_action: action_before(comment.accepted_at),
                    });
                }
            }
            for (id, times) in &viewer.received {
                if *times > 1 {
                    dc.duplicated += u64::from(*times - 1);
                    if dc.duplicates.len() < EXAMPLES_KEPT {
                        dc.duplicates.push(DuplicateExample {
                            viewer: viewer.name.clone(),
                            comment_id: id.clone(),
                            times: *times,
                        });
                    }
                }
            }
            dc.out_of_order += viewer.out_of_order_count;
            for example in &viewer.out_of_order {
                if dc.disorder.len() < EXAMPLES_KEPT {
                    dc.disorder.push(example.clone());
                }
            }
            dc.resets += viewer.resets;
            dc.reconnects += viewer.reconnects;
            if total_is_right(
                viewer.latest_total,
                video.likes_accepted,
                video.likes_unknown,
            ) {
                dc.like_totals_correct += 1;
            } else if dc.wrong_totals.len() < EXAMPLES_KEPT {
                dc.wrong_totals.push(TotalExample {
                    viewer: viewer.name.clone(),
                    video: video.name.clone(),
                    seen: viewer.latest_total,
                    accepted: video.likes_accepted,
                    unknown: video.likes_unknown,
                });
            }
        }
        // Counted once per comment, in the datacenter that rejected it.
        let delivered_anyway: HashSet<&String> = state
            .viewers
            .iter()
            .flat_map(|viewer| viewer.received.keys())
            .filter(|id| state.rejected_comments.contains_key(*id))
            .collect();
        for id in delivered_anyway {
            datacenters[state.rejected_comments[id]].comments_rejected_but_delivered += 1;
        }
        let problems = report::problems(&datacenters, interrupted);
        SoakReport {
            seed,
            duration_ms: duration.as_millis() as u64,
            elapsed_ms: elapsed.as_millis() as u64,
            settled_after_ms: settled_after.map(|after| after.as_millis() as u64),
            interrupted,
            videos: state
                .videos
                .iter()
                .map(|video| video.name.clone())
                .collect(),
            actions: state.actions.clone(),
            heals: state.heals.clone(),
            datacenters,
            ok: problems.is_empty(),
            problems,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger() -> Ledger {
        Ledger::new(&["dc1".to_owned(), "dc2".to_owned()], &["v0".to_owned()])
    }

    #[test]
    fn a_final_total_may_include_likes_whose_outcome_is_unknown_but_no_more() {
        assert!(total_is_right(Some(10), 10, 0));
        assert!(total_is_right(Some(12), 10, 2));
        assert!(!total_is_right(Some(9), 10, 2));
        assert!(!total_is_right(Some(13), 10, 2));
        assert!(total_is_right(None, 0, 0), "no like, no total event");
        assert!(!total_is_right(None, 1, 0));
    }

    #[test]
    fn a_comment_received_twice_or_behind_its_origin_is_counted_and_a_gap_is_missing() {
        let ledger = ledger();
        let viewer = ledger.add_viewer("dc1-fe1/0".into(), 0, 0);
        for id in ["c-dc1-1", "c-dc1-2", "c-dc1-3"] {
            ledger.comment_outcome(0, 0, id, Outcome::Accepted);
        }
        ledger.comment_received(viewer, 0, "c-dc1-1", "dc1", 1, 5);
        ledger.comment_received(viewer, 0, "c-dc1-3", "dc1", 3, 5);
        ledger.comment_received(viewer, 0, "c-dc1-1", "dc1", 1, 5);
        let report = ledger.report(1, Duration::from_secs(1), None, false);
        let dc1 = &report.datacenters[0];
        assert_eq!(dc1.deliveries_expected, 3);
        assert_eq!(dc1.delivered, 2);
        assert_eq!(dc1.missing, 1);
        assert_eq!(dc1.losses[0].comment_id, "c-dc1-2");
        assert_eq!(dc1.duplicated, 1);
        assert_eq!(dc1.out_of_order, 1, "seq 1 after seq 3");
        assert!(!report.ok);
    }

    #[test]
    fn a_heal_converges_once_connected_viewers_have_what_was_accepted_before_it() {
        let ledger = ledger();
        let viewer = ledger.add_viewer("dc2-fe1/0".into(), 1, 0);
        ledger.viewer_connected(viewer, false);
        ledger.action_done(
            Duration::ZERO,
            "isolate dc2 (drop)".into(),
            true,
            false,
            None,
        );
        ledger.comment_outcome(0, 0, "c-dc1-1", Outcome::Accepted);
        ledger.action_done(ledger.elapsed(), "heal".into(), false, true, None);
        ledger.comment_outcome(0, 0, "c-dc1-2", Outcome::Accepted);
        ledger.check_convergence();
        assert_eq!(ledger.lock().heals[0].converged_ms, None);
        ledger.comment_received(viewer, 1, "c-dc1-1", "dc1", 1, 5);
        ledger.check_convergence();
        assert!(
            ledger.lock().heals[0].converged_ms.is_some(),
            "what came after the heal is not waited for"
        );
    }

    #[test]
    fn a_new_partition_ends_the_wait_for_the_previous_heal() {
        let ledger = ledger();
        let viewer = ledger.add_viewer("dc2-fe1/0".into(), 1, 0);
        ledger.viewer_connected(viewer, false);
        ledger.action_done(Duration::ZERO, "cut".into(), true, false, None);
        ledger.comment_outcome(0, 0, "c-dc1-1", Outcome::Accepted);
        ledger.action_done(ledger.elapsed(), "heal".into(), false, true, None);
        ledger.action_done(ledger.elapsed(), "cut".into(), true, false, None);
        ledger.check_convergence();
        let state = ledger.lock();
        assert_eq!(state.heals.len(), 1);
        assert!(state.heals[0]
            .note
            .as_deref()
            .unwrap()
            .contains("next partition"));
    }
}
