//! fanfare-testkit
