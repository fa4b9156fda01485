//! The optimize Job's result: what `tractor optimize --termination-message`
//! writes (to `/dev/termination-log` in a cluster, a file for `tractor up`)
//! and what the planner reads back. One type for both sides.

use serde::{Deserialize, Serialize};

use crate::crd::VersionMetrics;

/// Kubernetes keeps at most 4096 bytes of a termination message; a result
/// is a few hundred bytes, and an error is cut to fit.
pub const MAX_TERMINATION_MESSAGE: usize = 4000;

/// Either the artifact written (with digest, size and the gate's metrics),
/// or why nothing was written.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    #[serde(default)]
    pub metrics: VersionMetrics,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl JobResult {
    /// A written artifact.
    pub fn written(
        uri: String,
        sha256: Option<String>,
        size_bytes: Option<u64>,
        metrics: VersionMetrics,
    ) -> Self {
        JobResult { uri: Some(uri), sha256, size_bytes, metrics, error: None }
    }

    /// Nothing written, and why (the accuracy gate's refusal, a failed pass).
    pub fn refused(reason: impl Into<String>) -> Self {
        let reason: String = reason.into().chars().take(MAX_TERMINATION_MESSAGE).collect();
        JobResult { error: Some(reason), ..JobResult::default() }
    }

    /// The JSON line written to the termination message.
    pub fn to_message(&self) -> String {
        // A struct of strings, numbers and options always serialises.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// Reads a termination message; `None` when it is not a result (a
    /// process that died before writing one leaves its last log line).
    pub fn from_message(message: &str) -> Option<Self> {
        serde_json::from_str(message).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_reads_back_as_written() {
        let metrics = VersionMetrics { accuracy: Some(97.5), ..VersionMetrics::default() };
        let written =
            JobResult::written("s3://b/v2.onnx".into(), Some("ab".into()), Some(10), metrics);
        assert_eq!(JobResult::from_message(&written.to_message()), Some(written));
        let refused = JobResult::refused("accuracy dropped by 3 points");
        assert_eq!(JobResult::from_message(&refused.to_message()), Some(refused));
        assert_eq!(JobResult::from_message("panic: out of memory"), None);
    }

    #[test]
    fn a_long_refusal_fits_a_termination_message() {
        let refused = JobResult::refused("x".repeat(10_000));
        assert!(refused.to_message().len() <= 4096);
    }
}
