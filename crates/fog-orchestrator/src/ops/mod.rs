//! The operations: one module per resource family, each operation a type implementing
//! [`crate::engine::OperationType`] with its steps declared as an enum.
//!
//! [`registry`] is the one place that maps a persisted [`Action`] to its type — an
//! exhaustive `match`, so a new action does not compile until it names its operation.
//! Adding an operation: a type in the family's module (or a new one), its arm here, and the
//! API route that accepts it.

pub(crate) mod database;
pub(crate) mod failover;
pub(crate) mod group;
pub(crate) mod instance;
pub(crate) mod rejoin;

use crate::engine::OperationType;
use fog_model::Action;

/// What every operation module uses.
mod prelude {
    pub(crate) use crate::catalog;
    pub(crate) use crate::engine::{
        engine_error, reached, step_enum, unknown_step, OperationType, Outcome, StepError,
    };
    pub(crate) use crate::{store_err, Orchestrator};
    pub(crate) use async_trait::async_trait;
    pub(crate) use fog_model::{Action, ArmError, OperationRecord};
    pub(crate) use fog_store::typed::put;
    pub(crate) use fog_store::{Precondition, Write};
}

/// The operation type of a persisted action.
pub(crate) fn registry(action: &Action) -> &'static dyn OperationType {
    match action {
        Action::CreateInstance { .. } => &instance::CreateInstance,
        Action::UpdateInstance { .. } => &instance::UpdateInstance,
        Action::DeleteInstance { .. } => &instance::DeleteInstance,
        Action::CreateDatabase { .. } => &database::CreateDatabase,
        Action::UpdateDatabase { .. } => &database::UpdateDatabase,
        Action::DeleteDatabase { .. } => &database::DeleteDatabase,
        Action::CreateFailoverGroup { .. } => &group::CreateGroup,
        Action::UpdateFailoverGroup { .. } => &group::UpdateGroup,
        Action::DeleteFailoverGroup { .. } => &group::DeleteGroup,
        Action::FailoverGroup { .. } => &failover::Failover,
        Action::RejoinGroup { .. } => &rejoin::Rejoin,
    }
}
