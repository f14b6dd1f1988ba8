//! The subscription table as a dispatcher reads it: which local frontends want which video.
//!
//! The table lives in the datacenter's `SUBS_<dc>` bucket, written by the frontends (see
//! [`crate::InterestRegistry`]): one lease key per frontend (`f.<frontend>`, with a TTL,
//! refreshed every third of `interest_ttl`) and one interest key per video it has viewers of
//! (`v.<video>.<frontend>`, written at the video's first viewer, deleted after its last, never
//! refreshed). Both hold the epoch of the frontend's lease; an interest counts only while the
//! frontend's live lease has the same epoch. So a frontend's liveness is one key, whatever
//! the number of videos, and a dead frontend's interests all stop counting the moment its
//! lease expires.
//!
//! Every dispatcher keeps the table in memory through one watch of the bucket and applies
//! each change as it comes: the work follows joins, leaves and frontends coming and going,
//! not the number of keys. Interest keys left behind by a frontend that died (or restarted
//! under a new epoch) are deleted by the dispatchers once they have been stale for a grace
//! period, with a compare-and-set on their revision, so a frontend writing them again is never
//! undone.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use fanfare_model::names::{self, SubscriptionKey};
use fanfare_model::VideoId;
use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{open_bucket, FabricError};

/// A dispatcher's live copy of its datacenter's subscription table, kept current by a watch.
#[derive(Clone)]
pub struct SubscriptionTable {
    /// Written only by the watch task; read by the dispatch loop for every message.
    table: Arc<RwLock<Table>>,
    synced: Arc<AtomicBool>,
}

/// A copy of the table for debugging and tests: video → frontend names (live interests only).
pub type TableSnapshot = BTreeMap<String, BTreeSet<String>>;

/// Pause before re-creating a watch that failed or ended (e.g. while the datacenter has no
/// JetStream meta leader).
const REWATCH_PAUSE: Duration = Duration::from_millis(500);
/// How often stale interest keys are looked for.
const STALE_CHECK_EVERY: Duration = Duration::from_secs(5);

/// The table's content and the rules that read it; no NATS in here.
#[derive(Debug, Default)]
pub struct Table {
    /// Live leases: frontend → epoch.
    leases: HashMap<Arc<str>, Arc<str>>,
    /// Interest keys as written: video → (frontend, epoch, revision).
    interests: HashMap<VideoId, Vec<Interest>>,
    /// Frontends whose lease went or changed epoch, since when: their interest keys of
    /// another epoch are deleted after a grace.
    stale: HashMap<Arc<str>, Instant>,
    /// Frontend names and epochs, shared by every key that holds them.
    interned: HashSet<Arc<str>>,
}

#[derive(Debug, Clone)]
struct Interest {
    frontend: Arc<str>,
    epoch: Arc<str>,
    revision: u64,
}

/// An interest key to delete, if it still has this revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleKey {
    pub key: String,
    pub revision: u64,
}

impl Table {
    fn intern(&mut self, text: &str) -> Arc<str> {
        if let Some(known) = self.interned.get(text) {
            return known.clone();
        }
        let fresh: Arc<str> = Arc::from(text);
        self.interned.insert(fresh.clone());
        fresh
    }

    /// Applies one change of the bucket (a put, or a delete/purge/expiry marker).
    pub fn apply(&mut self, key: &str, deleted: bool, value: &[u8], revision: u64, now: Instant) {
        let Some(parsed) = names::parse_subscription_key(key) else {
            tracing::debug!(key, "ignoring a key fanfare did not write");
            return;
        };
        let epoch = String::from_utf8_lossy(value);
        match parsed {
            SubscriptionKey::Lease { frontend } => {
                let frontend = self.intern(frontend);
                if deleted {
                    if self.leases.remove(&frontend).is_some() {
                        self.stale.insert(frontend, now);
                    }
                    return;
                }
                let epoch = self.intern(&epoch);
                let previous = self.leases.insert(frontend.clone(), epoch.clone());
                if previous.as_ref().is_some_and(|previous| *previous != epoch) {
                    self.stale.insert(frontend, now);
                } else if previous.is_none() {
                    // Back (or new): keys of an older epoch may be left; they wait out a grace.
                    self.stale.entry(frontend).or_insert(now);
                }
            }
            SubscriptionKey::Interest { video, frontend } => {
                let frontend = self.intern(frontend);
                if deleted {
                    if let Some(list) = self.interests.get_mut(&video) {
                        list.retain(|interest| interest.frontend != frontend);
                        if list.is_empty() {
                            self.interests.remove(&video);
                        }
                    }
                    return;
                }
                let epoch = self.intern(&epoch);
                let list = self.interests.entry(video).or_default();
                match list
                    .iter_mut()
                    .find(|interest| interest.frontend == frontend)
                {
                    Some(interest) => {
                        interest.epoch = epoch;
                        interest.revision = revision;
                    }
                    None => list.push(Interest {
                        frontend,
                        epoch,
                        revision,
                    }),
                }
            }
        }
    }

    fn is_live(&self, interest: &Interest) -> bool {
        self.leases
            .get(&interest.frontend)
            .is_some_and(|epoch| *epoch == interest.epoch)
    }

    /// Frontends of this datacenter that currently have viewers of `video`.
    pub fn frontends_for(&self, video: &VideoId) -> Vec<Arc<str>> {
        let Some(list) = self.interests.get(video) else {
            return Vec::new();
        };
        let mut frontends: Vec<Arc<str>> = list
            .iter()
            .filter(|interest| self.is_live(interest))
            .map(|interest| interest.frontend.clone())
            .collect();
        frontends.sort();
        frontends
    }

    /// Marks every frontend with an interest key but no matching lease as stale from `now`
    /// (after a watch replayed the bucket).
    fn mark_orphans(&mut self, now: Instant) {
        let orphans: Vec<Arc<str>> = self
            .interests
            .values()
            .flatten()
            .filter(|interest| !self.is_live(interest))
            .map(|interest| interest.frontend.clone())
            .collect();
        for frontend in orphans {
            self.stale.entry(frontend).or_insert(now);
        }
    }

    /// Interest keys of frontends stale for at least `grace` that no live lease covers. Those
    /// frontends are no longer watched for stale keys (until their lease changes again).
    pub fn take_stale_keys(&mut self, now: Instant, grace: Duration) -> Vec<StaleKey> {
        let due: Vec<Arc<str>> = self
            .stale
            .iter()
            .filter(|(_, since)| now.saturating_duration_since(**since) >= grace)
            .map(|(frontend, _)| frontend.clone())
            .collect();
        if due.is_empty() {
            return Vec::new();
        }
        for frontend in &due {
            self.stale.remove(frontend);
        }
        let mut keys = Vec::new();
        for (video, list) in &self.interests {
            for interest in list {
                if due.contains(&interest.frontend) && !self.is_live(interest) {
                    keys.push(StaleKey {
                        key: names::interest_key(video, &interest.frontend),
                        revision: interest.revision,
                    });
                }
            }
        }
        keys
    }

    /// Videos with at least one live interest.
    pub fn video_count(&self) -> usize {
        self.interests
            .values()
            .filter(|list| list.iter().any(|interest| self.is_live(interest)))
            .count()
    }

    pub fn snapshot(&self) -> TableSnapshot {
        self.interests
            .keys()
            .filter_map(|video| {
                let frontends = self.frontends_for(video);
                (!frontends.is_empty()).then(|| {
                    let names = frontends.iter().map(|name| name.to_string()).collect();
                    (video.to_string(), names)
                })
            })
            .collect()
    }
}

impl SubscriptionTable {
    /// Starts watching `dc`'s bucket; interest keys stale for `stale_grace` are deleted. The
    /// task ends when `shutdown` is cancelled.
    pub async fn start(
        js: jetstream::Context,
        dc: &str,
        stale_grace: Duration,
        shutdown: CancellationToken,
    ) -> Result<(Self, tokio::task::JoinHandle<()>), FabricError> {
        let bucket = open_bucket(&js, &names::subscription_bucket(dc)).await?;
        let table = Self {
            table: Arc::default(),
            synced: Arc::default(),
        };
        let watcher = table.clone();
        let task = tokio::spawn(async move { watcher.follow(bucket, stale_grace, shutdown).await });
        Ok((table, task))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.table
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Frontends of this datacenter that currently have viewers of `video`.
    pub fn frontends_for(&self, video: &VideoId) -> Vec<Arc<str>> {
        self.read().frontends_for(video)
    }

    /// True once the watch has delivered the bucket's content as it was at start.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Videos with at least one interested frontend.
    pub fn video_count(&self) -> usize {
        self.read().video_count()
    }

    pub fn snapshot(&self) -> TableSnapshot {
        self.read().snapshot()
    }

    async fn follow(self, bucket: kv::Store, stale_grace: Duration, shutdown: CancellationToken) {
        let mut stale_check = tokio::time::interval(STALE_CHECK_EVERY);
        stale_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !shutdown.is_cancelled() {
            let watch = tokio::select! {
                _ = shutdown.cancelled() => return,
                watch = bucket.watch_with_history(">") => watch,
            };
            let mut watch = match watch {
                Ok(watch) => watch,
                Err(error) => {
                    tracing::warn!(%error, "cannot watch the subscription table, retrying");
                    tokio::time::sleep(REWATCH_PAUSE).await;
                    continue;
                }
            };
            // A new watch replays the whole bucket: build a fresh table, then switch to it.
            let mut fresh = Some(Table::default());
            let empty = bucket
                .status()
                .await
                .map(|status| status.values() == 0)
                .unwrap_or(false);
            if empty {
                self.install(fresh.take().unwrap_or_default());
            }
            loop {
                let entry = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = stale_check.tick(), if fresh.is_none() => {
                        self.delete_stale(&bucket, stale_grace).await;
                        continue;
                    }
                    entry = watch.next() => entry,
                };
                let entry = match entry {
                    Some(Ok(entry)) => entry,
                    Some(Err(error)) => {
                        tracing::warn!(%error, "subscription table watch failed, re-watching");
                        break;
                    }
                    None => break,
                };
                let deleted = entry.operation != kv::Operation::Put;
                let now = Instant::now();
                match fresh.as_mut() {
                    Some(table) => {
                        table.apply(&entry.key, deleted, &entry.value, entry.revision, now);
                        if entry.delta == 0 || entry.seen_current {
                            self.install(fresh.take().unwrap_or_default());
                        }
                    }
                    None => {
                        self.write()
                            .apply(&entry.key, deleted, &entry.value, entry.revision, now)
                    }
                }
            }
            tokio::time::sleep(REWATCH_PAUSE).await;
        }
    }

    /// Switches to a table a watch has replayed in full.
    fn install(&self, mut table: Table) {
        table.mark_orphans(Instant::now());
        *self.write() = table;
        self.synced.store(true, Ordering::Release);
    }

    /// Deletes interest keys left by frontends that are gone (or came back under a new
    /// epoch), each only if nobody wrote it since.
    async fn delete_stale(&self, bucket: &kv::Store, grace: Duration) {
        let keys = self.write().take_stale_keys(Instant::now(), grace);
        if keys.is_empty() {
            return;
        }
        tracing::debug!(keys = keys.len(), "deleting stale interest keys");
        for stale in keys {
            if let Err(error) = bucket
                .delete_expect_revision(&stale.key, Some(stale.revision))
                .await
            {
                // Written again meanwhile, or deleted by another dispatcher: nothing to do.
                tracing::debug!(%error, key = stale.key, "stale interest key not deleted");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(name: &str) -> VideoId {
        VideoId::parse(name).unwrap()
    }

    fn put(table: &mut Table, key: &str, value: &str, revision: u64, at: Instant) {
        table.apply(key, false, value.as_bytes(), revision, at);
    }

    #[test]
    fn an_interest_counts_only_under_its_frontends_live_lease() {
        let now = Instant::now();
        let mut table = Table::default();
        put(&mut table, "v.a.fe1", "e1", 1, now);
        assert!(table.frontends_for(&video("a")).is_empty(), "no lease yet");
        put(&mut table, "f.fe1", "e1", 2, now);
        assert_eq!(table.frontends_for(&video("a")), [Arc::from("fe1")]);
        // Refreshing the lease changes nothing.
        put(&mut table, "f.fe1", "e1", 3, now);
        assert_eq!(table.video_count(), 1);
        // Expiry marker: every interest of the frontend stops counting at once.
        table.apply("f.fe1", true, b"", 4, now);
        assert!(table.frontends_for(&video("a")).is_empty());
        // Back under a new epoch: the old key stays dead until written again.
        put(&mut table, "f.fe1", "e2", 5, now);
        assert!(table.frontends_for(&video("a")).is_empty());
        put(&mut table, "v.a.fe1", "e2", 6, now);
        assert_eq!(table.frontends_for(&video("a")), [Arc::from("fe1")]);
        table.apply("v.a.fe1", true, b"", 7, now);
        assert!(table.snapshot().is_empty());
    }

    #[test]
    fn keys_of_a_dead_frontend_are_deleted_after_the_grace_with_their_revision() {
        let start = Instant::now();
        let grace = Duration::from_secs(30);
        let mut table = Table::default();
        put(&mut table, "f.fe1", "e1", 1, start);
        put(&mut table, "f.fe2", "x", 2, start);
        put(&mut table, "v.a.fe1", "e1", 3, start);
        put(&mut table, "v.b.fe1", "e1", 4, start);
        put(&mut table, "v.a.fe2", "x", 5, start);
        table.apply("f.fe1", true, b"", 6, start + grace);
        assert!(
            table.take_stale_keys(start + grace, grace).is_empty(),
            "not before the grace"
        );
        let mut keys = table.take_stale_keys(start + grace * 2, grace);
        keys.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(
            keys,
            [
                StaleKey {
                    key: "v.a.fe1".into(),
                    revision: 3
                },
                StaleKey {
                    key: "v.b.fe1".into(),
                    revision: 4
                },
            ]
        );
        assert!(
            table.take_stale_keys(start + grace * 3, grace).is_empty(),
            "asked once"
        );
        assert_eq!(table.frontends_for(&video("a")), [Arc::from("fe2")]);
    }

    #[test]
    fn a_replayed_table_marks_interests_without_a_lease_stale() {
        let start = Instant::now();
        let grace = Duration::from_secs(1);
        let mut table = Table::default();
        put(&mut table, "v.a.gone", "e0", 9, start);
        table.mark_orphans(start);
        assert_eq!(
            table.take_stale_keys(start + grace, grace),
            [StaleKey {
                key: "v.a.gone".into(),
                revision: 9
            }]
        );
    }

    #[test]
    fn keys_fanfare_did_not_write_are_ignored() {
        let now = Instant::now();
        let mut table = Table::default();
        for key in ["a.fe1", "v.a.b.c", "f.FE", "x"] {
            put(&mut table, key, "e", 1, now);
        }
        assert!(table.snapshot().is_empty());
        assert!(table.leases.is_empty());
    }
}
