//! `postern requests`, `approve`, `deny`, `grants` and `revoke-grant`: just-in-time approval from a
//! terminal, through the admin API, with the approver's own token (POSTERN_TOKEN or
//! --token-file).

use std::process::ExitCode;

use serde_json::{Value, json};

use crate::sessions_cmd::AdminClient;

/// Which requests to list.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum StateFilter {
    Pending,
    Approved,
    Denied,
    Withdrawn,
    Expired,
    All,
}

impl StateFilter {
    fn query(self) -> &'static str {
        match self {
            Self::Pending => "?state=pending",
            Self::Approved => "?state=approved",
            Self::Denied => "?state=denied",
            Self::Withdrawn => "?state=withdrawn",
            Self::Expired => "?state=expired",
            Self::All => "",
        }
    }
}

/// What an approval grants.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Scope {
    /// This exact statement text with these parameters (once, unless --budget says more).
    Statement,
    /// The request's actions on its tables, for the grant's lifetime.
    Action,
}

/// Prints the approval requests the caller may see.
pub async fn list(client: &AdminClient, state: StateFilter) -> anyhow::Result<ExitCode> {
    let http = reqwest::Client::new();
    let body = client
        .send(http.get(client.url(&format!("/v1/requests{}", state.query()))))
        .await?;
    let requests = body["requests"].as_array().cloned().unwrap_or_default();
    println!(
        "{:<12}  {:<9}  {:<24}  {:<10}  {:<16}  {:<20}  STATEMENT",
        "ID", "STATE", "REQUESTER", "TARGET", "ROLE", "NEEDS"
    );
    for request in &requests {
        let text = |key: &str| request[key].as_str().unwrap_or("").to_owned();
        println!(
            "{:<12}  {:<9}  {:<24}  {:<10}  {:<16}  {:<20}  {}",
            text("id"),
            text("state"),
            text("requester_subject"),
            text("target"),
            text("role"),
            needs(request),
            one_line(&text("statement"), 100),
        );
        if let Some(reason) = request["reason"].as_str() {
            println!("{:<12}  reason: {reason}", "");
        }
    }
    println!("({} requests)", requests.len());
    Ok(ExitCode::SUCCESS)
}

/// Approves a request.
pub async fn approve(
    client: &AdminClient,
    id: &str,
    ttl: Option<&str>,
    scope: Option<Scope>,
    budget: Option<u32>,
    comment: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let mut body = json!({});
    if let Some(ttl) = ttl {
        body["ttl"] = json!(ttl);
    }
    if let Some(scope) = scope {
        body["scope"] = json!(match scope {
            Scope::Statement => "statement",
            Scope::Action => "action",
        });
    }
    if let Some(budget) = budget {
        body["budget"] = json!(budget);
    }
    if let Some(comment) = comment {
        body["comment"] = json!(comment);
    }
    let http = reqwest::Client::new();
    let answer = client
        .send(
            http.post(client.url(&format!("/v1/requests/{id}/approve")))
                .json(&body),
        )
        .await?;
    match answer["outcome"].as_str() {
        Some("approved") => {
            let grant = &answer["grant"];
            let uses = match grant["budget"].as_u64() {
                Some(1) => "once".to_owned(),
                Some(n) => format!("{n} times"),
                None => "any number of times".to_owned(),
            };
            println!(
                "request {id} approved: {} may run it {uses} until {} (grant {})",
                answer["request"]["requester_subject"]
                    .as_str()
                    .unwrap_or("?"),
                time(&grant["expires_at"]),
                grant["id"].as_str().unwrap_or("?")
            );
        }
        _ => println!(
            "your approval of request {id} is recorded; it still needs {}",
            needs(&answer["request"])
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// Denies a request.
pub async fn deny(client: &AdminClient, id: &str, comment: &str) -> anyhow::Result<ExitCode> {
    let http = reqwest::Client::new();
    client
        .send(
            http.post(client.url(&format!("/v1/requests/{id}/deny")))
                .json(&json!({ "comment": comment })),
        )
        .await?;
    println!("request {id} denied");
    Ok(ExitCode::SUCCESS)
}

/// Prints the grants the caller may see.
pub async fn grants(client: &AdminClient, all: bool) -> anyhow::Result<ExitCode> {
    let http = reqwest::Client::new();
    let path = if all {
        "/v1/grants?all=true"
    } else {
        "/v1/grants"
    };
    let body = client.send(http.get(client.url(path))).await?;
    let grants = body["grants"].as_array().cloned().unwrap_or_default();
    println!(
        "{:<12}  {:<12}  {:<24}  {:<10}  {:<9}  {:<7}  {:<20}  BY",
        "ID", "REQUEST", "SUBJECT", "TARGET", "SCOPE", "USES", "EXPIRES"
    );
    for grant in &grants {
        let text = |key: &str| grant[key].as_str().unwrap_or("").to_owned();
        let uses = match grant["budget"].as_u64() {
            Some(budget) => format!("{}/{budget}", grant["uses"]),
            None => format!("{}", grant["uses"]),
        };
        let by: Vec<&str> = grant["created_by"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        println!(
            "{:<12}  {:<12}  {:<24}  {:<10}  {:<9}  {:<7}  {:<20}  {}",
            text("id"),
            text("request_id"),
            text("subject"),
            text("target"),
            text("scope"),
            uses,
            time(&grant["expires_at"]),
            by.join(", ")
        );
    }
    println!("({} grants)", grants.len());
    Ok(ExitCode::SUCCESS)
}

/// Revokes a grant.
pub async fn revoke_grant(client: &AdminClient, id: &str) -> anyhow::Result<ExitCode> {
    let http = reqwest::Client::new();
    client
        .send(http.delete(client.url(&format!("/v1/grants/{id}"))))
        .await?;
    println!("grant {id} revoked");
    Ok(ExitCode::SUCCESS)
}

/// `1 from dbas`, `2 from dbas + 1 from sre`.
fn needs(request: &Value) -> String {
    let parts: Vec<String> = request["requirements"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|r| {
                    format!(
                        "{} from {}",
                        r["approvers"].as_u64().unwrap_or(1),
                        r["group"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    parts.join(" + ")
}

pub(crate) fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &flat[..end]),
        None => flat,
    }
}

/// Unix seconds as an RFC 3339 time.
pub(crate) fn time(value: &Value) -> String {
    value
        .as_u64()
        .map(|secs| {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
            )
            .to_string()
        })
        .unwrap_or_else(|| "?".to_owned())
}
