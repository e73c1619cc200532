//! Starting the admin HTTP API next to the proxy, when the configuration asks for it.

use anyhow::Context as _;
use postern_config::Config;
use postern_proxy::Proxy;
use tokio::task::JoinHandle;

/// Binds the admin API's address and serves it, with the web console when configured, until the
/// proxy's shutdown.
pub async fn start(full: &Config, proxy: &Proxy) -> anyhow::Result<Option<JoinHandle<()>>> {
    let Some(config) = &full.admin else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(config.address)
        .await
        .with_context(|| format!("cannot listen for the admin API on {}", config.address))?;
    tracing::info!(address = %config.address, "admin API listening");
    let address = listener.local_addr().unwrap_or(config.address);
    let console = postern_admin::ConsoleOptions::from_config(full, address)
        .context("the web console's settings")?;
    let control = proxy.control();
    let shutdown = proxy.shutdown_handle();
    Ok(Some(tokio::spawn(async move {
        if let Err(error) = postern_admin::serve_with(listener, control, console, shutdown).await {
            tracing::error!(error = %error, "the admin API stopped");
        }
    })))
}
