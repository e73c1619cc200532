//! The engine end to end: policies loaded from text, statements classified by `postern-sql`,
//! decisions checked both ways by injecting the time, the address and the identity.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postern_config::RoleRule;
use postern_identity::{Identity, IdentityKind};
use postern_sql::{Analysis, Classifier};

use super::{
    Action, Decision, DenyReason, LoadOptions, PolicyEngine, PolicyErrors, PolicySource,
    RequestContext, Resource,
};
use crate::roles::{self, RoleRefusal};

/// Monday 2026-11-30 at 10:00 UTC.
fn monday_10am() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_796_029_200 + 3600)
}

fn identity(subject: &str, groups: &[&str]) -> Identity {
    let mut claims = serde_json::Map::new();
    claims.insert("tenant_id".into(), "acme".into());
    claims.insert("level".into(), 3.into());
    Identity {
        issuer_name: "corp".into(),
        issuer: "https://id.example.com".into(),
        subject: subject.into(),
        kind: IdentityKind::Human,
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        claims,
        expires_at: monday_10am() + Duration::from_secs(3600),
        issued_at: Some(monday_10am() - Duration::from_secs(600)),
        token_id: None,
        mfa: false,
        workload: None,
    }
}

fn alice() -> Identity {
    identity("alice@example.com", &["analysts"])
}

fn bob() -> Identity {
    identity("bob@example.com", &["engineers"])
}

fn ctx(role: &str) -> RequestContext {
    RequestContext {
        source_ip: IpAddr::from([10, 1, 2, 3]),
        now: monday_10am(),
        target: "demo".into(),
        role: role.into(),
        application_name: Some("psql".into()),
        search_path: Vec::new(),
    }
}

/// A writer's request context at `now`.
fn writer_at(now: SystemTime) -> RequestContext {
    RequestContext {
        now,
        ..ctx("writer")
    }
}

fn rule(roles: &[&str], groups: &[&str]) -> RoleRule {
    RoleRule {
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        subjects: vec![],
        issuers: vec![],
        claims: BTreeMap::new(),
    }
}

fn targets() -> BTreeMap<String, Vec<RoleRule>> {
    let mut by_subject = rule(&["auditor"], &[]);
    by_subject.subjects = vec![
        "carol@example.com".into(),
        "o'neil \"q\" é@example.com".into(),
    ];
    let mut by_issuer = rule(&["deployer"], &[]);
    by_issuer.issuers = vec!["ci".into()];
    let mut by_claim = rule(&["tenant"], &["analysts", "engineers"]);
    by_claim.claims = BTreeMap::from([("tenant_id".into(), "acme".into())]);
    let mut by_number_claim = rule(&["leveled"], &[]);
    by_number_claim.claims = BTreeMap::from([("level".into(), "3".into())]);
    BTreeMap::from([
        (
            "demo".to_owned(),
            vec![
                rule(&["reader"], &["analysts", "équipe \"data\""]),
                rule(&["reader", "writer"], &["engineers"]),
                by_subject,
                by_issuer,
                by_claim,
                by_number_claim,
                rule(&["nobody"], &[]),
            ],
        ),
        ("other".to_owned(), vec![rule(&["reader"], &["engineers"])]),
    ])
}

fn source(origin: &str, text: &str) -> PolicySource {
    PolicySource {
        origin: origin.into(),
        text: text.into(),
    }
}

fn engine(text: &str) -> PolicyEngine {
    PolicyEngine::load(&[source("policies/test.cedar", text)], &targets())
        .unwrap_or_else(|e| panic!("{e}"))
}

fn closed_engine(text: &str) -> PolicyEngine {
    PolicyEngine::load_with(
        &[source("policies/test.cedar", text)],
        &targets(),
        LoadOptions {
            include_defaults: false,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn load_errors(sources: &[PolicySource]) -> PolicyErrors {
    match PolicyEngine::load(sources, &targets()) {
        Ok(_) => panic!("the policies loaded"),
        Err(errors) => errors,
    }
}

fn analyze(sql: &str) -> Analysis {
    let analysis = Classifier::new(0).analyze(sql);
    (*analysis).clone()
}

fn decide(engine: &PolicyEngine, who: &Identity, ctx: &RequestContext, sql: &str) -> Decision {
    engine.decide_analysis(who, ctx, &analyze(sql))
}

fn message(decision: &Decision) -> &str {
    decision
        .message()
        .unwrap_or_else(|| panic!("allowed: {decision:?}"))
}

const READ_ONLY: &str = r#"
@id("analysts-read-only")
forbid (principal in Group::"analysts", action in [Action::"write", Action::"ddl"], resource);
"#;

#[test]
fn engine_is_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<PolicyEngine>();
    shared::<super::SessionPolicy>();
}

#[test]
fn schema_validates_the_defaults_and_role_rules() {
    let engine = PolicyEngine::load(&[], &targets()).unwrap();
    // Six rules with conditions, one without (no policy), one on the other target; six
    // defaults.
    assert_eq!(engine.policy_count(), 7 + 6);
    assert!(engine.warnings().is_empty(), "{:?}", engine.warnings());
    assert_eq!(
        engine.origin_of("postern-default-read"),
        Some("postern defaults (policies/defaults.cedar):12:1")
    );
    assert_eq!(
        engine.origin_of("role-rule-demo-1"),
        Some("targets.demo.roles[1]:1:1")
    );
    let closed = PolicyEngine::load_with(
        &[],
        &targets(),
        LoadOptions {
            include_defaults: false,
        },
    )
    .unwrap();
    assert_eq!(closed.policy_count(), 7);
}

#[test]
fn typo_attribute_is_an_error_naming_file_and_line() {
    let errors = load_errors(&[source(
        "policies/team.cedar",
        "// Team policies.\n\
         @id(\"fine\")\n\
         permit (principal, action == Action::\"read\", resource);\n\
         \n\
         @id(\"typo\")\n\
         permit (principal, action == Action::\"read\", resource)\n\
         when { principal.grups == \"x\" };\n",
    )]);
    assert_eq!(errors.errors.len(), 1, "{errors}");
    let error = &errors.errors[0];
    assert_eq!(error.origin, "policies/team.cedar");
    assert_eq!(error.policy.as_deref(), Some("typo"));
    assert_eq!(error.location.map(|l| l.line), Some(7), "{error}");
    let text = error.to_string();
    assert!(text.starts_with("policies/team.cedar:7:"), "{text}");
    assert!(text.contains("grups"), "{text}");
}

#[test]
fn every_problem_is_reported_with_its_place() {
    let errors = load_errors(&[
        source(
            "a.cedar",
            "@id(\"dup\") permit (principal, action == Action::\"read\", resource);\n\
             permit (principal, action == Action::\"read\", resource);\n\
             @id(\"bad id\") permit (principal, action == Action::\"read\", resource);\n\
             @id(\"bad-action\") permit (principal, action == Action::\"reed\", resource);\n",
        ),
        source(
            "b.cedar",
            "\n  @id(\"dup\") forbid (principal, action, resource);\n\
             @id(\"postern-default-read\") permit (principal, action, resource);\n\
             @id(\"tmpl\") permit (principal == ?principal, action, resource);\n\
             @id(\"held\") @approval(\"two-person\") forbid (principal, action, resource);\n",
        ),
        source(
            "c.cedar",
            "permit (principal, action, resource) when { 1 + };",
        ),
    ]);
    let lines: Vec<String> = errors.errors.iter().map(ToString::to_string).collect();
    let expect = [
        "a.cedar:2:1: this policy has no @id",
        "a.cedar:3:1: @id(\"bad id\") contains ' '",
        "a.cedar:4:",
        "b.cedar:2:3: policy id \"dup\" is already used by the policy at a.cedar:1:1",
        "b.cedar:3:1: policy id \"postern-default-read\" is already used by the policy at \
         postern defaults",
        "b.cedar:4:1: policy templates",
        "b.cedar:5:1: @approval is for permit policies",
        "c.cedar:1:",
    ];
    assert_eq!(lines.len(), expect.len(), "{lines:#?}");
    for (line, expected) in lines.iter().zip(expect) {
        assert!(
            line.starts_with(expected),
            "{line:?} does not start with {expected:?}"
        );
    }
    assert!(lines[2].contains("reed"), "{}", lines[2]);
}

#[test]
fn role_rules_decide_assume() {
    let engine = engine("");
    let ctx = ctx("");
    let allowed =
        |who: &Identity, role: &str| engine.decide_assume(who, &ctx, "demo", role).is_allowed();
    // Groups.
    assert!(allowed(&alice(), "reader"));
    assert!(!allowed(&alice(), "writer"));
    assert!(allowed(&bob(), "writer"));
    assert!(allowed(&identity("d", &["équipe \"data\""]), "reader"));
    // Subjects, with characters that need escaping in Cedar.
    assert!(allowed(&identity("carol@example.com", &[]), "auditor"));
    assert!(allowed(
        &identity("o'neil \"q\" é@example.com", &[]),
        "auditor"
    ));
    assert!(!allowed(&alice(), "auditor"));
    // Issuers, by configured name.
    let mut ci = identity("ci-job", &[]);
    ci.kind = IdentityKind::Service;
    assert!(!allowed(&ci, "deployer"));
    ci.issuer_name = "ci".into();
    assert!(allowed(&ci, "deployer"));
    // Claims: every one must hold, as strings.
    assert!(allowed(&alice(), "tenant"));
    let mut other_tenant = alice();
    other_tenant
        .claims
        .insert("tenant_id".into(), "globex".into());
    assert!(!allowed(&other_tenant, "tenant"));
    let mut no_tenant = alice();
    no_tenant.claims.remove("tenant_id");
    assert!(!allowed(&no_tenant, "tenant"));
    // A number claim is not the string "3".
    assert!(!allowed(&alice(), "leveled"));
    // A rule without conditions matches nobody; rules of another target do not apply.
    assert!(!allowed(&alice(), "nobody"));
    assert!(
        !engine
            .decide_assume(&alice(), &ctx, "other", "reader")
            .is_allowed()
    );
    assert!(
        engine
            .decide_assume(&bob(), &ctx, "other", "reader")
            .is_allowed()
    );
    match engine.decide_assume(&bob(), &ctx, "demo", "writer") {
        Decision::Allow { policies, .. } => assert_eq!(policies, ["role-rule-demo-1"]),
        deny @ Decision::Deny { .. } => panic!("{deny:?}"),
    }
}

#[test]
fn role_rules_agree_with_the_configured_role_check() {
    let engine = engine("");
    let targets = targets();
    let mut ci = identity("ci-job", &[]);
    ci.issuer_name = "ci".into();
    let mut globex = bob();
    globex.claims.insert("tenant_id".into(), "globex".into());
    let people = [
        alice(),
        bob(),
        ci,
        globex,
        identity("carol@example.com", &["analysts", "engineers"]),
        identity("nobody", &[]),
    ];
    for who in &people {
        for (target, rules) in &targets {
            assert_eq!(
                engine.allowed_roles(who, &ctx(""), target),
                roles::allowed_roles(who, rules),
                "{} on {target}",
                who.subject
            );
        }
    }
}

#[test]
fn role_refusals_keep_their_messages() {
    let engine = engine(
        r#"
@id("no-writers-on-weekends")
forbid (principal, action == Action::"assume", resource == Role::"demo/writer")
when { context.weekday >= 5 };
"#,
    );
    let ctx = ctx("");
    let refusal = engine
        .authorize_role(&alice(), &ctx, "demo", "writer")
        .unwrap_err();
    assert_eq!(
        refusal.to_string(),
        "alice@example.com may not assume role \"writer\" on target \"demo\"; roles you may use: \
         reader, tenant"
    );
    let refusal = engine
        .authorize_role(&identity("nobody", &[]), &ctx, "demo", "reader")
        .unwrap_err();
    assert!(matches!(refusal, RoleRefusal::NoRoles { .. }));
    assert_eq!(
        refusal.to_string(),
        "nobody may not assume any role on target \"demo\"; ask an administrator to add you to a \
         group that has access"
    );
    assert!(
        engine
            .authorize_role(&bob(), &ctx, "demo", "writer")
            .is_ok()
    );
    let saturday = RequestContext {
        now: monday_10am() - Duration::from_secs(2 * 86_400),
        ..ctx
    };
    let refusal = engine
        .authorize_role(&bob(), &saturday, "demo", "writer")
        .unwrap_err();
    assert_eq!(
        refusal.to_string(),
        "bob@example.com may not assume role \"writer\" on target \"demo\": denied by policy \
         \"no-writers-on-weekends\""
    );
    assert_eq!(
        engine.allowed_roles(&bob(), &saturday, "demo"),
        ["reader", "tenant"]
    );
}

#[test]
fn analysts_read_writers_write() {
    let engine = engine(READ_ONLY);
    let reader = ctx("reader");
    let writer = ctx("writer");
    match decide(&engine, &alice(), &reader, "SELECT * FROM orders") {
        Decision::Allow {
            policies,
            approvals,
        } => {
            assert_eq!(policies, ["postern-default-read"]);
            assert!(approvals.is_empty());
        }
        deny @ Decision::Deny { .. } => panic!("{deny:?}"),
    }
    let denied = decide(&engine, &alice(), &reader, "INSERT INTO orders VALUES (1)");
    assert_eq!(
        denied,
        Decision::Deny {
            reason: DenyReason::Forbidden,
            policies: vec!["analysts-read-only".into()],
            action: Action::Write,
            resource: Resource::Table {
                schema: "public".into(),
                name: "orders".into()
            },
            message: "permission denied by policy \"analysts-read-only\": write on public.orders \
                      is not allowed for alice@example.com as reader"
                .into(),
        }
    );
    assert!(
        message(&decide(
            &engine,
            &alice(),
            &reader,
            "CREATE TABLE t (id int)"
        ))
        .starts_with("permission denied by policy \"analysts-read-only\": ddl on public.t")
    );
    assert!(decide(&engine, &bob(), &writer, "INSERT INTO orders VALUES (1)").is_allowed());
    assert!(decide(&engine, &bob(), &writer, "CREATE TABLE t (id int)").is_allowed());
    // Several statements: the first denial wins, whatever comes before it.
    let mixed = decide(
        &engine,
        &alice(),
        &reader,
        "SELECT 1; UPDATE sales.orders SET x = 1; DELETE FROM public.customers",
    );
    assert!(
        message(&mixed).contains("write on sales.orders"),
        "{mixed:?}"
    );
    // A table read by a write needs write too.
    let insert_select = decide(
        &engine,
        &bob(),
        &writer,
        "INSERT INTO archive SELECT * FROM orders",
    );
    assert!(insert_select.is_allowed());
    let frozen = engine_with(
        r#"@id("orders-frozen") forbid (principal, action == Action::"write", resource == Table::"public.orders");"#,
    );
    let insert_select = decide(
        &frozen,
        &bob(),
        &writer,
        "INSERT INTO archive SELECT * FROM orders",
    );
    assert_eq!(
        message(&insert_select),
        "permission denied by policy \"orders-frozen\": write on public.orders is not allowed \
         for bob@example.com as writer"
    );
}

fn engine_with(text: &str) -> PolicyEngine {
    engine(text)
}

#[test]
fn nothing_permitted_is_denied_when_the_defaults_are_off() {
    let engine = closed_engine(
        r#"
@id("analysts-read") permit (principal in Group::"analysts", action == Action::"read", resource);
"#,
    );
    let reader = ctx("reader");
    assert!(decide(&engine, &alice(), &reader, "SELECT * FROM orders").is_allowed());
    let denied = decide(&engine, &alice(), &reader, "INSERT INTO orders VALUES (1)");
    assert_eq!(
        message(&denied),
        "permission denied: no policy allows write on public.orders for alice@example.com as \
         reader"
    );
    assert!(matches!(
        denied,
        Decision::Deny {
            reason: DenyReason::NotPermitted,
            ref policies,
            ..
        } if policies.is_empty()
    ));
    // Not even connect is permitted without the defaults.
    assert!(!engine.decide_connect(&alice(), &reader).is_allowed());
    // Transaction control and session statements without tables are not policy matters.
    for sql in [
        "BEGIN",
        "COMMIT",
        "SET statement_timeout = '5s'",
        "",
        "-- nothing",
    ] {
        let decision = decide(&engine, &alice(), &reader, sql);
        assert_eq!(decision, Decision::allow_unchecked(), "{sql}");
    }
}

#[test]
fn statements_not_policed_still_read_their_tables() {
    let engine = engine(
        r#"
@id("salaries-private")
forbid (principal, action in Action::"read", resource == Table::"hr.salaries");
"#,
    );
    let reader = ctx("reader");
    for sql in [
        "SELECT * FROM hr.salaries",
        "DECLARE c CURSOR FOR SELECT * FROM hr.salaries",
        "PREPARE p AS SELECT * FROM hr.salaries",
        "SELECT set_config('application_name', 'x', false) FROM hr.salaries",
        "COPY hr.salaries TO STDOUT",
        "COPY (SELECT * FROM hr.salaries) TO STDOUT",
    ] {
        let decision = decide(&engine, &bob(), &reader, sql);
        assert!(
            message(&decision).starts_with("permission denied by policy \"salaries-private\""),
            "{sql}: {decision:?}"
        );
    }
    assert!(decide(&engine, &bob(), &reader, "SELECT * FROM hr.staff").is_allowed());
}

#[test]
fn copy_has_its_own_actions_inside_read_and_write() {
    let engine = engine(READ_ONLY);
    let reader = ctx("reader");
    let out = decide(&engine, &alice(), &reader, "COPY orders TO STDOUT");
    assert_eq!(out.policies(), ["postern-default-copy-out"]);
    // copy_in is a write: the read-only policy covers it without naming it.
    let copy_in = decide(&engine, &alice(), &reader, "COPY orders FROM STDIN");
    assert_eq!(
        message(&copy_in),
        "permission denied by policy \"analysts-read-only\": copy_in on public.orders is not \
         allowed for alice@example.com as reader"
    );
    assert!(decide(&engine, &bob(), &reader, "COPY orders FROM STDIN").is_allowed());
    // A COPY with a server file is administration, closed by default.
    let file = decide(&engine, &bob(), &reader, "COPY orders TO '/tmp/x'");
    assert!(
        message(&file).contains("no policy allows admin on public.orders"),
        "{file:?}"
    );
    // Exports can be stopped apart from reads.
    let no_export = engine_with(
        r#"@id("no-export") forbid (principal, action == Action::"copy_out", resource);"#,
    );
    assert!(decide(&no_export, &bob(), &reader, "SELECT * FROM orders").is_allowed());
    assert!(!decide(&no_export, &bob(), &reader, "COPY orders TO STDOUT").is_allowed());
}

#[test]
fn closed_classes_need_a_permit() {
    let engine = engine(
        r#"
@id("dbas-manage") permit (principal in Group::"dbas", action in [Action::"dcl", Action::"admin", Action::"raw"], resource);
"#,
    );
    let ctx = ctx("owner");
    let dba = identity("dana@example.com", &["dbas"]);
    for (sql, action) in [
        ("GRANT SELECT ON orders TO reader", "dcl on public.orders"),
        ("VACUUM", "admin on target demo"),
        ("DO $$ BEGIN END $$", "raw on target demo"),
        ("SELEC 1", "raw on target demo"),
    ] {
        let denied = decide(&engine, &bob(), &ctx, sql);
        assert_eq!(
            message(&denied),
            format!("permission denied: no policy allows {action} for bob@example.com as owner"),
            "{sql}"
        );
        let allowed = decide(&engine, &dba, &ctx, sql);
        assert_eq!(allowed.policies(), ["dbas-manage"], "{sql}");
    }
}

#[test]
fn unqualified_tables_take_the_search_path() {
    let engine = engine(
        r#"@id("sales-closed") forbid (principal, action, resource) when { resource is Table && resource.schema == "sales" };"#,
    );
    let mut ctx = ctx("reader");
    assert!(decide(&engine, &bob(), &ctx, "SELECT * FROM orders").is_allowed());
    ctx.search_path = vec!["$user".into(), "sales".into(), "public".into()];
    let denied = decide(&engine, &bob(), &ctx, "SELECT * FROM orders");
    assert!(
        message(&denied).contains("read on sales.orders"),
        "{denied:?}"
    );
    assert!(decide(&engine, &bob(), &ctx, "SELECT * FROM public.orders").is_allowed());
    assert!(!decide(&engine, &bob(), &ctx, "SELECT * FROM demo.sales.orders").is_allowed());
}

/// The client chooses its search path: a schema before the one that holds the table must not
/// move the name away from the table's policy, nor the catalog searched first.
#[test]
fn unqualified_tables_are_asked_about_in_every_schema_they_may_be_in() {
    let engine = engine(
        r#"
@id("orders-frozen") forbid (principal, action == Action::"write", resource == Table::"public.orders");
@id("no-activity") forbid (principal, action == Action::"read", resource == Table::"pg_catalog.pg_stat_activity");
"#,
    );
    let mut ctx = ctx("writer");
    for path in [
        &[][..],
        &["public"],
        &["$user", "public"],
        &["nosuch", "public"],
        &["nosuch", "$user", "public"],
    ] {
        ctx.search_path = path.iter().map(|&s| s.to_owned()).collect();
        let denied = decide(&engine, &bob(), &ctx, "DELETE FROM orders");
        assert_eq!(denied.policies(), ["orders-frozen"], "{path:?}");
        assert!(
            message(&denied).contains("write on public.orders"),
            "{path:?}: {denied:?}"
        );
        let denied = decide(&engine, &bob(), &ctx, "SELECT * FROM pg_stat_activity");
        assert_eq!(denied.policies(), ["no-activity"], "{path:?}");
        assert!(decide(&engine, &bob(), &ctx, "SELECT * FROM orders").is_allowed());
        assert!(decide(&engine, &bob(), &ctx, "DELETE FROM other").is_allowed());
    }
    // A path without public: the table the server finds is not public.orders.
    ctx.search_path = vec!["sales".into()];
    assert!(decide(&engine, &bob(), &ctx, "DELETE FROM orders").is_allowed());
    assert!(!decide(&engine, &bob(), &ctx, "DELETE FROM public.orders").is_allowed());
}

#[test]
fn source_address_conditions() {
    let engine = closed_engine(
        r#"
@id("local-only")
permit (principal, action == Action::"read", resource)
when { context.source_ip.isInRange(ip("127.0.0.0/8")) || context.source_ip.isInRange(ip("::1/128")) };
"#,
    );
    let mut ctx = ctx("reader");
    assert!(!decide(&engine, &alice(), &ctx, "SELECT 1").is_allowed());
    ctx.source_ip = IpAddr::from([127, 0, 0, 1]);
    assert!(decide(&engine, &alice(), &ctx, "SELECT 1").is_allowed());
    ctx.source_ip = "::1".parse().unwrap();
    assert!(decide(&engine, &alice(), &ctx, "SELECT 1").is_allowed());
    ctx.source_ip = "2001:db8::1".parse().unwrap();
    assert!(!decide(&engine, &alice(), &ctx, "SELECT 1").is_allowed());
}

#[test]
fn mfa_and_token_age_conditions() {
    let engine = engine(
        r#"
@id("writes-need-mfa")
forbid (principal, action in Action::"write", resource)
unless { context.mfa && principal.mfa && context.token_age_seconds < 3600 };
"#,
    );
    let writer = ctx("writer");
    let mut bob = bob();
    assert!(!decide(&engine, &bob, &writer, "DELETE FROM orders").is_allowed());
    bob.mfa = true;
    assert!(decide(&engine, &bob, &writer, "DELETE FROM orders").is_allowed());
    // The token is ten minutes old; two hours later it is too old.
    let later = RequestContext {
        now: monday_10am() + Duration::from_secs(7200),
        ..writer.clone()
    };
    assert!(!decide(&engine, &bob, &later, "DELETE FROM orders").is_allowed());
    // No `iat`: the age is unknown, and the condition fails closed.
    bob.issued_at = None;
    assert!(!decide(&engine, &bob, &writer, "DELETE FROM orders").is_allowed());
}

#[test]
fn office_hours_conditions() {
    let engine = engine(
        r#"
@id("writes-in-office-hours")
forbid (principal, action in [Action::"write", Action::"ddl"], resource)
unless { context.weekday < 5 && context.hour >= 8 && context.hour < 18 };
"#,
    );
    let at = writer_at;
    let hour = Duration::from_secs(3600);
    let write = |ctx: &RequestContext| decide(&engine, &bob(), ctx, "UPDATE orders SET x = 1");
    assert!(write(&at(monday_10am())).is_allowed());
    assert!(write(&at(monday_10am() + 7 * hour)).is_allowed()); // 17:00
    assert!(!write(&at(monday_10am() + 8 * hour)).is_allowed()); // 18:00
    assert!(!write(&at(monday_10am() - 3 * hour)).is_allowed()); // 07:00
    assert!(write(&at(monday_10am() + 4 * 24 * hour)).is_allowed()); // Friday 10:00
    let saturday = write(&at(monday_10am() + 5 * 24 * hour));
    assert_eq!(
        message(&saturday),
        "permission denied by policy \"writes-in-office-hours\": write on public.orders is not \
         allowed for bob@example.com as writer"
    );
    // Reads are not affected.
    let saturday_ctx = at(monday_10am() + 5 * 24 * hour);
    assert!(decide(&engine, &bob(), &saturday_ctx, "SELECT * FROM orders").is_allowed());
}

#[test]
fn claims_are_tags_and_kind_is_known() {
    let engine = closed_engine(
        r#"
@id("acme-reads")
permit (principal, action == Action::"read", resource)
when { principal.hasTag("tenant_id") && principal.getTag("tenant_id") == "acme" };

@id("services-read-only-from-jobs")
forbid (principal is Service, action, resource)
unless { context.identity_kind == "service" && context.application_name like "job-*" };
"#,
    );
    let mut ctx = ctx("reader");
    assert!(decide(&engine, &alice(), &ctx, "SELECT 1").is_allowed());
    let mut globex = alice();
    globex.claims.insert("tenant_id".into(), "globex".into());
    assert!(!decide(&engine, &globex, &ctx, "SELECT 1").is_allowed());
    // A claim that is not a string is not a tag.
    let numbers = closed_engine(
        r#"@id("levels") permit (principal, action, resource) when { principal.hasTag("level") };"#,
    );
    assert!(!decide(&numbers, &alice(), &ctx, "SELECT 1").is_allowed());
    let mut job = alice();
    job.kind = IdentityKind::Service;
    assert!(!decide(&engine, &job, &ctx, "SELECT 1").is_allowed());
    ctx.application_name = Some("job-nightly".into());
    assert!(decide(&engine, &job, &ctx, "SELECT 1").is_allowed());
}

#[test]
fn evaluation_errors_deny() {
    // Overflows when the token has no `iat` (its age is then the largest Long).
    let engine = engine(
        r#"
@id("fragile")
forbid (principal, action, resource)
when { context.token_age_seconds + 1 < 0 };
"#,
    );
    let reader = ctx("reader");
    assert!(decide(&engine, &alice(), &reader, "SELECT * FROM orders").is_allowed());
    let mut no_iat = alice();
    no_iat.issued_at = None;
    let denied = decide(&engine, &no_iat, &reader, "SELECT * FROM orders");
    assert!(matches!(
        &denied,
        Decision::Deny { reason: DenyReason::EvaluationError, policies, .. }
            if policies == &["fragile"]
    ));
    assert_eq!(
        message(&denied),
        "permission denied: policy \"fragile\" could not be evaluated for read on public.orders \
         for alice@example.com as reader"
    );
    // A permit that fails to evaluate does not allow either, even beside one that does.
    let permit = closed_engine(
        r#"
@id("fragile-permit") permit (principal, action, resource) when { context.token_age_seconds + 1 > 0 };
@id("plain-permit") permit (principal, action, resource);
"#,
    );
    let denied = decide(&permit, &no_iat, &reader, "SELECT 1");
    assert_eq!(denied.policies(), ["fragile-permit"]);
    assert!(decide(&permit, &alice(), &reader, "SELECT 1").is_allowed());
}

#[test]
fn approvals_are_reported() {
    let engine = closed_engine(
        r#"
@id("reads") permit (principal, action == Action::"read", resource);
@id("prod-writes-approved")
@approval("two-person")
permit (principal in Group::"engineers", action == Action::"write", resource);
"#,
    );
    match decide(
        &engine,
        &bob(),
        &ctx("writer"),
        "SELECT * FROM orders; UPDATE orders SET x = 1",
    ) {
        Decision::Allow {
            policies,
            approvals,
        } => {
            assert_eq!(policies, ["reads", "prod-writes-approved"]);
            assert_eq!(approvals.len(), 1);
            assert_eq!(approvals[0].policy, "prod-writes-approved");
            assert_eq!(approvals[0].spec.group, "two-person");
            assert_eq!(approvals[0].action, Action::Write);
        }
        deny @ Decision::Deny { .. } => panic!("{deny:?}"),
    }
}

#[test]
fn an_unannotated_permit_needs_no_approval() {
    let engine = closed_engine(
        r#"
@id("reads") permit (principal, action == Action::"read", resource);
@id("writes-approved") @approval("dbas")
permit (principal, action == Action::"write", resource);
@id("bob-writes") permit (principal == User::"bob@example.com", action == Action::"write", resource);
"#,
    );
    match decide(&engine, &bob(), &ctx("writer"), "UPDATE orders SET x = 1") {
        Decision::Allow { approvals, .. } => assert!(approvals.is_empty(), "{approvals:?}"),
        deny @ Decision::Deny { .. } => panic!("{deny:?}"),
    }
    match decide(&engine, &alice(), &ctx("writer"), "UPDATE orders SET x = 1") {
        Decision::Allow { approvals, .. } => {
            assert_eq!(approvals.len(), 1);
            assert_eq!(approvals[0].spec.group, "dbas");
        }
        deny @ Decision::Deny { .. } => panic!("{deny:?}"),
    }
}

#[test]
fn deletes_are_told_from_other_writes_by_their_command() {
    let engine = closed_engine(
        r#"
@id("writes") permit (principal, action == Action::"write", resource)
    unless { context.command == "DELETE" };
@id("deletes-approved") @approval("dbas")
permit (principal, action == Action::"write", resource) when { context.command == "DELETE" };
"#,
    );
    let approvals = |sql: &str| match decide(&engine, &bob(), &ctx("writer"), sql) {
        Decision::Allow { approvals, .. } => approvals.len(),
        deny @ Decision::Deny { .. } => panic!("{sql}: {deny:?}"),
    };
    assert_eq!(approvals("UPDATE orders SET x = 1"), 0);
    assert_eq!(approvals("DELETE FROM orders WHERE id = 1"), 1);
    assert_eq!(approvals("UPDATE orders SET x = 1; DELETE FROM orders"), 1);
    assert_eq!(approvals("INSERT INTO orders VALUES (1)"), 0);
}

#[test]
fn only_statements_can_wait_for_approval() {
    let engine = closed_engine(
        r#"
@id("connect-approved") @approval("dbas") permit (principal, action == Action::"connect", resource);
@id("approve-approved") @approval("dbas") permit (principal, action == Action::"approve", resource);
"#,
    );
    let decision = engine.decide_connect(&bob(), &ctx("writer"));
    let message = decision.message().unwrap_or_default().to_owned();
    assert!(!decision.is_allowed());
    assert!(
        message.contains("needs approval (policy \"connect-approved\")"),
        "{message}"
    );
    let session = engine.session(&bob());
    let target = Resource::Target {
        name: "demo".into(),
    };
    assert!(
        !session
            .decide(&engine, &ctx("writer"), Action::Approve, target)
            .is_allowed()
    );
}

#[test]
fn an_unreadable_approval_is_a_load_error() {
    let errors = PolicyEngine::load(
        &[source(
            "a.cedar",
            "@id(\"w\") @approval(\"dbas approvers=0\") permit (principal, action, resource);\n",
        )],
        &targets(),
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(
        errors.contains("approvers=0 must be a number from 1 to 10"),
        "{errors}"
    );
}

#[test]
fn several_forbids_name_the_first_loaded() {
    let engine = PolicyEngine::load(
        &[
            source("one.cedar", READ_ONLY),
            source(
                "two.cedar",
                r#"@id("a-first-alphabetically") forbid (principal, action == Action::"write", resource);"#,
            ),
        ],
        &targets(),
    )
    .unwrap();
    let denied = decide(&engine, &alice(), &ctx("reader"), "DELETE FROM orders");
    assert_eq!(
        denied.policies(),
        ["analysts-read-only", "a-first-alphabetically"]
    );
    assert!(message(&denied).contains("\"analysts-read-only\""));
}

#[test]
fn sessions_are_reused_and_survive_reloads() {
    let open = engine("");
    let session = open.session(&alice());
    let reader = ctx("reader");
    let insert = analyze("INSERT INTO orders VALUES (1)");
    for _ in 0..3 {
        assert!(
            session
                .decide_analysis(&open, &reader, &insert)
                .is_allowed()
        );
    }
    let reloaded = engine(READ_ONLY);
    assert!(
        !session
            .decide_analysis(&reloaded, &reader, &insert)
            .is_allowed()
    );
    // Many tables: the cache starts over rather than growing.
    for i in 0..(super::MAX_CACHED_RESOURCES + 10) {
        let select = analyze(&format!("SELECT * FROM t{i}"));
        assert!(
            session
                .decide_analysis(&open, &reader, &select)
                .is_allowed()
        );
    }
    assert!(session.decide_connect(&open, &reader).is_allowed());
}

#[test]
fn requests_and_entities_conform_to_the_schema() {
    use cedar_policy::{Entities, Request};

    use super::context::cedar_context;
    use super::entities::resource_uid;
    use super::schema::Vocabulary;

    let vocabulary = Vocabulary::load().unwrap();
    let names = &vocabulary.names;
    let engine = engine("");
    let session = engine.session(&alice());
    let ctx = ctx("reader");
    let context = cedar_context(&ctx, session.identity, "").unwrap();
    let table = Resource::Table {
        schema: "public".into(),
        name: "orders".into(),
    };
    let target = Resource::Target {
        name: "demo".into(),
    };
    let role = Resource::Role {
        target: "demo".into(),
        name: "reader".into(),
    };
    let cases = [
        (Action::Connect, &target),
        (Action::Assume, &role),
        (Action::Read, &table),
        (Action::Read, &target),
        (Action::CopyIn, &table),
        (Action::Raw, &target),
        (Action::Approve, &target),
        (Action::ViewSessions, &target),
        (Action::EndSession, &target),
        (Action::Revoke, &target),
        (Action::ViewAudit, &target),
    ];
    for (action, resource) in cases {
        Request::new(
            session.principal.clone(),
            names.action(action).clone(),
            resource_uid("demo", resource, names),
            context.clone(),
            Some(&vocabulary.schema),
        )
        .unwrap_or_else(|e| panic!("{action} on {resource}: {e}"));
        let entities = session.entities_for("demo", resource, names).unwrap();
        // Re-checks every entity (actions included) against the schema.
        Entities::from_entities(entities.iter().cloned(), Some(&vocabulary.schema))
            .unwrap_or_else(|e| panic!("{resource}: {e}"));
    }
}

#[test]
fn explanation_shows_every_request() {
    let engine = engine(READ_ONLY);
    let explanation = engine.explain(
        &alice(),
        &ctx("reader"),
        &analyze("BEGIN; SELECT * FROM orders JOIN customers USING (id); DELETE FROM orders"),
    );
    assert_eq!(explanation.statements.len(), 3);
    assert_eq!(explanation.statements[0].action, None);
    assert_eq!(explanation.statements[1].requests.len(), 2);
    assert!(!explanation.decision.is_allowed());
    let text = explanation.to_string();
    assert_eq!(
        text,
        "statement 1: BEGIN (transaction): not a policy matter\n\
         statement 2: SELECT (read), authorised as read\n  \
         read on public.orders: allowed by postern-default-read (postern defaults (policies/defaults.cedar):12:1)\n  \
         read on public.customers: allowed by postern-default-read (postern defaults (policies/defaults.cedar):12:1)\n\
         statement 3: DELETE (write), authorised as write\n  \
         write on public.orders: denied (forbidden) by analysts-read-only (policies/test.cedar:2:1)\n\
         decision: permission denied by policy \"analysts-read-only\": write on public.orders is \
         not allowed for alice@example.com as reader\n"
    );
    let unparseable = engine.explain(&alice(), &ctx("reader"), &analyze("SELEC 1"));
    let text = unparseable.to_string();
    assert!(text.starts_with("the text does not parse: "), "{text}");
    assert!(
        text.contains("raw on target demo: denied (not_permitted)"),
        "{text}"
    );
}

#[test]
fn a_session_sees_every_change_of_context() {
    let engine = closed_engine(
        r#"
@id("office")
permit (principal, action == Action::"read", resource)
when {
  context.source_ip.isInRange(ip("10.0.0.0/8")) && context.hour < 18 &&
  context.role == "reader" && context.application_name == "psql"
};
"#,
    );
    let session = engine.session(&alice());
    let select = analyze("SELECT * FROM orders");
    let base = ctx("reader");
    let decide = |ctx: &RequestContext| session.decide_analysis(&engine, ctx, &select).is_allowed();
    assert!(decide(&base));
    assert!(!decide(&RequestContext {
        source_ip: IpAddr::from([192, 0, 2, 1]),
        ..base.clone()
    }));
    assert!(decide(&base));
    assert!(!decide(&RequestContext {
        now: base.now + Duration::from_secs(8 * 3600),
        ..base.clone()
    }));
    assert!(!decide(&RequestContext {
        role: "writer".into(),
        ..base.clone()
    }));
    assert!(!decide(&RequestContext {
        application_name: None,
        ..base.clone()
    }));
    // The same second, a few milliseconds on: the same facts.
    assert!(decide(&RequestContext {
        now: base.now + Duration::from_millis(5),
        ..base.clone()
    }));
}

#[test]
fn principal_scopes_apply_exactly() {
    let engine = closed_engine(
        r#"
@id("alice") permit (principal == User::"alice@example.com", action == Action::"read", resource);
@id("services") permit (principal is Service, action == Action::"write", resource);
@id("analyst-people") permit (principal is User in Group::"analysts", action == Action::"ddl", resource);
@id("engineers") forbid (principal in Group::"engineers", action == Action::"read", resource);
"#,
    );
    let reader = ctx("reader");
    let mut service_analyst = alice();
    service_analyst.subject = "etl".into();
    service_analyst.kind = IdentityKind::Service;
    let mut alice_engineer = alice();
    alice_engineer.groups.push("engineers".into());
    let cases: [(&Identity, &str, bool); 9] = [
        (&alice(), "SELECT 1", true),
        (&bob(), "SELECT 1", false),
        (&alice_engineer, "SELECT 1", false),
        (&service_analyst, "SELECT 1", false),
        (&service_analyst, "DELETE FROM t", true),
        (&alice(), "DELETE FROM t", false),
        (&alice(), "CREATE TABLE t (i int)", true),
        (&service_analyst, "CREATE TABLE t (i int)", false),
        (&bob(), "CREATE TABLE t (i int)", false),
    ];
    for (who, sql, allowed) in cases {
        // Through a session (filtered policy sets) and without one: the same answer.
        let session = engine.session(who);
        let analysis = analyze(sql);
        let decision = session.decide_analysis(&engine, &reader, &analysis);
        assert_eq!(
            decision.is_allowed(),
            allowed,
            "{} {sql}: {decision:?}",
            who.subject
        );
        assert_eq!(engine.decide_analysis(who, &reader, &analysis), decision);
    }
}

#[test]
fn any_action_can_be_asked() {
    let engine = engine(
        r#"@id("dbas-raw") permit (principal in Group::"dbas", action == Action::"raw", resource);"#,
    );
    let ctx = ctx("owner");
    let target = Resource::Target {
        name: "demo".into(),
    };
    let dba = engine.session(&identity("dana@example.com", &["dbas"]));
    assert!(
        dba.decide(&engine, &ctx, Action::Raw, target.clone())
            .is_allowed()
    );
    let bob = engine.session(&bob());
    let denied = bob.decide(&engine, &ctx, Action::Raw, target);
    assert_eq!(
        message(&denied),
        "permission denied: no policy allows raw on target demo for bob@example.com as owner"
    );
}

mod memo;
mod workload;
