//! Service principals: an application id, an object id, a display name, the tenant, and
//! client secrets — stored only as salted Argon2id hashes (PHC strings) under
//! `principals/{appId}`. A secret is shown once, when it is made, and never again.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier};
use argon2::{password_hash::SaltString, Argon2};
use fog_model::ArmError;
use fog_store::typed::{self, Persisted};
use fog_store::{Precondition, Store, StoreError, Write};

/// Store key prefix of principals.
pub const PREFIX: &str = "principals/";

/// A service principal as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePrincipal {
    pub app_id: String,
    pub object_id: String,
    pub display_name: String,
    pub tenant_id: String,
    /// RFC 3339.
    pub created: String,
    pub credentials: Vec<SecretCredential>,
}

impl Persisted for ServicePrincipal {
    const FORMAT: u32 = 1;
}

/// One client secret, as its hash.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretCredential {
    pub key_id: String,
    /// The first three characters, as Entra shows them (`hint`).
    pub hint: String,
    /// Argon2id PHC string: algorithm, parameters, salt, hash.
    pub hash: String,
    /// Unix seconds.
    pub start: i64,
    /// Unix seconds; the secret is refused from then on.
    pub end: i64,
}

impl std::fmt::Debug for SecretCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretCredential")
            .field("key_id", &self.key_id)
            .field("hint", &self.hint)
            .field("start", &self.start)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl ServicePrincipal {
    /// The principal as the API shows it: never a hash.
    pub fn view(&self) -> serde_json::Value {
        let credentials: Vec<_> = self
            .credentials
            .iter()
            .map(|c| {
                serde_json::json!({
                    "keyId": c.key_id,
                    "hint": c.hint,
                    "startDateTime": rfc3339(c.start),
                    "endDateTime": rfc3339(c.end),
                })
            })
            .collect();
        serde_json::json!({
            "appId": self.app_id,
            "id": self.object_id,
            "displayName": self.display_name,
            "appOwnerOrganizationId": self.tenant_id,
            "servicePrincipalType": "Application",
            "createdDateTime": self.created,
            "passwordCredentials": credentials,
        })
    }
}

/// A principal with the clear text of the secret just made: what `create-for-rbac` prints.
#[derive(Clone)]
pub struct NewSecret {
    pub principal: ServicePrincipal,
    pub password: String,
}

impl std::fmt::Debug for NewSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSecret")
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

impl NewSecret {
    /// `{"appId","displayName","password","tenant"}`, as az prints it.
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "appId": self.principal.app_id,
            "displayName": self.principal.display_name,
            "password": self.password,
            "tenant": self.principal.tenant_id,
        })
    }
}

/// Why a secret was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("no such application")]
    UnknownClient,
    #[error("wrong or expired secret")]
    BadSecret,
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn key(app_id: &str) -> String {
    format!("{PREFIX}{}", app_id.to_ascii_lowercase())
}

fn store_err(e: StoreError) -> ArmError {
    tracing::error!(error = %e, "store failure");
    ArmError::internal("the metadata store failed")
}

fn not_found(id: &str) -> ArmError {
    ArmError::new(
        404,
        "ServicePrincipalNotFound",
        format!("No service principal with the application id, object id or display name '{id}' exists."),
    )
}

/// One principal by application id.
pub async fn get(store: &dyn Store, app_id: &str) -> Result<Option<ServicePrincipal>, StoreError> {
    Ok(typed::get::<ServicePrincipal>(store, &key(app_id))
        .await?
        .map(|v| v.value))
}

/// Every principal, by application id.
pub async fn list(store: &dyn Store) -> Result<Vec<ServicePrincipal>, StoreError> {
    Ok(typed::list::<ServicePrincipal>(store, PREFIX)
        .await?
        .into_iter()
        .map(|(_, v)| v.value)
        .collect())
}

/// A principal by application id, object id or display name (case-insensitive).
pub async fn find(
    store: &dyn Store,
    id: &str,
) -> Result<Option<typed::Versioned<ServicePrincipal>>, StoreError> {
    Ok(typed::list::<ServicePrincipal>(store, PREFIX)
        .await?
        .into_iter()
        .map(|(_, v)| v)
        .find(|v| {
            v.value.app_id.eq_ignore_ascii_case(id)
                || v.value.object_id.eq_ignore_ascii_case(id)
                || v.value.display_name.eq_ignore_ascii_case(id)
        }))
}

/// `create-for-rbac`: a new principal named `display_name` with one secret valid for
/// `years`; when one of that name exists, its secrets are replaced by a new one (what az
/// does to an existing application).
pub async fn create_for_rbac(
    store: &dyn Store,
    tenant_id: &str,
    display_name: &str,
    years: u32,
    now: i64,
) -> Result<NewSecret, ArmError> {
    validate_display_name(display_name)?;
    if let Some(existing) = find(store, display_name)
        .await
        .map_err(store_err)?
        .filter(|v| v.value.display_name.eq_ignore_ascii_case(display_name))
    {
        return replace_secrets(store, existing, false, years, now).await;
    }
    let (password, credential) = new_secret(now, years).await?;
    let principal = ServicePrincipal {
        app_id: uuid::Uuid::new_v4().to_string(),
        object_id: uuid::Uuid::new_v4().to_string(),
        display_name: display_name.to_string(),
        tenant_id: tenant_id.to_string(),
        created: rfc3339(now),
        credentials: vec![credential],
    };
    store
        .commit(vec![typed::put(
            key(&principal.app_id),
            &principal,
            Precondition::Absent,
        )])
        .await
        .map_err(store_err)?;
    Ok(NewSecret {
        principal,
        password,
    })
}

/// The principal named `display_name`, created without a secret when none exists: fogd's
/// managed identity, which gets its tokens from the managed-identity endpoint only.
pub async fn ensure(
    store: &dyn Store,
    tenant_id: &str,
    display_name: &str,
    now: i64,
) -> Result<ServicePrincipal, ArmError> {
    if let Some(existing) = find(store, display_name)
        .await
        .map_err(store_err)?
        .filter(|v| v.value.display_name.eq_ignore_ascii_case(display_name))
    {
        return Ok(existing.value);
    }
    validate_display_name(display_name)?;
    let principal = ServicePrincipal {
        app_id: uuid::Uuid::new_v4().to_string(),
        object_id: uuid::Uuid::new_v4().to_string(),
        display_name: display_name.to_string(),
        tenant_id: tenant_id.to_string(),
        created: rfc3339(now),
        credentials: vec![],
    };
    store
        .commit(vec![typed::put(
            key(&principal.app_id),
            &principal,
            Precondition::Absent,
        )])
        .await
        .map_err(store_err)?;
    Ok(principal)
}

/// `credential reset`: a new secret for the principal `id` (application id, object id or
/// display name), replacing its secrets unless `append`.
pub async fn reset_credential(
    store: &dyn Store,
    id: &str,
    append: bool,
    years: u32,
    now: i64,
) -> Result<NewSecret, ArmError> {
    let existing = find(store, id)
        .await
        .map_err(store_err)?
        .ok_or_else(|| not_found(id))?;
    replace_secrets(store, existing, append, years, now).await
}

async fn replace_secrets(
    store: &dyn Store,
    existing: typed::Versioned<ServicePrincipal>,
    append: bool,
    years: u32,
    now: i64,
) -> Result<NewSecret, ArmError> {
    let (password, credential) = new_secret(now, years).await?;
    let mut principal = existing.value;
    if !append {
        principal.credentials.clear();
    }
    principal.credentials.push(credential);
    store
        .commit(vec![typed::put(
            key(&principal.app_id),
            &principal,
            Precondition::Revision(existing.revision),
        )])
        .await
        .map_err(|e| match e {
            StoreError::Conflict { .. } => ArmError::new(
                409,
                "Conflict",
                "The service principal changed while its credentials were reset; try again.",
            ),
            e => store_err(e),
        })?;
    Ok(NewSecret {
        principal,
        password,
    })
}

/// Deletes the principal `id` (application id, object id or display name); its tokens stop
/// working at once.
pub async fn delete(store: &dyn Store, id: &str) -> Result<ServicePrincipal, ArmError> {
    let existing = find(store, id)
        .await
        .map_err(store_err)?
        .ok_or_else(|| not_found(id))?;
    store
        .commit(vec![Write::delete(
            key(&existing.value.app_id),
            Precondition::Revision(existing.revision),
        )])
        .await
        .map_err(store_err)?;
    Ok(existing.value)
}

/// The principal `app_id` if `secret` is one of its unexpired secrets. An unknown
/// application costs a hash too, so timing does not tell which applications exist.
pub async fn verify_secret(
    store: &dyn Store,
    app_id: &str,
    secret: &str,
    now: i64,
) -> Result<ServicePrincipal, VerifyError> {
    let principal = get(store, app_id).await?;
    let hashes: Vec<String> = match &principal {
        Some(p) => p
            .credentials
            .iter()
            .filter(|c| c.start <= now && now < c.end)
            .map(|c| c.hash.clone())
            .collect(),
        None => Vec::new(),
    };
    let known = principal.is_some();
    let secret = secret.to_string();
    let ok = off_the_runtime(move || {
        if !known {
            let _ = matches_hash(&secret, dummy_hash());
        }
        hashes.iter().any(|h| matches_hash(&secret, h))
    })
    .await;
    match (principal, ok) {
        (None, _) => Err(VerifyError::UnknownClient),
        (Some(p), true) => Ok(p),
        (Some(_), false) => Err(VerifyError::BadSecret),
    }
}

/// How many Argon2 computations may run at once: each takes about 19 MiB and a core for
/// tens of milliseconds, and the token endpoint needs no token — a flood of sign-ins must
/// not exhaust memory or stall the API's threads.
static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Runs a hash computation on the blocking pool, at most [`HASHING`]'s permits at a time.
async fn off_the_runtime<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let _permit = HASHING.acquire().await;
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// A hash checked against unknown clients (made once, with fogd's parameters).
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_secret("dummy").unwrap_or_default())
}

/// Whether `secret` hashes to `phc`.
pub fn matches_hash(secret: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(secret.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A salted Argon2id hash of `secret` as a PHC string.
pub fn hash_secret(secret: &str) -> Result<String, ArmError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ArmError::internal(format!("hashing a secret failed: {e}")))
}

/// A new 40-character secret and its credential record.
async fn new_secret(now: i64, years: u32) -> Result<(String, SecretCredential), ArmError> {
    use rand::distr::{Alphanumeric, SampleString};
    let password = Alphanumeric.sample_string(&mut rand::rng(), 40);
    let clear = password.clone();
    let hash = off_the_runtime(move || hash_secret(&clear)).await?;
    let credential = SecretCredential {
        key_id: uuid::Uuid::new_v4().to_string(),
        hint: password.chars().take(3).collect(),
        hash,
        start: now,
        end: now + i64::from(years.clamp(1, 100)) * 365 * 86_400,
    };
    Ok((password, credential))
}

fn validate_display_name(name: &str) -> Result<(), ArmError> {
    let ok = !name.trim().is_empty() && name.len() <= 120 && name.chars().all(|c| !c.is_control());
    match ok {
        true => Ok(()),
        false => Err(ArmError::invalid_parameter_value("displayName", name)),
    }
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fog_store::MemoryStore;

    const TENANT: &str = "33333333-3333-3333-3333-333333333333";
    const NOW: i64 = 1_800_000_000;

    /// Every byte the store holds, as text.
    async fn everything(store: &dyn Store) -> String {
        store
            .range("")
            .await
            .expect("range")
            .iter()
            .map(|r| format!("{} {}\n", r.key, String::from_utf8_lossy(&r.value)))
            .collect()
    }

    #[tokio::test]
    async fn secrets_are_stored_only_as_salted_hashes() {
        let store = MemoryStore::new();
        let a = create_for_rbac(&store, TENANT, "ci", 1, NOW)
            .await
            .expect("create");
        let b = create_for_rbac(&store, TENANT, "other", 1, NOW)
            .await
            .expect("create");
        assert_eq!(a.password.len(), 40);
        let all = everything(&store).await;
        assert!(
            !all.contains(&a.password) && !all.contains(&b.password),
            "{all}"
        );
        let (ha, hb) = (
            &a.principal.credentials[0].hash,
            &b.principal.credentials[0].hash,
        );
        assert!(ha.starts_with("$argon2id$"), "{ha}");
        // Salted: the same secret never hashes alike.
        assert_ne!(
            hash_secret("same").expect("hash"),
            hash_secret("same").expect("hash")
        );
        assert_ne!(ha, hb);
        // What the API shows has no hash either.
        let view = a.principal.view().to_string();
        assert!(
            !view.contains(ha.as_str()) && !view.contains(&a.password),
            "{view}"
        );
        assert!(!format!("{a:?}").contains(&a.password));
        assert_eq!(a.view()["tenant"], TENANT);
        assert_eq!(a.view()["displayName"], "ci");
    }

    #[tokio::test]
    async fn only_a_current_secret_of_the_application_verifies() {
        let store = MemoryStore::new();
        let a = create_for_rbac(&store, TENANT, "ci", 1, NOW)
            .await
            .expect("create");
        let app = a.principal.app_id.clone();
        let ok = verify_secret(&store, &app, &a.password, NOW + 1)
            .await
            .expect("valid");
        assert_eq!(ok.object_id, a.principal.object_id);
        assert!(matches!(
            verify_secret(&store, &app, "wrong", NOW + 1).await,
            Err(VerifyError::BadSecret)
        ));
        assert!(matches!(
            verify_secret(&store, "no-such-app", &a.password, NOW + 1).await,
            Err(VerifyError::UnknownClient)
        ));
        // Expired after its years.
        assert!(matches!(
            verify_secret(&store, &app, &a.password, NOW + 366 * 86_400).await,
            Err(VerifyError::BadSecret)
        ));
        // A reset replaces the secret; --append keeps both.
        let b = reset_credential(&store, "ci", false, 1, NOW)
            .await
            .expect("reset");
        assert_eq!(b.principal.app_id, app);
        assert!(verify_secret(&store, &app, &a.password, NOW + 1)
            .await
            .is_err());
        assert!(verify_secret(&store, &app, &b.password, NOW + 1)
            .await
            .is_ok());
        let c = reset_credential(&store, &app, true, 1, NOW)
            .await
            .expect("append");
        assert!(verify_secret(&store, &app, &b.password, NOW + 1)
            .await
            .is_ok());
        assert!(verify_secret(&store, &app, &c.password, NOW + 1)
            .await
            .is_ok());
        // create-for-rbac of an existing name replaces its secrets, keeping the app.
        let d = create_for_rbac(&store, TENANT, "CI", 1, NOW)
            .await
            .expect("again");
        assert_eq!(d.principal.app_id, app);
        assert_eq!(d.principal.credentials.len(), 1);
        assert_eq!(list(&store).await.expect("list").len(), 1);
        delete(&store, &app).await.expect("delete");
        assert!(matches!(
            verify_secret(&store, &app, &d.password, NOW + 1).await,
            Err(VerifyError::UnknownClient)
        ));
        let e = delete(&store, &app).await.expect_err("gone");
        assert_eq!(
            (e.status, e.code.as_str()),
            (404, "ServicePrincipalNotFound")
        );
        let e = create_for_rbac(&store, TENANT, " ", 1, NOW)
            .await
            .expect_err("name");
        assert_eq!(e.status, 400);
    }
}
