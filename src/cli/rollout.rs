//! `tractor rollout`: promote, abort or show a rollout, in a cluster or in
//! a `tractor up` on this machine.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use tractor::crd::{ABORT_ANNOTATION, ModelDeployment, ModelDeploymentStatus, PROMOTE_ANNOTATION};
use tractor::local;

#[derive(Debug, Args)]
pub struct RolloutArgs {
    #[command(subcommand)]
    action: RolloutAction,
}

#[derive(Debug, Subcommand)]
enum RolloutAction {
    /// Move the canary to its next step now (or promote it after the last).
    Promote(Target),
    /// Stop the canary; the stable version keeps all traffic.
    Abort(Target),
    /// Print the rollout's phase, versions, weights and latest analysis.
    Status(Target),
}

#[derive(Debug, Args)]
struct Target {
    /// The ModelDeployment.
    name: String,
    /// Its namespace in the cluster (ignored with --state-dir).
    #[arg(long, short, env = "TRACTOR_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Act on a `tractor up` on this machine that keeps its state here
    /// (its `--state-dir`, `.tractor` by default) instead of a cluster.
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

pub async fn run(args: RolloutArgs) -> anyhow::Result<()> {
    let (target, annotation, local_request) = match &args.action {
        RolloutAction::Promote(t) => (t, Some(PROMOTE_ANNOTATION), Some(local::Request::Promote)),
        RolloutAction::Abort(t) => (t, Some(ABORT_ANNOTATION), Some(local::Request::Abort)),
        RolloutAction::Status(t) => (t, None, None),
    };
    if let Some(state_dir) = &target.state_dir {
        if let Some(request) = local_request {
            local::request(state_dir, &target.name, request)?;
            let word = if request == local::Request::Promote { "promote" } else { "abort" };
            println!("{} asked to {word}; tractor up acts on it within a second", target.name);
        } else {
            print!("{}", describe_status(&local::status(state_dir, &target.name)?));
            // What `kubectl get modelversions` shows in a cluster.
            for v in local::registry(state_dir, &target.name)? {
                println!(
                    "registered: {} {} sha256:{} {} bytes {} (from {})",
                    v.version,
                    v.artifact.uri,
                    v.artifact.sha256.get(..12).unwrap_or(&v.artifact.sha256),
                    v.artifact.size_bytes.unwrap_or_default(),
                    v.metrics.summary.as_deref().unwrap_or("-"),
                    v.parent.as_deref().unwrap_or("-"),
                );
            }
        }
        return Ok(());
    }
    let client = kube::Client::try_default().await.context(
        "connecting to the Kubernetes API (for a `tractor up` on this machine, \
         give its state directory: --state-dir .tractor)",
    )?;
    let api: Api<ModelDeployment> = Api::namespaced(client, &target.namespace);
    if let Some(annotation) = annotation {
        let patch =
            json!({ "metadata": { "annotations": { annotation: Timestamp::now().to_string() } } });
        api.patch(&target.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("annotating {}/{}", target.namespace, target.name))?;
        println!(
            "{}/{} annotated with {annotation}; the controller acts on its next reconcile",
            target.namespace, target.name
        );
        return Ok(());
    }
    let md = api
        .get(&target.name)
        .await
        .with_context(|| format!("reading {}/{}", target.namespace, target.name))?;
    print!("{}", describe(&md));
    Ok(())
}

/// A person's view of a rollout.
pub fn describe(md: &ModelDeployment) -> String {
    describe_status(&md.status.clone().unwrap_or_default())
}

fn describe_status(status: &ModelDeploymentStatus) -> String {
    let mut out = format!("phase: {}\n", status.phase.as_str());
    if let Some(message) = &status.message {
        out.push_str(&format!("message: {message}\n"));
    }
    if let Some(stable) = &status.stable {
        let pending = if stable.serving() { "" } else { ", waiting for its pods" };
        out.push_str(&format!("stable: {} ({}%{pending})\n", stable.version, stable.weight));
    }
    if let Some(canary) = &status.canary {
        out.push_str(&format!(
            "canary: {} ({}%, step {}, {} failed analyses)\n",
            canary.version,
            canary.weight,
            canary.step + 1,
            canary.failures
        ));
        if let Some(a) = &canary.analysis {
            out.push_str(&format!("last analysis: {:?}: {}\n", a.verdict, a.reason));
        }
    }
    for h in status.history.iter().rev().take(5) {
        out.push_str(&format!(
            "history: {} {:?} at {}: {}\n",
            h.version, h.outcome, h.time.0, h.reason
        ));
    }
    out
}
