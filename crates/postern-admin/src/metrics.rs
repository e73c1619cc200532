//! `GET /metrics`: Postern's counters in the Prometheus text format (the counters and their
//! rendering are `postern_proxy`'s `metrics.rs`).
//!
//! Served without a token, like `/healthz`: scrapers rarely carry an identity token, and the
//! text holds counts labelled by fixed reasons and outcomes, never a name, a statement or an
//! address. The admin API listens on loopback only; an operator who wants the counters further
//! afield puts a scraper or an authenticating proxy beside it.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use postern_proxy::control::Control;

use crate::ApiError;

/// The content type of the Prometheus text format, version 0.0.4.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(crate) async fn metrics(State(control): State<Control>) -> Result<Response, ApiError> {
    let text = control.metrics_text()?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}
