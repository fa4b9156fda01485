//! The `tractor` command line: one subcommand per role, each in its own
//! file with its clap arguments and its `run`. Part of the binary (not the
//! library), so errors end here as `anyhow`.

use clap::{Parser, Subcommand};

use tractor::optimize::cli::MergeOptions;

pub mod bench;
pub mod controller;
pub mod crd;
pub mod infer;
pub mod optimize;
pub mod registry;
pub mod render;
pub mod rollout;
pub mod route;
pub mod serve;
pub mod up;

#[cfg(test)]
mod tests;

/// The error and its causes on one line, each cause said once: many
/// errors (kube's, hyper's, std's) already put their source into their own
/// text, so `{:#}` would print the same reason two or three times.
pub fn error_text(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let said = cause.to_string();
        if text.contains(&said) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&said);
    }
    text
}

#[derive(Debug, Parser)]
#[command(name = "tractor", version, about = "Optimize, serve and roll out ML models on tract")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve one model version over the Open Inference Protocol (KServe V2).
    Serve(serve::ServeArgs),
    /// Load-test a V2 endpoint (or the engine in-process) and print latency percentiles.
    Bench(bench::BenchArgs),
    /// Send one V2 inference request from a JSON file and print the answer.
    Infer(infer::InferArgs),
    /// Apply a recipe of passes (fold, prune, quantize, convert) with an accuracy gate.
    Optimize(optimize::OptimizeArgs),
    /// Merge models: chain two (compose) or average N of one architecture.
    Merge(MergeOptions),
    /// Print the ModelDeployment and ModelVersion CustomResourceDefinitions.
    Crd,
    /// Print, as YAML, every object the controller would write for a ModelDeployment.
    Render(render::RenderArgs),
    /// Run the Kubernetes operator: reconcile ModelDeployments.
    Controller(controller::ControllerArgs),
    /// Promote, abort or show a rollout in a cluster.
    Rollout(rollout::RolloutArgs),
    /// Split traffic between a model's versions by weight, and measure each.
    Route(route::RouteArgs),
    /// Run a ModelDeployment on this machine: serve, route and roll out, no cluster.
    Up(up::UpArgs),
    /// Push, list, show, pull, tag and diff model versions in an artifact store.
    Registry(registry::RegistryArgs),
}
