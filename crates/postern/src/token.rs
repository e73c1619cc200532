//! `postern token --dev`: mint a token from the quickstart's development identity provider.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use postern_sandbox::idp::{DEV_AUDIENCE, DevKeys, TokenRequest, read_issuer};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Use the development identity provider of a quickstart (the only kind of token Postern
    /// can mint: real ones come from your identity provider).
    #[arg(long)]
    dev: bool,
    /// The quickstart's directory.
    #[arg(long, default_value = crate::quickstart::DEFAULT_DIR)]
    dir: PathBuf,
    /// The subject (`sub` claim), e.g. alice@example.com.
    #[arg(long)]
    sub: String,
    /// Groups, comma-separated, e.g. analysts.
    #[arg(long, value_delimiter = ',')]
    groups: Vec<String>,
    /// Lifetime, e.g. 15m or 1h.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Extra claims as name=value, e.g. --claim tenant_id=acme (repeatable).
    #[arg(long = "claim", value_parser = parse_claim)]
    claims: Vec<(String, String)>,
}

fn parse_claim(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?} is not name=value"))
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    if !args.dev {
        anyhow::bail!(
            "postern only mints development tokens (--dev); get real tokens from your identity provider"
        );
    }
    let idp_dir = args.dir.join(crate::quickstart::IDP_DIR);
    let issuer = read_issuer(&idp_dir).with_context(|| {
        format!(
            "no development identity provider in {}: start `postern quickstart` first",
            args.dir.display()
        )
    })?;
    let keys = DevKeys::load_or_create(&idp_dir).context("development signing keys")?;
    let mut request = TokenRequest::new(issuer, args.sub.clone(), DEV_AUDIENCE);
    request.groups.clone_from(&args.groups);
    request.ttl = args.ttl;
    for (name, value) in &args.claims {
        request
            .extra_claims
            .insert(name.clone(), serde_json::Value::String(value.clone()));
    }
    println!("{}", keys.mint(&request)?);
    Ok(ExitCode::SUCCESS)
}
