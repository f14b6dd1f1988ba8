//! The NATS fabric every fanfare node stands on: connections, the streams and buckets of each
//! datacenter, the subscription table and durable publishing.
//!
//! Per datacenter `dc` (names in [`fanfare_model::names`]):
//! - `EVENTS_dc` holds what was published in `dc`, once (origin stream);
//! - `FANOUT_dc` sources every `EVENTS_*`, so `dc` gets its own copy of all interactions, and
//!   hashes each video into one of `partitions` dispatch partitions on the way in;
//! - `dispatch-p<N>` consumers on `FANOUT_dc` are pinned to one dispatcher each at a time;
//! - `SUBS_dc` is the subscription table (video → frontends): a lease per frontend and a key
//!   per video it watches, kept by frontends ([`InterestRegistry`]) and watched by dispatchers
//!   ([`SubscriptionTable`]);
//! - `TOTALS_dc` keeps each video's like total as `dc` counts it.
//!
//! [`provision`] creates all of it, idempotently; nodes only use what exists. After a
//! partition heals, [`FanoutSources`] tells how far behind its origins a fan-out stream is and
//! reads what it misses straight from them.

mod connect;
mod error;
mod interest;
mod provision;
mod publish;
mod sources;
mod subscriptions;
mod totals;

pub use connect::{connect, NatsSettings, Password};
pub use error::{FabricError, FabricErrorKind};
pub use interest::{InterestRegistry, Renewal};
pub use provision::{provision, DispatchTuning, Layout};
pub use publish::{origin_sequence, publish_interaction, StoredAt};
pub use sources::{FanoutSources, Held, OriginRead};
pub use subscriptions::{StaleKey, SubscriptionTable, Table, TableSnapshot};
pub use totals::{TotalRecord, Totals};

use async_nats::jetstream::{self, kv};

/// Opens an existing key-value bucket.
pub(crate) async fn open_bucket(
    js: &jetstream::Context,
    name: &str,
) -> Result<kv::Store, FabricError> {
    js.get_key_value(name).await.map_err(|error| {
        FabricError::new(
            FabricErrorKind::KeyValue,
            format!("opening bucket {name}"),
            error,
        )
    })
}
