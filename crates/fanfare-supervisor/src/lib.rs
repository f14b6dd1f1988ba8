//! fanfare-supervisor
