//! The like totals of one datacenter: a key-value bucket, one record per video, counted once
//! per origin sequence and written by compare-and-set.

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use fanfare_model::{names, VideoId};
use serde::{Deserialize, Serialize};

use crate::{open_bucket, FabricError, FabricErrorKind};

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
