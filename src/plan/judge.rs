//! One analysis interval's figures against the spec's thresholds.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::CanaryFigures;
use crate::crd::{AnalysisResult, Verdict};

/// Judges one interval's figures against the thresholds.
pub fn judge(
    analysis: &crate::crd::Analysis,
    figures: &CanaryFigures,
    now: Time,
) -> AnalysisResult {
    let mut result = AnalysisResult {
        time: now,
        verdict: Verdict::Pass,
        requests: figures.requests,
        errors: figures.errors,
        latency_p99_ms: figures.latency_p99_ms,
        agreement: figures.agreement,
        reason: String::new(),
    };
    if figures.requests < analysis.min_requests {
        result.verdict = Verdict::NoData;
        result.reason = format!(
            "{} requests, fewer than minRequests {} (onNoData: {:?})",
            figures.requests, analysis.min_requests, analysis.on_no_data
        );
        return result;
    }
    let error_rate = figures.errors as f64 / figures.requests as f64;
    let mut findings = vec![format!("{} requests", figures.requests)];
    let mut failed = Vec::new();
    match analysis.max_error_rate {
        Some(max) if error_rate > max => {
            failed.push(format!("error rate {:.2}% > {:.2}%", error_rate * 100.0, max * 100.0))
        }
        Some(max) => {
            findings.push(format!("error rate {:.2}% <= {:.2}%", error_rate * 100.0, max * 100.0))
        }
        None => findings.push(format!("error rate {:.2}%", error_rate * 100.0)),
    }
    if let Some(max) = analysis.max_latency_p99 {
        let max_ms = max.as_secs_f64() * 1e3;
        match figures.latency_p99_ms {
            Some(p99) if p99 > max_ms => failed.push(format!("p99 {p99:.1} ms > {max_ms:.1} ms")),
            Some(p99) => findings.push(format!("p99 {p99:.1} ms <= {max_ms:.1} ms")),
            None => findings.push("p99 not measured".into()),
        }
    }
    if let Some(min) = analysis.min_agreement {
        match figures.agreement {
            Some(a) if a < min => {
                failed.push(format!("agreement {:.1}% < {:.1}%", a * 100.0, min * 100.0))
            }
            Some(a) => findings.push(format!("agreement {:.1}% >= {:.1}%", a * 100.0, min * 100.0)),
            None => findings.push("agreement not measured (no shadow traffic)".into()),
        }
    }
    if failed.is_empty() {
        result.reason = format!("passed: {}", findings.join(", "));
    } else {
        result.verdict = Verdict::Fail;
        result.reason = format!("failed: {} ({})", failed.join(", "), findings.join(", "));
    }
    result
}
