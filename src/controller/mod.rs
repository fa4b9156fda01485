//! `tractor controller`: reconciles `ModelDeployment`s on
//! `kube::runtime::Controller`. It observes, asks [`crate::plan::plan`] what
//! should be, and applies that with server-side apply; it decides nothing.

pub mod access;
pub mod desired;
pub mod leader;
mod metrics;
pub mod objects;
mod observe;
mod own_pod;
pub mod render;
pub mod router_stats;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::{Controller, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::crd::{ModelDeployment, ModelDeploymentStatus, SpecError};
use crate::plan::{DesiredVersion, EventKind, Plan};
pub use metrics::ControllerMetrics;
pub use objects::OperatorConfig;
pub use observe::Observation;
pub use own_pod::{OwnImageError, own_image};
pub use router_stats::{HttpRouterStats, RouterStats, RouterStatsError};

/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "tractor";
/// A spec that cannot be used is looked at again after this long (or when edited).
const INVALID_SPEC_RETRY: Duration = Duration::from_secs(300);
/// Back-off after a failed reconcile; kube-rs also requeues on every watch event.
const ERROR_RETRY: Duration = Duration::from_secs(15);

/// Errors of one reconcile, named after the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {what}: {source}")]
    Observe {
        what: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("applying {kind} {name}: {source}")]
    Apply {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting {kind} {name}: {source}")]
    Delete {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("patching the status: {0}")]
    PatchStatus(#[source] kube::Error),
    #[error("the ModelDeployment has no namespace")]
    NoNamespace,
    #[error("making the router's token: {0}")]
    Random(#[source] access::NoRandomness),
}

impl Error {
    /// The `error` label of the error metric: a fixed word, never the message.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Observe { .. } => "observe",
            Error::Apply { .. } => "apply",
            Error::Delete { .. } => "delete",
            Error::PatchStatus(_) => "patch_status",
            Error::NoNamespace => "no_namespace",
            Error::Random(_) => "random",
        }
    }
}

/// What every reconcile shares. The HTTP side (metrics, health) gets only
/// the metrics, never the client.
pub struct Context {
    pub client: Client,
    pub config: OperatorConfig,
    pub metrics: ControllerMetrics,
    pub router: Arc<dyn RouterStats>,
    pub reporter: Reporter,
    /// The clock, passed to the planner; tests pin it.
    pub now: Box<dyn Fn() -> Timestamp + Send + Sync>,
}

/// How the controller names `ModelDeployment`s to the API: watched and
/// written as [`DynamicObject`]s, so that an object the types cannot read
/// still arrives, and is reported on, instead of failing the whole watch
/// (and, at start, the controller) for every other object.
pub fn model_deployment_resource() -> ApiResource {
    ApiResource::erase::<ModelDeployment>(&())
}

/// Reconciles one `ModelDeployment` as the watch delivers it: read into its
/// types, then [`reconcile`]; an object that cannot be read gets a Degraded
/// condition and an Event naming the field, and is looked at again when
/// edited.
pub async fn reconcile_object(
    object: Arc<DynamicObject>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let json = serde_json::to_value(object.as_ref()).unwrap_or_default();
    match crate::crd::parse_object(json) {
        Ok(md) => reconcile(Arc::new(md), ctx).await,
        Err(unreadable) => {
            let started = Instant::now();
            let span = tracing::info_span!("reconcile", namespace = object.namespace().unwrap_or_default(), name = %object.name_any());
            let result = tracing::Instrument::instrument(
                report_unreadable(&object, &unreadable, &ctx),
                span,
            )
            .await;
            record(&ctx, started, if result.is_ok() { "invalid" } else { "error" });
            result
        }
    }
}

/// Reconciles one `ModelDeployment`: a span, a timer, and the hand-off.
pub async fn reconcile(md: Arc<ModelDeployment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let span = tracing::info_span!("reconcile", namespace = md.namespace().unwrap_or_default(), name = %md.name_any());
    let result = tracing::Instrument::instrument(reconcile_inner(&md, &ctx), span).await;
    record(&ctx, started, if result.is_ok() { "ok" } else { "error" });
    result
}

fn record(ctx: &Context, started: Instant, outcome: &'static str) {
    ctx.metrics.reconciles.with_label_values(&[outcome]).inc();
    ctx.metrics.duration.with_label_values(&[outcome]).observe(started.elapsed().as_secs_f64());
}

/// Logs, counts, requeues.
pub fn error_policy(object: Arc<DynamicObject>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(name = %object.name_any(), %error, "reconcile failed; retrying");
    ctx.metrics.errors.with_label_values(&[error.metric_label()]).inc();
    Action::requeue(ERROR_RETRY)
}

/// An object whose spec or status the types cannot read: the Degraded
/// condition goes into the status it has (read as far as it reads), through
/// the untyped API, so the write cannot fail on the very field it reports.
async fn report_unreadable(
    object: &DynamicObject,
    unreadable: &SpecError,
    ctx: &Context,
) -> Result<Action, Error> {
    let namespace = object.namespace().ok_or(Error::NoNamespace)?;
    tracing::warn!(field = %unreadable.field, reason = %unreadable.reason, "unreadable ModelDeployment");
    let stored = object.data.get("status").cloned().unwrap_or(serde_json::Value::Null);
    let target = Target {
        namespace: &namespace,
        name: object.name_any(),
        reference: object.object_ref(&model_deployment_resource()),
        status: serde_json::from_value(stored.clone()).unwrap_or_default(),
        stored_status: stored,
        generation: object.metadata.generation,
    };
    report_invalid(ctx, &target, unreadable).await
}

/// The `ModelDeployment` a status or an event is about, as far as a
/// status write needs it.
struct Target<'a> {
    namespace: &'a str,
    name: String,
    reference: ObjectReference,
    /// The status as read ([`Default`] when it cannot be).
    status: ModelDeploymentStatus,
    /// The status as stored, which the merge patch is computed against.
    stored_status: serde_json::Value,
    generation: Option<i64>,
}

impl<'a> Target<'a> {
    fn of(md: &ModelDeployment, namespace: &'a str) -> Target<'a> {
        let status = md.status.clone().unwrap_or_default();
        Target {
            namespace,
            name: md.name_any(),
            reference: md.object_ref(&()),
            stored_status: serde_json::to_value(&status).unwrap_or_default(),
            status,
            generation: md.metadata.generation,
        }
    }
}

/// A spec that cannot be used: the Degraded condition and one Event, both
/// only when the reason is new, so requeues and the watch event of the
/// status write itself repeat nothing.
async fn report_invalid(
    ctx: &Context,
    target: &Target<'_>,
    invalid: &SpecError,
) -> Result<Action, Error> {
    let status =
        crate::plan::invalid_spec_status(&target.status, invalid, target.generation, (ctx.now)());
    if status != target.status {
        patch_status(ctx, target, &status).await?;
        publish(
            ctx,
            &target.reference,
            EventKind::Warning,
            "InvalidSpec",
            &format!("invalid spec: {invalid}"),
        )
        .await;
    }
    Ok(Action::requeue(INVALID_SPEC_RETRY))
}

async fn reconcile_inner(md: &ModelDeployment, ctx: &Context) -> Result<Action, Error> {
    let namespace = md.namespace().ok_or(Error::NoNamespace)?;
    let now = (ctx.now)();
    let checked = crate::crd::validate(&md.spec)
        .and_then(|spec| access::check_image(md, &ctx.config).map(|()| spec))
        .and_then(|spec| access::check_jwks_url(md, &ctx.config).map(|()| spec));
    let spec = match checked {
        Ok(spec) => spec,
        Err(invalid) => {
            tracing::warn!(field = %invalid.field, reason = %invalid.reason, "invalid spec");
            return report_invalid(ctx, &Target::of(md, &namespace), &invalid).await;
        }
    };
    let observation = observe::observe(ctx, md, &namespace, &spec).await?;
    let plan = crate::plan::plan(&spec, &observation.observed, now);
    ctx.metrics.record_rollout(
        &namespace,
        &md.name_any(),
        plan.status.canary.as_ref(),
        observation.observed.figures.as_ref(),
    );
    apply(ctx, md, &namespace, &spec, &observation, &plan).await?;
    Ok(Action::requeue(plan.requeue_after))
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

async fn delete<K>(api: &Api<K>, name: &str, kind: &'static str) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(source) => Err(Error::Delete { kind, name: name.to_string(), source }),
    }
}

/// The versions in `made` (they have an object) that the plan no longer
/// wants one for: gone from the plan, or `keeps` says no.
fn unwanted<'a>(
    made: &'a [String],
    plan: &'a Plan,
    keeps: impl Fn(&DesiredVersion) -> bool + 'a,
) -> impl Iterator<Item = &'a String> + 'a {
    made.iter().filter(move |v| !plan.versions.iter().any(|d| &d.version == *v && keeps(d)))
}

/// Carries a plan out, in an order that never leaves traffic without a
/// backend: versions first, then routes, then removals, then the status.
async fn apply(
    ctx: &Context,
    md: &ModelDeployment,
    namespace: &str,
    spec: &crate::crd::ValidSpec,
    observation: &Observation,
    plan: &Plan,
) -> Result<(), Error> {
    let client = ctx.client.clone();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);

    // Made for every reconcile that writes it, and used only by the first:
    // the Secret is created once and never replaced.
    let token = if plan.versions.is_empty() && plan.weights.is_empty() {
        String::new()
    } else {
        access::new_token().map_err(Error::Random)?
    };
    // Before the Deployment takes `replicas` back: an HPA that outlived it
    // would scale a version the plan keeps at zero.
    let autoscalers: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), namespace);
    let keeps = |d: &DesiredVersion| objects::autoscaled(spec, d).is_some();
    for name in unwanted(&observation.autoscaled_versions, plan, keeps)
        .map(|v| objects::version_object_name(md, v))
    {
        delete(&autoscalers, &name, "HorizontalPodAutoscaler").await?;
    }
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), namespace);
    let keeps = |d: &DesiredVersion| objects::budgeted(spec, d);
    for name in unwanted(&observation.budgeted_versions, plan, keeps)
        .map(|v| objects::version_object_name(md, v))
    {
        delete(&budgets, &name, "PodDisruptionBudget").await?;
    }
    if !plan.weights.is_empty() && objects::router_disruption_budget(md, spec).is_none() {
        // Only when the spec asks for one router: nothing records whether
        // a budget was made before, and a 404 is cheap.
        delete(&budgets, &objects::router_name(md), "PodDisruptionBudget").await?;
    }
    for object in desired::desired(md, spec, plan, &ctx.config, &token) {
        desired::write(&client, namespace, &object).await?;
    }
    for version in observation.serving_versions.iter() {
        if !plan.versions.iter().any(|d| &d.version == version) {
            let name = objects::version_object_name(md, version);
            delete(&services, &name, "Service").await?;
            delete(&deployments, &name, "Deployment").await?;
            if md.spec.serving.processing.is_some() {
                // The name it was created under: one function for both.
                let cm = objects::processing_configmap_name(md, version);
                delete(&configmaps, &cm, "ConfigMap").await?;
            }
        }
    }
    if let Some(version) = &observation.job_version
        && plan.job.as_ref().map(|j| &j.version) != Some(version)
    {
        let name = objects::job_name(md, version);
        delete(&jobs, &name, "Job").await?;
        delete(&configmaps, &name, "ConfigMap").await?;
    }
    let target = Target::of(md, namespace);
    if plan.status != target.status {
        patch_status(ctx, &target, &plan.status).await?;
    }
    for event in &plan.events {
        tracing::info!(reason = event.reason, message = %event.message, "rollout event");
        publish(ctx, &target.reference, event.kind, event.reason, &event.message).await;
    }
    if plan.clear_requests {
        let api = model_deployments(client.clone(), namespace);
        let patch = json!({ "metadata": { "annotations": {
            crate::crd::PROMOTE_ANNOTATION: null, crate::crd::ABORT_ANNOTATION: null } } });
        api.patch(&md.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(
            |source| Error::Apply { kind: "ModelDeployment", name: md.name_any(), source },
        )?;
    }
    if plan.reset_figures
        && let Err(e) = ctx.router.reset(md).await
    {
        // The next window then also holds older requests: judged a little
        // late, never wrongly skipped, so this is not worth a retry.
        tracing::warn!(error = %e, "could not reset the router's statistics");
    }
    Ok(())
}

/// `ModelDeployment`s in a namespace, written untyped: the API server's
/// answer to a write is read back, and must not fail on a field someone
/// broke in the meantime.
fn model_deployments(client: Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client, namespace, &model_deployment_resource())
}

async fn patch_status(
    ctx: &Context,
    target: &Target<'_>,
    status: &ModelDeploymentStatus,
) -> Result<(), Error> {
    let api = model_deployments(ctx.client.clone(), target.namespace);
    let new = serde_json::to_value(status).unwrap_or_default();
    let patch = json!({ "status": merge_patch(&target.stored_status, &new) });
    api.patch_status(&target.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(Error::PatchStatus)
}

/// The JSON merge patch (RFC 7386) that turns `old` into `new`. Optional
/// fields are left out when empty, and in a merge patch a missing key means
/// "keep it": a field that went away must be sent as `null`, or a finished
/// canary would stay in the status forever.
pub fn merge_patch(old: &serde_json::Value, new: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            let mut patch = serde_json::Map::new();
            for (key, value) in new {
                match old.get(key) {
                    Some(previous) if previous == value => {}
                    Some(previous) => {
                        patch.insert(key.clone(), merge_patch(previous, value));
                    }
                    None => {
                        patch.insert(key.clone(), value.clone());
                    }
                }
            }
            for key in old.keys() {
                if !new.contains_key(key) {
                    patch.insert(key.clone(), Value::Null);
                }
            }
            Value::Object(patch)
        }
        (_, new) => new.clone(),
    }
}

/// Records a Kubernetes Event; a failure to record is logged, never fatal.
async fn publish(
    ctx: &Context,
    reference: &ObjectReference,
    kind: EventKind,
    reason: &str,
    message: &str,
) {
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    let event = KubeEvent {
        type_: match kind {
            EventKind::Normal => EventType::Normal,
            EventKind::Warning => EventType::Warning,
        },
        reason: reason.to_string(),
        note: Some(message.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, reference).await {
        tracing::warn!(error = %e, reason, "could not record an event");
    }
}

/// How many reconciles run at once in one watch, unless told otherwise.
///
/// kube-rs's own default is unbounded. With 1,000 ModelDeployments
/// (`cargo bench --bench controller`) that starts every reconcile together:
/// each then reads an object the watch has not yet updated with its own
/// status write, and writes the same transition again. Measured: 16
/// reconciles and up to 12 duplicate Events per object, 130-143 MB; with
/// 16 at once, 3.1 reconciles per object, one Event per transition, 35 MB.
/// Reconciles wait on the API far more than they compute, so a few per
/// core keep the API busy without queueing in the controller.
pub const DEFAULT_CONCURRENT_RECONCILES: u16 = 16;

/// Runs the controller over the whole cluster until SIGTERM or Ctrl-C,
/// [`DEFAULT_CONCURRENT_RECONCILES`] at a time.
///
/// # Errors
/// Only failures to start; reconcile errors are retried.
pub async fn run(ctx: Arc<Context>) -> Result<(), kube::Error> {
    run_in(ctx, None, DEFAULT_CONCURRENT_RECONCILES).await
}

/// Runs the controller until SIGTERM or Ctrl-C: over the whole cluster
/// when `namespaces` is empty, else one watch per namespace, so that a
/// namespaced install (a Role in each, no ClusterRole) needs no
/// cluster-wide list or watch. At most `concurrency` reconciles run at once
/// in each watch (0 would mean unbounded to kube-rs; it is taken as 1).
///
/// # Errors
/// Only failures to start; reconcile errors are retried.
pub async fn run_watching(
    ctx: Arc<Context>,
    namespaces: &[String],
    concurrency: u16,
) -> Result<(), kube::Error> {
    let concurrency = concurrency.max(1);
    if namespaces.is_empty() {
        return run_in(ctx, None, concurrency).await;
    }
    let runs = namespaces.iter().map(|ns| run_in(ctx.clone(), Some(ns.as_str()), concurrency));
    futures::future::try_join_all(runs).await.map(|_| ())
}

/// An API over every namespace, or one.
fn api_in<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

async fn run_in(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    concurrency: u16,
) -> Result<(), kube::Error> {
    let client = ctx.client.clone();
    let resource = model_deployment_resource();
    let mds: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    // Fail early with a clear message when the CRD is not installed (or a
    // watched namespace is not granted); read untyped, so one object the
    // types cannot read does not stop the start.
    mds.list(&kube::api::ListParams::default().limit(1)).await?;
    let selector = watcher::Config::default().labels(&format!("{}=tractor", objects::MANAGED_BY));
    Controller::new_with(mds, watcher::Config::default(), resource)
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .owns(api_in::<Deployment>(&client, namespace), selector.clone())
        .owns(api_in::<Service>(&client, namespace), selector.clone())
        .owns(api_in::<Job>(&client, namespace), selector.clone())
        .owns(api_in::<ConfigMap>(&client, namespace), selector)
        .shutdown_on_signal()
        .run(reconcile_object, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller stream error");
            }
        })
        .await;
    tracing::info!("controller stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::merge_patch;
    use serde_json::json;

    #[test]
    fn merge_patches_null_what_went_away_and_skip_what_did_not_change() {
        let old = json!({ "phase": "Progressing", "canary": { "version": "2", "analysis": { "verdict": "Fail" } },
                          "stable": { "version": "1" } });
        let new = json!({ "phase": "RolledBack", "stable": { "version": "1" } });
        assert_eq!(merge_patch(&old, &new), json!({ "phase": "RolledBack", "canary": null }));
        let new = json!({ "phase": "Progressing", "canary": { "version": "2" }, "stable": { "version": "1" } });
        assert_eq!(merge_patch(&old, &new), json!({ "canary": { "analysis": null } }));
    }
}
