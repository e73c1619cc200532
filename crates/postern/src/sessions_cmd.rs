//! `postern sessions` and `postern kill`: the admin API's live sessions from a terminal.
//!
//! The caller's token comes from `POSTERN_TOKEN` (or `--token-file`), never from the command
//! line, where other users of the machine could read it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use serde_json::Value;

/// Where the admin API is and who is asking.
#[derive(Debug, clap::Args)]
pub struct AdminClient {
    /// The admin API's base URL. Default: the one of a quickstart running in --dir, else
    /// http://127.0.0.1:6480.
    #[arg(long, env = "POSTERN_ADMIN")]
    admin: Option<String>,
    /// A running quickstart's directory: its admin API is found there.
    #[arg(long, default_value = crate::quickstart::DEFAULT_DIR)]
    dir: PathBuf,
    /// A file holding your identity token (instead of the POSTERN_TOKEN environment variable).
    #[arg(long)]
    token_file: Option<PathBuf>,
}

/// Where the admin API is when nothing says otherwise.
const DEFAULT_ADMIN: &str = "http://127.0.0.1:6480";

impl AdminClient {
    /// The admin API's base URL: `--admin`, else the quickstart's in `--dir`, else the default.
    fn admin(&self) -> String {
        if let Some(admin) = &self.admin {
            return admin.trim_end_matches('/').to_owned();
        }
        std::fs::read_to_string(self.dir.join(crate::quickstart::ADMIN_ADDRESS_FILE))
            .ok()
            .map(|url| url.trim().trim_end_matches('/').to_owned())
            .filter(|url| !url.is_empty())
            .unwrap_or_else(|| DEFAULT_ADMIN.to_owned())
    }

    fn token(&self) -> anyhow::Result<String> {
        let token = match &self.token_file {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the token file {}", path.display()))?,
            None => std::env::var("POSTERN_TOKEN").map_err(|_| {
                anyhow::anyhow!(
                    "no token: set POSTERN_TOKEN to your identity token, or pass --token-file"
                )
            })?,
        };
        Ok(token.trim().to_owned())
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.admin())
    }

    /// Sends a request; returns the JSON body of a success, or the API's error message.
    pub(crate) async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = request
            .bearer_auth(self.token()?)
            .send()
            .await
            .with_context(|| format!("cannot reach the admin API at {}", self.admin()))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .with_context(|| format!("the admin API answered {status} without JSON"))?;
        if !status.is_success() {
            let message = body["error"].as_str().unwrap_or("no message");
            bail!("{status}: {message}");
        }
        Ok(body)
    }
}

/// Prints the live sessions, one per line.
pub async fn list(client: &AdminClient) -> anyhow::Result<ExitCode> {
    let http = reqwest::Client::new();
    let body = client.send(http.get(client.url("/v1/sessions"))).await?;
    let sessions = body["sessions"].as_array().cloned().unwrap_or_default();
    println!(
        "{:<16}  {:<28}  {:<10}  {:<10}  {:<21}  {:<20}  STATEMENT",
        "ID", "SUBJECT", "TARGET", "ROLE", "CLIENT", "STATE"
    );
    for session in &sessions {
        let text = |key: &str| session[key].as_str().unwrap_or("").to_owned();
        println!(
            "{:<16}  {:<28}  {:<10}  {:<10}  {:<21}  {:<20}  {}",
            text("id"),
            text("subject"),
            text("target"),
            text("role"),
            text("client"),
            text("state"),
            text("statement").replace('\n', " "),
        );
    }
    println!("({} sessions)", sessions.len());
    Ok(ExitCode::SUCCESS)
}

/// Ends one live session.
pub async fn kill(client: &AdminClient, id: &str, reason: &str) -> anyhow::Result<ExitCode> {
    let http = reqwest::Client::new();
    let body = client
        .send(
            http.post(client.url(&format!("/v1/sessions/{id}/end")))
                .json(&serde_json::json!({ "reason": reason })),
        )
        .await?;
    println!(
        "ended session {id} of {} on {}",
        body["ended"]["subject"].as_str().unwrap_or("?"),
        body["ended"]["target"].as_str().unwrap_or("?")
    );
    Ok(ExitCode::SUCCESS)
}

/// Who a revocation covers, from the command line: exactly one of these.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = true)]
pub struct RevokeWho {
    /// Everyone with this subject, from any issuer (or, with --issuer, from that issuer only).
    #[arg(long)]
    subject: Option<String>,
    /// With --subject: only the identity from this issuer (the token's `iss`).
    #[arg(long, requires = "subject")]
    issuer: Option<String>,
    /// Everyone whose token lists this group.
    #[arg(long, conflicts_with_all = ["subject", "token_id"])]
    group: Option<String>,
    /// The one token with this `jti`.
    #[arg(long, conflicts_with_all = ["subject", "group"])]
    token_id: Option<String>,
}

impl RevokeWho {
    fn scope(&self) -> anyhow::Result<Value> {
        Ok(
            match (&self.subject, &self.issuer, &self.group, &self.token_id) {
                (Some(subject), Some(issuer), None, None) => {
                    serde_json::json!({"kind": "issuer_subject", "issuer": issuer, "subject": subject})
                }
                (Some(subject), None, None, None) => {
                    serde_json::json!({"kind": "subject", "subject": subject})
                }
                (None, None, Some(group), None) => {
                    serde_json::json!({"kind": "group", "group": group})
                }
                (None, None, None, Some(token_id)) => {
                    serde_json::json!({"kind": "token_id", "token_id": token_id})
                }
                _ => bail!("name whom to revoke: --subject [--issuer], --group or --token-id"),
            },
        )
    }
}

/// Revokes access: covered identities' live sessions end now and their logins are refused.
pub async fn revoke(
    client: &AdminClient,
    who: &RevokeWho,
    reason: &str,
    lasts: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let http = reqwest::Client::new();
    let mut body = serde_json::json!({ "scope": who.scope()?, "reason": reason });
    if let Some(lasts) = lasts {
        body["lasts"] = Value::from(lasts);
    }
    let answer = client
        .send(http.post(client.url("/v1/revocations")).json(&body))
        .await?;
    println!(
        "revocation {} in force; {} live sessions ended",
        answer["revocation"]["id"].as_str().unwrap_or("?"),
        answer["sessions_ended"]
    );
    Ok(ExitCode::SUCCESS)
}

/// Prints every revocation.
pub async fn revocations(client: &AdminClient) -> anyhow::Result<ExitCode> {
    let http = reqwest::Client::new();
    let body = client.send(http.get(client.url("/v1/revocations"))).await?;
    let list = body["revocations"].as_array().cloned().unwrap_or_default();
    println!(
        "{:<12}  {:<9}  {:<40}  {:<24}  REASON",
        "ID", "STATE", "WHO", "BY"
    );
    for revocation in &list {
        let scope = &revocation["scope"];
        let who = match scope["kind"].as_str() {
            Some("issuer_subject") => format!(
                "{} from {}",
                scope["subject"].as_str().unwrap_or(""),
                scope["issuer"].as_str().unwrap_or("")
            ),
            Some("group") => format!("group {}", scope["group"].as_str().unwrap_or("")),
            Some("token_id") => format!("token {}", scope["token_id"].as_str().unwrap_or("")),
            _ => scope["subject"].as_str().unwrap_or("").to_owned(),
        };
        let state = if revocation["lifted_at"].is_null() {
            "in force"
        } else {
            "lifted"
        };
        println!(
            "{:<12}  {:<9}  {:<40}  {:<24}  {}",
            revocation["id"].as_str().unwrap_or(""),
            state,
            who,
            revocation["created_by"].as_str().unwrap_or(""),
            revocation["reason"].as_str().unwrap_or(""),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Lifts a revocation.
pub async fn unrevoke(client: &AdminClient, id: &str) -> anyhow::Result<ExitCode> {
    let http = reqwest::Client::new();
    client
        .send(http.delete(client.url(&format!("/v1/revocations/{id}"))))
        .await?;
    println!("revocation {id} lifted");
    Ok(ExitCode::SUCCESS)
}
