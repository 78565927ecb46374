//! The access tokens fogd signs: ES256 JWTs shaped like Microsoft Entra's v1 app tokens.
//!
//! [`validate`] checks, in this order, and answers with ARM's 401 codes: the shape, the
//! algorithm and key id, and the signature (`InvalidAuthenticationToken`), the expiry
//! (`ExpiredAuthenticationToken`), the issuer (`InvalidAuthenticationTokenTenant`) and the
//! audience (`InvalidAuthenticationTokenAudience`). Only a token whose signature holds
//! gets a more specific answer than `InvalidAuthenticationToken`.

use crate::keys::SigningKey;
use crate::principal::ServicePrincipal;
use fog_model::ArmError;
use jsonwebtoken::{Algorithm, Header, Validation};

/// The claims of a fogd access token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Claims {
    /// The audience (the resource the token is for).
    pub aud: String,
    /// The issuer (`https://sts.fogd.local/{tenant}/`).
    pub iss: String,
    /// Issued at, unix seconds.
    pub iat: i64,
    /// Not before, unix seconds.
    pub nbf: i64,
    /// Expiry, unix seconds.
    pub exp: i64,
    /// The application (client) id of the principal.
    pub appid: String,
    /// How the application authenticated: `1` is a client secret.
    #[serde(default)]
    pub appidacr: String,
    /// The identity provider (the issuer, as Entra writes it).
    #[serde(default)]
    pub idp: String,
    /// `app` for an application token.
    #[serde(default)]
    pub idtyp: String,
    /// The principal's object id.
    pub oid: String,
    /// The subject: the object id again.
    pub sub: String,
    /// The tenant.
    pub tid: String,
    /// A unique token id.
    #[serde(default)]
    pub uti: String,
    /// Token format version.
    #[serde(default)]
    pub ver: String,
}

impl Claims {
    /// The claims of a token for `sp`, valid from `iat` to `exp`.
    pub fn new(issuer: &str, audience: &str, sp: &ServicePrincipal, iat: i64, exp: i64) -> Self {
        Self {
            aud: audience.to_string(),
            iss: issuer.to_string(),
            iat,
            nbf: iat,
            exp,
            appid: sp.app_id.clone(),
            appidacr: "1".into(),
            idp: issuer.to_string(),
            idtyp: "app".into(),
            oid: sp.object_id.clone(),
            sub: sp.object_id.clone(),
            tid: sp.tenant_id.clone(),
            uti: uuid::Uuid::new_v4().simple().to_string(),
            ver: "1.0".into(),
        }
    }
}

/// Signs `claims` with `key` (ES256, `kid` in the header).
pub fn sign(claims: &Claims, key: &SigningKey) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(key.key_id().to_string());
    // Signing with a valid key cannot fail for these claims; an empty token would be
    // refused by every validator, never accepted.
    jsonwebtoken::encode(&header, claims, key.encoding()).unwrap_or_else(|e| {
        tracing::error!(error = %e, "signing a token failed");
        String::new()
    })
}

/// Validates a bearer token at time `now` (unix seconds) against fogd's key, its issuer and
/// the audiences it serves.
pub fn validate(
    token: &str,
    key: &SigningKey,
    issuer: &str,
    audiences: &[String],
    now: i64,
) -> Result<Claims, ArmError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| ArmError::invalid_token())?;
    if header.alg != Algorithm::ES256 || header.kid.as_deref() != Some(key.key_id()) {
        return Err(ArmError::invalid_token());
    }
    // The signature only: the claims are checked below, against `now`, with ARM's errors.
    let mut validation = Validation::new(Algorithm::ES256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Claims>(token, key.decoding(), &validation)
        .map_err(|_| ArmError::invalid_token())?
        .claims;
    if claims.exp <= now {
        return Err(ArmError::expired_token(utc(claims.exp), utc(now)));
    }
    if claims.nbf > now + 300 {
        return Err(ArmError::invalid_token());
    }
    if claims.iss != issuer {
        return Err(ArmError::invalid_token_issuer(&claims.iss, issuer));
    }
    if !audiences.iter().any(|a| a == &claims.aud) {
        return Err(ArmError::invalid_token_audience(
            &claims.aud,
            audiences.join(", "),
        ));
    }
    Ok(claims)
}

/// `MM/DD/YYYY HH:MM:SS`, as ARM writes times in its token errors.
fn utc(unix: i64) -> String {
    let format = time::macros::format_description!("[month]/[day]/[year] [hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| unix.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISS: &str = "https://127.0.0.1:8443/adfs";
    const AUD: &str = "https://management.core.windows.net/";
    const NOW: i64 = 1_800_000_000;

    fn sp() -> ServicePrincipal {
        ServicePrincipal {
            app_id: "11111111-1111-1111-1111-111111111111".into(),
            object_id: "22222222-2222-2222-2222-222222222222".into(),
            display_name: "ci".into(),
            tenant_id: "33333333-3333-3333-3333-333333333333".into(),
            created: "2026-01-01T00:00:00Z".into(),
            credentials: vec![],
        }
    }

    fn audiences() -> Vec<String> {
        vec![AUD.to_string()]
    }

    fn token(key: &SigningKey, iss: &str, aud: &str, iat: i64, exp: i64) -> String {
        sign(&Claims::new(iss, aud, &sp(), iat, exp), key)
    }

    #[test]
    fn a_valid_token_yields_its_claims() {
        let key = SigningKey::generate().expect("key");
        let t = token(&key, ISS, AUD, NOW - 10, NOW + 3600);
        let claims = validate(&t, &key, ISS, &audiences(), NOW).expect("valid");
        assert_eq!(claims.appid, sp().app_id);
        assert_eq!(claims.oid, sp().object_id);
        assert_eq!(claims.tid, sp().tenant_id);
        assert_eq!(claims.aud, AUD);
        assert_eq!(claims.iss, ISS);
        assert_eq!(claims.exp, NOW + 3600);
    }

    #[test]
    fn an_expired_token_is_401_expired_authentication_token() {
        let key = SigningKey::generate().expect("key");
        let t = token(&key, ISS, AUD, NOW - 7200, NOW - 3600);
        let e = validate(&t, &key, ISS, &audiences(), NOW).expect_err("expired");
        assert_eq!(
            (e.status, e.code.as_str()),
            (401, "ExpiredAuthenticationToken")
        );
        // Expiry is exclusive: a token is dead at its `exp` second.
        let t = token(&key, ISS, AUD, NOW - 3600, NOW);
        let e = validate(&t, &key, ISS, &audiences(), NOW).expect_err("expired");
        assert_eq!(e.code, "ExpiredAuthenticationToken");
    }

    #[test]
    fn another_key_signature_is_401_invalid_authentication_token() {
        let key = SigningKey::generate().expect("key");
        let other = SigningKey::generate().expect("key");
        let t = token(&other, ISS, AUD, NOW, NOW + 3600);
        let e = validate(&t, &key, ISS, &audiences(), NOW).expect_err("foreign key");
        assert_eq!(
            (e.status, e.code.as_str()),
            (401, "InvalidAuthenticationToken")
        );
        // The same key id, a signature by another key: refused too.
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key.key_id().to_string());
        let forged = jsonwebtoken::encode(
            &header,
            &Claims::new(ISS, AUD, &sp(), NOW, NOW + 3600),
            other.encoding(),
        )
        .expect("sign");
        let e = validate(&forged, &key, ISS, &audiences(), NOW).expect_err("forged");
        assert_eq!(
            (e.status, e.code.as_str()),
            (401, "InvalidAuthenticationToken")
        );
    }

    #[test]
    fn a_tampered_payload_is_401_invalid_authentication_token() {
        let key = SigningKey::generate().expect("key");
        let t = token(&key, ISS, AUD, NOW, NOW + 3600);
        let parts: Vec<&str> = t.split('.').collect();
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut claims: serde_json::Value =
            serde_json::from_slice(&b64.decode(parts[1]).expect("b64")).expect("json");
        claims["appid"] = "someone-else".into();
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64.encode(claims.to_string()),
            parts[2]
        );
        let e = validate(&tampered, &key, ISS, &audiences(), NOW).expect_err("tampered");
        assert_eq!(
            (e.status, e.code.as_str()),
            (401, "InvalidAuthenticationToken")
        );
        for junk in ["", "abc", "a.b.c", "eyJhbGciOiJub25lIn0.e30."] {
            let e = validate(junk, &key, ISS, &audiences(), NOW).expect_err("junk");
            assert_eq!(e.code, "InvalidAuthenticationToken", "{junk}");
        }
    }

    #[test]
    fn an_unsigned_or_hmac_token_is_refused() {
        let key = SigningKey::generate().expect("key");
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.key_id().to_string());
        let hmac = jsonwebtoken::encode(
            &header,
            &Claims::new(ISS, AUD, &sp(), NOW, NOW + 3600),
            &jsonwebtoken::EncodingKey::from_secret(b"guess"),
        )
        .expect("sign");
        let e = validate(&hmac, &key, ISS, &audiences(), NOW).expect_err("hmac");
        assert_eq!(
            (e.status, e.code.as_str()),
            (401, "InvalidAuthenticationToken")
        );
    }

    #[test]
    fn a_wrong_audience_is_401_invalid_authentication_token_audience() {
        let key = SigningKey::generate().expect("key");
        let t = token(&key, ISS, "https://vault.azure.net", NOW, NOW + 3600);
        let e = validate(&t, &key, ISS, &audiences(), NOW).expect_err("audience");
        assert_eq!(
            (e.status, e.code.as_str()),
            (401, "InvalidAuthenticationTokenAudience")
        );
        assert!(
            e.message.contains("https://vault.azure.net"),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_wrong_issuer_is_401_invalid_authentication_token_tenant() {
        let key = SigningKey::generate().expect("key");
        let t = token(&key, "https://sts.windows.net/x/", AUD, NOW, NOW + 3600);
        let e = validate(&t, &key, ISS, &audiences(), NOW).expect_err("issuer");
        assert_eq!(
            (e.status, e.code.as_str()),
            (401, "InvalidAuthenticationTokenTenant")
        );
        assert!(e.message.contains(ISS), "{}", e.message);
    }
}
