//! `postern serve`: run from a configuration file until Ctrl-C or SIGTERM.

use std::process::ExitCode;

use anyhow::Context as _;
use postern_config::Config;
use postern_proxy::Proxy;

pub async fn run(config: Config) -> anyhow::Result<ExitCode> {
    crate::init_logging("info");
    let proxy = Proxy::bind(&config).await.context("cannot start Postern")?;
    let shutdown = proxy.shutdown_handle();
    let policies = proxy.policies();
    let admin = crate::admin::start(&config, &proxy).await?;
    let serving = tokio::spawn(proxy.serve());
    // SIGHUP reloads the policy files; a set that does not load is logged and refused.
    #[cfg(unix)]
    if let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    {
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                let _ = policies.reload();
            }
        });
    }
    crate::stop_requested().await;
    tracing::info!("stopping: no new connections; open sessions are being closed");
    shutdown.cancel();
    serving.await.context("the server task failed")?;
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    Ok(ExitCode::SUCCESS)
}
