//! `tractor optimize` and `tractor merge`. The flags are the library's own
//! option types, flattened, so nothing is copied between the two.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Args;

use tractor::contract::job::JobResult;
use tractor::crd::recipe::Metric;
use tractor::optimize::cli::{self, Finished, MergeOptions, OptimizeOptions};

#[derive(Debug, Args)]
pub struct OptimizeArgs {
    #[command(flatten)]
    pub options: OptimizeOptions,
    /// Also write a compact result (artifact, digest, metrics, or the
    /// refusal) here: the controller's Job points it at /dev/termination-log.
    #[arg(long)]
    pub termination_message: Option<PathBuf>,
}

pub async fn run(args: OptimizeArgs) -> anyhow::Result<()> {
    let finished = cli::optimize(&args.options).await?;
    if let Some(path) = &args.termination_message {
        std::fs::write(path, job_result(&finished).to_message())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    match finished.written {
        Some(location) => {
            eprintln!("wrote {location}: {}", finished.report.summary);
            Ok(())
        }
        None => bail!(
            "the accuracy gate refused the model, nothing written: {}",
            finished.report.reason.unwrap_or_default()
        ),
    }
}

pub async fn run_merge(options: MergeOptions) -> anyhow::Result<()> {
    let report = cli::merge(&options).await?;
    eprintln!("wrote {}: {}", options.output, report.summary);
    Ok(())
}

/// The compact result the controller (or `tractor up`) turns into a
/// `ModelVersion`, read back by the planner through the same type.
fn job_result(finished: &Finished) -> JobResult {
    let report = &finished.report;
    let Some(uri) = &finished.written else {
        return JobResult::refused(report.reason.clone().unwrap_or_else(|| "refused".into()));
    };
    let mut metrics = tractor::crd::VersionMetrics {
        parameters: Some(report.optimized.parameters),
        sparsity: (report.optimized.parameters > 0)
            .then(|| 1.0 - report.optimized.non_zero as f64 / report.optimized.parameters as f64),
        latency_ms: report.latency.first().map(|l| l.optimized_us / 1e3),
        ..Default::default()
    };
    if let Some(gate) = &report.validation {
        let (name, value) = match gate.metric {
            Metric::Accuracy => ("accuracy", &mut metrics.accuracy),
            Metric::Mse => ("mse", &mut metrics.mse),
            Metric::CrossEntropy => ("crossEntropy", &mut metrics.cross_entropy),
        };
        *value = Some(gate.optimized);
        metrics.summary = Some(format!("{name}={:.4}", gate.optimized));
    }
    JobResult::written(
        uri.clone(),
        Some(finished.sha256.clone()),
        Some(finished.size_bytes),
        metrics,
    )
}
