//! `GET /metrics`: the library's `iamport_*` metrics (and anything else recorded through the
//! `metrics` facade) in Prometheus' text format.
//!
//! The library records and never exports; the application picks the exporter. Here it is
//! `metrics-exporter-prometheus` without its default features — only the recorder and its
//! renderer, no HTTP listener of its own and no push gateway — served by the demo's router.
//! In production, serve it where only Prometheus can reach it (another port, or behind
//! authentication): it shows traffic, not people.

use std::time::Duration;

use axum::http::header;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets for every `*_seconds` histogram: 5 ms to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the Prometheus recorder as the process's global recorder, describes the
/// library's metrics, and keeps the recorder's upkeep running.
pub(crate) fn install() -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|error| format!("cannot install the Prometheus recorder: {error}"))?;
    iamport_tower::metrics::describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// The scrape answer.
pub(crate) fn render(handle: &PrometheusHandle) -> impl IntoResponse + use<> {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
}
