//! A session's remembered decisions: reused only while nothing they were made from changed, so
//! that a session deciding with them decides exactly as a fresh one.

use super::*;

/// `sql` decided by `session`, and the same by a session that remembers nothing.
fn decide_both(
    engine: &PolicyEngine,
    session: &crate::cedar::SessionPolicy,
    who: &Identity,
    ctx: &RequestContext,
    sql: &str,
) -> Decision {
    let analysis = analyze(sql);
    let remembered = session.decide_analysis(engine, ctx, &analysis);
    let fresh = engine.decide_analysis(who, ctx, &analysis);
    assert_eq!(remembered, fresh, "{sql} at {:?}", ctx.now);
    remembered
}

#[test]
fn texts_of_one_shape_share_a_decision_and_others_get_their_own() {
    let engine = engine(READ_ONLY);
    let alice = alice();
    let session = engine.session(&alice);
    let ctx = ctx("reader");
    for n in 0..5 {
        let sql = format!("SELECT * FROM orders WHERE id = {n}");
        assert!(decide_both(&engine, &session, &alice, &ctx, &sql).is_allowed());
    }
    assert_eq!(session.decisions.len(), 1);
    // A write by the same analyst is not the read's decision.
    let denied = decide_both(
        &engine,
        &session,
        &alice,
        &ctx,
        "DELETE FROM orders WHERE id = 1",
    );
    assert_eq!(denied.policies(), ["analysts-read-only"]);
    // Another text with the same facts shares the read's decision; another table does not.
    assert!(decide_both(&engine, &session, &alice, &ctx, "SELECT * FROM orders").is_allowed());
    assert_eq!(session.decisions.len(), 2);
    assert!(decide_both(&engine, &session, &alice, &ctx, "SELECT * FROM customers").is_allowed());
    assert_eq!(session.decisions.len(), 3);
}

#[test]
fn a_new_hour_is_decided_again() {
    let engine = engine(
        r#"
@id("writes-in-office-hours")
forbid (principal, action in Action::"write", resource)
unless { context.hour >= 8 && context.hour < 18 };
"#,
    );
    let bob = bob();
    let session = engine.session(&bob);
    let at = writer_at;
    let six_pm = monday_10am() + Duration::from_secs(8 * 3600);
    let before = at(six_pm - Duration::from_millis(1));
    let update = "UPDATE orders SET x = 1";
    assert!(decide_both(&engine, &session, &bob, &before, update).is_allowed());
    assert!(decide_both(&engine, &session, &bob, &before, update).is_allowed());
    assert!(!decide_both(&engine, &session, &bob, &at(six_pm), update).is_allowed());
}

/// A token issued half way through a second comes of age half way through a later one: within
/// one Unix second, the same statement is allowed and then refused.
#[test]
fn token_age_is_exact_within_a_second() {
    let engine = engine(
        r#"
@id("fresh-tokens-write")
forbid (principal, action in Action::"write", resource)
unless { context.token_age_seconds < 3600 };
"#,
    );
    let mut bob = bob();
    bob.issued_at = Some(monday_10am() - Duration::from_millis(3_599_500));
    let session = engine.session(&bob);
    let at = |millis: u64| writer_at(monday_10am() + Duration::from_millis(millis));
    let delete = "DELETE FROM orders";
    // 3,599.7 s old, then 3,600.1 s old: the same Unix second.
    assert!(decide_both(&engine, &session, &bob, &at(200), delete).is_allowed());
    let refused = decide_both(&engine, &session, &bob, &at(600), delete);
    assert_eq!(refused.policies(), ["fresh-tokens-write"]);
}

#[test]
fn a_changed_search_path_address_or_role_is_decided_again() {
    let engine = engine(
        r#"
@id("sales-closed") forbid (principal, action, resource) when { resource is Table && resource.schema == "sales" };
@id("office-network") forbid (principal, action, resource) unless { context.source_ip.isInRange(ip("10.0.0.0/8")) };
@id("no-auditor-writes") forbid (principal, action in Action::"write", resource) when { context.role == "auditor" };
"#,
    );
    let bob = bob();
    let session = engine.session(&bob);
    let mut ctx = ctx("writer");
    let sql = "UPDATE orders SET x = 1";
    assert!(decide_both(&engine, &session, &bob, &ctx, sql).is_allowed());
    ctx.search_path = vec!["sales".into()];
    assert_eq!(
        decide_both(&engine, &session, &bob, &ctx, sql).policies(),
        ["sales-closed"]
    );
    ctx.search_path = Vec::new();
    ctx.source_ip = IpAddr::from([192, 168, 1, 1]);
    assert_eq!(
        decide_both(&engine, &session, &bob, &ctx, sql).policies(),
        ["office-network"]
    );
    ctx.source_ip = IpAddr::from([10, 1, 2, 3]);
    ctx.role = "auditor".into();
    assert_eq!(
        decide_both(&engine, &session, &bob, &ctx, sql).policies(),
        ["no-auditor-writes"]
    );
}

#[test]
fn a_reloaded_engine_is_asked_again() {
    let open = engine("");
    let closed = engine(
        r#"@id("orders-frozen") forbid (principal, action == Action::"write", resource == Table::"public.orders");"#,
    );
    let bob = bob();
    // One session object, as a live session keeps it between statements.
    let session = open.session(&bob);
    let ctx = ctx("writer");
    let sql = "DELETE FROM orders";
    assert!(
        session
            .decide_analysis(&open, &ctx, &analyze(sql))
            .is_allowed()
    );
    let after_reload = session.decide_analysis(&closed, &ctx, &analyze(sql));
    assert_eq!(after_reload.policies(), ["orders-frozen"]);
}
