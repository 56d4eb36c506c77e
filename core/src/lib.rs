//! gslb-state-core
