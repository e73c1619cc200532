//! `postern policy check`: validate the policy files against the schema and, given an identity
//! and a statement, show how Postern would decide it — without a database or a token.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Subcommand;
use postern_config::Config;
use postern_identity::{Identity, IdentityKind, Workload};
use postern_policy::cedar::RequestContext;
use postern_policy::guard::{self, GuardContext};
use postern_proxy::Policies;
use postern_sql::Classifier;
use serde_json::{Map, Value};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the configured policy files (with Cedar's validator, against Postern's schema);
    /// with --as and --sql, also dry-run a decision.
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[arg(long, short, default_value = "postern.toml")]
    config: PathBuf,
    /// The subject to decide for, e.g. alice@example.com.
    #[arg(long = "as")]
    subject: Option<String>,
    /// Its groups, comma-separated.
    #[arg(long, value_delimiter = ',')]
    groups: Vec<String>,
    /// The database role it asks for.
    #[arg(long)]
    role: Option<String>,
    /// The target (as clients name it in dbname).
    #[arg(long)]
    target: Option<String>,
    /// The statement(s) to decide.
    #[arg(long)]
    sql: Option<String>,
    /// The client address to assume.
    #[arg(long, default_value = "127.0.0.1")]
    ip: IpAddr,
    /// Assume the token shows multi-factor sign-in.
    #[arg(long)]
    mfa: bool,
    /// Decide as a service (workload) identity rather than a person.
    #[arg(long)]
    service: bool,
    /// Extra claims as name=value (repeatable); a value starting with `{` is read as a JSON
    /// object (`kubernetes.io={"namespace":"payments",…}`).
    #[arg(long = "claim", value_parser = parse_claim)]
    claims: Vec<(String, String)>,
    /// Decide as a token of this configured issuer: its name, URL and kind, and for an issuer
    /// with a preset the workload its claims describe (`principal.workload`).
    #[arg(long)]
    issuer: Option<String>,
    /// When to decide, RFC 3339 (default: now).
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    at: Option<SystemTime>,
}

fn parse_claim(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?} is not name=value"))
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    let Command::Check(args) = command;
    let config = Config::load(&args.config)?;
    let policies = match Policies::load(&config) {
        Ok(policies) => policies,
        Err(error) => {
            println!("policy errors:\n{error}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let engine = policies.current();
    println!("ok: {} policies loaded and valid", engine.policy_count());
    for warning in engine.warnings() {
        println!("warning: {warning}");
    }
    let Some(subject) = args.subject.clone() else {
        return Ok(ExitCode::SUCCESS);
    };
    let (Some(role), Some(target_name), Some(sql)) = (&args.role, &args.target, &args.sql) else {
        anyhow::bail!("a dry run needs --as, --role, --target and --sql");
    };
    let target = config.targets.get(target_name).ok_or_else(|| {
        anyhow::anyhow!(
            "no target named {target_name:?} in {}",
            args.config.display()
        )
    })?;
    let now = args.at.unwrap_or_else(SystemTime::now);
    let identity = identity(&args, &config, subject, now)?;
    let request = RequestContext {
        source_ip: args.ip,
        now,
        target: target_name.clone(),
        role: role.clone(),
        application_name: None,
        search_path: Vec::new(),
    };
    let session = engine.session(&identity);
    match session.authorize_role(&engine, &request, target_name, role) {
        Ok(_) => println!(
            "role: {} may assume {role} on {target_name}",
            identity.subject
        ),
        Err(refusal) => {
            println!("role: refused: {refusal}");
            return Ok(ExitCode::FAILURE);
        }
    }
    let analysis = Classifier::new(16).analyze(sql);
    let guard_context = GuardContext {
        mode: target.mode,
        may_dcl: false,
        may_raw: false,
    };
    if let Err(refusal) = guard::check(&analysis, &guard_context) {
        println!(
            "escape guard: refused ({}): {}",
            refusal.reason.label(),
            refusal.message
        );
        return Ok(ExitCode::FAILURE);
    }
    let explanation = session.explain(&engine, &request, &analysis);
    print!("{explanation}");
    Ok(if explanation.decision.is_allowed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn identity(
    args: &CheckArgs,
    config: &Config,
    subject: String,
    now: SystemTime,
) -> anyhow::Result<Identity> {
    let mut claims = Map::new();
    claims.insert("sub".into(), Value::String(subject.clone()));
    claims.insert("groups".into(), Value::from(args.groups.clone()));
    for (name, value) in &args.claims {
        let value = if value.starts_with('{') {
            serde_json::from_str(value)
                .map_err(|e| anyhow::anyhow!("--claim {name}: not a JSON object: {e}"))?
        } else {
            Value::String(value.clone())
        };
        claims.insert(name.clone(), value);
    }
    let mut identity = Identity {
        issuer_name: "policy-check".into(),
        issuer: "postern policy check".into(),
        subject,
        kind: if args.service {
            IdentityKind::Service
        } else {
            IdentityKind::Human
        },
        groups: args.groups.clone(),
        claims,
        expires_at: now + Duration::from_secs(900),
        issued_at: Some(now),
        token_id: None,
        mfa: args.mfa,
        workload: None,
    };
    if let Some(name) = &args.issuer {
        let issuer = config.issuers.get(name).ok_or_else(|| {
            anyhow::anyhow!(
                "no issuer named {name:?} in {}; configured: {}",
                args.config.display(),
                config
                    .issuers
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        identity.issuer_name.clone_from(name);
        identity.issuer.clone_from(&issuer.issuer);
        identity.kind = issuer.identity_kind.into();
        // What the proxy would refuse at login, the dry run refuses too.
        identity.workload = Workload::from_claims(issuer, &identity.claims)
            .map_err(|e| anyhow::anyhow!("a token of issuer {name:?} would be refused: {e}"))?;
        if let Some(client) = identity.workload.as_ref().and_then(Workload::subject) {
            identity.subject = client.to_owned();
        }
    }
    Ok(identity)
}
