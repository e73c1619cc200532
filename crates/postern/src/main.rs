//! The `postern` command: serve, try it out (`quickstart`), mint development tokens, log in and
//! run psql with the token, prepare a target database, verify the audit log, and the operators'
//! commands on the admin API (sessions, revocations, approvals, service identities' baselines).

// A command-line program: printing to stdout is its job.
#![allow(clippy::print_stdout)]

mod admin;
mod approvals_cmd;
mod audit_cmd;
mod baselines_cmd;
mod login;
mod policy_cmd;
mod psql_cmd;
mod quickstart;
mod serve;
mod sessions_cmd;
mod setup_db;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use postern_config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "postern",
    version,
    about = "An identity-aware proxy for PostgreSQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run Postern with a configuration file.
    Serve {
        #[arg(long, short, default_value = "postern.toml")]
        config: PathBuf,
    },
    /// Start a throwaway PostgreSQL, a development identity provider and Postern in front of
    /// them; Ctrl-C stops and removes everything.
    Quickstart(quickstart::Args),
    /// Print a token from the quickstart's development identity provider.
    Token(token::Args),
    /// Sign in to your identity provider (device code or browser) and keep the tokens for
    /// `postern psql`.
    Login(login::Args),
    /// Forget the tokens `postern login` kept.
    Logout(login::LogoutArgs),
    /// Run psql through Postern with the token from `postern login` (in its environment, never
    /// on its command line).
    Psql(psql_cmd::Args),
    /// Install the `postern` schema (signed claims for row-level security) in a target database.
    SetupDb {
        /// The target, as named in the configuration.
        target: String,
        #[arg(long, short, default_value = "postern.toml")]
        config: PathBuf,
    },
    /// Work with the audit log.
    Audit {
        #[command(subcommand)]
        command: audit_cmd::Command,
    },
    /// Work with statement policies.
    Policy {
        #[command(subcommand)]
        command: policy_cmd::Command,
    },
    /// List the live sessions (through the admin API; the token comes from POSTERN_TOKEN).
    Sessions {
        #[command(flatten)]
        client: sessions_cmd::AdminClient,
    },
    /// End a live session: its client is told who ended it and why.
    Kill {
        /// The session's id, from `postern sessions`.
        session: String,
        /// Shown to the session's user and recorded in the audit log.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        client: sessions_cmd::AdminClient,
    },
    /// Revoke access: the covered identities' live sessions end now, and they cannot log in
    /// until the revocation is lifted or lapses.
    Revoke {
        #[command(flatten)]
        who: sessions_cmd::RevokeWho,
        /// Shown to the users and recorded.
        #[arg(long)]
        reason: String,
        /// How long it lasts (e.g. 8h); until lifted if not given.
        #[arg(long = "for")]
        lasts: Option<String>,
        #[command(flatten)]
        client: sessions_cmd::AdminClient,
    },
    /// List every revocation, lifted ones included.
    Revocations {
        #[command(flatten)]
        client: sessions_cmd::AdminClient,
    },
    /// Lift a revocation.
    Unrevoke {
        /// The revocation's id, from `postern revocations`.
        id: String,
        #[command(flatten)]
        client: sessions_cmd::AdminClient,
    },
    /// List approval requests: statements held until an approver decides.
    Requests {
        /// Which requests.
        #[arg(long, value_enum, default_value = "pending")]
        state: approvals_cmd::StateFilter,
        #[command(flatten)]
        client: sessions_cmd::AdminClient,
    },
    /// Approve a held statement: it runs at once if its client still waits.
    Approve {
        /// The request's id, from the client's notice or `postern requests`.
        id: String,
        /// How long the grant lasts (e.g. 30m); at most, and by default, what the policy says.
        #[arg(long)]
        ttl: Option<String>,
        /// What the grant covers.
        #[arg(long, value_enum)]
        scope: Option<approvals_cmd::Scope>,
        /// How many times the grant may be used (a statement grant: once by default).
        #[arg(long)]
        budget: Option<u32>,
        /// Recorded with your approval.
        #[arg(long)]
        comment: Option<String>,
        #[command(flatten)]
        client: sessions_cmd::AdminClient,
    },
    /// Deny a held statement: its client gets an error with your name and comment.
    Deny {
        /// The request's id.
        id: String,
        /// Why: shown to the requester and recorded.
        #[arg(long)]
        comment: String,
        #[command(flatten)]
        client: sessions_cmd::AdminClient,
    },
    /// List grants made by approvals (active ones unless --all).
    Grants {
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        client: sessions_cmd::AdminClient,
    },
    /// Revoke a grant: it covers nothing from now on.
    RevokeGrant {
        /// The grant's id, from `postern grants`.
        id: String,
        #[command(flatten)]
        client: sessions_cmd::AdminClient,
    },
    /// List service identities' baselines: per target, the statements and networks each was
    /// seen with, and its anomalies.
    Baselines {
        #[command(flatten)]
        client: sessions_cmd::AdminClient,
    },
    /// Show, accept an anomaly into, or reset one service identity's baseline.
    Baseline {
        #[command(subcommand)]
        command: baselines_cmd::Command,
    },
}

/// mimalloc rather than the system allocator: a session allocates and frees small buffers and
/// event maps for every statement, from whichever worker thread runs it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The runtime's worker threads: what `serve`'s configuration asks (`listen.worker_threads`), or
/// the default.
fn serving_threads(serve_config: Option<&Config>) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    match serve_config {
        Some(config) => config.listen.serving_threads(cores),
        None => postern_config::ListenConfig::default().serving_threads(cores),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` reads its configuration before the runtime is built, once: the number of worker
    // threads is in it.
    let serve_config = match &cli.command {
        Command::Serve { config } => match Config::load(config) {
            Ok(loaded) => Some(loaded),
            Err(error) => {
                // Its message already names the cause: `{:#}` of a chain would say it twice.
                eprintln!("postern: {error}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    // The HTTP client of the admin commands takes its TLS from the process-wide provider: the
    // same aws-lc one as everything else in Postern.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(serving_threads(serve_config.as_ref()))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("postern: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve { config: path } => match serve_config {
                Some(config) => serve::run(config).await,
                None => serve::run(Config::load(&path)?).await,
            },
            Command::Quickstart(args) => quickstart::run(args).await,
            Command::Token(args) => token::run(&args),
            Command::Login(args) => login::run(args).await,
            Command::Logout(args) => login::logout(args).await,
            Command::Psql(args) => psql_cmd::run(args).await,
            Command::SetupDb { target, config } => setup_db::run(&target, &config).await,
            Command::Audit { command } => audit_cmd::run(command),
            Command::Policy { command } => policy_cmd::run(command),
            Command::Sessions { client } => sessions_cmd::list(&client).await,
            Command::Kill {
                session,
                reason,
                client,
            } => sessions_cmd::kill(&client, &session, &reason).await,
            Command::Revoke {
                who,
                reason,
                lasts,
                client,
            } => sessions_cmd::revoke(&client, &who, &reason, lasts.as_deref()).await,
            Command::Revocations { client } => sessions_cmd::revocations(&client).await,
            Command::Unrevoke { id, client } => sessions_cmd::unrevoke(&client, &id).await,
            Command::Requests { state, client } => approvals_cmd::list(&client, state).await,
            Command::Approve {
                id,
                ttl,
                scope,
                budget,
                comment,
                client,
            } => {
                approvals_cmd::approve(
                    &client,
                    &id,
                    ttl.as_deref(),
                    scope,
                    budget,
                    comment.as_deref(),
                )
                .await
            }
            Command::Deny {
                id,
                comment,
                client,
            } => approvals_cmd::deny(&client, &id, &comment).await,
            Command::Grants { all, client } => approvals_cmd::grants(&client, all).await,
            Command::RevokeGrant { id, client } => approvals_cmd::revoke_grant(&client, &id).await,
            Command::Baselines { client } => baselines_cmd::list(&client).await,
            Command::Baseline { command } => baselines_cmd::run(command).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("postern: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr; `RUST_LOG` overrides the default level.
pub(crate) fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
pub(crate) async fn stop_requested() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
