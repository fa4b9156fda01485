//! Reads what the planner needs from the cluster: the versions' pods, the
//! optimization Job and its result, the registry, the router's figures.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::objects::{self, COMPONENT, DEPLOYMENT_LABEL, VERSION_LABEL};
use super::{Context, Error};
use crate::crd::{ModelDeployment, ModelVersion, ValidSpec};
use crate::plan::{JobState, Observed, Registered};

/// What was observed, plus what the executor itself needs to clean up.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub observed: Observed,
    /// Versions that have a serving Deployment now.
    pub serving_versions: Vec<String>,
    /// Versions whose Deployment says the operator made it an HPA.
    pub autoscaled_versions: Vec<String>,
    /// Versions whose Deployment says the operator made it a
    /// PodDisruptionBudget.
    pub budgeted_versions: Vec<String>,
    /// The version of the optimization Job that exists, if any.
    pub job_version: Option<String>,
}

/// Every version the status or the spec names, to map sanitized labels back.
fn known_versions(md: &ModelDeployment, spec: &ValidSpec) -> Vec<String> {
    let mut known = vec![spec.version.clone()];
    if let Some(status) = &md.status {
        known.extend(status.stable.iter().map(|s| s.version.clone()));
        known.extend(status.canary.iter().map(|c| c.version.clone()));
        known.extend(status.history.iter().map(|h| h.version.clone()));
    }
    known
}

fn label_selector(md: &ModelDeployment, component: &str) -> ListParams {
    ListParams::default().labels(&format!(
        "{DEPLOYMENT_LABEL}={},{COMPONENT}={component}",
        objects::object_name(&[&md.name_any()])
    ))
}

pub async fn observe(
    ctx: &Context,
    md: &ModelDeployment,
    namespace: &str,
    spec: &ValidSpec,
) -> Result<Observation, Error> {
    let client = ctx.client.clone();
    let known = known_versions(md, spec);
    let raw = |label: &str| {
        known
            .iter()
            .find(|v| objects::object_name(&[v.as_str()]) == label)
            .cloned()
            .unwrap_or_else(|| label.to_string())
    };

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let list = deployments
        .list(&label_selector(md, "serve"))
        .await
        .map_err(|source| Error::Observe { what: "serving Deployments", source })?;
    let mut ready = BTreeMap::new();
    let mut failing = BTreeMap::new();
    let mut serving_versions = Vec::new();
    let mut autoscaled_versions = Vec::new();
    let mut budgeted_versions = Vec::new();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    for d in list {
        let Some(label) = d.labels().get(VERSION_LABEL).cloned() else { continue };
        let version = raw(&label);
        let count = d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
        let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        if count == 0 && wanted > 0 {
            // Why the pods do not come up, in the words of `tractor serve`.
            let selector = format!(
                "{},{VERSION_LABEL}={label}",
                label_selector(md, "serve").label_selector.unwrap_or_default()
            );
            let list = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|source| Error::Observe { what: "serving pods", source })?;
            if let Some(message) = last_termination_message(&list.items) {
                failing.insert(version.clone(), message);
            }
        }
        ready.insert(version.clone(), count);
        if d.annotations().contains_key(objects::AUTOSCALED_ANNOTATION) {
            autoscaled_versions.push(version.clone());
        }
        if d.annotations().contains_key(objects::BUDGETED_ANNOTATION) {
            budgeted_versions.push(version.clone());
        }
        serving_versions.push(version);
    }

    let mut job = None;
    let mut job_version = None;
    if spec.optimize.is_some() {
        let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
        let name = objects::job_name(md, &spec.version);
        if let Some(found) = jobs
            .get_opt(&name)
            .await
            .map_err(|source| Error::Observe { what: "the optimization Job", source })?
        {
            job_version = Some(spec.version.clone());
            job = Some(job_state(ctx, namespace, &name, &found).await?);
        }
    }

    let registry: Api<ModelVersion> = Api::namespaced(client.clone(), namespace);
    let registered = registry
        .list(&label_selector(md, "registry"))
        .await
        .map_err(|source| Error::Observe { what: "ModelVersions", source })?
        .into_iter()
        .map(|mv| Registered::from(&mv.spec))
        .collect();

    let status = md.status.clone().unwrap_or_default();
    let figures = match &status.canary {
        Some(canary) if canary.step_started.is_some() => {
            match ctx.router.read(md, &canary.version).await {
                Ok(figures) => figures,
                Err(e) => {
                    // No figures: the planner judges "no data", which holds the
                    // canary rather than failing or promoting it on nothing.
                    tracing::warn!(error = %e, "could not read the router's statistics");
                    None
                }
            }
        }
        _ => None,
    };
    let annotations = md.annotations();
    Ok(Observation {
        observed: Observed {
            generation: md.metadata.generation,
            status,
            registered,
            job,
            ready,
            figures,
            failing,
            promote_requested: annotations.contains_key(crate::crd::PROMOTE_ANNOTATION),
            abort_requested: annotations.contains_key(crate::crd::ABORT_ANNOTATION),
        },
        serving_versions,
        autoscaled_versions,
        budgeted_versions,
        job_version,
    })
}

/// The newest termination message of the pods' containers, current or last run.
fn last_termination_message(pods: &[Pod]) -> Option<String> {
    pods.iter()
        .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
        .flatten()
        .filter_map(|c| {
            let current = c.state.as_ref().and_then(|s| s.terminated.as_ref());
            let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
            current.or(last).and_then(|t| t.message.clone()).filter(|m| !m.trim().is_empty())
        })
        .next_back()
        .map(|m| m.trim().to_string())
}

async fn job_state(
    ctx: &Context,
    namespace: &str,
    name: &str,
    job: &Job,
) -> Result<JobState, Error> {
    let status = job.status.clone().unwrap_or_default();
    let finished = status.succeeded.unwrap_or(0) > 0 || status.failed.unwrap_or(0) > 0;
    if !finished {
        return Ok(JobState::Running);
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels(&format!("job-name={name}")))
        .await
        .map_err(|source| Error::Observe { what: "the optimization Job's pods", source })?;
    let message = list
        .items
        .iter()
        .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.message.clone())
        .next_back();
    Ok(JobState::from_termination_message(status.succeeded.unwrap_or(0) > 0, message.as_deref()))
}
