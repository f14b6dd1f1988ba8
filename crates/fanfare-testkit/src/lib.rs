//! fanfare-testkit: what the end-to-end tests stand on.
//!
//! - [`cluster`] starts a real topology (real `nats-server` processes joined by gateways, real
//!   `fanfare` dispatcher and frontend processes) on free loopback ports, and kills it on drop;
//! - [`http`] and [`sse`] are the client side: a real HTTP/1.1 client and a conforming SSE
//!   parser over real sockets (re-exported from `fanfare-client`, which the `fanfare` binary
//!   uses too);
//! - [`wait`] polls a condition until a deadline instead of sleeping.

pub mod cluster;
pub mod wait;

pub use fanfare_client::{http, sse};

pub use cluster::{Cluster, ClusterBuilder};
pub use fanfare_topology::DcShape;
