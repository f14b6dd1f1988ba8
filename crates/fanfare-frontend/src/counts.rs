//! Global viewer counts: how many viewers each video has in every datacenter.
//!
//! Every frontend knows its own viewers exactly (the hub's follower counts) and reports them
//! to every other frontend of every datacenter on core NATS: the counts that changed, at most
//! every `viewer_report_every`, and a heartbeat every `viewer_heartbeat` when nothing changed.
//! Each frontend keeps what every other one reported and shows a video's viewers the sum, at
//! most once every `viewers_every` per video and only when it changed (the engine writes it
//! to each follower whose last count differs).
//!
//! What can go wrong, and what happens:
//! - a report is lost (a gateway drops, a frontend reconnects): reports are numbered, and a
//!   gap or a new epoch makes the receiver ask for a full report;
//! - a frontend goes silent for three heartbeats: its counts are kept, and every video it
//!   counts for is shown with `partial: true`;
//! - silent for `interest_ttl`: if its datacenter answers (a message get on that
//!   datacenter's origin stream), the frontend is dead and its viewers are dropped; if not,
//!   the datacenter is cut off and its last counts stay, partial, until it is heard again;
//! - while some frontend is silent, this frontend asks it for a full report every
//!   `viewer_report_every`, so that after a heal the counts are exact as soon as the link
//!   carries the answer.
//!
//! Costs: a heartbeat per frontend per second while idle; per join or leave, one entry in the
//! next report to every frontend; nothing per video per period.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use async_nats::jetstream;
use fanfare_engine::Hub;
use fanfare_model::{names, VideoId, ViewerReport};
use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Most counts in one report message: a full report of more is split.
const MAX_COUNTS_PER_REPORT: usize = 4000;
/// Heartbeats missed before a frontend is taken as silent (its counts shown as partial).
const SILENT_AFTER_BEATS: u32 = 3;
/// Bound on asking a silent frontend's datacenter whether it is reachable.
const PROBE_WITHIN: Duration = Duration::from_millis(500);

/// How the counts are paced; from the frontend's settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pace {
    pub report_every: Duration,
    pub heartbeat: Duration,
    pub viewers_every: Duration,
    /// A frontend silent this long is dead unless its datacenter is cut off.
    pub dead_after: Duration,
}

/// Another frontend, by name and datacenter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Peer {
    pub frontend: String,
    pub dc: String,
}

/// What a silence check found.
#[derive(Debug, Default)]
pub(crate) struct Silence {
    /// Silent past `dead_after`: dead, unless their datacenter is cut off.
    pub overdue: Vec<Peer>,
    /// Silent at all: asked for a full report, so that a heal is noticed at once.
    pub silent: Vec<Peer>,
}

/// What this frontend knows of another one.
struct Remote {
    dc: String,
    epoch: String,
    seq: u64,
    heard: Instant,
    /// Its counts are a full picture (a full report arrived and no report was missed since).
    synced: bool,
    /// Shown as partial: silent for [`SILENT_AFTER_BEATS`] heartbeats.
    silent: bool,
    counts: HashMap<VideoId, u64>,
}

/// Every count this frontend knows, and what it owes others and its viewers.
pub(crate) struct Counts {
    frontend: String,
    dc: String,
    epoch: String,
    seq: u64,
    /// This frontend's own viewers per video.
    local: HashMap<VideoId, u64>,
    /// Local counts changed since the last report (0: none left).
    unreported: BTreeMap<VideoId, u64>,
    /// Someone asked for a full report.
    full_wanted: bool,
    remotes: HashMap<String, Remote>,
    /// The sum of every remote frontend's count, per video.
    remote_sum: HashMap<VideoId, u64>,
    /// Locally watched videos whose shown count may be stale.
    dirty: HashSet<VideoId>,
    last_shown: HashMap<VideoId, Instant>,
    last_published: Instant,
}

impl Counts {
    pub(crate) fn new(frontend: &str, dc: &str, now: Instant) -> Self {
        Self {
            frontend: frontend.to_owned(),
            dc: dc.to_owned(),
            epoch: nuid::next().to_string(),
            seq: 0,
            local: HashMap::new(),
            unreported: BTreeMap::new(),
            full_wanted: false,
            remotes: HashMap::new(),
            remote_sum: HashMap::new(),
            dirty: HashSet::new(),
            last_shown: HashMap::new(),
            last_published: now,
        }
    }

    /// This frontend's viewers of `video` are now `count`.
    pub(crate) fn local_changed(&mut self, video: VideoId, count: u64) {
        if count == 0 {
            if self.local.remove(&video).is_none() {
                return;
            }
            self.last_shown.remove(&video);
            self.dirty.remove(&video);
        } else {
            self.local.insert(video.clone(), count);
            self.dirty.insert(video.clone());
        }
        self.unreported.insert(video, count);
    }

    /// The global count of `video` and whether a silent frontend is in it.
    pub(crate) fn viewers(&self, video: &VideoId) -> (u64, bool) {
        let local = self.local.get(video).copied().unwrap_or(0);
        let remote = self.remote_sum.get(video).copied().unwrap_or(0);
        let partial = self
            .remotes
            .values()
            .any(|remote| remote.silent && remote.counts.get(video).is_some_and(|n| *n > 0));
        (local + remote, partial)
    }

    fn set_remote_count(&mut self, frontend: &str, video: VideoId, count: u64) {
        let Some(remote) = self.remotes.get_mut(frontend) else {
            return;
        };
        let before = if count == 0 {
            remote.counts.remove(&video).unwrap_or(0)
        } else {
            remote.counts.insert(video.clone(), count).unwrap_or(0)
        };
        if before == count {
            return;
        }
        let sum = self.remote_sum.entry(video.clone()).or_default();
        *sum = *sum + count - before;
        if *sum == 0 {
            self.remote_sum.remove(&video);
        }
        if self.local.contains_key(&video) {
            self.dirty.insert(video);
        }
    }

    /// Forgets every count of `frontend`.
    fn clear_remote(&mut self, frontend: &str) {
        let videos: Vec<VideoId> = self
            .remotes
            .get(frontend)
            .map(|remote| remote.counts.keys().cloned().collect())
            .unwrap_or_default();
        for video in videos {
            self.set_remote_count(frontend, video, 0);
        }
    }

    fn mark_videos_of(&mut self, frontend: &str) {
        let Some(remote) = self.remotes.get(frontend) else {
            return;
        };
        let watched: Vec<VideoId> = remote
            .counts
            .keys()
            .filter(|video| self.local.contains_key(*video))
            .cloned()
            .collect();
        self.dirty.extend(watched);
    }

    /// Applies another frontend's report; true when this frontend should ask it for a full
    /// report (a gap, or an instance it has not heard in full).
    pub(crate) fn receive(&mut self, report: ViewerReport, now: Instant) -> bool {
        if report.frontend == self.frontend {
            return false;
        }
        let frontend = report.frontend.clone();
        let new_instance = self
            .remotes
            .get(&frontend)
            .is_none_or(|remote| remote.epoch != report.epoch);
        if new_instance || report.full {
            // A full report (or another instance) replaces whatever was known.
            self.clear_remote(&frontend);
        }
        let remote = self
            .remotes
            .entry(frontend.clone())
            .or_insert_with(|| Remote {
                dc: report.dc.clone(),
                epoch: report.epoch.clone(),
                seq: 0,
                heard: now,
                synced: false,
                silent: false,
                counts: HashMap::new(),
            });
        if new_instance {
            remote.epoch = report.epoch.clone();
            remote.synced = false;
        }
        let in_order = remote.synced && report.seq == remote.seq + 1;
        remote.seq = report.seq;
        remote.heard = now;
        let was_silent = std::mem::replace(&mut remote.silent, false);
        let mut want_full = false;
        if report.full {
            remote.synced = true;
        } else if !in_order {
            // The counts it carries are the latest for their videos; the others may be stale.
            remote.synced = false;
            want_full = true;
        }
        for (video, count) in report.counts {
            self.set_remote_count(&frontend, video, count);
        }
        if was_silent {
            self.mark_videos_of(&frontend);
        }
        want_full
    }

    /// Reports to publish now: the changed counts, or everything when a full report is due;
    /// a heartbeat when nothing was published for a heartbeat.
    pub(crate) fn reports(&mut self, now: Instant, heartbeat: Duration) -> Vec<ViewerReport> {
        let mut reports = Vec::new();
        if std::mem::take(&mut self.full_wanted) {
            self.unreported.clear();
            let all: Vec<(VideoId, u64)> = self
                .local
                .iter()
                .map(|(video, count)| (video.clone(), *count))
                .collect();
            let mut chunks = all.chunks(MAX_COUNTS_PER_REPORT);
            let first = chunks.next().unwrap_or(&[]);
            reports.push(self.report(true, first.iter().cloned().collect()));
            for chunk in chunks {
                reports.push(self.report(false, chunk.iter().cloned().collect()));
            }
        } else if !self.unreported.is_empty() {
            let changed = std::mem::take(&mut self.unreported);
            let changed: Vec<(VideoId, u64)> = changed.into_iter().collect();
            for chunk in changed.chunks(MAX_COUNTS_PER_REPORT) {
                reports.push(self.report(false, chunk.iter().cloned().collect()));
            }
        } else if now.saturating_duration_since(self.last_published) >= heartbeat {
            reports.push(self.report(false, BTreeMap::new()));
        }
        if !reports.is_empty() {
            self.last_published = now;
        }
        reports
    }

    fn report(&mut self, full: bool, counts: BTreeMap<VideoId, u64>) -> ViewerReport {
        self.seq += 1;
        ViewerReport {
            frontend: self.frontend.clone(),
            dc: self.dc.clone(),
            epoch: self.epoch.clone(),
            seq: self.seq,
            full,
            counts,
        }
    }

    /// The report a frontend that stops sends: nothing is counted here any more.
    pub(crate) fn farewell(&mut self) -> ViewerReport {
        self.local.clear();
        self.report(true, BTreeMap::new())
    }

    /// Marks frontends silent for three heartbeats as such.
    pub(crate) fn check_silence(&mut self, now: Instant, pace: &Pace) -> Silence {
        let silent_after = pace.heartbeat * SILENT_AFTER_BEATS;
        let mut newly_silent = Vec::new();
        let mut found = Silence::default();
        for (frontend, remote) in &mut self.remotes {
            let quiet = now.saturating_duration_since(remote.heard);
            if quiet < silent_after {
                continue;
            }
            if !remote.silent {
                remote.silent = true;
                newly_silent.push(frontend.clone());
            }
            let peer = Peer {
                frontend: frontend.clone(),
                dc: remote.dc.clone(),
            };
            if quiet >= pace.dead_after {
                found.overdue.push(peer.clone());
            }
            found.silent.push(peer);
        }
        for frontend in newly_silent {
            self.mark_videos_of(&frontend);
        }
        found
    }

    /// `frontend` is gone for good: its datacenter answers, it does not.
    pub(crate) fn forget(&mut self, frontend: &str) {
        self.clear_remote(frontend);
        self.remotes.remove(frontend);
    }

    /// Videos whose viewers to show now (rate allowing), and when the next one may be.
    pub(crate) fn due(
        &mut self,
        now: Instant,
        every: Duration,
    ) -> (Vec<(VideoId, u64, bool)>, Option<Instant>) {
        let mut shown = Vec::new();
        let mut next: Option<Instant> = None;
        let dirty: Vec<VideoId> = self.dirty.iter().cloned().collect();
        for video in dirty {
            let allowed = self
                .last_shown
                .get(&video)
                .map(|at| *at + every)
                .unwrap_or(now);
            if allowed > now {
                next = Some(next.map_or(allowed, |next| next.min(allowed)));
                continue;
            }
            self.dirty.remove(&video);
            self.last_shown.insert(video.clone(), now);
            let (viewers, partial) = self.viewers(&video);
            shown.push((video, viewers, partial));
        }
        (shown, next)
    }

    fn has_pending(&self) -> bool {
        self.full_wanted || !self.unreported.is_empty() || !self.dirty.is_empty()
    }
}

/// Runs the counts of this frontend until `shutdown`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    client: async_nats::Client,
    js: jetstream::Context,
    hub: Hub,
    frontend: String,
    dc: String,
    pace: Pace,
    shutdown: CancellationToken,
) {
    let subscribed = async {
        let reports = client.subscribe(names::VIEWER_REPORTS).await?;
        let syncs = client.subscribe(names::viewer_sync(&dc, &frontend)).await?;
        Ok::<_, async_nats::SubscribeError>((reports, syncs))
    };
    let (mut reports, mut syncs) = match subscribed.await {
        Ok(subscriptions) => subscriptions,
        Err(error) => {
            tracing::warn!(%error, "cannot subscribe to viewer reports; viewer counts are local only");
            return;
        }
    };
    let report_subject = names::viewer_report(&dc, &frontend);
    let mut counts = Counts::new(&frontend, &dc, Instant::now());
    let mut heartbeat = tokio::time::interval(pace.heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When pending reports and shown counts are next due; None when nothing is pending.
    let mut flush_at: Option<Instant> = None;
    // That time has come.
    let mut flush_due = false;
    let mut probes: HashMap<String, Instant> = HashMap::new();
    loop {
        let sleep = async {
            match flush_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            report = reports.next() => {
                let Some(message) = report else { break };
                let Ok(report) = serde_json::from_slice::<ViewerReport>(&message.payload) else {
                    tracing::debug!("ignoring a viewer report that does not decode");
                    continue;
                };
                let sender = (report.frontend.clone(), report.dc.clone());
                if counts.receive(report, Instant::now()) {
                    ask_full(&client, &sender.1, &sender.0).await;
                }
            }
            sync = syncs.next() => {
                if sync.is_none() { break }
                counts.full_wanted = true;
            }
            _ = hub.recounted_waiting() => {
                for (video, count) in hub.take_recounted() {
                    counts.local_changed(video, count as u64);
                }
            }
            _ = heartbeat.tick() => {
                let now = Instant::now();
                let silence = counts.check_silence(now, &pace);
                for peer in &silence.silent {
                    ask_full(&client, &peer.dc, &peer.frontend).await;
                }
                for Peer { frontend, dc: remote_dc } in silence.overdue {
                    // Once per `dead_after` per frontend at most.
                    let probed = probes.get(&frontend).is_some_and(|at| now.saturating_duration_since(*at) < pace.dead_after);
                    if probed {
                        continue;
                    }
                    probes.insert(frontend.clone(), now);
                    if remote_dc == dc || reachable(&js, &remote_dc).await {
                        tracing::debug!(frontend, "a frontend went silent; dropping its viewers");
                        counts.forget(&frontend);
                        probes.remove(&frontend);
                    }
                }
                publish(&client, &report_subject, counts.reports(now, pace.heartbeat)).await;
            }
            _ = sleep => {
                flush_at = None;
                flush_due = true;
            }
        }
        if counts.has_pending() {
            let now = Instant::now();
            if std::mem::take(&mut flush_due) {
                publish(
                    &client,
                    &report_subject,
                    counts.reports(now, pace.heartbeat),
                )
                .await;
                let (shown, next) = counts.due(now, pace.viewers_every);
                for (video, viewers, partial) in shown {
                    hub.show_viewers(&video, viewers, partial);
                }
                // A video shown a moment ago waits for its interval; anything else that is
                // pending goes with the next window.
                flush_at = next.or_else(|| counts.has_pending().then(|| now + pace.report_every));
            } else if flush_at.is_none() {
                // Changes arriving together (a burst of joins, reports from several
                // frontends) go out together, one window after the first.
                flush_at = Some(now + pace.report_every);
            }
        }
    }
    let farewell = counts.farewell();
    publish(&client, &report_subject, vec![farewell]).await;
}

async fn publish(client: &async_nats::Client, subject: &str, reports: Vec<ViewerReport>) {
    for report in reports {
        let Ok(payload) = serde_json::to_vec(&report) else {
            continue;
        };
        if let Err(error) = client.publish(subject.to_owned(), payload.into()).await {
            tracing::debug!(%error, "cannot publish a viewer report");
        }
    }
}

async fn ask_full(client: &async_nats::Client, dc: &str, frontend: &str) {
    let (Ok(()), Ok(())) = (
        names::check_name(dc).map(|_| ()),
        names::check_name(frontend).map(|_| ()),
    ) else {
        return;
    };
    let subject = names::viewer_sync(dc, frontend);
    if let Err(error) = client.publish(subject, bytes::Bytes::new()).await {
        tracing::debug!(%error, "cannot ask for a full viewer report");
    }
}

/// Whether `dc`'s origin stream answers: any answer, even "no such message", means the
/// datacenter is reachable.
async fn reachable(js: &jetstream::Context, dc: &str) -> bool {
    if names::check_name(dc).is_err() {
        return false;
    }
    let stream = match tokio::time::timeout(
        PROBE_WITHIN,
        js.get_stream_no_info(names::origin_stream(dc)),
    )
    .await
    {
        Ok(Ok(stream)) => stream,
        _ => return false,
    };
    // A subject no interaction is stored under: the answer is "none", or nothing.
    let subject = format!("fanfare.events.{dc}.probe.probe");
    let read = stream.get_last_raw_message_by_subject(&subject);
    match tokio::time::timeout(PROBE_WITHIN, read).await {
        Ok(Ok(_)) => true,
        Ok(Err(error)) => {
            error.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(name: &str) -> VideoId {
        VideoId::parse(name).unwrap()
    }

    fn report(
        frontend: &str,
        epoch: &str,
        seq: u64,
        full: bool,
        counts: &[(&str, u64)],
    ) -> ViewerReport {
        ViewerReport {
            frontend: frontend.into(),
            dc: "dc2".into(),
            epoch: epoch.into(),
            seq,
            full,
            counts: counts.iter().map(|(v, n)| (video(v), *n)).collect(),
        }
    }

    fn pace() -> Pace {
        Pace {
            report_every: Duration::from_millis(250),
            heartbeat: Duration::from_secs(1),
            viewers_every: Duration::from_secs(1),
            dead_after: Duration::from_secs(10),
        }
    }

    #[test]
    fn the_count_is_local_plus_every_remote_and_a_gap_asks_for_a_full_report() {
        let now = Instant::now();
        let mut counts = Counts::new("dc1-fe1", "dc1", now);
        counts.local_changed(video("a"), 2);
        assert!(
            counts.receive(report("dc2-fe1", "e1", 1, false, &[("a", 3)]), now),
            "first heard: not synced"
        );
        assert!(!counts.receive(report("dc2-fe1", "e1", 1, true, &[("a", 3), ("b", 1)]), now));
        assert_eq!(counts.viewers(&video("a")), (5, false));
        assert!(!counts.receive(report("dc2-fe1", "e1", 2, false, &[("a", 0)]), now));
        assert_eq!(counts.viewers(&video("a")), (2, false));
        assert!(
            counts.receive(report("dc2-fe1", "e1", 9, false, &[]), now),
            "a gap"
        );
        // A new instance replaces the old one's counts.
        assert!(!counts.receive(report("dc2-fe1", "e2", 1, true, &[("a", 7)]), now));
        assert_eq!(counts.viewers(&video("a")), (9, false));
        assert_eq!(counts.viewers(&video("b")), (0, false));
        // Its own reports are ignored.
        assert!(!counts.receive(report("dc1-fe1", "x", 1, true, &[("a", 100)]), now));
        assert_eq!(counts.viewers(&video("a")).0, 9);
    }

    #[test]
    fn a_silent_frontend_is_kept_as_partial_and_forgotten_when_dead() {
        let start = Instant::now();
        let mut counts = Counts::new("dc1-fe1", "dc1", start);
        counts.local_changed(video("a"), 1);
        counts.receive(report("dc2-fe1", "e1", 1, true, &[("a", 4)]), start);
        let (_, _) = counts.due(start, Duration::ZERO);
        let silence = counts.check_silence(start + Duration::from_secs(4), &pace());
        assert!(silence.overdue.is_empty());
        assert_eq!(silence.silent.len(), 1);
        assert_eq!(counts.viewers(&video("a")), (5, true));
        let (shown, _) = counts.due(start + Duration::from_secs(4), Duration::from_secs(1));
        assert_eq!(shown, [(video("a"), 5, true)], "partial is shown at once");
        let silence = counts.check_silence(start + Duration::from_secs(11), &pace());
        assert_eq!(
            silence.overdue,
            [Peer {
                frontend: "dc2-fe1".into(),
                dc: "dc2".into()
            }]
        );
        counts.forget("dc2-fe1");
        assert_eq!(counts.viewers(&video("a")), (1, false));
        // Heard again: no longer partial.
        counts.receive(
            report("dc2-fe2", "e3", 1, true, &[("a", 2)]),
            start + Duration::from_secs(12),
        );
        assert_eq!(counts.viewers(&video("a")), (3, false));
    }

    #[test]
    fn reports_carry_changes_full_reports_everything_and_heartbeats_nothing() {
        let start = Instant::now();
        let mut counts = Counts::new("fe", "dc1", start);
        counts.local_changed(video("a"), 1);
        counts.local_changed(video("b"), 2);
        counts.local_changed(video("b"), 0);
        let reports = counts.reports(start, Duration::from_secs(1));
        assert_eq!(reports.len(), 1);
        assert_eq!(
            reports[0].counts.get(&video("b")),
            Some(&0),
            "a video gone is reported as 0"
        );
        assert!(
            counts.reports(start, Duration::from_secs(1)).is_empty(),
            "nothing new"
        );
        let beat = counts.reports(start + Duration::from_secs(1), Duration::from_secs(1));
        assert!(beat[0].counts.is_empty() && !beat[0].full);
        assert_eq!(beat[0].seq, 2, "numbered");
        counts.full_wanted = true;
        let full = counts.reports(start + Duration::from_secs(1), Duration::from_secs(1));
        assert!(full[0].full);
        assert_eq!(full[0].counts.len(), 1);
        let farewell = counts.farewell();
        assert!(farewell.full && farewell.counts.is_empty());
    }

    #[test]
    fn a_video_is_shown_at_most_once_per_interval() {
        let start = Instant::now();
        let every = Duration::from_secs(1);
        let mut counts = Counts::new("fe", "dc1", start);
        counts.local_changed(video("a"), 1);
        assert_eq!(counts.due(start, every).0, [(video("a"), 1, false)]);
        counts.local_changed(video("a"), 2);
        let (shown, next) = counts.due(start + Duration::from_millis(300), every);
        assert!(shown.is_empty());
        assert_eq!(next, Some(start + every));
        assert_eq!(counts.due(start + every, every).0, [(video("a"), 2, false)]);
    }
}
