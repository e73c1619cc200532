//! Which identity provider a command signs in with, and where the CLI keeps its files.
//!
//! The provider is, in this order: `--issuer` (and `--client-id`), the development provider of a
//! quickstart running in `--dir` (client `postern-cli`), or `[login]` in the CLI's configuration
//! file, `$XDG_CONFIG_HOME/postern/config.toml` (`~/.config/postern/config.toml` when
//! `XDG_CONFIG_HOME` is unset). That file also gives `postern psql` its defaults (`[psql]`).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::Deserialize;

/// The client id used when nothing names one: what the quickstart's provider expects, and a
/// sensible name to register the CLI under at a real provider.
pub const DEFAULT_CLIENT_ID: &str = "postern-cli";
/// Scopes asked for when nothing names them: an ID token, and a refresh token (`offline_access`,
/// OIDC Core §11) so `postern psql` can renew the access token without a new sign-in.
pub const DEFAULT_SCOPE: &str = "openid offline_access";
/// What `postern login --mfa` sends as `acr_values` unless `[login] mfa_acr_values` says
/// otherwise: the OpenID Provider Authentication Policy Extension's multi-factor policy, which
/// several providers honour (and the development provider does).
/// <https://openid.net/specs/openid-provider-authentication-policy-extension-1_0.html#rfc.section.4>
pub const DEFAULT_MFA_ACR: &str = "http://schemas.openid.net/pape/policies/2007/06/multi-factor";
/// The CLI's configuration file, in its configuration directory.
const CONFIG_FILE: &str = "config.toml";
/// Largest configuration file read.
const MAX_CONFIG_BYTES: u64 = 64 * 1024;

/// The command-line options naming the identity provider (shared by `login`, `logout`, `psql`).
#[derive(Debug, Clone, clap::Args)]
pub struct ProviderArgs {
    /// The identity provider's issuer URL. Default: the provider of a quickstart running in
    /// --dir, else `[login] issuer` in the CLI configuration file.
    #[arg(long)]
    pub issuer: Option<String>,
    /// The OAuth client id Postern's CLI is registered under at the provider. Default:
    /// `[login] client_id`, else postern-cli.
    #[arg(long)]
    pub client_id: Option<String>,
    /// A running quickstart's directory: its development identity provider is used.
    #[arg(long, default_value = crate::quickstart::DEFAULT_DIR)]
    pub dir: PathBuf,
}

/// The CLI's configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliConfig {
    #[serde(default)]
    pub login: LoginConfig,
    #[serde(default)]
    pub psql: PsqlConfig,
}

/// `[login]`: the identity provider to sign in with.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginConfig {
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    /// Space-separated scopes (default [`DEFAULT_SCOPE`]).
    pub scope: Option<String>,
    /// `device` or `browser`: the flow `postern login` uses without `--device`/`--browser`.
    pub flow: Option<Flow>,
    /// What `postern login --mfa` sends as `acr_values` (default: the PAPE multi-factor policy).
    pub mfa_acr_values: Option<String>,
}

/// `[psql]`: where Postern is.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PsqlConfig {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub sslmode: Option<String>,
}

/// How `postern login` signs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flow {
    /// The device authorization grant (RFC 8628): a code to enter on any device's browser.
    Device,
    /// The authorization code flow with PKCE and a loopback redirect (RFC 8252).
    Browser,
}

/// Where the provider came from, for messages that tell the user how to reach it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag,
    Quickstart(PathBuf),
    ConfigFile(PathBuf),
}

/// The identity provider and client a command works with; the token cache is keyed by both.
#[derive(Debug, Clone)]
pub struct Provider {
    /// The issuer URL without a trailing slash.
    pub issuer: String,
    pub client_id: String,
    pub source: Source,
}

impl Provider {
    /// The `postern login` command that signs in with this provider again.
    pub fn login_command(&self) -> String {
        let mut command = "postern login".to_owned();
        match &self.source {
            Source::Flag => command.push_str(&format!(" --issuer {}", self.issuer)),
            Source::Quickstart(dir) if dir != Path::new(crate::quickstart::DEFAULT_DIR) => {
                command.push_str(&format!(" --dir {}", dir.display()));
            }
            Source::Quickstart(_) | Source::ConfigFile(_) => {}
        }
        if self.source == Source::Flag && self.client_id != DEFAULT_CLIENT_ID {
            command.push_str(&format!(" --client-id {}", self.client_id));
        }
        command
    }
}

/// The issuer URL as cache keys and discovery use it: no trailing slash.
pub fn normalize_issuer(issuer: &str) -> String {
    issuer.trim().trim_end_matches('/').to_owned()
}

/// The CLI's configuration directory: `$XDG_CONFIG_HOME/postern`, else `~/.config/postern`.
pub fn config_dir() -> anyhow::Result<PathBuf> {
    if let Some(base) = std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from)
        && base.is_absolute()
    {
        return Ok(base.join("postern"));
    }
    match std::env::var_os("HOME").map(PathBuf::from) {
        Some(home) if home.is_absolute() => Ok(home.join(".config").join("postern")),
        _ => bail!("neither XDG_CONFIG_HOME nor HOME is set to an absolute path"),
    }
}

/// The CLI's configuration file, or the defaults when there is none.
pub fn load_config() -> anyhow::Result<(CliConfig, PathBuf)> {
    let path = config_dir()?.join(CONFIG_FILE);
    let text = match std::fs::metadata(&path) {
        Ok(meta) if meta.len() > MAX_CONFIG_BYTES => {
            bail!("{} is larger than {MAX_CONFIG_BYTES} bytes", path.display())
        }
        Ok(_) => std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok((CliConfig::default(), path));
        }
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
    };
    let config: CliConfig =
        toml::from_str(&text).with_context(|| format!("{} is not valid", path.display()))?;
    Ok((config, path))
}

/// The provider the options name (see the module's documentation for the order).
pub fn resolve(
    args: &ProviderArgs,
    config: &CliConfig,
    config_path: &Path,
) -> anyhow::Result<Provider> {
    let client_id = |fallback: Option<&String>| {
        args.client_id
            .clone()
            .or_else(|| fallback.cloned())
            .unwrap_or_else(|| DEFAULT_CLIENT_ID.to_owned())
    };
    if let Some(issuer) = &args.issuer {
        return Ok(Provider {
            issuer: normalize_issuer(issuer),
            client_id: client_id(config.login.client_id.as_ref()),
            source: Source::Flag,
        });
    }
    let idp_dir = args.dir.join(crate::quickstart::IDP_DIR);
    if idp_dir.join(postern_sandbox::idp::ISSUER_FILE).exists() {
        let issuer = postern_sandbox::idp::read_issuer(&idp_dir).with_context(|| {
            format!(
                "cannot read the quickstart's issuer in {}",
                idp_dir.display()
            )
        })?;
        return Ok(Provider {
            issuer: normalize_issuer(&issuer),
            client_id: client_id(None),
            source: Source::Quickstart(args.dir.clone()),
        });
    }
    if let Some(issuer) = &config.login.issuer {
        return Ok(Provider {
            issuer: normalize_issuer(issuer),
            client_id: client_id(config.login.client_id.as_ref()),
            source: Source::ConfigFile(config_path.to_owned()),
        });
    }
    bail!(
        "which identity provider? Pass --issuer URL, start `postern quickstart` (its provider is \
         found in --dir, default {}), or set it once in {}:\n\n  [login]\n  issuer = \
         \"https://login.example.com\"\n  client_id = \"{DEFAULT_CLIENT_ID}\"",
        crate::quickstart::DEFAULT_DIR,
        config_path.display()
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use super::*;

    fn args(issuer: Option<&str>, dir: &Path) -> ProviderArgs {
        ProviderArgs {
            issuer: issuer.map(str::to_owned),
            client_id: None,
            dir: dir.to_owned(),
        }
    }

    #[test]
    fn flags_then_quickstart_then_config_file() {
        let scratch = tempfile::tempdir().unwrap();
        let config: CliConfig = toml::from_str(
            "[login]\nissuer = \"https://login.example.com/\"\nclient_id = \"cli\"\n",
        )
        .unwrap();
        let path = scratch.path().join("config.toml");

        let provider = resolve(&args(None, scratch.path()), &config, &path).unwrap();
        assert_eq!(provider.issuer, "https://login.example.com");
        assert_eq!(provider.client_id, "cli");
        assert_eq!(provider.login_command(), "postern login");

        let provider = resolve(
            &args(Some("https://other.example/"), scratch.path()),
            &config,
            &path,
        )
        .unwrap();
        assert_eq!(provider.issuer, "https://other.example");
        assert_eq!(provider.source, Source::Flag);
        assert_eq!(
            provider.login_command(),
            "postern login --issuer https://other.example --client-id cli"
        );

        std::fs::create_dir_all(scratch.path().join("idp")).unwrap();
        std::fs::write(scratch.path().join("idp/issuer"), "http://127.0.0.1:9\n").unwrap();
        let provider = resolve(&args(None, scratch.path()), &config, &path).unwrap();
        assert_eq!(provider.issuer, "http://127.0.0.1:9");
        assert_eq!(provider.client_id, DEFAULT_CLIENT_ID);
        assert!(
            provider.login_command().starts_with("postern login --dir "),
            "{}",
            provider.login_command()
        );

        let empty = tempfile::tempdir().unwrap();
        let error = resolve(&args(None, empty.path()), &CliConfig::default(), &path)
            .unwrap_err()
            .to_string();
        assert!(error.contains("Pass --issuer URL"), "{error}");
    }

    #[test]
    fn the_development_provider_takes_the_default_mfa_request() {
        assert_eq!(DEFAULT_MFA_ACR, postern_sandbox::idp::MFA_ACR);
    }

    #[test]
    fn the_config_file_refuses_unknown_settings() {
        assert!(toml::from_str::<CliConfig>("[login]\nisuer = \"x\"\n").is_err());
        let config: CliConfig =
            toml::from_str("[login]\nflow = \"device\"\n[psql]\nhost = \"db\"\nport = 5433\n")
                .unwrap();
        assert_eq!(config.login.flow, Some(Flow::Device));
        assert_eq!(config.psql.port, Some(5433));
    }
}
