//! `postern baselines` and `postern baseline show|accept|reset`: service identities' baselines
//! (the statement fingerprints and networks each was seen with, per target) from a terminal,
//! through the admin API, with the operator's own token (POSTERN_TOKEN or --token-file).
//!
//! A baseline is named by issuer, subject and target. The issuer may be left out: it is then
//! looked up in `GET /v1/baselines`, and must be the only one with a baseline for that subject
//! on that target.

use std::process::ExitCode;

use anyhow::bail;
use serde_json::{Value, json};

use crate::approvals_cmd::{one_line, time};
use crate::sessions_cmd::AdminClient;

/// `postern baseline …`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Show one baseline's entries: what was learned, and the anomalies (first seen after the
    /// observation window).
    Show {
        #[command(flatten)]
        which: Which,
        #[command(flatten)]
        client: AdminClient,
    },
    /// Accept an anomaly into the baseline: an enforced service may run the statement from now
    /// on (needs `approve` on the target; audited).
    Accept {
        #[command(flatten)]
        which: Which,
        #[command(flatten)]
        entry: Entry,
        #[command(flatten)]
        client: AdminClient,
    },
    /// Forget everything the baseline holds and start its observation window again now (needs
    /// `approve` on the target; audited).
    Reset {
        #[command(flatten)]
        which: Which,
        #[command(flatten)]
        client: AdminClient,
    },
}

/// Whose baseline, on which target.
#[derive(Debug, clap::Args)]
pub struct Which {
    /// The service identity's subject.
    #[arg(long)]
    subject: String,
    /// The target it connects to.
    #[arg(long)]
    target: String,
    /// The identity's issuer (its tokens' `iss`, as `postern baselines` shows it); found from
    /// the subject and target when only one issuer has a baseline for them.
    #[arg(long)]
    issuer: Option<String>,
}

/// The entry to accept: exactly one of these.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct Entry {
    /// A statement fingerprint, as `postern baseline show` lists it.
    #[arg(long)]
    fingerprint: Option<String>,
    /// A client network in CIDR (e.g. 10.1.2.3/32), as `postern baseline show` lists it.
    #[arg(long)]
    network: Option<String>,
}

/// Runs `postern baseline …`.
pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Show { which, client } => show(&client, &which).await,
        Command::Accept {
            which,
            entry,
            client,
        } => accept(&client, &which, &entry).await,
        Command::Reset { which, client } => reset(&client, &which).await,
    }
}

/// Prints every baseline the caller may see, one per line.
pub async fn list(client: &AdminClient) -> anyhow::Result<ExitCode> {
    let baselines = summaries(client).await?;
    println!(
        "{:<32}  {:<40}  {:<10}  {:<20}  {:>12}  {:>8}  {:>9}",
        "ISSUER", "SUBJECT", "TARGET", "STARTED", "FINGERPRINTS", "NETWORKS", "ANOMALIES"
    );
    for baseline in &baselines {
        let text = |key: &str| baseline[key].as_str().unwrap_or("").to_owned();
        let count = |key: &str| baseline[key].as_i64().unwrap_or(0);
        println!(
            "{:<32}  {:<40}  {:<10}  {:<20}  {:>12}  {:>8}  {:>9}",
            text("issuer"),
            text("subject"),
            text("target"),
            time(&baseline["started_at"]),
            count("fingerprints"),
            count("networks"),
            count("anomalies"),
        );
    }
    println!("({} baselines)", baselines.len());
    Ok(ExitCode::SUCCESS)
}

/// Prints one baseline's entries, anomalies marked.
async fn show(client: &AdminClient, which: &Which) -> anyhow::Result<ExitCode> {
    let issuer = issuer(client, which).await?;
    let http = reqwest::Client::new();
    let baseline = client
        .send(http.get(client.url("/v1/baseline")).query(&[
            ("issuer", issuer.as_str()),
            ("subject", which.subject.as_str()),
            ("target", which.target.as_str()),
        ]))
        .await?;
    println!(
        "baseline of {} from {issuer} on target {}, observed since {}",
        which.subject,
        which.target,
        time(&baseline["started_at"])
    );
    let entries = baseline["entries"].as_array().cloned().unwrap_or_default();
    println!(
        "{:<11}  {:<24}  {:<20}  {:<24}  SAMPLE",
        "KIND", "STATE", "FIRST SEEN", "VALUE"
    );
    let mut anomalies = 0;
    for entry in &entries {
        let state = match (entry["learned"].as_bool(), entry["accepted_by"].as_str()) {
            (Some(true), Some(by)) => format!("accepted by {by}"),
            (Some(true), None) => "learned".to_owned(),
            _ => {
                anomalies += 1;
                "ANOMALY".to_owned()
            }
        };
        println!(
            "{:<11}  {:<24}  {:<20}  {:<24}  {}",
            entry["kind"].as_str().unwrap_or(""),
            state,
            time(&entry["first_seen"]),
            entry["value"].as_str().unwrap_or(""),
            one_line(entry["sample"].as_str().unwrap_or(""), 100),
        );
    }
    println!("({} entries, {anomalies} anomalies)", entries.len());
    if anomalies > 0 {
        println!(
            "accept one with: postern baseline accept --subject '{}' --target '{}' --issuer '{issuer}' --fingerprint VALUE (or --network VALUE)",
            which.subject, which.target
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Accepts an anomaly into a baseline.
async fn accept(client: &AdminClient, which: &Which, entry: &Entry) -> anyhow::Result<ExitCode> {
    let (kind, value) = match (&entry.fingerprint, &entry.network) {
        (Some(fingerprint), None) => ("fingerprint", fingerprint),
        (None, Some(network)) => ("network", network),
        _ => bail!("name the entry to accept: --fingerprint or --network"),
    };
    let issuer = issuer(client, which).await?;
    let http = reqwest::Client::new();
    let baseline = client
        .send(http.post(client.url("/v1/baseline/accept")).json(&json!({
            "issuer": issuer,
            "subject": which.subject,
            "target": which.target,
            "kind": kind,
            "value": value,
        })))
        .await?;
    let sample = baseline["entries"]
        .as_array()
        .and_then(|entries| {
            entries
                .iter()
                .find(|e| e["kind"] == kind && e["value"] == value.as_str())
        })
        .and_then(|e| e["sample"].as_str())
        .unwrap_or("");
    println!(
        "{kind} {value} accepted into the baseline of {} on target {}: {}",
        which.subject,
        which.target,
        one_line(sample, 100)
    );
    Ok(ExitCode::SUCCESS)
}

/// Forgets a baseline and starts its observation window again.
async fn reset(client: &AdminClient, which: &Which) -> anyhow::Result<ExitCode> {
    let issuer = issuer(client, which).await?;
    let http = reqwest::Client::new();
    let baseline = client
        .send(http.post(client.url("/v1/baseline/reset")).json(&json!({
            "issuer": issuer,
            "subject": which.subject,
            "target": which.target,
        })))
        .await?;
    println!(
        "baseline of {} from {issuer} on target {} reset: learning again from {}",
        which.subject,
        which.target,
        time(&baseline["started_at"])
    );
    Ok(ExitCode::SUCCESS)
}

async fn summaries(client: &AdminClient) -> anyhow::Result<Vec<Value>> {
    let http = reqwest::Client::new();
    let body = client.send(http.get(client.url("/v1/baselines"))).await?;
    Ok(body["baselines"].as_array().cloned().unwrap_or_default())
}

/// `--issuer`, or the one issuer with a baseline for the subject on the target.
async fn issuer(client: &AdminClient, which: &Which) -> anyhow::Result<String> {
    if let Some(issuer) = &which.issuer {
        return Ok(issuer.clone());
    }
    let issuers: Vec<String> = summaries(client)
        .await?
        .iter()
        .filter(|b| b["subject"] == which.subject.as_str() && b["target"] == which.target.as_str())
        .filter_map(|b| b["issuer"].as_str().map(str::to_owned))
        .collect();
    match issuers.as_slice() {
        [issuer] => Ok(issuer.clone()),
        [] => bail!(
            "no baseline of {} on target {} that you may see (postern baselines lists them)",
            which.subject,
            which.target
        ),
        several => bail!(
            "{} has baselines on target {} from {} issuers: {}; choose one with --issuer",
            which.subject,
            which.target,
            several.len(),
            several.join(", ")
        ),
    }
}
