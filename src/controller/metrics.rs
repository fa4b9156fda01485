//! The controller's own metrics: its reconciles, and each rollout's canary
//! as the analysis sees it (weight and the last window's figures), so a
//! dashboard shows what the controller judged, not only the traffic.

use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::crd::CanaryStatus;
use crate::plan::CanaryFigures;

#[derive(Clone)]
pub struct ControllerMetrics {
    pub registry: Registry,
    pub reconciles: IntCounterVec,
    pub errors: IntCounterVec,
    pub duration: HistogramVec,
    /// Percent of live traffic on the canary, 0 without one.
    pub canary_weight: GaugeVec,
    /// The figures of the last analysis window read from the routers, by
    /// `figure`: requests, error_rate, latency_p99_seconds, agreement.
    pub canary_analysis: GaugeVec,
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new("tractor_reconciles_total", "Reconciles of ModelDeployments by outcome"),
            &["outcome"],
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new(
                "tractor_reconcile_errors_total",
                "Failed reconciles by the step that failed",
            ),
            &["error"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new("tractor_reconcile_duration_seconds", "Time of one reconcile")
                // A reconcile against a quick API takes a few ms (the
                // controller benchmark): buckets from 2.5 ms tell them apart.
                .buckets(vec![
                    0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
            &["outcome"],
        )
        .expect("valid metric");
        let canary_weight = GaugeVec::new(
            Opts::new(
                "tractor_canary_weight",
                "Percent of live traffic the controller gives a ModelDeployment's canary (0: none)",
            ),
            &["namespace", "deployment"],
        )
        .expect("valid metric");
        let canary_analysis = GaugeVec::new(
            Opts::new(
                "tractor_canary_analysis",
                "The canary's figures in the last analysis window, as the controller judged them",
            ),
            &["namespace", "deployment", "figure"],
        )
        .expect("valid metric");
        for m in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(errors.clone()),
            Box::new(duration.clone()),
            Box::new(canary_weight.clone()),
            Box::new(canary_analysis.clone()),
        ] {
            registry.register(m).expect("unique metric");
        }
        ControllerMetrics { registry, reconciles, errors, duration, canary_weight, canary_analysis }
    }
}

impl ControllerMetrics {
    /// The canary of one ModelDeployment after a reconcile's plan, and the
    /// figures its analysis read (none: the figures are removed, so a
    /// dashboard never shows an old window as the current one).
    pub fn record_rollout(
        &self,
        namespace: &str,
        deployment: &str,
        canary: Option<&CanaryStatus>,
        figures: Option<&CanaryFigures>,
    ) {
        let weight = canary.map_or(0, |c| c.weight);
        self.canary_weight.with_label_values(&[namespace, deployment]).set(f64::from(weight));
        for (figure, value) in window(figures) {
            let labels = [namespace, deployment, figure];
            match value {
                Some(v) => self.canary_analysis.with_label_values(&labels).set(v),
                None => {
                    // Absent already is fine.
                    let _ = self.canary_analysis.remove_label_values(&labels);
                }
            }
        }
    }
}

/// Each `figure` label of `canary_analysis`, with its value in this window
/// (none without a window, or where it was not measured).
fn window(figures: Option<&CanaryFigures>) -> [(&'static str, Option<f64>); 4] {
    let f = figures;
    [
        ("requests", f.map(|f| f.requests as f64)),
        ("error_rate", f.filter(|f| f.requests > 0).map(|f| f.errors as f64 / f.requests as f64)),
        ("latency_p99_seconds", f.and_then(|f| f.latency_p99_ms).map(|ms| ms / 1e3)),
        ("agreement", f.and_then(|f| f.agreement)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gathered(metrics: &ControllerMetrics) -> String {
        let mut text = String::new();
        prometheus::TextEncoder::new().encode_utf8(&metrics.registry.gather(), &mut text).unwrap();
        text
    }

    #[test]
    fn a_canary_and_its_window_become_gauges_and_go_with_them() {
        let metrics = ControllerMetrics::default();
        let canary: CanaryStatus =
            serde_json::from_value(serde_json::json!({ "version": "2", "weight": 20, "step": 1 }))
                .unwrap();
        let figures =
            CanaryFigures { requests: 200, errors: 5, latency_p99_ms: Some(42.0), agreement: None };
        metrics.record_rollout("models", "digits", Some(&canary), Some(&figures));
        let text = gathered(&metrics);
        for line in [
            r#"tractor_canary_weight{deployment="digits",namespace="models"} 20"#,
            r#"tractor_canary_analysis{deployment="digits",figure="requests",namespace="models"} 200"#,
            r#"tractor_canary_analysis{deployment="digits",figure="error_rate",namespace="models"} 0.025"#,
            r#"tractor_canary_analysis{deployment="digits",figure="latency_p99_seconds",namespace="models"} 0.042"#,
        ] {
            assert!(text.contains(line), "no {line} in\n{text}");
        }
        assert!(!text.contains(r#"figure="agreement""#), "no agreement measured: {text}");

        // Promoted: no canary, no window.
        metrics.record_rollout("models", "digits", None, None);
        let text = gathered(&metrics);
        assert!(
            text.contains(r#"tractor_canary_weight{deployment="digits",namespace="models"} 0"#)
        );
        assert!(!text.contains("tractor_canary_analysis{"), "{text}");
    }
}
