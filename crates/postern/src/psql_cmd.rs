//! `postern psql TARGET --role ROLE [-- psql arguments]`: runs `psql` against Postern with the
//! token from `postern login`, renewed first if it has expired or is about to.
//!
//! The token reaches psql through `PGPASSWORD` in the child's environment only — never its
//! command line, which every user of the machine can read in `/proc/<pid>/cmdline` or `ps`.
//! Connection settings go in one conninfo string (`--dbname`), so they take precedence over
//! `PG*` variables; `PGHOSTADDR` and `PGSERVICE`, which could send the token elsewhere, are
//! removed from the child's environment. psql's exit code is this command's.
//!
//! Postern cannot tell a client *which* condition of a policy refused it, so the hint for
//! multi-factor policies is given here: when psql reports "permission denied" and the token's
//! `amr` shows no second factor, the user is told to log in again with `--mfa`.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};

use anyhow::Context as _;
use std::io::Write as _;

use tokio::io::AsyncReadExt as _;

use crate::login::settings::{self, ProviderArgs};
use crate::login::{self, claims};

/// Where Postern listens when nothing says otherwise: the quickstart's address.
const DEFAULT_HOST: &str = "127.0.0.1";
const DEFAULT_PORT: u16 = 6432;
/// What psql says when PostgreSQL or Postern refuses for lack of privilege (42501).
const PERMISSION_DENIED: &[u8] = b"permission denied";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The target: the database name Postern knows it by.
    target: String,
    /// The database role to use; policy decides whether you may.
    #[arg(long)]
    role: String,
    /// Postern's host. Default: `[psql] host` in the CLI configuration file, else 127.0.0.1.
    #[arg(long)]
    host: Option<String>,
    /// Postern's port. Default: `[psql] port`, else 6432.
    #[arg(long)]
    port: Option<u16>,
    /// libpq's sslmode. Default: `[psql] sslmode`, else prefer on a loopback host and
    /// verify-full anywhere else (the token is a password: it must reach Postern only).
    #[arg(long, value_parser = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"])]
    sslmode: Option<String>,
    /// The psql program.
    #[arg(long, default_value = "psql")]
    psql: PathBuf,
    #[command(flatten)]
    provider: ProviderArgs,
    /// Arguments for psql, after `--` (e.g. -- -c 'SELECT 1').
    #[arg(last = true)]
    psql_args: Vec<OsString>,
}

/// A conninfo value, quoted (libpq: single quotes, backslash escapes).
/// <https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNSTRING-KEYWORD-VALUE>
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The conninfo for Postern at `host`:`port`, target and role.
fn conninfo(host: &str, port: u16, target: &str, role: &str, sslmode: &str) -> String {
    format!(
        "host={} port={port} dbname={} user={} sslmode={}",
        quote(host),
        quote(target),
        quote(role),
        quote(sslmode)
    )
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (config, config_path) = settings::load_config()?;
    let provider = settings::resolve(&args.provider, &config, &config_path)?;
    let tokens = login::current_tokens(&provider).await?;

    let host = args
        .host
        .or(config.psql.host)
        .unwrap_or_else(|| DEFAULT_HOST.to_owned());
    let port = args.port.or(config.psql.port).unwrap_or(DEFAULT_PORT);
    let sslmode = args.sslmode.or(config.psql.sslmode).unwrap_or_else(|| {
        if is_loopback(&host) {
            "prefer".to_owned()
        } else {
            "verify-full".to_owned()
        }
    });
    let mut command = tokio::process::Command::new(&args.psql);
    command
        .arg("--dbname")
        .arg(conninfo(&host, port, &args.target, &args.role, &sslmode))
        .args(&args.psql_args)
        .env("PGPASSWORD", &tokens.access_token)
        .env_remove("PGHOSTADDR")
        .env_remove("PGSERVICE")
        .stderr(Stdio::piped());
    // Ctrl-C belongs to psql (it cancels the running query); this process must outlive it.
    let _interrupts = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut child = command.spawn().with_context(|| {
        format!(
            "cannot run {}: install the PostgreSQL client (e.g. apt-get install \
             postgresql-client) or name it with --psql",
            args.psql.display()
        )
    })?;
    let forward = child
        .stderr
        .take()
        .map(|stderr| tokio::spawn(forward_stderr(stderr)));
    let status = child.wait().await.context("waiting for psql")?;
    let denied = match forward {
        Some(task) => task.await.unwrap_or(false),
        None => false,
    };

    if denied {
        let token_claims = claims::unverified(&tokens.access_token)
            .or_else(|| tokens.id_token.as_deref().and_then(claims::unverified));
        if let Some(token_claims) = token_claims
            && claims::used_mfa(&token_claims) != Some(true)
        {
            eprintln!(
                "postern: your token says no second factor was used; if a policy requires MFA, \
                 log in again with MFA (`{} --mfa`)",
                provider.login_command()
            );
        }
    }
    Ok(exit_code(status))
}

/// Copies psql's stderr to ours as it comes; whether it said "permission denied".
async fn forward_stderr(mut stderr: tokio::process::ChildStderr) -> bool {
    // Writes to our own stderr (a terminal or a pipe) are small and quick; tokio's stderr would
    // need a feature only this uses.
    let mut out = std::io::stderr();
    let mut buffer = [0_u8; 4096];
    // The end of the previous read, so a phrase split across two reads is still found.
    let mut window: Vec<u8> = Vec::new();
    let mut denied = false;
    loop {
        let read = match stderr.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let _ = out.write_all(&buffer[..read]);
        let _ = out.flush();
        window.extend_from_slice(&buffer[..read]);
        denied |= window
            .windows(PERMISSION_DENIED.len())
            .any(|w| w.eq_ignore_ascii_case(PERMISSION_DENIED));
        let keep = PERMISSION_DENIED.len() - 1;
        if window.len() > keep {
            window.drain(..window.len() - keep);
        }
    }
    denied
}

/// psql's exit code; 128 + the signal when a signal ended it, as shells report it.
fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt as _;
    let code = status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conninfo_quotes_every_value() {
        assert_eq!(
            conninfo("127.0.0.1", 6432, "demo", "reader", "prefer"),
            "host='127.0.0.1' port=6432 dbname='demo' user='reader' sslmode='prefer'"
        );
        assert_eq!(
            conninfo("h", 1, "it's", "a\\b c", "require"),
            "host='h' port=1 dbname='it\\'s' user='a\\\\b c' sslmode='require'"
        );
    }

    #[test]
    fn loopback_hosts() {
        for host in ["127.0.0.1", "localhost", "::1", "[::1]", "127.1.2.3"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["postern.example.com", "10.0.0.1", "/tmp", ""] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
