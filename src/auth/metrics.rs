//! Counters of refused requests, ignored pins and failed reloads, in the
//! process's default Prometheus registry so that both servers' `/metrics`
//! can add them to their own without knowing this module's types. Labels
//! name the reason and the token's name, never the token.

use std::sync::LazyLock;

use prometheus::{Encoder, IntCounterVec, Opts, TextEncoder};

struct AuthMetrics {
    refused: IntCounterVec,
    pin_ignored: IntCounterVec,
    reload_failures: IntCounterVec,
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let counter = IntCounterVec::new(Opts::new(name, help), labels)
        .expect("static metric definitions are valid");
    // Registration fails only on a duplicate name, which this one-time
    // initialisation cannot produce; the counter works unregistered anyway.
    let _ = prometheus::default_registry().register(Box::new(counter.clone()));
    counter
}

static METRICS: LazyLock<AuthMetrics> = LazyLock::new(|| AuthMetrics {
    refused: counter(
        "tractor_auth_refused_total",
        "Requests refused by access control, by reason and token name",
        &["reason", "token"],
    ),
    pin_ignored: counter(
        "tractor_auth_pin_ignored_total",
        "x-tractor-version headers ignored because the token lacks the pin scope",
        &["token"],
    ),
    reload_failures: counter(
        "tractor_auth_reload_failures_total",
        "Changed credential files that were refused (the last good one is kept)",
        &["file"],
    ),
});

pub(super) fn refused(reason: &'static str, token: &str) {
    METRICS.refused.with_label_values(&[reason, token]).inc();
}

pub(super) fn pin_ignored(token: &str) {
    METRICS.pin_ignored.with_label_values(&[token]).inc();
}

pub(super) fn reload_failed(file: &'static str) {
    METRICS.reload_failures.with_label_values(&[file]).inc();
}

/// The access-control series in Prometheus' text format, for a server's
/// `/metrics` to append to its own.
pub fn metrics_text() -> String {
    LazyLock::force(&METRICS);
    let mut out = Vec::new();
    let _ = TextEncoder::new().encode(&prometheus::default_registry().gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}
