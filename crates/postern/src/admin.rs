//! Starting the admin HTTP API next to the proxy, when the configuration asks for it.

use anyhow::Context as _;
use postern_config::AdminConfig;
use postern_proxy::Proxy;
use tokio::task::JoinHandle;

/// Binds the admin API's address and serves it until the proxy's shutdown.
pub async fn start(
    config: Option<&AdminConfig>,
    proxy: &Proxy,
) -> anyhow::Result<Option<JoinHandle<()>>> {
    let Some(config) = config else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(config.address)
        .await
        .with_context(|| format!("cannot listen for the admin API on {}", config.address))?;
    tracing::info!(address = %config.address, "admin API listening");
    let control = proxy.control();
    let shutdown = proxy.shutdown_handle();
    Ok(Some(tokio::spawn(async move {
        if let Err(error) = postern_admin::serve(listener, control, shutdown).await {
            tracing::error!(error = %error, "the admin API stopped");
        }
    })))
}
