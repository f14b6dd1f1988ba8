//! fanfare-client: the client side of fanfare's HTTP API, over real sockets.
//!
//! - [`http`] sends one request and reads the whole answer (publishing likes and comments,
//!   reading `/metrics` or a dispatcher's table), each call bounded in time;
//! - [`sse`] opens a viewer stream the way a browser's `EventSource` does and parses it by the
//!   WHATWG rules, so what a test or the soak sees is what a browser would see.
//!
//! The end-to-end tests (through `fanfare-testkit`) and `fanfare chaos soak` share it; it
//! depends on nothing else of fanfare, so the shipped binary does not pull in the test kit.

pub mod http;
pub mod sse;
