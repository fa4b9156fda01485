//! How many pods each part runs and how many may go at once: the
//! HorizontalPodAutoscaler of a serving version, and the
//! PodDisruptionBudgets of the versions and the router.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec,
    MetricIdentifier, MetricSpec, MetricTarget, PodsMetricSource, ResourceMetricSource,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{labels, meta, router_name, version_object_name};
use crate::crd::{Autoscaling, ModelDeployment, ValidSpec};
use crate::plan::DesiredVersion;

/// The autoscaling of a version that serves: a version kept at zero
/// replicas (history, or past keepWarm) has none, since an HPA cannot hold
/// a Deployment at zero.
pub fn autoscaled<'a>(spec: &'a ValidSpec, desired: &DesiredVersion) -> Option<&'a Autoscaling> {
    spec.autoscaling.as_ref().filter(|_| desired.replicas > 0)
}

/// The HorizontalPodAutoscaler of one version's Deployment, if it has one.
/// The Deployment is then applied without `replicas`, so that server-side
/// apply leaves the field to the HPA (and, when the field had been ours,
/// the API server resets it to 1 before the HPA raises it to minReplicas).
pub fn version_autoscaler(
    md: &ModelDeployment,
    spec: &ValidSpec,
    desired: &DesiredVersion,
) -> Option<HorizontalPodAutoscaler> {
    let scaling = autoscaled(spec, desired)?;
    let name = version_object_name(md, &desired.version);
    let mut metrics = vec![];
    if let Some(percent) = scaling.target_cpu_percent {
        metrics.push(MetricSpec {
            type_: "Resource".into(),
            resource: Some(ResourceMetricSource {
                name: "cpu".into(),
                target: MetricTarget {
                    type_: "Utilization".into(),
                    average_utilization: Some(percent),
                    ..MetricTarget::default()
                },
            }),
            ..MetricSpec::default()
        });
    }
    if let Some(inflight) = scaling.target_inflight {
        metrics.push(MetricSpec {
            type_: "Pods".into(),
            pods: Some(PodsMetricSource {
                metric: MetricIdentifier { name: INFLIGHT_METRIC.into(), selector: None },
                target: MetricTarget {
                    type_: "AverageValue".into(),
                    average_value: Some(Quantity(inflight.to_string())),
                    ..MetricTarget::default()
                },
            }),
            ..MetricSpec::default()
        });
    }
    Some(HorizontalPodAutoscaler {
        metadata: meta(md, name.clone(), labels(md, "serve", Some(&desired.version))),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name,
            },
            min_replicas: Some(scaling.min_replicas),
            max_replicas: scaling.max_replicas,
            metrics: Some(metrics),
            behavior: None,
        }),
        status: None,
    })
}

/// On a version Deployment whose HPA the operator made.
pub const AUTOSCALED_ANNOTATION: &str = "tractor.dev/autoscaled";

/// The gauge `tractor serve` exports per pod, which a custom-metrics
/// adapter turns into the HPA's Pods metric.
pub const INFLIGHT_METRIC: &str = "tractor_inflight_requests";

/// On a version Deployment whose PodDisruptionBudget the operator made.
pub const BUDGETED_ANNOTATION: &str = "tractor.dev/disruption-budget";

/// Whether a version runs more than one pod, or may be scaled to more: a
/// budget of one pod unavailable then keeps a drain from taking them all.
/// A single pod gets none; its budget would only block the drain or
/// allow everything.
pub fn budgeted(spec: &ValidSpec, desired: &DesiredVersion) -> bool {
    match autoscaled(spec, desired) {
        Some(scaling) => scaling.max_replicas > 1,
        None => desired.replicas > 1,
    }
}

/// One pod of the selected set unavailable at a time. `maxUnavailable`
/// rather than `minAvailable`, so the budget holds as an HPA changes the
/// count.
fn one_at_a_time(
    md: &ModelDeployment,
    name: String,
    selected: std::collections::BTreeMap<String, String>,
) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(md, name, selected.clone()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector { match_labels: Some(selected), match_expressions: None }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

/// The PodDisruptionBudget of one version's pods, if it has one.
pub fn version_disruption_budget(
    md: &ModelDeployment,
    spec: &ValidSpec,
    desired: &DesiredVersion,
) -> Option<PodDisruptionBudget> {
    budgeted(spec, desired).then(|| {
        one_at_a_time(
            md,
            version_object_name(md, &desired.version),
            labels(md, "serve", Some(&desired.version)),
        )
    })
}

/// The router's PodDisruptionBudget, when it runs more than one pod.
pub fn router_disruption_budget(
    md: &ModelDeployment,
    spec: &ValidSpec,
) -> Option<PodDisruptionBudget> {
    (spec.router_replicas > 1)
        .then(|| one_at_a_time(md, router_name(md), labels(md, "route", None)))
}
