//! End-to-end tests of fanfare. Every test in `tests/` starts real `nats-server` processes
//! joined into a supercluster and real `fanfare` nodes (through `fanfare-testkit`), talks to
//! them over real sockets with a real SSE client, and is bounded in time.
//!
//! Run them with `scripts/test`, which installs `nats-server` and builds the `fanfare` binary
//! they start.
