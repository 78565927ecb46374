//! # fog-identity — who is calling fogd
//!
//! fogd is the token issuer of its own cloud. This crate holds everything about identities
//! and none of HTTP:
//!
//! - [`keys`]: the ES256 signing key (a PKCS#8 PEM file in the data directory, mode 0600)
//!   and its public JWK;
//! - [`principal`]: service principals kept in the store (`principals/{appId}`), their
//!   client secrets stored only as salted Argon2id hashes;
//! - [`token`]: the JWT claims fogd signs (`tid`, `oid`, `appid`, `aud`, `iss`, `exp`, …) and
//!   their validation, whose failures are ARM's 401 errors.
//!
//! [`Identity`] ties them together: it issues tokens to a principal that proves its secret
//! (the OAuth2 `client_credentials` grant) and turns a bearer token into a [`Caller`]. The
//! administrator token of the data directory is still accepted as it always was.
//!
//! **Authorization is not here yet**: until role-based access lands, every valid caller
//! may do everything.

pub mod keys;
pub mod principal;
pub mod token;

use fog_model::ArmError;
use fog_store::Store;
use std::sync::Arc;
use std::time::Duration;

pub use keys::SigningKey;
pub use principal::{NewSecret, ServicePrincipal};
pub use token::Claims;

/// The audience az and the Azure SDKs ask for (`https://management.core.windows.net//.default`).
pub const MANAGEMENT_AUDIENCE: &str = "https://management.core.windows.net/";

/// How long an issued access token is valid.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Settings of the issuer.
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    /// fogd's public base URL (`https://host:port`, no trailing slash).
    pub base_url: String,
    /// The one tenant this fogd serves.
    pub tenant_id: String,
    /// The subscriptions of that tenant.
    pub subscriptions: Vec<String>,
}

impl IdentitySettings {
    /// The authority clients sign in at: ADFS-shaped (`{base}/adfs`), which MSAL trusts
    /// without asking Microsoft's instance discovery.
    pub fn authority(&self) -> String {
        format!("{}/adfs", self.base_url)
    }

    /// `iss` of every token fogd signs: `https://sts.fogd.local/{tenant}/`, shaped like
    /// Entra's `https://sts.windows.net/{tenant}/`. It names the tenant, not the address,
    /// so tokens stay valid when fogd moves to another port or URL (the signing key, not
    /// the URL, is what makes a token fogd's).
    pub fn issuer(&self) -> String {
        format!("https://sts.fogd.local/{}/", self.tenant_id)
    }

    /// The token endpoint (`{authority}/oauth2/token`).
    pub fn token_endpoint(&self) -> String {
        format!("{}/oauth2/token", self.authority())
    }

    /// The audiences a token may be issued for and is accepted with: Azure's management
    /// audiences (what clients ask for whatever the endpoint) and fogd's own URL.
    pub fn audiences(&self) -> Vec<String> {
        vec![
            MANAGEMENT_AUDIENCE.to_string(),
            "https://management.core.windows.net".to_string(),
            "https://management.azure.com/".to_string(),
            "https://management.azure.com".to_string(),
            format!("{}/", self.base_url),
            self.base_url.clone(),
        ]
    }
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The data directory's administrator token.
    Administrator,
    /// A service principal, from a token fogd signed.
    ServicePrincipal {
        app_id: String,
        object_id: String,
        tenant_id: String,
    },
}

impl Caller {
    /// Whether this is the administrator token.
    pub fn is_administrator(&self) -> bool {
        matches!(self, Caller::Administrator)
    }
}

/// A refused token request, shaped like Microsoft Entra's OAuth2 errors
/// (`{"error","error_description","error_codes"}`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}: {description}")]
pub struct OAuthError {
    pub status: u16,
    pub error: &'static str,
    pub description: String,
    pub code: u32,
}

impl OAuthError {
    fn new(status: u16, error: &'static str, code: u32, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            code,
            description: description.into(),
        }
    }

    /// The JSON body of the error response.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": self.error,
            "error_description": format!("AADSTS{}: {}", self.code, self.description),
            "error_codes": [self.code],
        })
    }
}

/// An issued access token.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub access_token: String,
    pub expires_in: u64,
    pub expires_on: i64,
    pub resource: String,
}

impl IssuedToken {
    /// The OAuth2 token response.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "token_type": "Bearer",
            "access_token": self.access_token,
            "expires_in": self.expires_in,
            "ext_expires_in": self.expires_in,
            "expires_on": self.expires_on.to_string(),
            "resource": self.resource,
        })
    }
}

/// The issuer and validator.
#[derive(Clone)]
pub struct Identity {
    store: Arc<dyn Store>,
    key: Arc<SigningKey>,
    settings: Arc<IdentitySettings>,
    admin_token: Arc<str>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("settings", &self.settings)
            .field("key_id", &self.key.key_id())
            .finish_non_exhaustive()
    }
}

impl Identity {
    pub fn new(
        store: Arc<dyn Store>,
        key: SigningKey,
        settings: IdentitySettings,
        admin_token: impl Into<String>,
    ) -> Self {
        Self {
            store,
            key: Arc::new(key),
            settings: Arc::new(settings),
            admin_token: Arc::from(admin_token.into()),
        }
    }

    pub fn settings(&self) -> &IdentitySettings {
        &self.settings
    }

    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The caller a bearer token stands for: the administrator token, or a token fogd
    /// signed for a service principal that still exists. 401 errors in ARM's words.
    pub async fn authenticate(&self, bearer: &str) -> Result<Caller, ArmError> {
        if same(bearer.as_bytes(), self.admin_token.as_bytes()) {
            return Ok(Caller::Administrator);
        }
        let claims = token::validate(
            bearer,
            &self.key,
            &self.settings.issuer(),
            &self.settings.audiences(),
            now(),
        )?;
        let sp = principal::get(self.store.as_ref(), &claims.appid)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "store failure");
                ArmError::internal("the metadata store failed")
            })?;
        match sp {
            Some(sp) if sp.object_id == claims.oid && sp.tenant_id == claims.tid => {
                Ok(Caller::ServicePrincipal {
                    app_id: sp.app_id,
                    object_id: sp.object_id,
                    tenant_id: sp.tenant_id,
                })
            }
            // Deleted since the token was issued: the token dies with it.
            _ => Err(ArmError::invalid_token()),
        }
    }

    /// The `client_credentials` grant: a token for `client_id` if `client_secret` is one of
    /// its current secrets, for the audience named by `scope` (`{audience}/.default`) or
    /// `resource` (the v1 and ADFS form).
    pub async fn issue_for_client(
        &self,
        client_id: &str,
        client_secret: &str,
        scope: Option<&str>,
        resource: Option<&str>,
    ) -> Result<IssuedToken, OAuthError> {
        let audience = self.audience_of(scope, resource)?;
        let sp = principal::verify_secret(self.store.as_ref(), client_id, client_secret, now())
            .await
            .map_err(|e| match e {
                principal::VerifyError::Store(e) => {
                    tracing::error!(error = %e, "store failure");
                    OAuthError::new(500, "temporarily_unavailable", 90033, "the store failed")
                }
                principal::VerifyError::UnknownClient => OAuthError::new(
                    400,
                    "unauthorized_client",
                    700016,
                    format!(
                        "Application with identifier '{client_id}' was not found in the directory '{}'.",
                        self.settings.tenant_id
                    ),
                ),
                principal::VerifyError::BadSecret => OAuthError::new(
                    401,
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '"
                        .to_string()
                        + client_id
                        + "'.",
                ),
            })?;
        Ok(self.issue(&sp, &audience, now()))
    }

    /// Signs a token for `sp` and `audience`, issued at `issued_at` (unix seconds).
    pub fn issue(&self, sp: &ServicePrincipal, audience: &str, issued_at: i64) -> IssuedToken {
        let lifetime = TOKEN_LIFETIME.as_secs();
        let claims = Claims::new(
            &self.settings.issuer(),
            audience,
            sp,
            issued_at,
            issued_at + lifetime as i64,
        );
        IssuedToken {
            access_token: token::sign(&claims, &self.key),
            expires_in: lifetime,
            expires_on: claims.exp,
            resource: audience.to_string(),
        }
    }

    /// The audience a token request asks for; refused unless fogd accepts it.
    fn audience_of(
        &self,
        scope: Option<&str>,
        resource: Option<&str>,
    ) -> Result<String, OAuthError> {
        let wanted = match (scope, resource) {
            (Some(scope), _) => scope
                .split(' ')
                .find_map(|s| s.strip_suffix(".default"))
                .map(str::to_string)
                .ok_or_else(|| {
                    OAuthError::new(
                        400,
                        "invalid_scope",
                        1002012,
                        format!("The provided value for scope '{scope}' is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
                    )
                })?,
            (None, Some(resource)) => resource.to_string(),
            (None, None) => {
                return Err(OAuthError::new(
                    400,
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameter: 'scope'.",
                ))
            }
        };
        let accepted = self.settings.audiences();
        if accepted.iter().any(|a| a == &wanted) {
            return Ok(wanted);
        }
        // `https://management.core.windows.net//.default` leaves the audience with its
        // slash; a scope without it names the same resource.
        let with_slash = format!("{}/", wanted.trim_end_matches('/'));
        if accepted.contains(&with_slash) {
            return Ok(with_slash);
        }
        Err(OAuthError::new(
            400,
            "invalid_resource",
            500011,
            format!(
                "The resource principal named {wanted} was not found in the tenant named {}. Ask for one of: {}.",
                self.settings.tenant_id,
                accepted.join(", ")
            ),
        ))
    }
}

/// The current time in unix seconds.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Constant-time comparison, so response timing does not reveal a token.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
