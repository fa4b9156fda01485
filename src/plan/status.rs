//! Status conditions from pure builders: `lastTransitionTime` is kept when
//! nothing changed, and time is passed in.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::crd::ModelDeploymentStatus;

/// Sets a condition, keeping `lastTransitionTime` when its status did not change.
pub(super) fn set_condition(
    conditions: &mut Vec<Condition>,
    kind: &str,
    value: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    let status = if value { "True" } else { "False" }.to_string();
    let reason = reason.to_string();
    match conditions.iter_mut().find(|c| c.type_ == kind) {
        Some(existing) => {
            if existing.status != status {
                existing.last_transition_time = now.clone();
            }
            existing.status = status;
            existing.reason = reason;
            existing.message = message.to_string();
            existing.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: kind.to_string(),
            status,
            reason,
            message: message.to_string(),
            observed_generation: generation,
            last_transition_time: now.clone(),
        }),
    }
}

/// Just the status condition for a spec that cannot be used.
pub fn invalid_spec_status(
    previous: &ModelDeploymentStatus,
    error: &crate::crd::SpecError,
    generation: Option<i64>,
    now: Timestamp,
) -> ModelDeploymentStatus {
    let mut status = previous.clone();
    status.observed_generation = generation;
    let message = format!("invalid spec: {error}");
    status.message = Some(message.clone());
    let now = Time(now);
    let serving = status.stable.as_ref().is_some_and(crate::crd::VersionStatus::serving);
    set_condition(
        &mut status.conditions,
        "Degraded",
        true,
        "InvalidSpec",
        &message,
        generation,
        &now,
    );
    set_condition(
        &mut status.conditions,
        "Ready",
        serving,
        if serving { "Serving" } else { "NotServing" },
        &message,
        generation,
        &now,
    );
    status
}
