//! fog-orchestrator
