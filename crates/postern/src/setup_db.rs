//! `postern setup-db TARGET`: install the claims schema through the target's admin login.

use std::path::Path;
use std::process::ExitCode;

use postern_config::Config;

pub async fn run(target: &str, config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let report = postern_proxy::setup_target_database(target, &config)
        .await
        .map_err(|e| anyhow::anyhow!("setup-db {target}: {e}"))?;
    let key = if report.created_key {
        "created a new signing key"
    } else {
        "kept the existing signing key"
    };
    println!(
        "installed schema postern in target {target} ({key}); \
         row-level security policies can now use postern.claim('name'), postern.claims() and postern.subject()"
    );
    Ok(ExitCode::SUCCESS)
}
