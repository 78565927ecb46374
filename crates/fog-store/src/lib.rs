//! fog-store
