//! What policy costs on the hot path: classify a statement (`postern-sql`, cached by exact
//! text) and decide it with a session's cached entities, as the proxy does for every `Query`.
//!
//! `cargo bench -p postern-policy --bench decide` (add `-- --quick` for a short run).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use postern_config::RoleRule;
use postern_identity::{Identity, IdentityKind};
use postern_policy::cedar::{PolicyEngine, PolicySource, RequestContext};
use postern_sql::Classifier;

/// A deployment's policies of a realistic size: a dozen rules on groups, tables, time, address
/// and MFA, besides the defaults and the role rules.
const POLICIES: &str = r#"
@id("analysts-read-only")
forbid (principal in Group::"analysts", action in [Action::"write", Action::"ddl"], resource);

@id("salaries-private")
forbid (principal, action in Action::"read", resource == Table::"hr.salaries")
unless { principal in Group::"hr" };

@id("writes-in-office-hours")
forbid (principal, action in [Action::"write", Action::"ddl"], resource)
unless { context.weekday < 5 && context.hour >= 7 && context.hour < 20 };

@id("ddl-needs-mfa")
forbid (principal, action == Action::"ddl", resource) unless { context.mfa };

@id("prod-from-office")
forbid (principal, action, resource in Target::"prod")
unless { context.source_ip.isInRange(ip("10.0.0.0/8")) };

@id("tenant-tables")
forbid (principal, action, resource is Table)
when { resource.schema == "tenant_acme" }
unless { principal.hasTag("tenant_id") && principal.getTag("tenant_id") == "acme" };

@id("dbas-manage")
permit (principal in Group::"dbas", action in [Action::"dcl", Action::"admin"], resource);

@id("fresh-tokens-for-services")
forbid (principal is Service, action, resource)
unless { context.token_age_seconds < 3600 };
"#;

fn now() -> SystemTime {
    // Monday 2026-11-30, 10:00 UTC.
    UNIX_EPOCH + Duration::from_secs(1_796_032_800)
}

fn setup() -> (PolicyEngine, Identity, RequestContext) {
    let rules = vec![
        RoleRule {
            roles: vec!["reader".into()],
            groups: vec!["analysts".into()],
            subjects: vec![],
            issuers: vec![],
            claims: BTreeMap::new(),
        },
        RoleRule {
            roles: vec!["reader".into(), "writer".into()],
            groups: vec!["engineers".into()],
            subjects: vec![],
            issuers: vec![],
            claims: BTreeMap::new(),
        },
    ];
    let targets = BTreeMap::from([("demo".to_owned(), rules)]);
    let source = PolicySource {
        origin: "bench.cedar".into(),
        text: POLICIES.into(),
    };
    let engine = match PolicyEngine::load(&[source], &targets) {
        Ok(engine) => engine,
        Err(errors) => panic!("{errors}"),
    };
    let mut claims = serde_json::Map::new();
    claims.insert("tenant_id".into(), "acme".into());
    claims.insert("email".into(), "bob@example.com".into());
    let identity = Identity {
        issuer_name: "corp".into(),
        issuer: "https://id.example.com".into(),
        subject: "bob@example.com".into(),
        kind: IdentityKind::Human,
        groups: vec!["engineers".into(), "everyone".into(), "on-call".into()],
        claims,
        expires_at: now() + Duration::from_secs(3600),
        issued_at: Some(now() - Duration::from_secs(600)),
        token_id: None,
        mfa: true,
        workload: None,
    };
    let ctx = RequestContext {
        source_ip: IpAddr::from([10, 1, 2, 3]),
        now: now(),
        target: "demo".into(),
        role: "writer".into(),
        application_name: Some("psql".into()),
        search_path: vec!["$user".into(), "public".into()],
    };
    (engine, identity, ctx)
}

const STATEMENT: &str =
    "SELECT o.id, c.name FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = $1";

fn decide(c: &mut Criterion) {
    let (engine, identity, ctx) = setup();
    let classifier = Classifier::new(1024);
    let session = engine.session(&identity);
    let check = session.decide_analysis(&engine, &ctx, &classifier.analyze(STATEMENT));
    assert!(check.is_allowed(), "{check:?}");

    c.bench_function("classify (cached) + decide, 2 tables", |b| {
        b.iter(|| {
            let analysis = classifier.analyze(black_box(STATEMENT));
            session.decide_analysis(&engine, &ctx, &analysis)
        });
    });

    let analysis = classifier.analyze(STATEMENT);
    c.bench_function("decide only, 2 tables", |b| {
        b.iter(|| session.decide_analysis(&engine, &ctx, black_box(&analysis)));
    });

    let mut n = 0u64;
    c.bench_function("classify (new text) + decide", |b| {
        b.iter(|| {
            n += 1;
            let sql = format!("UPDATE orders SET status = 'shipped' WHERE id = {n}");
            let analysis = classifier.analyze(&sql);
            session.decide_analysis(&engine, &ctx, &analysis)
        });
    });

    c.bench_function("decide without a session (principal rebuilt)", |b| {
        b.iter(|| engine.decide_analysis(&identity, &ctx, black_box(&analysis)));
    });

    c.bench_function("session (principal entities) per connection", |b| {
        b.iter(|| engine.session(black_box(&identity)));
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = decide
}
criterion_main!(benches);
