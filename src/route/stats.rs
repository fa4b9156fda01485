//! Per-version figures: a window the controller reads and resets, and
//! cumulative Prometheus series.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

use crate::contract::routes::{StatsReport, VersionStats};
use crate::latency;

struct Window {
    requests: u64,
    errors: u64,
    /// Microseconds, every request of the window.
    latencies: Histogram<u64>,
    agreed: u64,
    compared: u64,
}

impl Default for Window {
    fn default() -> Self {
        Window { requests: 0, errors: 0, latencies: latency::histogram(), agreed: 0, compared: 0 }
    }
}

impl Window {
    fn count(&mut self, latency: Duration, failed: bool) {
        self.requests += 1;
        self.errors += u64::from(failed);
        latency::record(&mut self.latencies, latency);
    }

    /// Nearest-rank percentile in milliseconds. The bucket's upper bound is
    /// reported, so a canary is judged at most 0.1% slower, never faster.
    fn percentile(&self, quantile: f64) -> Option<f64> {
        (!self.latencies.is_empty())
            .then(|| self.latencies.value_at_quantile(quantile) as f64 / 1e3)
    }

    fn report(&self) -> VersionStats {
        VersionStats {
            requests: self.requests,
            errors: self.errors,
            latency_p50_ms: self.percentile(0.50),
            latency_p99_ms: self.percentile(0.99),
            agreement: (self.compared > 0).then(|| self.agreed as f64 / self.compared as f64),
            compared: self.compared,
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
        self.latency.with_label_values(&[version]).observe(latency.as_secs_f64());
        self.count(version, "primary", latency, failed);
    }

    /// A shadow copy: it counts for the version's figures too, so a canary
    /// that only gets shadow traffic still has error rates and latencies.
    pub fn record_shadow(&self, version: &str, latency: Duration, failed: bool) {
        self.count(version, "shadow", latency, failed);
    }

    fn count(&self, version: &str, kind: &str, latency: Duration, failed: bool) {
        let outcome = if failed { "error" } else { "success" };
        self.requests.with_label_values(&[version, kind, outcome]).inc();
        if let Ok(mut windows) = self.windows.lock() {
            windows.entry(version.to_string()).or_default().count(latency, failed);
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
        // Within the histogram's 0.1%, and never below the true rank.
        let near =
            |got: Option<f64>, want: f64| got.is_some_and(|g| g >= want && g <= want * 1.001);
        assert!(near(v.latency_p50_ms, 50.0), "{:?}", v.latency_p50_ms);
        assert!(near(v.latency_p99_ms, 99.0), "{:?}", v.latency_p99_ms);
        assert_eq!(v.agreement, Some(0.9));
        assert!(stats.render().contains("tractor_route_requests_total"));
        stats.reset();
        assert!(stats.report().versions.is_empty());
    }

    #[test]
    fn every_request_counts_in_the_percentiles_at_any_rate() {
        // 99,000 fast requests and 1,000 slow ones: the old sample would
        // have kept 50,000; the histogram keeps every one.
        let stats = Stats::default();
        for i in 0..100_000u64 {
            let ms = if i % 100 == 99 { 250 } else { 2 };
            stats.record_shadow("3", Duration::from_millis(ms), false);
        }
        let v = stats.report().versions["3"];
        assert_eq!(v.requests, 100_000);
        assert!(v.latency_p50_ms.is_some_and(|p| (2.0..=2.002).contains(&p)), "{v:?}");
        assert!(v.latency_p99_ms.is_some_and(|p| (2.0..=2.002).contains(&p)), "{v:?}");
        stats.record_shadow("3", Duration::from_millis(250), false);
        let v = stats.report().versions["3"];
        assert!(v.latency_p99_ms.is_some_and(|p| (250.0..=250.25).contains(&p)), "{v:?}");
        assert_eq!(Stats::default().report().versions.get("3"), None);
    }
}
