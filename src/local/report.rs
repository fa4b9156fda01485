//! What a local `up` prints: one line per event, or JSON lines.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use super::Runner;

/// One line of what happened, for people (or JSON for tools).
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub time: String,
    pub kind: &'static str,
    pub reason: String,
    pub message: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub weights: BTreeMap<String, u32>,
}

impl Runner {
    pub(super) fn emit(
        &self,
        kind: &'static str,
        reason: &str,
        message: &str,
        weights: &[(String, u32)],
    ) {
        let line = Line {
            time: Timestamp::now().strftime("%H:%M:%S").to_string(),
            kind,
            reason: reason.to_string(),
            message: message.to_string(),
            weights: weights.iter().cloned().collect(),
        };
        if self.config.json {
            println!("{}", serde_json::to_string(&line).unwrap_or_default());
        } else {
            let weights = if line.weights.is_empty() {
                String::new()
            } else {
                let w: Vec<String> =
                    line.weights.iter().map(|(v, w)| format!("{v}={w}%")).collect();
                format!("  [{}]", w.join(" "))
            };
            println!("{} {:<22} {}{weights}", line.time, line.reason, line.message);
        }
    }
}
