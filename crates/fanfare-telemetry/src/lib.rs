//! fanfare-telemetry
