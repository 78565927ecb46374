//! fogd as the token issuer of its own cloud: the wiring of `fog-identity`.
//!
//! On every start: the tenant id (`DIR/tenant-id`, made on the first start like
//! `subscription-id`), the token-signing key (`token-signing.pem`, mode 0600, beside the
//! key that seals the store's credentials: `DIR/keys/` unless `secret_key_file` moves
//! them), and
//! fogd's managed identity — a service principal named `fogd-managed-identity` without a
//! secret, whose tokens the App Service–style endpoint `/msi/token` hands to callers that
//! present `DIR/identity-header` (mode 0600) as `X-IDENTITY-HEADER`.

use crate::datadir;
use anyhow::{Context, Result};
use fog_identity::{principal, Identity, IdentitySettings, SigningKey};
use fog_store::Store;
use std::path::Path;
use std::sync::Arc;

/// Display name of fogd's managed identity.
pub const MANAGED_IDENTITY_NAME: &str = "fogd-managed-identity";

/// The issuer and the managed identity, ready for the API.
pub async fn start(
    dir: &Path,
    keys_dir: &Path,
    store: Arc<dyn Store>,
    base_url: &str,
    subscription: &str,
    admin_token: &str,
) -> Result<(Identity, fog_api::ManagedIdentity)> {
    let tenant = datadir::load_or_create(&dir.join("tenant-id"), false, || {
        uuid::Uuid::new_v4().to_string()
    })?;
    let key_path = keys_dir.join("token-signing.pem");
    let key = SigningKey::load_or_create(&key_path).context("the token-signing key")?;
    let mi = principal::ensure(
        store.as_ref(),
        &tenant,
        MANAGED_IDENTITY_NAME,
        fog_identity::now(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("create the managed identity: {e}"))?;
    let header_secret = datadir::load_or_create(
        &dir.join("identity-header"),
        true,
        fog_engine::random_secret,
    )?;
    tracing::info!(
        tenant = %tenant,
        key_id = key.key_id(),
        authority = %format!("{}/adfs", base_url.trim_end_matches('/')),
        managed_identity = %mi.app_id,
        "fogd issues tokens"
    );
    let identity = Identity::new(
        store,
        key,
        IdentitySettings {
            base_url: base_url.trim_end_matches('/').to_string(),
            tenant_id: tenant,
            subscriptions: vec![subscription.to_ascii_lowercase()],
        },
        admin_token,
    );
    Ok((
        identity,
        fog_api::ManagedIdentity {
            app_id: mi.app_id,
            header_secret,
        },
    ))
}
