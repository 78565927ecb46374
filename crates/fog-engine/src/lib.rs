//! fog-engine
