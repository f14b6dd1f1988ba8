//! fanfare-testkit: client-side helpers for end-to-end tests (HTTP requests, SSE streams).

pub mod http;
pub mod sse;
