//! Keeps a datacenter's fan-out stream sourcing from every origin after a partition heals.
//!
//! When a gateway link comes back, nats-server re-establishes the link within seconds, but a
//! source that failed while the link was down is retried on a back-off that grows with the
//! length of the cut (measured here: 40–49 s after a 60–120 s cut). This keeper compares, for
//! each origin, the last origin sequence the fan-out stream holds with the origin stream's own
//! last sequence; when it stays behind a reachable origin with nothing new arriving for
//! `STALL_AFTER`, it removes and re-adds that source, which makes the server resume it at once
//! from the last sequence it holds (no gap, no duplicate).

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream;
use fanfare_model::names;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often the sources are checked.
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// A source behind its reachable origin, with nothing new arriving for this long, is stalled.
const STALL_AFTER: Duration = Duration::from_secs(2);
/// How long an origin has to answer a stream info request to count as reachable.
const REACHABLE_WITHIN: Duration = Duration::from_millis(500);
/// Least time between two restarts of the same source.
const RESTART_AT_MOST_EVERY: Duration = Duration::from_secs(2);

pub struct SourceKeeper {
    js: jetstream::Context,
    dc: String,
}

impl SourceKeeper {
    pub fn new(js: jetstream::Context, dc: &str) -> Self {
        Self {
            js,
            dc: dc.to_owned(),
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let fanout_name = names::fanout_stream(&self.dc);
        // Origin → what this datacenter held from it when it was first seen stuck behind.
        let mut stuck: HashMap<String, (u64, Instant)> = HashMap::new();
        let mut restarted_at: HashMap<String, Instant> = HashMap::new();
        // Failed restarts in a row; only the first is worth a warning (after a heal the
        // JetStream meta layer can refuse updates for several seconds).
        let mut failures = 0u32;
        let mut ticks = tokio::time::interval(CHECK_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let Ok(mut fanout) = self.js.get_stream(&fanout_name).await else {
                continue;
            };
            let Ok(info) = fanout.info().await.cloned() else {
                continue;
            };
            let mut to_restart = Vec::new();
            for source in info.config.sources.iter().flatten() {
                let Some(origin) = source.name.strip_prefix("EVENTS_") else {
                    continue;
                };
                let held = self.held_from(&fanout, origin).await;
                let Some(origin_last) = self.origin_last(&source.name).await else {
                    // Unreachable: nothing to restart until the link is back.
                    continue;
                };
                if held >= origin_last {
                    let was_stalled = stuck
                        .remove(origin)
                        .map(|(_, since)| since.elapsed())
                        .filter(|behind_for| *behind_for >= STALL_AFTER);
                    if let Some(behind_for) = was_stalled {
                        tracing::info!(origin, ?behind_for, "fan-out source caught up");
                    }
                    continue;
                }
                // Behind: stuck only while nothing new arrives from that origin.
                let entry = stuck
                    .entry(origin.to_owned())
                    .or_insert((held, Instant::now()));
                if entry.0 != held {
                    *entry = (held, Instant::now());
                    continue;
                }
                let recently = restarted_at
                    .get(&source.name)
                    .is_some_and(|at| at.elapsed() < RESTART_AT_MOST_EVERY);
                if entry.1.elapsed() >= STALL_AFTER && !recently {
                    to_restart.push(source.name.clone());
                }
            }
            if to_restart.is_empty() {
                continue;
            }
            match self.restart_sources(&info.config, &to_restart).await {
                Ok(()) => {
                    for name in &to_restart {
                        restarted_at.insert(name.clone(), Instant::now());
                    }
                    tracing::info!(sources = ?to_restart, failures, "restarted stalled fan-out sources");
                    failures = 0;
                }
                Err(error) if failures == 0 => {
                    failures += 1;
                    tracing::warn!(%error, sources = ?to_restart, "cannot restart stalled fan-out sources yet, retrying");
                }
                Err(error) => {
                    failures += 1;
                    tracing::debug!(%error, failures, "cannot restart stalled fan-out sources yet");
                }
            }
        }
    }

    /// The origin sequence of the last interaction from `origin` this datacenter holds.
    async fn held_from(&self, fanout: &jetstream::stream::Stream, origin: &str) -> u64 {
        let subject = names::fanout_from_origin(&self.dc, origin);
        match fanout.direct_get_last_for_subject(subject).await {
            Ok(message) => crate::origin_sequence(&message.headers).unwrap_or(0),
            Err(_) => 0,
        }
    }

    /// The last sequence of an origin stream, if it answers in time.
    async fn origin_last(&self, origin_stream: &str) -> Option<u64> {
        let asked = tokio::time::timeout(REACHABLE_WITHIN, async {
            let mut stream = self.js.get_stream(origin_stream).await.ok()?;
            stream
                .info()
                .await
                .ok()
                .map(|info| info.state.last_sequence)
        });
        asked.await.ok().flatten()
    }

    /// Removes the named sources and puts them back: the server starts them afresh.
    async fn restart_sources(
        &self,
        config: &jetstream::stream::Config,
        names: &[String],
    ) -> Result<(), async_nats::Error> {
        let mut without = config.clone();
        without.sources = config.sources.as_ref().map(|sources| {
            sources
                .iter()
                .filter(|source| !names.contains(&source.name))
                .cloned()
                .collect()
        });
        self.js.update_stream(without).await?;
        self.js.update_stream(config.clone()).await?;
        Ok(())
    }
}
