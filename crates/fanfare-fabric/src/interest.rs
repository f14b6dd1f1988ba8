//! A frontend's writer to its datacenter's subscription table (see [`crate::SubscriptionTable`]
//! for the layout): one lease for the frontend, one key per video it has viewers of.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::header::{NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, NATS_MESSAGE_TTL};
use async_nats::jetstream::{self, context::PublishErrorKind, kv};
use async_nats::HeaderMap;
use bytes::Bytes;
use fanfare_model::{names, VideoId};

use crate::{open_bucket, FabricError, FabricErrorKind};

/// What renewing the lease found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    Renewed,
    /// The lease expired (or was replaced) meanwhile: dispatchers no longer count this
    /// frontend's interests. Take a new lease and write every interest again.
    Lost,
}

#[derive(Debug, Clone)]
struct Lease {
    epoch: String,
    /// Revision of the lease key as last written, for the next renewal's compare-and-set.
    revision: u64,
}

/// A frontend's writer to its datacenter's subscription table.
#[derive(Clone)]
pub struct InterestRegistry {
    js: jetstream::Context,
    bucket: kv::Store,
    /// `$KV.<bucket>.`: what every key's subject starts with.
    subject_prefix: String,
    frontend: Arc<str>,
    ttl: Duration,
    lease: Arc<Mutex<Lease>>,
}

fn kv_error(context: String, error: impl std::error::Error + Send + Sync + 'static) -> FabricError {
    FabricError::new(FabricErrorKind::KeyValue, context, error)
}

impl InterestRegistry {
    /// Opens `dc`'s bucket for `frontend`, whose lease lives `ttl` unless renewed. Nothing is
    /// written until [`Self::acquire_lease`].
    pub async fn open(
        js: &jetstream::Context,
        dc: &str,
        frontend: &str,
        ttl: Duration,
    ) -> Result<Self, FabricError> {
        let bucket_name = names::subscription_bucket(dc);
        let bucket = open_bucket(js, &bucket_name).await?;
        Ok(Self {
            js: js.clone(),
            bucket,
            subject_prefix: format!("$KV.{bucket_name}."),
            frontend: Arc::from(frontend),
            ttl,
            lease: Arc::new(Mutex::new(Lease {
                epoch: String::new(),
                revision: 0,
            })),
        })
    }

    fn lease(&self) -> std::sync::MutexGuard<'_, Lease> {
        self.lease
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The epoch interests are written under.
    pub fn epoch(&self) -> String {
        self.lease().epoch.clone()
    }

    /// Writes the lease key with the TTL, under `epoch`, if it is still at `revision`;
    /// `Ok(None)` when it is not.
    async fn write_lease(
        &self,
        epoch: &str,
        revision: Option<u64>,
    ) -> Result<Option<u64>, FabricError> {
        let key = names::lease_key(&self.frontend);
        let mut headers = HeaderMap::new();
        // The server takes whole seconds; a lease never lives shorter than asked.
        let ttl = self.ttl.as_secs_f64().ceil().max(1.0) as u64;
        headers.insert(NATS_MESSAGE_TTL, format!("{ttl}s").as_str());
        if let Some(revision) = revision {
            headers.insert(
                NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                revision.to_string().as_str(),
            );
        }
        let subject = format!("{}{key}", self.subject_prefix);
        let ack = self
            .js
            .publish_with_headers(subject, headers, Bytes::from(epoch.to_owned()))
            .await
            .map_err(|error| kv_error(format!("writing {key}"), error))?
            .await;
        match ack {
            Ok(ack) => Ok(Some(ack.sequence)),
            Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => Ok(None),
            Err(error) => Err(kv_error(format!("writing {key}"), error)),
        }
    }

    /// Takes a new lease, under a new epoch: interests written before it (under another
    /// epoch) no longer count and must be written again.
    pub async fn acquire_lease(&self) -> Result<(), FabricError> {
        let epoch = nuid::next().to_string();
        let revision = self.write_lease(&epoch, None).await?.unwrap_or_default();
        *self.lease() = Lease { epoch, revision };
        Ok(())
    }

    /// Renews the lease if it is still the one this frontend wrote last.
    pub async fn renew_lease(&self) -> Result<Renewal, FabricError> {
        let Lease { epoch, revision } = self.lease().clone();
        match self.write_lease(&epoch, Some(revision)).await? {
            Some(revision) => {
                self.lease().revision = revision;
                Ok(Renewal::Renewed)
            }
            None => {
                // A renewal whose ack was lost may have been applied: if the key still holds
                // this epoch, it is ours.
                match self.bucket.entry(names::lease_key(&self.frontend)).await {
                    Ok(Some(entry))
                        if entry.operation == kv::Operation::Put
                            && entry.value == epoch.as_bytes() =>
                    {
                        self.lease().revision = entry.revision;
                        Ok(Renewal::Renewed)
                    }
                    Ok(_) => Ok(Renewal::Lost),
                    Err(error) => Err(kv_error("reading the lease".to_owned(), error)),
                }
            }
        }
    }

    /// Deletes the lease (a frontend that stops): its interests stop counting at once.
    pub async fn release_lease(&self) -> Result<(), FabricError> {
        let key = names::lease_key(&self.frontend);
        self.bucket
            .delete(&key)
            .await
            .map_err(|error| kv_error(format!("deleting {key}"), error))
    }

    /// Writes this frontend's interest in `video`, under the current lease.
    pub async fn register_interest(&self, video: &VideoId) -> Result<(), FabricError> {
        let key = names::interest_key(video, &self.frontend);
        let epoch = self.epoch();
        self.bucket
            .put(&key, Bytes::from(epoch))
            .await
            .map(|_| ())
            .map_err(|error| kv_error(format!("writing {key}"), error))
    }

    pub async fn withdraw_interest(&self, video: &VideoId) -> Result<(), FabricError> {
        let key = names::interest_key(video, &self.frontend);
        self.bucket
            .delete(&key)
            .await
            .map_err(|error| kv_error(format!("deleting {key}"), error))
    }
}
