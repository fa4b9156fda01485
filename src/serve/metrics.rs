//! Prometheus metrics of one `tractor serve` process.
//!
//! Every series carries `model` and `version` labels, so a router or a
//! Prometheus scrape across versions can tell the stable from the canary.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Latency buckets from 50 µs to ~13 s: tiny MLPs answer in well under a
/// millisecond, large batches of CNNs in seconds.
fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(50e-6, 2.0, 19).expect("static bucket parameters are valid")
}

/// Why a request ended, as the `outcome` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    BadRequest,
    NotFound,
    NotReady,
    Overloaded,
    Timeout,
    Error,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::BadRequest => "bad_request",
            Outcome::NotFound => "not_found",
            Outcome::NotReady => "not_ready",
            Outcome::Overloaded => "overloaded",
            Outcome::Timeout => "timeout",
            Outcome::Error => "error",
        }
    }
}

/// The metrics, each already bound to this server's model and version.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    pub request_seconds: Histogram,
    pub queue_seconds: Histogram,
    pub compute_seconds: Histogram,
    pub batch_size: Histogram,
    pub inflight: IntGauge,
    pub model_load_seconds: Gauge,
    pub model_ready: IntGauge,
    /// Panics the engine caught (in a node, on a request's values, or
    /// around it); each failed only its request.
    pub engine_panics: IntCounter,
    /// Engine worker loops restarted after a panic escaped a batch.
    pub engine_restarts: IntCounter,
    /// Engine workers able to take a batch.
    pub engine_workers: IntGauge,
    /// 1 once the engine cannot recover (liveness fails).
    pub engine_failed: IntGauge,
    /// Plans built per input shape (models typed per sequence length).
    pub plan_builds: IntCounter,
    /// Requests served by a plan already kept.
    pub plan_hits: IntCounter,
    /// Plans dropped at `--max-plans`.
    pub plan_evictions: IntCounter,
    pub plan_build_seconds: Histogram,
}

impl Metrics {
    /// # Panics
    /// Never for these static definitions; registration only fails on
    /// duplicate names, which a fresh registry cannot have.
    pub fn new(model: &str, version: &str) -> Metrics {
        let registry = Registry::new();
        let labels = |opts: Opts| opts.const_label("model", model).const_label("version", version);
        let hist = |name: &str, help: &str, buckets: Vec<f64>| {
            let opts = HistogramOpts::new(name, help)
                .const_label("model", model)
                .const_label("version", version)
                .buckets(buckets);
            let h = Histogram::with_opts(opts).expect("valid histogram");
            registry.register(Box::new(h.clone())).expect("unique metric");
            h
        };
        let requests = IntCounterVec::new(
            labels(Opts::new("tractor_requests_total", "Inference requests by outcome")),
            &["protocol", "outcome"],
        )
        .expect("valid counter");
        registry.register(Box::new(requests.clone())).expect("unique metric");
        let request_seconds = hist(
            "tractor_request_duration_seconds",
            "Time from receiving an inference request to its answer",
            latency_buckets(),
        );
        let queue_seconds = hist(
            "tractor_queue_duration_seconds",
            "Time an inference request waited for a batch and a free engine",
            latency_buckets(),
        );
        let compute_seconds = hist(
            "tractor_compute_duration_seconds",
            "Time the engine spent on the batch that carried a request",
            latency_buckets(),
        );
        let batch_size = hist(
            "tractor_batch_size",
            "Rows in each batch the engine ran",
            prometheus::exponential_buckets(1.0, 2.0, 12).expect("valid buckets"),
        );
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::with_opts(labels(Opts::new(name, help))).expect("valid gauge");
            registry.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let inflight = gauge("tractor_inflight_requests", "Inference requests being served");
        let model_ready = gauge("tractor_model_ready", "1 once the model is loaded and serving");
        let model_load_seconds = Gauge::with_opts(labels(Opts::new(
            "tractor_model_load_seconds",
            "Time to fetch, verify and prepare the model",
        )))
        .expect("valid gauge");
        registry.register(Box::new(model_load_seconds.clone())).expect("unique metric");
        let counter = |name: &str, help: &str| {
            let c = IntCounter::with_opts(labels(Opts::new(name, help))).expect("valid counter");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let engine_panics = counter(
            "tractor_engine_panics_total",
            "Panics the engine caught; each failed only its own request",
        );
        let engine_restarts = counter(
            "tractor_engine_worker_restarts_total",
            "Engine worker loops restarted after a panic escaped a batch",
        );
        let engine_workers = gauge("tractor_engine_workers", "Engine workers able to take a batch");
        let engine_failed =
            gauge("tractor_engine_failed", "1 once the engine cannot recover and liveness fails");
        let plan_builds = counter(
            "tractor_engine_plan_builds_total",
            "Engine plans built for a concrete input shape (sequence length)",
        );
        let plan_hits = counter(
            "tractor_engine_plan_cache_hits_total",
            "Requests run on an engine plan kept from an earlier one of the same shape",
        );
        let plan_evictions = counter(
            "tractor_engine_plan_evictions_total",
            "Engine plans dropped to stay within --max-plans",
        );
        let plan_build_seconds = hist(
            "tractor_engine_plan_build_duration_seconds",
            "Time to type and optimize an engine plan for one input shape",
            latency_buckets(),
        );
        Metrics {
            registry,
            plan_builds,
            plan_hits,
            plan_evictions,
            plan_build_seconds,
            requests,
            request_seconds,
            queue_seconds,
            compute_seconds,
            batch_size,
            inflight,
            model_load_seconds,
            model_ready,
            engine_panics,
            engine_restarts,
            engine_workers,
            engine_failed,
        }
    }

    pub fn count_request(&self, protocol: &'static str, outcome: Outcome) {
        self.requests.with_label_values(&[protocol, outcome.label()]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default() + &crate::auth::metrics_text()
    }
}
