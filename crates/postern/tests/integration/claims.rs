//! Row-level security with signed claims: a policy on `postern.claim('tenant_id')` shows a
//! session through Postern its token's tenant, and nothing to a direct connection that sets
//! `postern.claims` itself, whether forged or replayed from a Postern session.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::{assert_db_error, stack};
use base64::Engine as _;
use postern_config::UpstreamMode;
use postern_testkit::Stack;
use serde_json::json;

both_modes!(
    policies_see_the_tokens_claims,
    forged_and_replayed_claims_are_worthless,
);

/// `tenant_notes` with rows for two tenants, visible only to the tenant named in the verified
/// claims; a login role `mallory` (member of `reader`) that connects directly.
async fn tenant_notes(stack: &Stack) {
    let superuser = stack.direct().await.unwrap();
    superuser
        .batch_execute(
            "CREATE TABLE public.tenant_notes (tenant_id text NOT NULL, note text NOT NULL);
             INSERT INTO public.tenant_notes VALUES
                 ('acme', 'acme renews in March'),
                 ('acme', 'acme wants a discount'),
                 ('globex', 'globex is evaluating a competitor');
             ALTER TABLE public.tenant_notes ENABLE ROW LEVEL SECURITY;
             CREATE POLICY tenant_isolation ON public.tenant_notes
                 USING (tenant_id = postern.claim('tenant_id'));
             GRANT SELECT ON public.tenant_notes TO reader;
             CREATE ROLE mallory LOGIN PASSWORD 'mallory-password' IN ROLE reader;",
        )
        .await
        .unwrap();
}

async fn token_for_tenant(stack: &Stack, tenant: Option<&str>) -> String {
    let mut request = stack.request("alice@example.com");
    request.groups = vec!["analysts".to_owned()];
    if let Some(tenant) = tenant {
        request
            .extra_claims
            .insert("tenant_id".into(), json!(tenant));
    }
    stack.mint(&request).unwrap()
}

async fn notes(client: &tokio_postgres::Client) -> Vec<String> {
    client
        .query("SELECT note FROM tenant_notes ORDER BY note", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

async fn policies_see_the_tokens_claims(mode: UpstreamMode) {
    let stack = stack(mode).await;
    tenant_notes(&stack).await;

    let acme = stack
        .connect("reader", &token_for_tenant(&stack, Some("acme")).await)
        .await
        .unwrap();
    assert_eq!(
        notes(&acme).await,
        ["acme renews in March", "acme wants a discount"]
    );
    let row = acme
        .query_one(
            "SELECT postern.claims()->>'tenant_id', postern.claim('tenant_id'), postern.subject()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("acme"));
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("acme"));
    assert_eq!(
        row.get::<_, Option<String>>(2).as_deref(),
        Some("alice@example.com")
    );

    let globex = stack
        .connect("reader", &token_for_tenant(&stack, Some("globex")).await)
        .await
        .unwrap();
    assert_eq!(notes(&globex).await, ["globex is evaluating a competitor"]);

    let nobody = stack
        .connect("reader", &token_for_tenant(&stack, None).await)
        .await
        .unwrap();
    assert!(notes(&nobody).await.is_empty());

    // The session may not change its claims.
    for sql in [
        "SET postern.claims = 'x'",
        "SELECT set_config('postern.claims', 'x', false)",
    ] {
        let error = acme.simple_query(sql).await.unwrap_err();
        assert_db_error(&error, "42501", "postern.* settings are set by Postern");
    }
    assert_eq!(notes(&acme).await.len(), 2);
}

async fn forged_and_replayed_claims_are_worthless(mode: UpstreamMode) {
    let stack = stack(mode).await;
    tenant_notes(&stack).await;
    let acme = stack
        .connect("reader", &token_for_tenant(&stack, Some("acme")).await)
        .await
        .unwrap();
    let signed: String = acme
        .query_one("SELECT current_setting('postern.claims')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(notes(&acme).await.len(), 2);

    let mallory = stack
        .direct_as("mallory", "mallory-password")
        .await
        .unwrap();
    let pid: i32 = mallory
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let exp = (SystemTime::now() + Duration::from_secs(3600))
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let body = json!({
        "iss": stack.idp.issuer(),
        "sub": "alice@example.com",
        "claims": {"tenant_id": "acme", "sub": "alice@example.com"},
        "pid": pid,
        "exp": exp,
    });
    let payload = base64::engine::general_purpose::STANDARD.encode(body.to_string());
    let forged = format!("{payload}.{}", "ab".repeat(32));
    // The signed payload of the real session, with this backend's pid: the signature no longer
    // matches.
    let (real_payload, real_signature) = signed.split_once('.').unwrap();
    let mut real_body: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(real_payload)
            .unwrap(),
    )
    .unwrap();
    real_body["pid"] = json!(pid);
    let repointed = format!(
        "{}.{real_signature}",
        base64::engine::general_purpose::STANDARD.encode(real_body.to_string())
    );

    for (what, value) in [
        ("forged", forged.as_str()),
        ("replayed", signed.as_str()),
        ("replayed with this pid", repointed.as_str()),
    ] {
        mallory
            .query("SELECT set_config('postern.claims', $1, false)", &[&value])
            .await
            .unwrap();
        let row = mallory
            .query_one(
                "SELECT postern.claims()::text, postern.claim('tenant_id'), postern.subject()",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, Option<String>>(0), None, "{what}");
        assert_eq!(row.get::<_, Option<String>>(1), None, "{what}");
        assert_eq!(row.get::<_, Option<String>>(2), None, "{what}");
        assert!(notes(&mallory).await.is_empty(), "{what}");
    }
    // Nor can the key or the unchecked envelope be reached directly.
    let error = mallory
        .query("SELECT key FROM postern.signing_key", &[])
        .await
        .unwrap_err();
    assert_db_error(&error, "42501", "permission denied");
    let error = mallory
        .query("SELECT postern.verified_envelope()", &[])
        .await
        .unwrap_err();
    assert_db_error(&error, "42501", "permission denied");

    // The real session is unaffected.
    assert_eq!(notes(&acme).await.len(), 2);
}
