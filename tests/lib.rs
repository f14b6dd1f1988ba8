//! End-to-end tests of fanfare: see `tests/`.
