//! Logs and traces, shared by every subcommand.
//!
//! - Logs: `tracing` to stderr, human-readable by default, JSON lines when
//!   `TRACTOR_LOG_FORMAT=json`; levels from `RUST_LOG` (default `info`).
//! - Request spans ([`requests`]): one per request of `serve` and `route`,
//!   target `tractor::requests` at debug, off by default.
//! - W3C trace context ([`trace_context`]): the router passes a caller's
//!   valid `traceparent` on to its backends, in every build.
//! - With the `otel` cargo feature and an `OTEL_EXPORTER_OTLP_*ENDPOINT`,
//!   request spans go to an OTLP/HTTP collector (`otel.rs`); [`Telemetry::shutdown`]
//!   flushes them at exit.

pub mod requests;
pub mod trace_context;

#[cfg(feature = "otel")]
mod otel;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// What the process keeps until it exits: the trace exporter, if any.
#[must_use = "call shutdown() at exit, or queued spans are lost"]
pub struct Telemetry {
    #[cfg(feature = "otel")]
    exporting: Option<otel::Exporting>,
}

impl Telemetry {
    /// Flushes the spans still queued (with the `otel` feature and an
    /// endpoint); a no-op otherwise. Call it outside the runtime's
    /// workers, before the runtime is dropped: the export runs on it.
    pub fn shutdown(self) {
        #[cfg(feature = "otel")]
        if let Some(exporting) = self.exporting {
            exporting.shutdown();
        }
    }
}

/// The filter: `RUST_LOG`, else `info`, and with an OTLP endpoint (under
/// `otel`) the request spans too, since exporting nothing would surprise.
fn filter(tracing_on: bool) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(if tracing_on {
            format!("info,{}=debug", requests::REQUESTS)
        } else {
            "info".to_string()
        })
    })
}

/// Installs the global `tracing` subscriber, and the trace exporter when
/// the build has `otel` and the environment names an endpoint. Call it
/// within the tokio runtime's context (`Runtime::enter`): the exporter
/// sends on it. `service` is the default `service.name` (`tractor-serve`).
pub fn init(service: &str) -> Telemetry {
    let json = std::env::var("TRACTOR_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    // Colours only for a person at a terminal: logs written to files (pods,
    // `tractor up`'s children) must stay plain text.
    let plain = (!json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
    });
    let json = json.then(|| tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr));
    #[cfg(feature = "otel")]
    {
        use tracing_subscriber::Layer;
        let (started, failed) = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => match otel::start(runtime, service) {
                Ok(started) => (started, None),
                Err(e) => (None, Some(e.to_string())),
            },
            Err(_) => (None, Some("no async runtime to export on".to_string())),
        };
        let (exporting, tracer) = started.unzip();
        // Only request spans (and the events inside them) are exported: a
        // connection or reconcile span enabled for the logs stays a log.
        // Without the per-poll busy/idle timers, thread and source-line
        // attributes, and OTel context activation on every enter: none say
        // anything about a request, and each costs every request.
        let layer = tracer.map(|tracer| {
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_tracked_inactivity(false)
                .with_threads(false)
                .with_location(false)
                .with_context_activation(false)
                .with_filter(tracing_subscriber::filter::filter_fn(|m| {
                    m.is_event() || m.target() == requests::REQUESTS
                }))
        });
        let tracing_on = exporting.is_some();
        // A second initialisation (tests) is harmless, so its error is ignored.
        let _ = tracing_subscriber::registry()
            .with(filter(tracing_on))
            .with(plain)
            .with(json)
            .with(layer)
            .try_init();
        if let Some(reason) = failed {
            tracing::warn!(%reason, "OpenTelemetry traces are off");
        } else if tracing_on {
            tracing::info!(service, "exporting request spans over OTLP/HTTP");
        }
        Telemetry { exporting }
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = service;
        let _ =
            tracing_subscriber::registry().with(filter(false)).with(plain).with(json).try_init();
        let asked = ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
            .iter()
            .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()));
        if asked {
            tracing::warn!(
                "an OTLP endpoint is set, but this build has no `otel` feature: no spans are \
                 exported (a caller's traceparent is still passed on)"
            );
        }
        Telemetry {}
    }
}
