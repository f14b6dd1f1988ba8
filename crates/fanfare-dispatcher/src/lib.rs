//! fanfare-dispatcher
