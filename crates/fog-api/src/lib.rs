//! fog-api
