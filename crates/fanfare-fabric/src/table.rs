//! The subscription table (video → frontends of one datacenter) and the like totals, both kept
//! in JetStream key-value buckets rather than in any one process.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use fanfare_model::{names, VideoId};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::{FabricError, FabricErrorKind};

/// A dispatcher's live copy of its datacenter's subscription table, kept current by a watch.
#[derive(Clone)]
pub struct SubscriptionTable {
    /// Written only by the watch task; read by the dispatch loop for every message.
    videos: Arc<RwLock<HashMap<VideoId, Vec<Arc<str>>>>>,
    synced: Arc<std::sync::atomic::AtomicBool>,
}

/// A copy of the table for debugging and tests: video → frontend names.
pub type TableSnapshot = BTreeMap<String, BTreeSet<String>>;

/// Pause before re-creating a watch that failed or ended (e.g. while the datacenter has no
/// JetStream meta leader).
const REWATCH_PAUSE: Duration = Duration::from_millis(500);

impl SubscriptionTable {
    /// Starts watching `dc`'s bucket; the task ends when `shutdown` is cancelled.
    pub async fn start(
        js: jetstream::Context,
        dc: &str,
        shutdown: CancellationToken,
    ) -> Result<(Self, tokio::task::JoinHandle<()>), FabricError> {
        let bucket = open_bucket(&js, &names::subscription_bucket(dc)).await?;
        let table = Self {
            videos: Arc::default(),
            synced: Arc::default(),
        };
        let watcher = table.clone();
        let task = tokio::spawn(async move { watcher.follow(bucket, shutdown).await });
        Ok((table, task))
    }

    /// Frontends of this datacenter that currently have viewers of `video`.
    pub fn frontends_for(&self, video: &VideoId) -> Vec<Arc<str>> {
        let videos = self
            .videos
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        videos.get(video).cloned().unwrap_or_default()
    }

    /// True once the watch has delivered the bucket's content as it was at start.
    pub fn is_synced(&self) -> bool {
        self.synced.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Videos with at least one interested frontend.
    pub fn video_count(&self) -> usize {
        self.videos
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }

    pub fn snapshot(&self) -> TableSnapshot {
        let videos = self
            .videos
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        videos
            .iter()
            .map(|(video, frontends)| {
                let names = frontends.iter().map(|name| name.to_string()).collect();
                (video.to_string(), names)
            })
            .collect()
    }

    async fn follow(self, bucket: kv::Store, shutdown: CancellationToken) {
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
            // A new watch replays the whole bucket: rebuild from scratch.
            let mut fresh: HashMap<VideoId, HashSet<Arc<str>>> = HashMap::new();
            let mut replaying = true;
            if bucket
                .status()
                .await
                .map(|status| status.values())
                .unwrap_or(1)
                == 0
            {
                self.replace(&fresh);
                replaying = false;
            }
            loop {
                let entry = tokio::select! {
                    _ = shutdown.cancelled() => return,
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
                apply(&mut fresh, &entry);
                if !replaying || entry.delta == 0 || entry.seen_current {
                    replaying = false;
                    self.replace(&fresh);
                }
            }
            tokio::time::sleep(REWATCH_PAUSE).await;
        }
    }

    fn replace(&self, fresh: &HashMap<VideoId, HashSet<Arc<str>>>) {
        let rebuilt = fresh
            .iter()
            .map(|(video, frontends)| {
                let mut names: Vec<Arc<str>> = frontends.iter().cloned().collect();
                names.sort();
                (video.clone(), names)
            })
            .collect();
        *self
            .videos
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = rebuilt;
        self.synced
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

async fn open_bucket(js: &jetstream::Context, name: &str) -> Result<kv::Store, FabricError> {
    js.get_key_value(name).await.map_err(|error| {
        FabricError::new(
            FabricErrorKind::KeyValue,
            format!("opening bucket {name}"),
            error,
        )
    })
}

fn apply(table: &mut HashMap<VideoId, HashSet<Arc<str>>>, entry: &kv::Entry) {
    let Some((video, frontend)) = names::parse_interest_key(&entry.key) else {
        tracing::debug!(key = entry.key, "ignoring a key fanfare did not write");
        return;
    };
    match entry.operation {
        kv::Operation::Put => {
            table.entry(video).or_default().insert(Arc::from(frontend));
        }
        kv::Operation::Delete | kv::Operation::Purge => {
            if let Some(frontends) = table.get_mut(&video) {
                frontends.remove(frontend);
                if frontends.is_empty() {
                    table.remove(&video);
                }
            }
        }
    }
}

/// A frontend's writer to its datacenter's subscription table.
#[derive(Clone)]
pub struct InterestRegistry {
    bucket: kv::Store,
    frontend: Arc<str>,
}

impl InterestRegistry {
    pub async fn open(
        js: &jetstream::Context,
        dc: &str,
        frontend: &str,
    ) -> Result<Self, FabricError> {
        let bucket = open_bucket(js, &names::subscription_bucket(dc)).await?;
        Ok(Self {
            bucket,
            frontend: Arc::from(frontend),
        })
    }

    /// Writes (or refreshes) this frontend's interest in `video`.
    pub async fn register_interest(&self, video: &VideoId) -> Result<(), FabricError> {
        let key = names::interest_key(video, &self.frontend);
        self.bucket
            .put(&key, Bytes::from_static(b"1"))
            .await
            .map(|_| ())
            .map_err(|error| {
                FabricError::new(FabricErrorKind::KeyValue, format!("writing {key}"), error)
            })
    }

    pub async fn withdraw_interest(&self, video: &VideoId) -> Result<(), FabricError> {
        let key = names::interest_key(video, &self.frontend);
        self.bucket.delete(&key).await.map_err(|error| {
            FabricError::new(FabricErrorKind::KeyValue, format!("deleting {key}"), error)
        })
    }
}

/// A video's like total as one datacenter counts it, and for each origin the sequence of the
/// last like batch counted from it. Every path that counts (the dispatch partitions and the
/// heal bridge) reads an origin in its own order, so a batch at or below `counted[origin]` has
/// been counted already, whoever counted it and however often it comes back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotalRecord {
    pub total: u64,
    #[serde(default)]
    pub counted: std::collections::BTreeMap<String, u64>,
}

impl TotalRecord {
    /// Adds `count` likes stored at `origin_seq` in `origin`'s stream unless they were counted
    /// before; the total after it either way.
    pub fn count(&mut self, origin: &str, origin_seq: u64, count: u64) -> u64 {
        let counted = self.counted.entry(origin.to_owned()).or_default();
        if origin_seq > *counted {
            *counted = origin_seq;
            self.total += count;
        }
        self.total
    }
}

/// The like totals bucket of one datacenter.
#[derive(Clone)]
pub struct Totals {
    bucket: kv::Store,
}

impl Totals {
    pub async fn open(js: &jetstream::Context, dc: &str) -> Result<Self, FabricError> {
        let bucket = open_bucket(js, &names::totals_bucket(dc)).await?;
        Ok(Self { bucket })
    }

    /// The stored record and its revision (0 when the video has none yet).
    pub async fn read(&self, video: &VideoId) -> Result<(TotalRecord, u64), FabricError> {
        let entry = self.bucket.entry(video.as_str()).await.map_err(|error| {
            FabricError::new(
                FabricErrorKind::KeyValue,
                format!("reading total of {video}"),
                error,
            )
        })?;
        let Some(entry) = entry.filter(|entry| entry.operation == kv::Operation::Put) else {
            return Ok((TotalRecord::default(), 0));
        };
        let record = serde_json::from_slice(&entry.value).map_err(|error| {
            FabricError::new(
                FabricErrorKind::Decode,
                format!("decoding total of {video}"),
                error,
            )
        })?;
        Ok((record, entry.revision))
    }

    /// Writes `record` if the stored revision is still `revision`; Ok(None) when another writer
    /// got there first (the caller re-reads), Ok(Some(new_revision)) on success.
    pub async fn write(
        &self,
        video: &VideoId,
        record: &TotalRecord,
        revision: u64,
    ) -> Result<Option<u64>, FabricError> {
        let value =
            Bytes::from(serde_json::to_vec(record).map_err(|error| {
                FabricError::new(FabricErrorKind::Decode, "encoding total", error)
            })?);
        let outcome = if revision == 0 {
            self.bucket
                .create(video.as_str(), value)
                .await
                .map_err(|error| {
                    let conflict = error.kind() == kv::CreateErrorKind::AlreadyExists;
                    (
                        conflict,
                        FabricError::new(
                            FabricErrorKind::KeyValue,
                            format!("creating total of {video}"),
                            error,
                        ),
                    )
                })
        } else {
            self.bucket
                .update(video.as_str(), value, revision)
                .await
                .map_err(|error| {
                    let conflict = error.kind() == kv::UpdateErrorKind::WrongLastRevision;
                    (
                        conflict,
                        FabricError::new(
                            FabricErrorKind::KeyValue,
                            format!("updating total of {video}"),
                            error,
                        ),
                    )
                })
        };
        match outcome {
            Ok(new_revision) => Ok(Some(new_revision)),
            Err((true, _)) => Ok(None),
            Err((false, error)) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TotalRecord;

    #[test]
    fn a_like_batch_counts_once_per_origin_sequence() {
        let mut record = TotalRecord::default();
        assert_eq!(record.count("dc1", 1, 3), 3);
        assert_eq!(record.count("dc2", 1, 2), 5, "origins count independently");
        assert_eq!(record.count("dc1", 1, 3), 5, "the same batch again");
        assert_eq!(record.count("dc1", 2, 1), 6);
        assert_eq!(record.count("dc2", 1, 2), 6, "an older batch again");
    }
}
