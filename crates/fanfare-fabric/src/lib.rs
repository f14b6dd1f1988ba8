//! fanfare-fabric
