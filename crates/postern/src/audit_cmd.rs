//! `postern audit verify FILE`: check the audit log's hash chain.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check that no event was changed, inserted or removed; names the first broken event.
    Verify { file: PathBuf },
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Verify { file } => match postern_audit::verify(&file) {
            Ok(report) => {
                println!(
                    "ok: {} events (seq {}..{}), chain intact; last hash {}",
                    report.events, report.first_seq, report.last_seq, report.last_hash
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(error) => {
                println!("FAILED: {}: {error}", file.display());
                Ok(ExitCode::FAILURE)
            }
        },
    }
}
