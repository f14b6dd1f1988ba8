//! The NATS fabric every fanfare node stands on: connections, the streams and buckets of each
//! datacenter, the subscription table and durable publishing.
//!
//! Per datacenter `dc` (names in [`fanfare_model::names`]):
//! - `EVENTS_dc` holds what was published in `dc`, once (origin stream);
//! - `FANOUT_dc` sources every `EVENTS_*`, so `dc` gets its own copy of all interactions, and
//!   hashes each video into one of `partitions` dispatch partitions on the way in;
//! - `dispatch-p<N>` consumers on `FANOUT_dc` are pinned to one dispatcher each at a time;
//! - `SUBS_dc` is the subscription table (video → frontends), kept by frontends and watched by
//!   dispatchers; entries expire unless refreshed;
//! - `TOTALS_dc` keeps each video's like total as `dc` counts it.
//!
//! [`provision`] creates all of it, idempotently; nodes only use what exists. After a
//! partition heals, [`FanoutSources`] tells how far behind its origins a fan-out stream is and
//! reads what it misses straight from them.

mod connect;
mod error;
mod provision;
mod publish;
mod sources;
mod table;

pub use connect::{connect, NatsSettings, Password};
pub use error::{FabricError, FabricErrorKind};
pub use provision::{provision, DispatchTuning, Layout};
pub use publish::{origin_sequence, publish_interaction, StoredAt};
pub use sources::{FanoutSources, Held, OriginRead};
pub use table::{InterestRegistry, SubscriptionTable, TableSnapshot, TotalRecord, Totals};
