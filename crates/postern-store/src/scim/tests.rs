#![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

use serde_json::{Map, json};

use super::*;

const ISSUER: &str = "https://idp.example.com";

fn data(user_name: &str, external_id: Option<&str>, active: bool) -> ScimUserData {
    let mut attributes = Map::new();
    attributes.insert("displayName".into(), json!(user_name.to_uppercase()));
    ScimUserData {
        user_name: user_name.to_owned(),
        external_id: external_id.map(str::to_owned),
        active,
        attributes,
    }
}

async fn store() -> Store {
    Store::open_in_memory().await.unwrap()
}

fn revocation(subject: &str, created_by: &str) -> NewRevocation {
    NewRevocation {
        scope: RevocationScope::IssuerSubject {
            issuer: ISSUER.to_owned(),
            subject: subject.to_owned(),
        },
        reason: "deactivated in the identity provider (SCIM)".to_owned(),
        created_by: created_by.to_owned(),
        created_at: 10,
        expires_at: None,
    }
}

#[tokio::test]
async fn users_are_created_read_replaced_and_deleted() {
    let store = store().await;
    let alice = store
        .create_scim_user(&data("alice@example.com", Some("00u1"), true), 100)
        .await
        .unwrap();
    assert_eq!(alice.id.len(), 32);
    assert_eq!((alice.created_at, alice.modified_at), (100, 100));
    assert_eq!(alice.data.attributes["displayName"], "ALICE@EXAMPLE.COM");
    assert_eq!(
        store.scim_user(&alice.id).await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(store.scim_user("nope").await.unwrap(), None);

    // userName is unique without regard to case, on create and on replace.
    for taken in ["alice@example.com", "ALICE@example.com"] {
        let error = store
            .create_scim_user(&data(taken, None, true), 101)
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                StoreError::Duplicate {
                    field: "userName",
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!("userName {taken:?} is already taken")
        );
    }
    let bob = store
        .create_scim_user(&data("bob@example.com", None, true), 102)
        .await
        .unwrap();
    let error = store
        .replace_scim_user(&bob.id, &data("Alice@Example.com", None, true), 103)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Duplicate { .. }), "{error:?}");

    // A replace returns the user before and after; a user may change its own name's case.
    let (before, after) = store
        .replace_scim_user(&alice.id, &data("Alice@example.com", None, false), 200)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(before, alice);
    assert_eq!(after.data, data("Alice@example.com", None, false));
    assert_eq!((after.created_at, after.modified_at), (100, 200));
    assert!(
        store
            .replace_scim_user("nope", &data("x", None, true), 1)
            .await
            .unwrap()
            .is_none()
    );

    assert_eq!(
        store.delete_scim_user(&alice.id).await.unwrap(),
        Some(after)
    );
    assert_eq!(store.delete_scim_user(&alice.id).await.unwrap(), None);
    assert_eq!(store.scim_user(&alice.id).await.unwrap(), None);
    // The name is free again; the new user gets a new id.
    let again = store
        .create_scim_user(&data("alice@example.com", None, true), 300)
        .await
        .unwrap();
    assert_ne!(again.id, alice.id);
}

#[tokio::test]
async fn listings_filter_and_page() {
    let store = store().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let user = store
            .create_scim_user(
                &data(
                    &format!("user{n}@example.com"),
                    Some(&format!("ext{n}")),
                    true,
                ),
                n,
            )
            .await
            .unwrap();
        ids.push(user.id);
    }
    let page = store.scim_users(None, 1, 2).await.unwrap();
    assert_eq!(page.total, 5);
    let listed: Vec<&str> = page.users.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(listed, [ids[1].as_str(), ids[2].as_str()]);
    assert!(
        store
            .scim_users(None, 5, 10)
            .await
            .unwrap()
            .users
            .is_empty()
    );

    let by = |filter: ScimUserFilter| {
        let store = store.clone();
        async move { store.scim_users(Some(&filter), 0, 10).await.unwrap() }
    };
    let page = by(ScimUserFilter::UserName("USER3@example.com".into())).await;
    assert_eq!(
        (page.total, page.users[0].id.as_str()),
        (1, ids[3].as_str())
    );
    let page = by(ScimUserFilter::ExternalId("ext2".into())).await;
    assert_eq!(
        (page.total, page.users[0].id.as_str()),
        (1, ids[2].as_str())
    );
    assert_eq!(
        by(ScimUserFilter::ExternalId("EXT2".into())).await.total,
        0,
        "exact"
    );
    assert_eq!(by(ScimUserFilter::Id(ids[4].clone())).await.total, 1);
    assert_eq!(by(ScimUserFilter::UserName("nobody".into())).await.total, 0);
    // Hostile values are data, never SQL.
    assert_eq!(
        by(ScimUserFilter::UserName("' OR 1=1 --".into()))
            .await
            .total,
        0
    );
}

#[tokio::test]
async fn invalid_users_are_refused() {
    let store = store().await;
    let mut big = data("big", None, true);
    big.attributes
        .insert("x".into(), json!("y".repeat(MAX_SCIM_ATTRIBUTES_BYTES)));
    for (bad, field) in [
        (data(" ", None, true), "userName"),
        (data(&"a".repeat(2000), None, true), "userName"),
        (data("ok", Some(""), true), "externalId"),
        (big, "attributes"),
    ] {
        match store.create_scim_user(&bad, 1).await {
            Err(StoreError::Invalid { field: got, .. }) => assert_eq!(got, field),
            other => panic!("{field}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn scim_revocations_are_lifted_and_no_others() {
    let store = store().await;
    let made = store
        .add_scim_revocation(revocation("alice", "scim"))
        .await
        .unwrap();
    assert_eq!(made.created_by, "scim");
    // An operator's revocation of the same person, even one who signs as "scim".
    let operator = store
        .add_revocation(revocation("alice", "scim"))
        .await
        .unwrap();
    let bob = store
        .add_scim_revocation(revocation("bob", "scim"))
        .await
        .unwrap();
    assert_eq!(
        store
            .scim_revocations_in_force(ISSUER, "alice", 20)
            .await
            .unwrap(),
        [made.id.as_str()]
    );
    assert_eq!(store.active_revocations(20).await.unwrap().len(), 3);

    let lifted = store
        .lift_scim_revocations(ISSUER, "alice", "scim", 30)
        .await
        .unwrap();
    assert_eq!(lifted, [made.id.as_str()]);
    assert!(
        store
            .scim_revocations_in_force(ISSUER, "alice", 40)
            .await
            .unwrap()
            .is_empty()
    );
    let in_force: Vec<String> = store
        .active_revocations(40)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(in_force, [operator.id, bob.id]);
    assert!(
        store
            .lift_scim_revocations(ISSUER, "alice", "scim", 50)
            .await
            .unwrap()
            .is_empty()
    );

    let mut wrong = revocation("carol", "scim");
    wrong.scope = RevocationScope::Subject {
        subject: "carol".into(),
    };
    assert!(matches!(
        store.add_scim_revocation(wrong).await,
        Err(StoreError::Invalid { field: "scope", .. })
    ));
}
