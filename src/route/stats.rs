//! Per-version figures: a window the controller reads and resets, and
//! cumulative Prometheus series.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

use crate::contract::routes::{StatsReport, VersionStats};

/// Latencies kept per version per window; beyond it, reservoir sampling
/// keeps an unbiased sample so percentiles stay honest at any rate.
const WINDOW_SAMPLES: usize = 50_000;

#[derive(Default)]
struct Window {
    requests: u64,
    errors: u64,
    /// Milliseconds, a uniform sample of the window's requests.
    latencies: Vec<f64>,
    agreed: u64,
    compared: u64,
}

impl Window {
    fn sample(&mut self, ms: f64) {
        if self.latencies.len() < WINDOW_SAMPLES {
            self.latencies.push(ms);
        } else {
            let slot = fastrand::u64(0..self.requests.max(1)) as usize;
            if slot < WINDOW_SAMPLES {
                self.latencies[slot] = ms;
            }
        }
    }

    fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
        if sorted.is_empty() {
            return None;
        }
        let idx = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        Some(sorted[idx.clamp(1, sorted.len()) - 1])
    }

    fn report(&self) -> VersionStats {
        let mut sorted = self.latencies.clone();
        sorted.sort_by(f64::total_cmp);
        VersionStats {
            requests: self.requests,
            errors: self.errors,
            latency_p50_ms: Window::percentile(&sorted, 50.0),
            latency_p99_ms: Window::percentile(&sorted, 99.0),
            agreement: (self.compared > 0).then(|| self.agreed as f64 / self.compared as f64),
        }
    }
}

pub struct Stats {
    windows: Mutex<BTreeMap<String, Window>>,
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
}

impl Default for Stats {
    fn default() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "tractor_route_requests_total",
                "Requests the router sent, by version, kind and outcome",
            ),
            &["version", "kind", "outcome"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "tractor_route_request_duration_seconds",
                "Backend latency seen by the router",
            )
            .buckets(prometheus::exponential_buckets(100e-6, 2.0, 18).expect("valid buckets")),
            &["version"],
        )
        .expect("valid metric");
        registry.register(Box::new(requests.clone())).expect("unique metric");
        registry.register(Box::new(latency.clone())).expect("unique metric");
        Stats { windows: Mutex::new(BTreeMap::new()), registry, requests, latency }
    }
}

impl Stats {
    /// One request the caller waited for.
    pub fn record(&self, version: &str, latency: Duration, failed: bool) {
        let outcome = if failed { "error" } else { "success" };
        self.requests.with_label_values(&[version, "primary", outcome]).inc();
        self.latency.with_label_values(&[version]).observe(latency.as_secs_f64());
        if let Ok(mut windows) = self.windows.lock() {
            let w = windows.entry(version.to_string()).or_default();
            w.requests += 1;
            w.errors += u64::from(failed);
            w.sample(latency.as_secs_f64() * 1e3);
        }
    }

    /// A shadow copy: it counts for the version's figures too, so a canary
    /// that only gets shadow traffic still has error rates and latencies.
    pub fn record_shadow(&self, version: &str, latency: Duration, failed: bool) {
        let outcome = if failed { "error" } else { "success" };
        self.requests.with_label_values(&[version, "shadow", outcome]).inc();
        if let Ok(mut windows) = self.windows.lock() {
            let w = windows.entry(version.to_string()).or_default();
            w.requests += 1;
            w.errors += u64::from(failed);
            w.sample(latency.as_secs_f64() * 1e3);
        }
    }

    pub fn record_agreement(&self, version: &str, agreed: u64, compared: u64) {
        if let Ok(mut windows) = self.windows.lock() {
            let w = windows.entry(version.to_string()).or_default();
            w.agreed += agreed;
            w.compared += compared;
        }
    }

    pub fn report(&self) -> StatsReport {
        let windows =
            self.windows.lock().map(|w| w.iter().map(|(k, v)| (k.clone(), v.report())).collect());
        StatsReport { versions: windows.unwrap_or_default() }
    }

    pub fn reset(&self) {
        if let Ok(mut windows) = self.windows.lock() {
            windows.clear();
        }
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_count_errors_percentiles_and_agreement_then_reset() {
        let stats = Stats::default();
        for i in 1..=100u64 {
            stats.record("2", Duration::from_millis(i), i % 10 == 0);
        }
        stats.record_agreement("2", 9, 10);
        let report = stats.report();
        let v = report.versions["2"];
        assert_eq!((v.requests, v.errors), (100, 10));
        assert_eq!(v.latency_p50_ms, Some(50.0));
        assert_eq!(v.latency_p99_ms, Some(99.0));
        assert_eq!(v.agreement, Some(0.9));
        assert!(stats.render().contains("tractor_route_requests_total"));
        stats.reset();
        assert!(stats.report().versions.is_empty());
    }
}
