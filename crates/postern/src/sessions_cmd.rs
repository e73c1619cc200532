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
    /// The admin API's base URL.
    #[arg(long, env = "POSTERN_ADMIN", default_value = "http://127.0.0.1:6480")]
    admin: String,
    /// A file holding your identity token (instead of the POSTERN_TOKEN environment variable).
    #[arg(long)]
    token_file: Option<PathBuf>,
}

impl AdminClient {
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

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.admin.trim_end_matches('/'))
    }

    /// Sends a request; returns the JSON body of a success, or the API's error message.
    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = request
            .bearer_auth(self.token()?)
            .send()
            .await
            .with_context(|| format!("cannot reach the admin API at {}", self.admin))?;
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
