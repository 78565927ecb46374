//! # fog-model — the ARM vocabulary of fogd
//!
//! Pure types and validation, no I/O: typed resource ids ([`ids`]), name rules ([`names`]),
//! accepted `api-version`s ([`api_version`]), request bodies with their validation, the
//! persisted records and the JSON views clients see ([`instance`], [`database`]),
//! long-running operation records ([`operation`]), and the ARM error envelope with the
//! Microsoft.Sql error catalogue ([`error`]).
//!
//! Everything a client can get wrong is caught here and reported as an [`ArmError`] with the
//! catalogue's code, HTTP status and message, so every other crate can trust the values it
//! is handed.

pub mod api_version;
pub mod body;
pub mod database;
pub mod error;
pub mod failover_group;
pub mod health;
pub mod ids;
pub mod instance;
pub mod names;
pub mod operation;

pub use database::{DatabaseChanges, DatabaseRecord, DatabaseSpec, DatabaseStatus};
pub use error::ArmError;
pub use failover_group::{FailoverGroupRecord, ReplicationState, Side};
pub use ids::{ManagedInstanceId, Scope};
pub use instance::{
    InstanceChanges, InstanceRecord, InstanceSpec, ProvisioningState, ServerEndpoint, Sku,
};
pub use operation::{Action, OperationKind, OperationRecord, OperationStatus};

/// Persisted records carry their format version in the store's envelope.
macro_rules! persisted {
    ($($t:ty),*) => {$(
        impl fog_store::typed::Persisted for $t {
            const FORMAT: u32 = <$t>::FORMAT;
        }
    )*};
}
persisted!(
    InstanceRecord,
    DatabaseRecord,
    OperationRecord,
    FailoverGroupRecord,
    health::ObservedGroup,
    health::InstanceHealth,
    health::GroupEvent
);
