//! fanfare-model
