//! fogd as the token issuer of its own cloud, end to end over HTTPS: a service principal
//! made with the administrator token gets a JWT from the token endpoint and calls ARM with
//! it; tokens fogd did not sign, or signed for something else, are refused with ARM's 401
//! codes; what az and MSAL read without a token is there.

mod common;
use base64::Engine as _;
use common::*;
use fog_identity::{ServicePrincipal, SigningKey};
use reqwest::{Method, StatusCode};
use serde_json::Value;

const SCOPE: &str = "https://management.core.windows.net//.default";

/// `POST {authority}/oauth2/token` with a form body; status and JSON.
async fn token_request(f: &Fogd, url: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let body = serde_urlencoded::to_string(form).expect("form");
    let r = f
        .client
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("token request");
    let status = r.status();
    (status, r.json().await.expect("json"))
}

fn claims_of(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("a JWT has three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("claims")
}

/// Asserts a 401 with `code` and the bearer challenge.
fn assert_401(r: &Reply, code: &str) {
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    assert_eq!(r.code(), code, "{}", r.body);
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
}

#[tokio::test]
async fn a_service_principal_signs_in_at_the_token_endpoint_and_calls_arm_with_the_jwt() {
    let mut f = Fogd::start().await;
    let tenant = std::fs::read_to_string(f.data.join("tenant-id"))
        .expect("tenant-id")
        .trim()
        .to_string();

    // What `az cloud register` reads, without a token.
    let meta = f
        .send_with(
            Method::GET,
            "/metadata/endpoints?api-version=2022-09-01",
            None,
            None,
        )
        .await;
    assert_eq!(meta.status, StatusCode::OK, "{}", meta.body);
    let authority = meta.body["authentication"]["loginEndpoint"]
        .as_str()
        .expect("loginEndpoint")
        .to_string();
    assert_eq!(authority, format!("{}/adfs", f.url));
    assert_eq!(
        meta.body["authentication"]["audiences"][0],
        "https://management.core.windows.net/"
    );
    assert_eq!(meta.body["resourceManager"], format!("{}/", f.url));
    assert_eq!(
        meta.body["suffixes"]["sqlServerHostname"],
        ".database.fogd.local"
    );

    // MSAL's discovery at an ADFS authority: `{authority}/.well-known/openid-configuration`.
    let oidc = f
        .send_with(
            Method::GET,
            "/adfs/.well-known/openid-configuration",
            None,
            None,
        )
        .await;
    assert_eq!(oidc.status, StatusCode::OK);
    let token_endpoint = oidc.body["token_endpoint"]
        .as_str()
        .expect("token_endpoint");
    assert_eq!(token_endpoint, format!("{authority}/oauth2/token"));
    let issuer = format!("https://sts.fogd.local/{tenant}/");
    assert_eq!(oidc.body["issuer"], issuer.as_str());
    let jwks = f
        .send_with(Method::GET, "/adfs/discovery/keys", None, None)
        .await;
    assert_eq!(jwks.body["keys"][0]["alg"], "ES256");

    // The administrator makes a service principal (what `fogctl ad sp create-for-rbac` sends).
    let made = f
        .send(
            Method::POST,
            "/identity/servicePrincipals",
            Some(r#"{"displayName":"ci"}"#),
        )
        .await;
    assert_eq!(made.status, StatusCode::OK, "{}", made.body);
    let app_id = made.body["appId"].as_str().expect("appId").to_string();
    let password = made.body["password"]
        .as_str()
        .expect("password")
        .to_string();
    assert_eq!(made.body["tenant"], tenant.as_str());
    assert_eq!(made.body["displayName"], "ci");

    // The client_credentials grant.
    let (status, tok) = token_request(
        &f,
        token_endpoint,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &app_id),
            ("client_secret", &password),
            ("scope", SCOPE),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{tok}");
    assert_eq!(tok["token_type"], "Bearer");
    let jwt = tok["access_token"]
        .as_str()
        .expect("access_token")
        .to_string();
    let claims = claims_of(&jwt);
    assert_eq!(claims["tid"], tenant.as_str());
    assert_eq!(claims["appid"], app_id.as_str());
    assert_eq!(claims["aud"], "https://management.core.windows.net/");
    assert_eq!(claims["iss"], issuer.as_str());
    let exp = claims["exp"].as_i64().expect("exp");
    let now = fog_identity::now();
    assert!(
        exp > now + 3000 && exp <= now + 3700,
        "exp {exp}, now {now}"
    );
    let oid = claims["oid"].as_str().expect("oid").to_string();

    // ARM calls with the JWT.
    let subs = f
        .send_with(
            Method::GET,
            "/subscriptions?api-version=2022-12-01",
            None,
            Some(&jwt),
        )
        .await;
    assert_eq!(subs.status, StatusCode::OK, "{}", subs.body);
    assert_eq!(subs.body["value"][0]["subscriptionId"], f.sub.as_str());
    assert_eq!(subs.body["value"][0]["tenantId"], tenant.as_str());
    let one = f
        .send_with(
            Method::GET,
            &format!("/subscriptions/{}?api-version=2022-12-01", f.sub),
            None,
            Some(&jwt),
        )
        .await;
    assert_eq!(one.body["state"], "Enabled");
    let missing = f
        .send_with(
            Method::GET,
            "/subscriptions/00000000-0000-0000-0000-0000000000ff?api-version=2022-12-01",
            None,
            Some(&jwt),
        )
        .await;
    assert_eq!(
        (missing.status, missing.code()),
        (StatusCode::NOT_FOUND, "SubscriptionNotFound")
    );
    let tenants = f
        .send_with(
            Method::GET,
            "/tenants?api-version=2022-12-01",
            None,
            Some(&jwt),
        )
        .await;
    assert_eq!(tenants.body["value"][0]["tenantId"], tenant.as_str());
    let rg = format!(
        "/subscriptions/{}/resourcegroups/rg-jwt?api-version=2024-11-01",
        f.sub
    );
    let put = f
        .send_with(
            Method::PUT,
            &rg,
            Some(r#"{"location":"eastus","tags":{"by":"jwt"}}"#),
            Some(&jwt),
        )
        .await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.body);
    assert_eq!(put.body["type"], "Microsoft.Resources/resourceGroups");
    let list = f
        .send_with(
            Method::GET,
            &format!("{}/managedInstances?{API}", f.rg_path("rg-jwt")),
            None,
            Some(&jwt),
        )
        .await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    assert_eq!(list.body["value"], serde_json::json!([]));
    let caps = f
        .send_with(
            Method::GET,
            &format!(
                "/subscriptions/{}/providers/Microsoft.Sql/locations/eastus/capabilities?include=supportedManagedInstanceVersions&{API}",
                f.sub
            ),
            None,
            Some(&jwt),
        )
        .await;
    assert_eq!(caps.status, StatusCode::OK, "{}", caps.body);
    let editions = &caps.body["supportedManagedInstanceVersions"][0]["supportedEditions"];
    assert_eq!(editions[0]["name"], "GeneralPurpose");
    assert_eq!(editions[0]["status"], "Default");
    assert_eq!(editions[0]["supportedFamilies"][0]["sku"], "GP_Gen5");
    assert_eq!(editions[1]["name"], "BusinessCritical");
    // The administrator token keeps working as before.
    let admin = f
        .send(Method::GET, "/subscriptions?api-version=2022-12-01", None)
        .await;
    assert_eq!(admin.status, StatusCode::OK);

    // Managing principals is the administrator's.
    let denied = f
        .send_with(Method::GET, "/identity/servicePrincipals", None, Some(&jwt))
        .await;
    assert_eq!(
        (denied.status, denied.code()),
        (StatusCode::FORBIDDEN, "AuthorizationFailed")
    );
    let listed = f
        .send(Method::GET, "/identity/servicePrincipals", None)
        .await;
    let text = listed.body.to_string();
    assert!(
        text.contains(&app_id) && !text.contains(&password),
        "{text}"
    );
    assert!(!text.contains("argon2"), "{text}");

    // Refused grants, in Entra's error shape.
    let (status, e) = token_request(
        &f,
        token_endpoint,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &app_id),
            ("client_secret", "not-the-secret"),
            ("scope", SCOPE),
        ],
    )
    .await;
    assert_eq!(
        (status, e["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    let (status, e) = token_request(
        &f,
        token_endpoint,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &app_id),
            ("client_secret", &password),
            ("scope", "https://vault.azure.net/.default"),
        ],
    )
    .await;
    assert_eq!(
        (status, e["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_resource"))
    );
    let (status, e) = token_request(
        &f,
        token_endpoint,
        &[("grant_type", "password"), ("client_id", &app_id)],
    )
    .await;
    assert_eq!(
        (status, e["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unsupported_grant_type"))
    );

    // Tokens fogd's key signed with wrong claims, and tokens it did not sign.
    let key = SigningKey::load_or_create(&f.data.join("keys/token-signing.pem")).expect("key");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(f.data.join("keys/token-signing.pem"))
            .expect("stat")
            .permissions(),
    ) & 0o777;
    assert_eq!(mode, 0o600);
    let sp = ServicePrincipal {
        app_id: app_id.clone(),
        object_id: oid.clone(),
        display_name: "ci".into(),
        tenant_id: tenant.clone(),
        created: String::new(),
        credentials: vec![],
    };
    let aud = "https://management.core.windows.net/";
    let signed = |key: &SigningKey, iss: &str, aud: &str, iat: i64, exp: i64| {
        fog_identity::token::sign(&fog_identity::Claims::new(iss, aud, &sp, iat, exp), key)
    };
    let path = "/subscriptions?api-version=2022-12-01";
    let cases = [
        (
            signed(&key, &issuer, aud, now - 7200, now - 60),
            "ExpiredAuthenticationToken",
        ),
        (
            signed(&key, &issuer, "https://vault.azure.net", now, now + 600),
            "InvalidAuthenticationTokenAudience",
        ),
        (
            signed(&key, "https://sts.windows.net/x/", aud, now, now + 600),
            "InvalidAuthenticationTokenTenant",
        ),
        (
            signed(
                &SigningKey::generate().expect("key"),
                &issuer,
                aud,
                now,
                now + 600,
            ),
            "InvalidAuthenticationToken",
        ),
        (format!("{jwt}x"), "InvalidAuthenticationToken"),
    ];
    for (token, code) in &cases {
        let r = f.send_with(Method::GET, path, None, Some(token)).await;
        assert_401(&r, code);
        // Microsoft.Sql routes refuse them the same way.
        let r = f
            .send_with(
                Method::GET,
                &format!("{}/managedInstances?{API}", f.rg_path("rg-jwt")),
                None,
                Some(token),
            )
            .await;
        assert_401(&r, code);
    }
    let none = f.send_with(Method::GET, path, None, None).await;
    assert_401(&none, "AuthenticationFailed");

    // The key outlives a restart: the token still works.
    f.terminate();
    f.launch(&[]).await;
    let again = f.send_with(Method::GET, path, None, Some(&jwt)).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);

    // A credential reset retires the old secret; deleting the principal, its tokens.
    let reset = f
        .send(
            Method::POST,
            &format!("/identity/servicePrincipals/{app_id}/resetCredential"),
            Some("{}"),
        )
        .await;
    assert_eq!(reset.status, StatusCode::OK, "{}", reset.body);
    let new_password = reset.body["password"].as_str().expect("password");
    assert_ne!(new_password, password);
    let form = |secret: &str| {
        vec![
            ("grant_type".to_string(), "client_credentials".to_string()),
            ("client_id".to_string(), app_id.clone()),
            ("client_secret".to_string(), secret.to_string()),
            ("resource".to_string(), aud.to_string()),
        ]
    };
    let post = |form: Vec<(String, String)>| {
        let client = f.client.clone();
        // The port changed with the restart.
        let url = format!("{}/adfs/oauth2/token", f.url);
        async move {
            client
                .post(url)
                .body(serde_urlencoded::to_string(&form).expect("form"))
                .header("content-type", "application/x-www-form-urlencoded")
                .send()
                .await
                .expect("send")
                .status()
        }
    };
    assert_eq!(post(form(&password)).await, StatusCode::UNAUTHORIZED);
    assert_eq!(post(form(new_password)).await, StatusCode::OK);
    let gone = f
        .send(
            Method::DELETE,
            &format!("/identity/servicePrincipals/{app_id}"),
            None,
        )
        .await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    let r = f.send_with(Method::GET, path, None, Some(&jwt)).await;
    assert_401(&r, "InvalidAuthenticationToken");
    assert!(!f.log().contains(&password), "a secret reached the log");
    assert!(!f.log().contains(new_password), "a secret reached the log");
}

#[tokio::test]
async fn an_instance_makes_its_resource_group_exist_and_a_group_with_instances_is_not_deleted() {
    let f = Fogd::start().await;
    let rg = |name: &str| {
        format!(
            "/subscriptions/{}/resourceGroups/{name}?api-version=2024-11-01",
            f.sub
        )
    };
    let missing = f.send(Method::GET, &rg("implicit"), None).await;
    assert_eq!(
        (missing.status, missing.code()),
        (StatusCode::NOT_FOUND, "ResourceGroupNotFound")
    );
    f.create_instance("implicit", "mi-rg", "westus").await;
    let got = f.send(Method::GET, &rg("implicit"), None).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    assert_eq!(got.body["location"], "westus");
    let head = f.send(Method::HEAD, &rg("IMPLICIT"), None).await;
    assert_eq!(head.status, StatusCode::NO_CONTENT);
    let listed = f
        .send(
            Method::GET,
            &format!(
                "/subscriptions/{}/resourcegroups?api-version=2024-11-01",
                f.sub
            ),
            None,
        )
        .await;
    assert_eq!(listed.body["value"][0]["name"], "implicit");
    let moved = f
        .send(
            Method::PUT,
            &rg("implicit"),
            Some(r#"{"location":"eastus"}"#),
        )
        .await;
    assert_eq!(
        (moved.status, moved.code()),
        (StatusCode::CONFLICT, "InvalidResourceGroupLocation")
    );
    let refused = f.send(Method::DELETE, &rg("implicit"), None).await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::CONFLICT, "ResourceGroupNotEmpty")
    );
    let no_location = f.send(Method::PUT, &rg("empty"), Some("{}")).await;
    assert_eq!(
        (no_location.status, no_location.code()),
        (StatusCode::BAD_REQUEST, "LocationRequired")
    );
    let no_version = f
        .send(
            Method::GET,
            &format!("/subscriptions/{}/resourceGroups/implicit", f.sub),
            None,
        )
        .await;
    assert_eq!(
        (no_version.status, no_version.code()),
        (StatusCode::BAD_REQUEST, "MissingApiVersionParameter")
    );
}
