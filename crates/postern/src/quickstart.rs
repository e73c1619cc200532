//! `postern quickstart`: a throwaway PostgreSQL, a development identity provider on loopback and
//! Postern in front of them, with the demo target, until Ctrl-C — then everything is removed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use postern_config::UpstreamMode;
use postern_proxy::Proxy;
use postern_sandbox::cluster::{ClusterOptions, PgCluster};
use postern_sandbox::demo::{self, DEMO_TARGET, DemoOptions};
use postern_sandbox::idp::DevIdentityProvider;

pub const DEFAULT_DIR: &str = "postern-quickstart";
pub const IDP_DIR: &str = "idp";
const PG_DIR: &str = "pg";
const SECRETS_DIR: &str = "secrets";
/// In a directory of its own: the policy watcher watches the policy file's directory, and an
/// audit write per statement there would wake it for every statement.
const AUDIT_DIR: &str = "audit";
const AUDIT_FILE: &str = "audit/audit.jsonl";
const CONFIG_FILE: &str = "postern.toml";
const POLICY_FILE: &str = "policies.cedar";
const STORE_FILE: &str = "state.db";
/// The admin API's URL, for the CLI run with `--dir` (or in the default directory).
pub const ADMIN_ADDRESS_FILE: &str = "admin-address";

/// The quickstart's own policy: a refusal by policy, a statement held for approval, and a reload
/// on save. Complete on its own (Postern's defaults are off in the quickstart).
const QUICKSTART_POLICY: &str = r#"// Postern reloads this file when it changes. Validate with `postern policy check`.

// Whoever a role rule maps to a role may connect, read and export.
@id("connect")
permit (principal, action == Action::"connect", resource);
@id("read")
permit (principal, action in [Action::"read", Action::"copy_out"], resource);

// Writers may insert, update, import and change schema...
@id("writes")
permit (principal, action in [Action::"write", Action::"copy_in", Action::"ddl"], resource)
unless { context.command == "DELETE" };

// ...but a DELETE waits for one approval from group dbas (`postern requests`, `postern
// approve ID`). The grant lasts at most 30 minutes; approvers see an impact preview.
@id("deletes-need-a-dba")
@approval("group=dbas ttl=30m preview")
permit (principal, action == Action::"write", resource)
when { context.command == "DELETE" };

// Database administrators decide approval requests.
@id("dbas-approve")
permit (principal in Group::"dbas", action == Action::"approve", resource);

// Analysts may read, never change data or schema (the database's grants say the same; this
// says it at Postern, with a message naming the policy).
@id("analysts-read-only")
forbid (principal in Group::"analysts", action in [Action::"write", Action::"ddl"], resource);

// Operators may list and end live sessions and revoke access (`postern sessions`, `postern kill`).
@id("operators-control")
permit (
  principal in Group::"operators",
  action in [Action::"view_sessions", Action::"end_session", Action::"revoke"],
  resource
);
"#;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the quickstart keeps its files (removed on exit).
    #[arg(long, default_value = DEFAULT_DIR)]
    dir: PathBuf,
    /// The port Postern listens on (127.0.0.1).
    #[arg(long, default_value_t = 6432)]
    port: u16,
    /// The port of the admin API (127.0.0.1), for `postern sessions` and `postern kill`.
    #[arg(long, default_value_t = 6480)]
    admin_port: u16,
    /// How Postern takes on the mapped role upstream.
    #[arg(long, value_enum, default_value_t = Mode::RoleLogin)]
    mode: Mode,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Mode {
    RoleLogin,
    SetRole,
    EphemeralUser,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    crate::init_logging("warn,postern_proxy=info");
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", args.dir.display()))?;
    // Whatever an earlier quickstart left behind (it was killed before it could clean up) is
    // throwaway by definition.
    remove_created(&dir);

    println!("Starting PostgreSQL in {} ...", dir.join(PG_DIR).display());
    let cluster = PgCluster::start(ClusterOptions {
        dir: Some(dir.join(PG_DIR)),
        tls: false,
        extra_hba: Vec::new(),
    })
    .await
    .context("cannot start PostgreSQL")?;
    let result = run_with_cluster(&args, &dir, &cluster).await;
    println!("Stopping PostgreSQL and removing {} ...", dir.display());
    if let Err(error) = cluster.stop().await {
        eprintln!("postern: stopping PostgreSQL: {error}");
    }
    remove_created(&dir);
    let _ = std::fs::remove_dir(&dir);
    result
}

async fn run_with_cluster(
    args: &Args,
    dir: &Path,
    cluster: &PgCluster,
) -> anyhow::Result<ExitCode> {
    let idp = DevIdentityProvider::start(&dir.join(IDP_DIR))
        .await
        .context("cannot start the development identity provider")?;
    let secrets = dir.join(SECRETS_DIR);
    demo::prepare_demo_database(cluster, &secrets)
        .await
        .context("cannot create the demo database")?;
    let listen = SocketAddr::from(([127, 0, 0, 1], args.port));
    std::fs::create_dir_all(dir.join(AUDIT_DIR))?;
    let mode = match args.mode {
        Mode::RoleLogin => UpstreamMode::RoleLogin,
        Mode::SetRole => UpstreamMode::SetRole,
        Mode::EphemeralUser => UpstreamMode::EphemeralUser,
    };
    let mut config = demo::demo_config(
        cluster,
        &idp,
        &DemoOptions {
            listen,
            mode,
            tls: None,
            allow_plaintext_loopback: true,
            audit_path: dir.join(AUDIT_FILE),
            secrets_dir: secrets,
        },
    )?;
    let policy_file = dir.join(POLICY_FILE);
    std::fs::write(&policy_file, QUICKSTART_POLICY)?;
    config.policy.files.push(policy_file);
    // The quickstart's policy file is complete on its own: Postern's defaults would let writers
    // delete without the approval it shows.
    config.policy.include_defaults = false;
    config.store.path = dir.join(STORE_FILE);
    config.admin = Some(postern_config::AdminConfig {
        address: SocketAddr::from(([127, 0, 0, 1], args.admin_port)),
        console: Default::default(),
        scim: None,
    });
    // For reference: the same deployment, runnable with `postern serve --config` while the
    // quickstart's database and identity provider are up.
    std::fs::write(dir.join(CONFIG_FILE), toml::to_string_pretty(&config)?)?;
    postern_proxy::setup_target_database(DEMO_TARGET, &config)
        .await
        .map_err(|e| anyhow::anyhow!("setup-db: {e}"))?;
    let proxy = Proxy::bind(&config).await.with_context(|| {
        format!("cannot start Postern on {listen} (use --port to pick another port)")
    })?;
    let shutdown = proxy.shutdown_handle();
    let admin = crate::admin::start(&config, &proxy)
        .await
        .context("use --admin-port to pick another port")?;
    let serving = tokio::spawn(proxy.serve());
    std::fs::write(
        dir.join(ADMIN_ADDRESS_FILE),
        format!("http://127.0.0.1:{}\n", args.admin_port),
    )?;
    print_instructions(args, dir, listen);
    crate::stop_requested().await;
    println!("\nStopping Postern ...");
    shutdown.cancel();
    let _ = serving.await;
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    drop(idp);
    Ok(ExitCode::SUCCESS)
}

fn print_instructions(args: &Args, dir: &Path, listen: SocketAddr) {
    let postern = command_name();
    let dir_arg = if args.dir == Path::new(DEFAULT_DIR) {
        String::new()
    } else {
        format!(" --dir {}", dir.display())
    };
    let port = listen.port();
    println!(
        "
Postern is running on {listen}, in front of a throwaway PostgreSQL with database `{DEMO_TARGET}`.

Connect as an analyst (role reader: may read public.orders):

  export PGPASSWORD=\"$({postern} token --dev{dir_arg} --sub alice@example.com --groups analysts)\"
  psql \"host=127.0.0.1 port={port} dbname={DEMO_TARGET} user=reader\"

Connect as an engineer (role writer): use --groups engineers and user=writer.
Tokens last 15 minutes (--ttl to change). Add --claim tenant_id=acme for claims that row-level
security can read with postern.claim('tenant_id').

Watch a DELETE wait for approval: as the engineer, run

  DELETE FROM orders WHERE customer = 'Alan Turing';

psql prints the request id and waits. In another terminal, approve it as a dba:

  export POSTERN_TOKEN=\"$({postern} token --dev{dir_arg} --sub dana@example.com --groups dbas)\"
  {postern} requests{dir_arg}
  {postern} approve REQUEST_ID{dir_arg}

and the DELETE runs. (Or deny it: {postern} deny REQUEST_ID --comment \"...\"{dir_arg}.)
The console is at http://127.0.0.1:{admin_port}/console/ (sign in as a member of dbas).

See and end live sessions as an operator (admin API on 127.0.0.1:{admin_port}):

  export POSTERN_TOKEN=\"$({postern} token --dev{dir_arg} --sub olga@example.com --groups operators)\"
  {postern} sessions{dir_arg}
  {postern} kill SESSION_ID --reason \"...\"{dir_arg}

Statement policy is in {policies} (Cedar; saved changes apply to the next statement).
Every statement is recorded in {audit}; check its hash chain with:
  {postern} audit verify {audit}

Press Ctrl-C to stop; everything in {dir} is then removed.",
        admin_port = args.admin_port,
        audit = dir.join(AUDIT_FILE).display(),
        policies = dir.join(POLICY_FILE).display(),
        dir = dir.display(),
    );
}

/// How the user runs this binary: via cargo when it lives in a cargo target directory.
fn command_name() -> String {
    let in_target_dir = std::env::current_exe()
        .map(|exe| exe.components().any(|c| c.as_os_str() == "target"))
        .unwrap_or(false);
    if in_target_dir {
        "cargo run -q -p postern --".to_owned()
    } else {
        "postern".to_owned()
    }
}

/// Removes what a quickstart creates in `dir`, and nothing else that may live there.
fn remove_created(dir: &Path) {
    for name in [PG_DIR, IDP_DIR, SECRETS_DIR, AUDIT_DIR] {
        let _ = std::fs::remove_dir_all(dir.join(name));
    }
    for name in [
        CONFIG_FILE,
        POLICY_FILE,
        STORE_FILE,
        ADMIN_ADDRESS_FILE,
        "state.db-wal",
        "state.db-shm",
    ] {
        let _ = std::fs::remove_file(dir.join(name));
    }
}
