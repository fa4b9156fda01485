//! `tractor render`: the objects the controller would write for a
//! ModelDeployment in a given state, without a cluster. The state is built
//! as an observation, planned by the planner and turned into objects by
//! [`desired::desired`]: the reconcile's own path from the plan on.

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::desired::{self, Desired, Write};
use super::{OperatorConfig, access, objects};
use crate::crd::{CanaryStatus, ModelDeployment, ModelDeploymentStatus, SpecError, VersionStatus};
use crate::plan::{Artifact, Observed, Registered};

/// Stands in for the router's token in a render: the controller makes a
/// random one on its first write and never shows or changes it.
pub const TOKEN_PLACEHOLDER: &str = "made-by-the-operator-on-its-first-write";

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{name}: {error}")]
    Spec { name: String, error: SpecError },
    #[error("{0}")]
    State(String),
}

/// Where the rollout stands in a render.
#[derive(Debug, Clone)]
pub enum Stage<'a> {
    /// No version has served yet: the spec's version is deployed.
    First,
    /// `stable` serves, and the spec's version is its canary at `weight`
    /// percent, one of the spec's steps (the first when `None`).
    Canary { stable: &'a ModelDeployment, weight: Option<u32> },
}

/// The objects for `md` at `stage`. A spec with an optimization recipe
/// renders both what the controller writes first (the Job) and what it
/// writes once the optimized version is registered.
pub fn render(
    md: &ModelDeployment,
    stage: &Stage<'_>,
    config: &OperatorConfig,
    now: Timestamp,
) -> Result<Vec<Desired>, RenderError> {
    let spec_error = |md: &ModelDeployment, error| RenderError::Spec { name: md.name_any(), error };
    let spec = crate::crd::validate(&md.spec)
        .and_then(|spec| access::check_image(md, config).map(|()| spec))
        .and_then(|spec| access::check_jwks_url(md, config).map(|()| spec))
        .map_err(|e| spec_error(md, e))?;
    let artifact = |md: &ModelDeployment, version: &str, optimized: bool| Artifact {
        uri: if optimized {
            objects::artifact_uri(md, config, version)
        } else {
            md.spec.model.source.uri.clone()
        },
        sha256: None,
    };
    let mut observed = Observed { generation: md.metadata.generation, ..Observed::default() };
    match stage {
        Stage::First => {}
        Stage::Canary { stable, weight } => {
            let stable_spec =
                crate::crd::validate(&stable.spec).map_err(|e| spec_error(stable, e))?;
            if stable_spec.version == spec.version {
                return Err(RenderError::State(format!(
                    "the stable and the canary are both version {}",
                    spec.version
                )));
            }
            let steps = &spec.rollout.steps;
            let shown: Vec<String> = steps
                .iter()
                .map(|s| match s.shadow {
                    true => "0% (shadow)".to_string(),
                    false => format!("{}%", s.weight),
                })
                .collect();
            let step = match weight {
                None if steps.is_empty() => None,
                None => Some(0),
                Some(w) => steps.iter().position(|s| s.weight == *w),
            };
            let Some(step) = step else {
                return Err(RenderError::State(match steps.is_empty() {
                    true => "spec.rollout.steps is empty: the new version takes all the \
                             traffic once ready, with no canary to render"
                        .into(),
                    false => format!(
                        "no rollout step at {}%: the steps are at {}",
                        weight.unwrap_or_default(),
                        shown.join(", ")
                    ),
                }));
            };
            let stable_artifact =
                artifact(stable, &stable_spec.version, stable_spec.optimize.is_some());
            let canary_artifact = artifact(md, &spec.version, spec.optimize.is_some());
            let time = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now);
            observed.status = ModelDeploymentStatus {
                stable: Some(VersionStatus {
                    version: stable_spec.version.clone(),
                    uri: Some(stable_artifact.uri),
                    weight: 100 - steps[step].weight,
                    since: Some(time.clone()),
                    ..VersionStatus::default()
                }),
                canary: Some(CanaryStatus {
                    version: spec.version.clone(),
                    uri: Some(canary_artifact.uri.clone()),
                    weight: steps[step].weight,
                    step: step as u32,
                    started: Some(time.clone()),
                    step_started: Some(time),
                    ..CanaryStatus::default()
                }),
                ..ModelDeploymentStatus::default()
            };
            observed.ready.insert(stable_spec.version.clone(), 1);
        }
    }
    observed.ready.insert(spec.version.clone(), 1);

    let mut out = vec![];
    if let Some(recipe) = &spec.optimize {
        // What is written first: the Job (the planner asks for it while no
        // registered version matches).
        let plan = crate::plan::plan(&spec, &observed, now);
        out.extend(desired::desired(md, &spec, &plan, config, TOKEN_PLACEHOLDER));
        observed.registered.push(Registered {
            version: spec.version.clone(),
            artifact: artifact(md, &spec.version, true),
            parent: spec.source_sha256.clone(),
            recipe: Some(recipe.clone()),
        });
    }
    let plan = crate::plan::plan(&spec, &observed, now);
    for object in desired::desired(md, &spec, &plan, config, TOKEN_PLACEHOLDER) {
        // Written at both stages: shown once.
        let again = out.iter().any(|o: &Desired| {
            o.object.kind() == object.object.kind() && o.name() == object.name()
        });
        if !again {
            out.push(object);
        }
    }
    Ok(out)
}

/// The objects as one YAML stream, each introduced by a comment saying how
/// the controller writes it.
pub fn to_yaml(objects: &[Desired]) -> Result<String, serde_saphyr::ser::Error> {
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        out.push_str(match object.write {
            Write::Apply => "# server-side applied on every reconcile\n",
            Write::CreateOnce => "# created once, then left as it is\n",
        });
        out.push_str(&serde_saphyr::to_string(&object.object)?);
    }
    Ok(out)
}
