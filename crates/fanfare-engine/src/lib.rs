//! fanfare-engine: the fan-out engine of a frontend, on its own: videos, the connections that
//! follow them, and the SSE bytes each connection is written. No NATS, no settings, no
//! metrics registry: the frontend feeds it deliveries and drives its timers, the raw listener
//! writes what it hands out, and the tests and benchmarks drive it in process.
//!
//! Data path:
//! 1. a viewer's connection ([`Hub::connect`]) follows one or several videos
//!    ([`Hub::follow`]); the first follower of a video here makes the frontend register its
//!    interest and [`Hub::seed`] the video's position;
//! 2. [`Hub::deliver`] takes what a dispatcher sent, drops what is not newer per origin than
//!    what the video has, and hands the rest out: a comment is encoded once into a shared
//!    frame and pushed, by reference, to every follower's queue; likes add up per video and
//!    go out at [`Hub::flush_likes`] (or before the next comment) as counters every follower
//!    reads, never queued;
//! 3. a connection's writer ([`Connection::next_chunk`]) takes everything that is waiting as
//!    one [`Chunk`] of shared byte slices for one vectored write.
//!
//! No lock is global: the video map is sharded, each video has its own locks, each connection
//! its own (see `video`).

mod chunk;
mod connection;
mod hub;
mod origins;
mod video;

pub use chunk::Chunk;
pub use connection::{Connection, StreamKind, MAX_FRAMES_PER_WRITE};
pub use hub::{ConnectionHandle, CounterReading, DeliverOutcome, Follow, Hub, HubConfig};
pub use video::encode_event;

#[cfg(test)]
mod tests;
