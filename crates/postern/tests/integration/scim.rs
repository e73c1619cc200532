//! SCIM 2.0 provisioning: the identity provider creates, finds, replaces, patches and deletes
//! users over `/scim/v2` with its own bearer token. Deactivating a user (PATCH in Okta's and
//! Entra ID's forms, or PUT) or deleting it ends that person's live sessions at once with FATAL
//! 57P01 naming the revocation and refuses their logins; making the user active again (or
//! provisioning it anew) lifts what SCIM revoked, and never a revocation an operator made.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use crate::common::{RawClient, assert_db_error};
use postern_config::{AdminConfig, ConsoleConfig, ScimConfig, ScimSubjectAttribute};
use postern_testkit::{Stack, StackOptions};
use postern_wire::backend;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The provider's token, as written in `[admin.scim] token_file`.
const SCIM_TOKEN: &str = "scim-test-token-5f0c2a9e1d7b4c3a8e6f0b1d2c3a4e5f";

const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

const OPERATORS: &str = "@id(\"operators\")\npermit (principal in Group::\"operators\", action in [Action::\"view_sessions\", Action::\"end_session\", Action::\"revoke\"], resource);\n";

const DEACTIVATED: &str = "access for alice@example.com was revoked by scim: deactivated in the \
                           identity provider (SCIM)";

/// A stack whose admin API takes SCIM with `SCIM_TOKEN`, users' subjects in `userName`.
async fn stack() -> Stack {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut stack = Stack::start(StackOptions {
        policies: vec![OPERATORS.to_owned()],
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let token_file = stack.dir().join("scim-token");
    std::fs::write(&token_file, format!("{SCIM_TOKEN}\n")).unwrap();
    stack.config.admin = Some(AdminConfig {
        address: "127.0.0.1:6480".parse().unwrap(),
        console: ConsoleConfig::default(),
        scim: Some(ScimConfig {
            token_file: Some(token_file),
            issuer: None,
            subject_attribute: ScimSubjectAttribute::UserName,
        }),
    });
    stack.config.validate().unwrap();
    stack.start_proxy().await.unwrap();
    stack
}

/// A SCIM request with `token` as the bearer (none when `None`); the status and the body.
async fn call(
    stack: &Stack,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request =
        reqwest::Client::new().request(method, format!("{}/scim/v2{path}", stack.admin_url()));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/scim+json")
            .body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    if status != StatusCode::NO_CONTENT {
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "application/scim+json",
            "{path}"
        );
    }
    let text = response.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    };
    (status, body)
}

async fn scim(
    stack: &Stack,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    call(stack, method, path, Some(SCIM_TOKEN), body).await
}

/// Creates a user; returns its id.
async fn create(stack: &Stack, user_name: &str) -> String {
    let (status, body) = scim(
        stack,
        Method::POST,
        "/Users",
        Some(json!({
            "schemas": [USER_SCHEMA],
            "userName": user_name,
            "externalId": format!("ext-{user_name}"),
            "name": {"givenName": "Alice", "familyName": "Smith"},
            "emails": [{"value": user_name, "type": "work", "primary": true}],
            "password": "never-stored",
            "active": true
        })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// Deactivates or reactivates `id` as Entra ID does: `Replace` of `active` with `"False"`.
async fn set_active_entra(stack: &Stack, id: &str, active: bool) -> Value {
    let (status, body) = scim(
        stack,
        Method::PATCH,
        &format!("/Users/{id}"),
        Some(json!({
            "schemas": [PATCH_SCHEMA],
            "Operations": [{"op": "Replace", "path": "active", "value": if active { "True" } else { "False" }}]
        })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["active"], json!(active), "{body}");
    body
}

/// Reads until the FATAL that ends the session; returns its message.
async fn fatal(client: &mut RawClient) -> String {
    client.query("SELECT 1").await;
    loop {
        let message = client.read().await.expect("a FATAL before the end");
        if message.tag == backend::ERROR_RESPONSE {
            let error = message.error();
            assert_eq!(
                (error.severity.as_str(), error.code.as_str()),
                ("FATAL", "57P01"),
                "{error:?}"
            );
            return error.message;
        }
    }
}

/// Whether the session still answers.
async fn alive(client: &mut RawClient) -> bool {
    client.query("SELECT 1").await;
    loop {
        match client.read().await {
            None => return false,
            Some(message) if message.tag == backend::READY_FOR_QUERY => return true,
            Some(message) if message.tag == backend::ERROR_RESPONSE => return false,
            Some(_) => {}
        }
    }
}

fn assert_scim_error(status: StatusCode, body: &Value, expected: StatusCode) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["schemas"], json!([ERROR_SCHEMA]), "{body}");
    assert_eq!(body["status"], json!(expected.as_str()), "{body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn the_provider_must_present_its_token() {
    let stack = stack().await;
    let operator = stack.token("olga@example.com", &["operators"]);
    for token in [None, Some("wrong"), Some(operator.as_str())] {
        let response = {
            let mut request =
                reqwest::Client::new().get(format!("{}/scim/v2/Users", stack.admin_url()));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            request.send().await.unwrap()
        };
        assert!(response.headers().contains_key("www-authenticate"));
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_scim_error(status, &body, StatusCode::UNAUTHORIZED);
    }
    let (status, body) = call(
        &stack,
        Method::POST,
        "/Users",
        Some("wrong"),
        Some(json!({"userName": "x"})),
    )
    .await;
    assert_scim_error(status, &body, StatusCode::UNAUTHORIZED);
    let (status, body) = scim(&stack, Method::GET, "/Users", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["totalResults"], 0, "the refused create made nothing");

    // Discovery, with the token.
    let (status, body) = scim(&stack, Method::GET, "/ServiceProviderConfig", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["patch"]["supported"], true);
    assert_eq!(body["filter"]["supported"], true);
    assert_eq!(body["authenticationSchemes"][0]["type"], "oauthbearertoken");
    let (status, body) = scim(&stack, Method::GET, "/ResourceTypes", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["Resources"][0]["endpoint"], "/Users");
    let (status, body) = scim(&stack, Method::GET, "/Schemas", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["Resources"][0]["id"], USER_SCHEMA);
    let (status, _) = scim(
        &stack,
        Method::GET,
        &format!("/Schemas/{USER_SCHEMA}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = scim(&stack, Method::GET, "/ResourceTypes/Group", None).await;
    assert_scim_error(status, &body, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn users_are_created_found_and_paged() {
    let stack = stack().await;
    let (status, body) = scim(
        &stack,
        Method::POST,
        "/Users",
        Some(json!({
            "schemas": [USER_SCHEMA],
            "userName": "alice@example.com",
            "externalId": "00u1",
            "displayName": "Alice Smith",
            "password": "never-stored",
        })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(body["schemas"], json!([USER_SCHEMA]));
    assert_eq!(body["active"], true, "a new user is active");
    assert_eq!(body["displayName"], "Alice Smith");
    assert!(body.get("password").is_none(), "{body}");
    assert_eq!(body["meta"]["resourceType"], "User");
    assert_eq!(
        body["meta"]["location"],
        json!(format!("{}/scim/v2/Users/{id}", stack.admin_url()))
    );

    // userName is unique, without regard to case.
    let (status, body) = scim(
        &stack,
        Method::POST,
        "/Users",
        Some(json!({"schemas": [USER_SCHEMA], "userName": "ALICE@example.com"})),
    )
    .await;
    assert_scim_error(status, &body, StatusCode::CONFLICT);
    assert_eq!(body["scimType"], "uniqueness");

    // What providers look up before creating.
    for filter in [
        r#"userName eq "alice@example.com""#,
        r#"userName eq "Alice@Example.com""#,
        r#"externalId eq "00u1""#,
    ] {
        let (status, body) = scim(
            &stack,
            Method::GET,
            &format!("/Users?filter={}", urlencode(filter)),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{filter}: {body}");
        assert_eq!(
            body["schemas"],
            json!(["urn:ietf:params:scim:api:messages:2.0:ListResponse"])
        );
        assert_eq!(body["totalResults"], 1, "{filter}");
        assert_eq!(body["Resources"][0]["id"], json!(id), "{filter}");
    }
    let (status, body) = scim(
        &stack,
        Method::GET,
        &format!("/Users?filter={}", urlencode(r#"userName eq "nobody""#)),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (body["totalResults"].clone(), body["Resources"].clone()),
        (json!(0), json!([]))
    );
    let (status, body) = scim(
        &stack,
        Method::GET,
        &format!("/Users?filter={}", urlencode(r#"name.givenName sw "A""#)),
        None,
    )
    .await;
    assert_scim_error(status, &body, StatusCode::BAD_REQUEST);
    assert_eq!(body["scimType"], "invalidFilter");

    // Paging: 1-based, count bounded.
    create(&stack, "bob@example.com").await;
    create(&stack, "carol@example.com").await;
    let (_, body) = scim(&stack, Method::GET, "/Users?startIndex=2&count=1", None).await;
    assert_eq!(body["totalResults"], 3);
    assert_eq!(body["startIndex"], 2);
    assert_eq!(body["itemsPerPage"], 1);
    assert_eq!(body["Resources"][0]["userName"], "bob@example.com");
    let (_, body) = scim(&stack, Method::GET, "/Users?startIndex=0&count=-5", None).await;
    assert_eq!(
        (body["startIndex"].clone(), body["itemsPerPage"].clone()),
        (json!(1), json!(0))
    );

    // Read, replace, unknown ids, bad bodies.
    let (status, body) = scim(&stack, Method::GET, &format!("/Users/{id}"), None).await;
    assert_eq!(
        (status, body["userName"].clone()),
        (StatusCode::OK, json!("alice@example.com"))
    );
    let (status, body) = scim(
        &stack,
        Method::PUT,
        &format!("/Users/{id}"),
        Some(json!({"schemas": [USER_SCHEMA], "id": id, "userName": "alice@example.com", "displayName": "A. Smith"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["displayName"], "A. Smith");
    assert!(
        body.get("externalId").is_none(),
        "a PUT replaces every attribute"
    );
    assert_eq!(
        body["active"], true,
        "a PUT without active leaves it as it was"
    );
    let (status, body) = scim(&stack, Method::GET, "/Users/0000", None).await;
    assert_scim_error(status, &body, StatusCode::NOT_FOUND);
    let (status, body) = scim(
        &stack,
        Method::POST,
        "/Users",
        Some(json!({"displayName": "no name"})),
    )
    .await;
    assert_scim_error(status, &body, StatusCode::BAD_REQUEST);
    assert_eq!(body["scimType"], "invalidValue");
    let (status, body) = scim(
        &stack,
        Method::PATCH,
        &format!("/Users/{id}"),
        Some(json!({"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "id", "value": "x"}]})),
    )
    .await;
    assert_scim_error(status, &body, StatusCode::BAD_REQUEST);
    assert_eq!(body["scimType"], "mutability");
}

#[tokio::test]
async fn deactivation_and_deletion_revoke_at_once_and_reactivation_lifts() {
    let stack = stack().await;
    let id = create(&stack, "alice@example.com").await;
    let alice = stack.token("alice@example.com", &["analysts"]);
    let bob = stack.token("bob@example.com", &["analysts"]);
    let (mut session, _) = RawClient::login(stack.addr, "reader", &alice).await;
    let (mut bystander, _) = RawClient::login(stack.addr, "reader", &bob).await;

    // Entra ID's deactivation: her live session ends at once, naming the revocation.
    set_active_entra(&stack, &id, false).await;
    assert_eq!(
        fatal(&mut session).await,
        format!("terminating connection: {DEACTIVATED}")
    );
    let error = stack.connect("reader", &alice).await.unwrap_err();
    assert_db_error(&error, "28000", DEACTIVATED);
    assert!(alive(&mut bystander).await);
    // Sent again (a provider retrying), nothing more is revoked.
    set_active_entra(&stack, &id, false).await;

    // Okta's reactivation (no path, a value object): she may log in again.
    let (status, body) = scim(
        &stack,
        Method::PATCH,
        &format!("/Users/{id}"),
        Some(json!({"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "value": {"active": true}}]})),
    )
    .await;
    assert_eq!(
        (status, body["active"].clone()),
        (StatusCode::OK, json!(true)),
        "{body}"
    );
    let (mut session, _) = RawClient::login(stack.addr, "reader", &alice).await;

    // A PUT with active false deactivates too; one with true reactivates.
    let put = |active: bool| json!({"schemas": [USER_SCHEMA], "userName": "alice@example.com", "active": active});
    let (status, _) = scim(
        &stack,
        Method::PUT,
        &format!("/Users/{id}"),
        Some(put(false)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        fatal(&mut session).await,
        format!("terminating connection: {DEACTIVATED}")
    );
    let (status, _) = scim(
        &stack,
        Method::PUT,
        &format!("/Users/{id}"),
        Some(put(true)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (mut session, _) = RawClient::login(stack.addr, "reader", &alice).await;

    // Deleted: revoked, and the user is gone.
    let (status, body) = scim(&stack, Method::DELETE, &format!("/Users/{id}"), None).await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    let deleted = "access for alice@example.com was revoked by scim: deleted in the identity \
                   provider (SCIM)";
    assert_eq!(
        fatal(&mut session).await,
        format!("terminating connection: {deleted}")
    );
    let error = stack.connect("reader", &alice).await.unwrap_err();
    assert_db_error(&error, "28000", deleted);
    let (status, body) = scim(&stack, Method::GET, &format!("/Users/{id}"), None).await;
    assert_scim_error(status, &body, StatusCode::NOT_FOUND);
    let (status, body) = scim(&stack, Method::DELETE, &format!("/Users/{id}"), None).await;
    assert_scim_error(status, &body, StatusCode::NOT_FOUND);
    assert!(alive(&mut bystander).await);

    // Provisioned anew (a new id), she may come back.
    let again = create(&stack, "alice@example.com").await;
    assert_ne!(again, id);
    stack.connect("reader", &alice).await.unwrap();

    // Every change is in the audit trail, by scim, each before it was made.
    let events = stack.audit_events();
    let actions: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "control" && e["by"] == "scim")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "scim_create_user",
            "scim_update_user",
            "revoke",
            "scim_update_user",
            "scim_update_user",
            "lift_revocation",
            "scim_update_user",
            "revoke",
            "scim_update_user",
            "lift_revocation",
            "scim_delete_user",
            "revoke",
            "scim_create_user",
            "lift_revocation",
        ]
    );
    let revoke = events
        .iter()
        .find(|e| e["action"] == "revoke" && e["by"] == "scim")
        .unwrap();
    assert_eq!(revoke["details"]["scope"]["kind"], "issuer_subject");
    assert_eq!(revoke["details"]["scope"]["subject"], "alice@example.com");
    assert_eq!(
        revoke["details"]["scope"]["issuer"],
        json!(stack.idp.issuer())
    );
}

#[tokio::test]
async fn an_operators_revocation_is_not_lifted_by_scim() {
    let stack = stack().await;
    let operator = stack.token("olga@example.com", &["operators"]);
    let alice = stack.token("alice@example.com", &["analysts"]);
    let id = create(&stack, "alice@example.com").await;

    let response = reqwest::Client::new()
        .post(format!("{}/v1/revocations", stack.admin_url()))
        .bearer_auth(&operator)
        .json(&json!({"scope": {"kind": "subject", "subject": "alice@example.com"}, "reason": "under investigation"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let operators: Value = response.json().await.unwrap();
    let operators = operators["revocation"]["id"].as_str().unwrap().to_owned();

    // SCIM deactivates and reactivates her; the operator's revocation stands.
    set_active_entra(&stack, &id, false).await;
    set_active_entra(&stack, &id, true).await;
    let error = stack.connect("reader", &alice).await.unwrap_err();
    assert_db_error(
        &error,
        "28000",
        "access for alice@example.com was revoked by olga@example.com: under investigation",
    );
    let revocations: Value = reqwest::Client::new()
        .get(format!("{}/v1/revocations", stack.admin_url()))
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let revocations = revocations["revocations"].as_array().unwrap();
    assert_eq!(revocations.len(), 2, "{revocations:?}");
    let by_id = |id: &str| revocations.iter().find(|r| r["id"] == id).unwrap();
    assert_eq!(by_id(&operators)["lifted_at"], Value::Null);
    let scims = revocations
        .iter()
        .find(|r| r["created_by"] == "scim")
        .unwrap();
    assert_eq!(scims["lifted_by"], "scim");
    assert_eq!(
        scims["reason"],
        "deactivated in the identity provider (SCIM)"
    );

    // Once the operator lifts theirs, she is back.
    let status = reqwest::Client::new()
        .delete(format!("{}/v1/revocations/{operators}", stack.admin_url()))
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::OK);
    stack.connect("reader", &alice).await.unwrap();
}

/// Percent-encodes a query value.
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
