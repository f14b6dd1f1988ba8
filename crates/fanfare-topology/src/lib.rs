//! fanfare-topology
