//! The heal bridge: while this datacenter's fan-out stream stays behind an origin it can reach
//! again, read what it misses straight from the origin stream and send it to the viewers.
//!
//! After a partition heals, nats-server resumes a failed source only after a back-off that
//! grows with the cut, and restarting the source by hand needs a stream update, which waits
//! for the JetStream meta layer to re-elect (4–6 s here). A direct get on the origin stream
//! needs neither, so viewers catch up about as soon as the gateway link is back; the source is
//! restarted too, and when the fan-out stream catches up what it brings again is dropped:
//! - likes are counted once per origin sequence ([`fanfare_fabric::TotalRecord::count`]);
//! - frontends drop anything not newer, per origin, than what they delivered for the video.
//!
//! Both hold only if nothing older than what the bridge sends is still on its way through the
//! partitions, so a bridge starts once every partition consumer has acknowledged the last
//! interaction the fan-out stream holds from that origin.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use fanfare_fabric::{FanoutSources, Held, OriginRead};
use fanfare_model::names;
use fanfare_telemetry::DispatcherMetrics;
use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::send::{Sender, TotalsCache};

/// How often every origin is compared with the fan-out stream.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// A fan-out stream behind a reachable origin with nothing new from it for this long is
/// stalled. Sourcing lag is milliseconds, and any progress resets the clock.
const STALLED_AFTER: Duration = Duration::from_millis(500);
/// A stalled source is also restarted (so that the fan-out stream, which resumes and replays
/// read from, catches up) once it has been stalled this long, at most once per this period.
const RESTART_AFTER: Duration = Duration::from_secs(2);
/// Direct gets in flight at once while bridging.
const READ_AHEAD: usize = 64;
/// Most interactions one bridge pass reads; the next pass goes on from there.
const MAX_PASS: u64 = 4096;
/// Bound on each partition consumer info request.
const CONSUMER_INFO_WITHIN: Duration = Duration::from_millis(500);

pub(crate) struct Bridge {
    pub dc: String,
    pub sources: FanoutSources,
    pub fanout: jetstream::stream::Stream,
    pub partitions: u16,
    pub max_batch: usize,
    pub sender: Arc<Sender>,
    pub metrics: DispatcherMetrics,
}

/// What the bridge knows of one origin.
struct Origin {
    /// What the fan-out stream held at the last check, and since when.
    held: Held,
    held_since: Instant,
    /// When the origin was first seen reachable and ahead of `held`.
    behind_since: Option<Instant>,
    /// Every partition acknowledged `held`: bridging may start.
    drained: bool,
    /// Last origin sequence the bridge has sent in this episode.
    bridged_to: u64,
    /// Interactions bridged in this episode.
    bridged: u64,
    restarted_at: Option<Instant>,
}

impl Origin {
    fn new(held: Held) -> Self {
        Self {
            held,
            held_since: Instant::now(),
            behind_since: None,
            drained: false,
            bridged_to: 0,
            bridged: 0,
            restarted_at: None,
        }
    }
}

impl Bridge {
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let mut origins: HashMap<String, Origin> = HashMap::new();
        let mut totals = TotalsCache::new();
        let mut restarting: Option<tokio::task::JoinHandle<()>> = None;
        let mut ticks = tokio::time::interval(CHECK_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticks.tick() => {}
            }
            for name in self.sources.origins().to_vec() {
                let Ok(held) = self.sources.held_from(&name).await else {
                    continue;
                };
                let origin = origins
                    .entry(name.clone())
                    .or_insert_with(|| Origin::new(held));
                if origin.held != held {
                    // The fan-out stream is moving: whatever the bridge sent meanwhile comes
                    // again and is dropped downstream.
                    origin.held = held;
                    origin.held_since = Instant::now();
                    origin.drained = false;
                }
                let Some(last) = self.sources.origin_last(&name).await else {
                    // Unreachable: nothing to read until the link is back.
                    continue;
                };
                if held.origin_seq >= last {
                    self.caught_up(&name, origin);
                    continue;
                }
                let behind_since = *origin.behind_since.get_or_insert_with(Instant::now);
                let stalled = origin.held_since.elapsed() >= STALLED_AFTER
                    && behind_since.elapsed() >= CHECK_EVERY;
                if !stalled {
                    continue;
                }
                let restart_due = origin.held_since.elapsed() >= RESTART_AFTER
                    && origin
                        .restarted_at
                        .is_none_or(|at| at.elapsed() >= RESTART_AFTER);
                if restart_due && restarting.as_ref().is_none_or(|task| task.is_finished()) {
                    origin.restarted_at = Some(Instant::now());
                    restarting = Some(self.restart_source(&name));
                }
                if !origin.drained {
                    origin.drained = self.partitions_drained(held.fanout_seq).await;
                    if !origin.drained {
                        continue;
                    }
                }
                let from = held.origin_seq.max(origin.bridged_to) + 1;
                let to = last.min(from + MAX_PASS - 1);
                if from > to {
                    continue;
                }
                match self.pass(&name, from, to, &mut totals).await {
                    Ok((reached, sent)) => {
                        if reached >= from && origin.bridged == 0 {
                            tracing::info!(
                                origin = name,
                                from,
                                stalled_for = ?origin.held_since.elapsed(),
                                "fan-out stream stalled behind a reachable origin; bridging from it"
                            );
                        }
                        origin.bridged_to = origin.bridged_to.max(reached);
                        origin.bridged += sent;
                        if reached >= last {
                            tracing::info!(
                                origin = name,
                                to = reached,
                                bridged = origin.bridged,
                                reachable_for = ?behind_since.elapsed(),
                                "viewers caught up with the origin through the bridge"
                            );
                        }
                    }
                    Err(error) => {
                        totals.clear();
                        tracing::debug!(origin = name, %error, "bridge pass failed; retrying");
                    }
                }
            }
        }
        if let Some(task) = restarting {
            task.abort();
        }
    }

    /// The fan-out stream holds everything `name` has: the episode, if any, is over.
    fn caught_up(&self, name: &str, origin: &mut Origin) {
        if let Some(since) = origin.behind_since.take() {
            if origin.bridged > 0 {
                tracing::info!(
                    origin = name,
                    bridged = origin.bridged,
                    behind_for = ?since.elapsed(),
                    "fan-out stream caught up with the origin; bridge closed"
                );
            }
        }
        origin.drained = false;
        origin.bridged_to = 0;
        origin.bridged = 0;
    }

    /// Reads `from..=to` of `origin`'s stream and sends it. Returns the last sequence read (a
    /// failed read ends the pass early; the next pass goes on from there) and how many
    /// interactions were sent.
    async fn pass(
        &self,
        origin: &str,
        from: u64,
        to: u64,
        totals: &mut TotalsCache,
    ) -> Result<(u64, u64), fanfare_fabric::FabricError> {
        let mut reads = futures::stream::iter(from..=to)
            .map(|seq| self.sources.read_origin(origin, seq))
            .buffered(READ_AHEAD);
        let mut reached = from - 1;
        let mut deliveries = Vec::new();
        while let Some(read) = reads.next().await {
            match read {
                Ok(OriginRead::Delivery(delivery)) => deliveries.push(delivery),
                Ok(OriginRead::Skip) => {}
                Err(error) if reached < from => return Err(error),
                Err(_) => break,
            }
            reached += 1;
        }
        drop(reads);
        let sent = deliveries.len() as u64;
        for chunk in deliveries.chunks_mut(self.max_batch) {
            self.sender.count_likes(chunk, totals).await?;
            let outcome = self.sender.send(chunk).await;
            self.metrics.bridged(
                chunk.len(),
                outcome.unwatched,
                outcome.deliveries,
                outcome.batches,
            );
        }
        Ok((reached, sent))
    }

    /// Whether every partition consumer has acknowledged everything up to `fanout_seq` (or has
    /// nothing left at all).
    async fn partitions_drained(&self, fanout_seq: u64) -> bool {
        for partition in 0..self.partitions {
            let name = names::dispatch_consumer(partition);
            let info =
                tokio::time::timeout(CONSUMER_INFO_WITHIN, self.fanout.consumer_info(&name)).await;
            let Ok(Ok(info)) = info else {
                return false;
            };
            let idle = info.num_pending == 0 && info.num_ack_pending == 0;
            if info.ack_floor.stream_sequence < fanout_seq && !idle {
                return false;
            }
        }
        true
    }

    /// Restarts the fan-out stream's source of `origin` in the background (it can take
    /// seconds while the meta layer re-elects).
    fn restart_source(&self, origin: &str) -> tokio::task::JoinHandle<()> {
        let sources = self.sources.clone();
        let origin = origin.to_owned();
        let dc = self.dc.clone();
        tokio::spawn(async move {
            match sources.restart(&origin).await {
                Ok(()) => tracing::info!(dc, origin, "restarted a stalled fan-out source"),
                Err(error) => {
                    tracing::debug!(dc, origin, %error, "cannot restart a stalled fan-out source yet")
                }
            }
        })
    }
}
