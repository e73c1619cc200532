//! `postern login` and `postern logout`: signing in to the identity provider from a terminal and
//! keeping the tokens for `postern psql`, which renews them with the refresh token.
//!
//! # Layout
//! - [`settings`]: which provider and client (flags, a running quickstart, the CLI's
//!   configuration file) and where the CLI keeps its files.
//! - [`oidc`]: discovery and the token endpoint, bounded and timed out.
//! - [`device`]: the device authorization grant (RFC 8628).
//! - [`browser`]: the authorization code flow with PKCE and a loopback redirect (RFC 8252).
//! - [`cache`]: `tokens.json`, 0600, written atomically, keyed by issuer and client id.
//! - [`claims`]: what a token says about itself (expiry, subject, `amr`), read unverified.
//!
//! Tokens are never printed (unless `--print-token` asks), logged or put on a command line.

pub mod browser;
pub mod cache;
pub mod claims;
pub mod device;
pub mod oidc;
pub mod settings;

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};

use cache::{CacheLock, CachedTokens, TokenCache, unix_now};
use settings::{DEFAULT_SCOPE, Flow, Provider, ProviderArgs};

/// A token expiring sooner than this is renewed before use: a session opened with it would end
/// at once (Postern ends sessions when their token expires).
pub const RENEW_MARGIN: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    provider: ProviderArgs,
    /// Sign in with a code entered in a browser on any device (RFC 8628): for SSH sessions and
    /// machines without a browser.
    #[arg(long, conflicts_with = "browser")]
    device: bool,
    /// Sign in with this machine's browser (authorization code + PKCE, redirected to a loopback
    /// port of this command).
    #[arg(long)]
    browser: bool,
    /// Scopes to ask for (repeatable, or space-separated). Default: `[login] scope`, else
    /// "openid offline_access" (the refresh token lets `postern psql` renew the access token).
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// Ask the provider for a multi-factor sign-in (acr_values, and prompt=login in the
    /// browser), for policies that require MFA.
    #[arg(long)]
    mfa: bool,
    /// Do not try to open a browser; just print the address.
    #[arg(long)]
    no_open: bool,
    /// Print the access token on stdout (it is otherwise only kept in the cache).
    #[arg(long)]
    print_token: bool,
}

#[derive(Debug, clap::Args)]
pub struct LogoutArgs {
    #[command(flatten)]
    provider: ProviderArgs,
    /// Forget every cached sign-in, of every provider.
    #[arg(long)]
    all: bool,
}

/// The token cache in the CLI's configuration directory.
pub fn token_cache() -> anyhow::Result<TokenCache> {
    Ok(TokenCache::new(settings::config_dir()?))
}

/// Takes the cache's lock off the async threads (it may wait for another process).
async fn lock(cache: &TokenCache) -> anyhow::Result<CacheLock> {
    let cache = cache.clone();
    tokio::task::spawn_blocking(move || cache.lock()).await?
}

/// `postern login`.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (config, config_path) = settings::load_config()?;
    let provider = settings::resolve(&args.provider, &config, &config_path)?;
    let scope = if args.scopes.is_empty() {
        config
            .login
            .scope
            .clone()
            .unwrap_or_else(|| DEFAULT_SCOPE.to_owned())
    } else {
        args.scopes.join(" ")
    };
    let http = oidc::http_client(&provider.issuer)?;
    let endpoints = oidc::discover(&http, &provider.issuer)
        .await
        .with_context(|| where_from(&provider))?;
    let flow = if args.device {
        Flow::Device
    } else if args.browser {
        Flow::Browser
    } else if let Some(flow) = config.login.flow {
        flow
    } else if endpoints.device_authorization.is_some() && !has_display() {
        Flow::Device
    } else {
        Flow::Browser
    };
    let mfa_acr_values = args.mfa.then(|| {
        config
            .login
            .mfa_acr_values
            .clone()
            .unwrap_or_else(|| settings::DEFAULT_MFA_ACR.to_owned())
    });
    let mut login_again = provider.login_command();
    if flow == Flow::Device {
        login_again.push_str(" --device");
    }
    let tokens = match flow {
        Flow::Device => {
            device::sign_in(
                &http,
                &endpoints,
                &provider.client_id,
                &scope,
                mfa_acr_values.as_deref(),
                &login_again,
            )
            .await?
        }
        Flow::Browser => {
            let request = browser::Request {
                client_id: &provider.client_id,
                scope: &scope,
                mfa_acr_values: mfa_acr_values.as_deref(),
                open_browser: !args.no_open,
            };
            browser::sign_in(&http, &endpoints, &provider.issuer, &request).await?
        }
    };
    let entry = cached(&provider, tokens, None);
    let cache = token_cache()?;
    let guard = lock(&cache).await?;
    cache.put(&guard, entry.clone())?;
    drop(guard);

    let token_claims = claims::unverified(&entry.access_token)
        .or_else(|| entry.id_token.as_deref().and_then(claims::unverified));
    let who = token_claims
        .as_ref()
        .and_then(claims::subject)
        .map(|subject| format!(" as {}", oidc::clip(subject)))
        .unwrap_or_default();
    let factor = match token_claims.as_ref().and_then(claims::used_mfa) {
        Some(true) => " with a second factor",
        Some(false) if args.mfa => {
            " (the provider says no second factor was used, although one was asked for)"
        }
        _ => "",
    };
    eprintln!("Logged in to {}{who}{factor}.", provider.issuer);
    let until = entry
        .expiry()
        .map(|at| {
            format!(
                "; the access token lasts until {}",
                humantime::format_rfc3339_seconds(at)
            )
        })
        .unwrap_or_default();
    let renewal = if entry.refresh_token.is_some() {
        ", then is renewed with the refresh token"
    } else {
        " (no refresh token: log in again when it expires)"
    };
    eprintln!(
        "Tokens are kept in {}{until}{renewal}.",
        cache.path().display()
    );
    if args.print_token {
        println!("{}", entry.access_token);
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether a graphical session seems to be there to open a browser in.
fn has_display() -> bool {
    cfg!(target_os = "macos")
        || std::env::var_os("DISPLAY").is_some()
        || std::env::var_os("WAYLAND_DISPLAY").is_some()
}

/// Says where the provider came from, for an error reaching it.
fn where_from(provider: &Provider) -> String {
    match &provider.source {
        settings::Source::Flag => format!("the identity provider {} (--issuer)", provider.issuer),
        settings::Source::Quickstart(dir) => format!(
            "the quickstart's identity provider {} (from {}): is the quickstart still running?",
            provider.issuer,
            dir.display()
        ),
        settings::Source::ConfigFile(path) => format!(
            "the identity provider {} (from {})",
            provider.issuer,
            path.display()
        ),
    }
}

/// The cache entry for `tokens`; what a refresh leaves out is kept from `previous`.
fn cached(
    provider: &Provider,
    tokens: oidc::Tokens,
    previous: Option<CachedTokens>,
) -> CachedTokens {
    let now = unix_now();
    let expires_at = tokens
        .expires_in
        .map(|seconds| now.saturating_add(seconds))
        .or_else(|| {
            claims::unverified(&tokens.access_token)
                .as_ref()
                .and_then(claims::expires_at)
                .and_then(|at| at.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|since| since.as_secs())
        });
    let (previous_id, previous_refresh, previous_scope) = match previous {
        Some(previous) => (previous.id_token, previous.refresh_token, previous.scope),
        None => (None, None, None),
    };
    CachedTokens {
        issuer: provider.issuer.clone(),
        client_id: provider.client_id.clone(),
        access_token: tokens.access_token,
        id_token: tokens.id_token.or(previous_id),
        // RFC 6749 §6: a refresh answer without a refresh token leaves the old one valid.
        refresh_token: tokens.refresh_token.or(previous_refresh),
        expires_at,
        scope: tokens.scope.or(previous_scope),
        obtained_at: now,
    }
}

/// `postern logout`.
pub async fn logout(args: LogoutArgs) -> anyhow::Result<ExitCode> {
    let cache = token_cache()?;
    let guard = lock(&cache).await?;
    if args.all {
        let removed = cache.remove(&guard, None)?;
        eprintln!("Logged out: {removed} cached sign-ins removed.");
        return Ok(ExitCode::SUCCESS);
    }
    let (config, config_path) = settings::load_config()?;
    let provider = settings::resolve(&args.provider, &config, &config_path)?;
    let removed = cache.remove(&guard, Some((&provider.issuer, &provider.client_id)))?;
    if removed == 0 {
        eprintln!("Not logged in to {}; nothing to remove.", provider.issuer);
    } else {
        eprintln!("Logged out of {}: its tokens are removed.", provider.issuer);
    }
    Ok(ExitCode::SUCCESS)
}

/// The cached tokens for `provider`, renewed with the refresh token first if the access token
/// has expired or expires within [`RENEW_MARGIN`]. Errors say to run `postern login`.
pub async fn current_tokens(provider: &Provider) -> anyhow::Result<CachedTokens> {
    let cache = token_cache()?;
    let guard = lock(&cache).await?;
    let login = provider.login_command();
    let Some(entry) = cache.get(&guard, &provider.issuer, &provider.client_id)? else {
        bail!(
            "not logged in to {} (client {}): run `{login}`",
            provider.issuer,
            provider.client_id
        );
    };
    if !entry.expires_within(RENEW_MARGIN) {
        return Ok(entry);
    }
    let expired = match entry.expiry() {
        Some(at) if at <= SystemTime::now() => {
            format!("expired at {}", humantime::format_rfc3339_seconds(at))
        }
        Some(at) => format!("expires at {}", humantime::format_rfc3339_seconds(at)),
        None => "has expired".to_owned(),
    };
    let Some(refresh_token) = entry.refresh_token.clone() else {
        bail!(
            "your token from {} {expired} and there is no refresh token: run `{login}`",
            provider.issuer
        );
    };
    let http = oidc::http_client(&provider.issuer)?;
    let endpoints = oidc::discover(&http, &provider.issuer)
        .await
        .with_context(|| format!("renewing your token from {}", provider.issuer))?;
    let renewed = oidc::token_request(
        &http,
        &endpoints.token,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh_token),
            ("client_id", &provider.client_id),
        ],
    )
    .await;
    match renewed {
        Ok(tokens) => {
            let entry = cached(provider, tokens, Some(entry));
            cache.put(&guard, entry.clone())?;
            Ok(entry)
        }
        Err(failure) => {
            // A refused refresh token is spent or revoked: drop it so the next try says the same
            // thing without asking the provider again.
            if matches!(failure, oidc::TokenFailure::Refused { .. }) {
                let mut spent = entry;
                spent.refresh_token = None;
                cache.put(&guard, spent)?;
            }
            bail!(
                "your token from {} {expired} and could not be renewed ({failure}): log in again \
                 with `{login}`",
                provider.issuer
            )
        }
    }
}
