//! Keeps a datacenter's fan-out stream sourcing from every origin after a partition heals.
//!
//! When a gateway link comes back, nats-server re-establishes the link within seconds, but a
//! source that failed while the link was down is retried on a back-off that grows with the
//! length of the cut (measured here: 40–49 s after a 60–120 s cut). This keeper watches the
//! fan-out stream's sources; when one has been silent for longer than `stall_after` while its
//! origin stream answers again, it removes and re-adds that source, which makes the server
//! resume it at once from the last sequence it holds (no gap, no duplicate).

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream;
use fanfare_model::names;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often the sources are checked.
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// A source with no contact for this long is stalled (healthy ones hear from their origin
/// about every second).
const STALL_AFTER: Duration = Duration::from_secs(3);
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
        let fanout = names::fanout_stream(&self.dc);
        // Source name → when it was first seen stalled, and when it was last restarted.
        let mut stalled_since: HashMap<String, Instant> = HashMap::new();
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
            let Ok(mut stream) = self.js.get_stream(&fanout).await else {
                continue;
            };
            let Ok(info) = stream.info().await.cloned() else {
                continue;
            };
            let mut to_restart = Vec::new();
            for source in &info.sources {
                let silent = source.active.is_none_or(|active| active > STALL_AFTER);
                if !silent {
                    if let Some(since) = stalled_since.remove(&source.name) {
                        tracing::info!(
                            source = source.name,
                            stalled_for = ?since.elapsed(),
                            "fan-out source flowing again"
                        );
                    }
                    continue;
                }
                stalled_since
                    .entry(source.name.clone())
                    .or_insert_with(Instant::now);
                let recently = restarted_at
                    .get(&source.name)
                    .is_some_and(|at| at.elapsed() < RESTART_AT_MOST_EVERY);
                if !recently && self.origin_reachable(&source.name).await {
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

    async fn origin_reachable(&self, origin_stream: &str) -> bool {
        let asked = tokio::time::timeout(REACHABLE_WITHIN, async {
            let mut stream = self.js.get_stream(origin_stream).await.ok()?;
            stream.info().await.ok().map(|_| ())
        });
        matches!(asked.await, Ok(Some(())))
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
