//! The `tractor` command line: one subcommand per role.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use tractor::bench::{self, BenchConfig, StopAfter, Target};
use tractor::client::{self, Endpoint};
use tractor::contract::job::JobResult;
use tractor::engine::Threads;
use tractor::serve::{self, ServeConfig};

mod operator_cli;

#[derive(Debug, Parser)]
#[command(name = "tractor", version, about = "Optimize, serve and roll out ML models on tract")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve one model version over the Open Inference Protocol (KServe V2).
    Serve(ServeArgs),
    /// Load-test a V2 endpoint (or the engine in-process) and print latency percentiles.
    Bench(BenchArgs),
    /// Send one V2 inference request from a JSON file and print the answer.
    Infer(InferArgs),
    /// Apply a recipe of passes (fold, prune, quantize, convert) with an accuracy gate.
    Optimize(OptimizeArgs),
    /// Merge models: chain two (compose) or average N of one architecture.
    Merge(MergeArgs),
    /// Print the ModelDeployment and ModelVersion CustomResourceDefinitions.
    Crd,
    /// Run the Kubernetes operator: reconcile ModelDeployments.
    Controller(operator_cli::ControllerArgs),
    /// Promote, abort or show a rollout in a cluster.
    Rollout(operator_cli::RolloutArgs),
    /// Split traffic between a model's versions by weight, and measure each.
    Route(operator_cli::RouteArgs),
    /// Run a ModelDeployment on this machine: serve, route and roll out, no cluster.
    Up(operator_cli::UpArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Model file or URI: a path, file://, http(s):// or s3:// (ONNX or NNEF).
    #[arg(long, env = "TRACTOR_MODEL")]
    model: String,
    /// Model name in the V2 paths; defaults to the file stem.
    #[arg(long, env = "TRACTOR_MODEL_NAME")]
    name: Option<String>,
    /// Version reported in every answer, so callers behind a router know who answered.
    #[arg(long, env = "TRACTOR_MODEL_VERSION", default_value = "1")]
    model_version: String,
    /// Refuse to start unless the artifact has this sha256 (hex).
    #[arg(long, env = "TRACTOR_SHA256")]
    sha256: Option<String>,
    #[arg(long, env = "TRACTOR_HOST", default_value = "0.0.0.0")]
    host: IpAddr,
    #[arg(long, env = "TRACTOR_HTTP_PORT", default_value_t = 8000)]
    http_port: u16,
    /// Most rows in one dynamic batch; batching is off when <= 1.
    #[arg(long, env = "TRACTOR_MAX_BATCH_SIZE", default_value_t = 32)]
    max_batch_size: usize,
    /// Longest wait for a batch to fill, in microseconds. 0 still batches
    /// under load (batches fill from the queue while the engine is busy) and
    /// adds no latency when idle; measured best at every concurrency here.
    #[arg(long, env = "TRACTOR_MAX_BATCH_DELAY_US", default_value_t = 0)]
    max_batch_delay_us: u64,
    /// Requests served at once; more are answered 503 with Retry-After.
    #[arg(long, env = "TRACTOR_MAX_INFLIGHT", default_value_t = 256)]
    max_inflight: usize,
    /// Largest request body accepted (413 above).
    #[arg(long, env = "TRACTOR_MAX_BODY_BYTES", default_value_t = 64 << 20)]
    max_body_bytes: usize,
    /// Per-request timeout in milliseconds (504 above).
    #[arg(long, env = "TRACTOR_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    request_timeout_ms: u64,
    /// Threads for tract's matrix products: "auto" (all cores for models over 4 MiB) or a count.
    #[arg(long, env = "TRACTOR_ENGINE_THREADS", default_value = "auto")]
    engine_threads: Threads,
    /// Batches the engine runs at once; 0 = cores divided by engine threads.
    #[arg(long, env = "TRACTOR_WORKERS", default_value_t = 0)]
    workers: usize,
    /// Input and output processing spec (YAML or JSON): images, named
    /// features, labels. Applied on the KServe V1 endpoint, and on V2
    /// requests that set `"parameters": {"processing": true}`.
    #[arg(long, env = "TRACTOR_PROCESSING")]
    processing: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Base URL of a V2 server, e.g. http://127.0.0.1:8000.
    #[arg(long, env = "TRACTOR_URL", required_unless_present = "in_process")]
    url: Option<String>,
    /// Model name on the server.
    #[arg(long, required_unless_present = "in_process")]
    model: Option<String>,
    /// Run this model file in-process instead (the baseline for serving overhead).
    #[arg(long, value_name = "MODEL_FILE", conflicts_with_all = ["url", "input"])]
    in_process: Option<PathBuf>,
    /// Engine threads for --in-process.
    #[arg(long, default_value = "auto", requires = "in_process")]
    engine_threads: Threads,
    /// Concurrency levels to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    concurrency: Vec<usize>,
    /// How long each level runs (e.g. 10s, 500ms).
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "requests")]
    duration: Option<Duration>,
    /// Requests per level instead of a duration.
    #[arg(long)]
    requests: Option<usize>,
    /// V2 request body to send; generated from the model metadata when absent.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Rows per generated request.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Unmeasured requests before each level.
    #[arg(long, default_value_t = 10)]
    warmup: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct OptimizeArgs {
    /// Model to optimize (ONNX): a path or object-store URI.
    #[arg(long)]
    input: String,
    /// Where to write the result: a path or object-store URI.
    #[arg(long)]
    output: String,
    /// Recipe file (YAML or JSON), the CRD's `spec.optimize` type.
    #[arg(long)]
    recipe: Option<PathBuf>,
    #[arg(long)]
    fold: bool,
    /// `magnitude:SPARSITY` or `structured:SPARSITY`.
    #[arg(long)]
    prune: Option<String>,
    /// dynamic-int8, static-int8, weight-int8 or weight-int4.
    #[arg(long)]
    quantize: Option<tractor::crd::recipe::QuantizeMode>,
    /// Elements per quantization block along the reduction axis (weight-int4:
    /// default 32; int8: per output channel unless given).
    #[arg(long)]
    block_size: Option<usize>,
    /// Calibration data for static-int8 (.npz, .npy or CSV).
    #[arg(long)]
    calibration: Option<String>,
    /// Convert to this format at the end (nnef: an uncompressed tar).
    #[arg(long, value_parser = ["nnef"])]
    convert: Option<String>,
    /// Validation data (.npz or CSV) for the accuracy gate.
    #[arg(long)]
    validate: Option<String>,
    /// accuracy, mse or cross-entropy.
    #[arg(long)]
    metric: Option<tractor::crd::recipe::Metric>,
    /// Largest allowed drop: accuracy points, or MSE / cross-entropy increase.
    #[arg(long)]
    max_drop: Option<f64>,
    /// Where to write the JSON report; printed when absent.
    #[arg(long)]
    report: Option<String>,
    /// Skip latency measurements and the per-layer speed fallback.
    #[arg(long)]
    no_measure: bool,
    /// Also write a compact result (artifact, digest, metrics, or the
    /// refusal) here: the controller's Job points it at /dev/termination-log.
    #[arg(long)]
    termination_message: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct MergeArgs {
    /// compose (FIRST SECOND) or average (MODEL...).
    #[arg(value_parser = ["compose", "average"])]
    mode: String,
    #[arg(required = true, num_args = 2..)]
    models: Vec<String>,
    /// compose: OUT=IN wires output OUT of the first to input IN of the second.
    #[arg(long)]
    map: Vec<String>,
    #[arg(long)]
    output: String,
}

#[derive(Debug, Args)]
struct InferArgs {
    #[arg(long, env = "TRACTOR_URL")]
    url: String,
    #[arg(long)]
    model: String,
    #[arg(long)]
    model_version: Option<String>,
    /// V2 request JSON ({"inputs": [...]}); `-` reads standard input.
    #[arg(long)]
    input: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tractor::telemetry::init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            report_to_kubernetes(&format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// The compact result the controller (or `tractor up`) turns into a
/// `ModelVersion`, read back by the planner through the same type.
fn job_result(finished: &tractor::optimize::cli::Finished) -> JobResult {
    use tractor::crd::recipe::Metric;
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

/// In a Kubernetes container, the reason a process stopped goes to the
/// termination message too, where the controller reads it (a processing spec
/// that does not fit the model, a refused digest) to put it in the status.
/// A message already written (the optimizer's result) is kept.
fn report_to_kubernetes(message: &str) {
    const TERMINATION_LOG: &str = "/dev/termination-log";
    let empty = std::fs::metadata(TERMINATION_LOG).is_ok_and(|m| m.len() == 0);
    if empty {
        // Kubernetes keeps at most 4096 bytes of it.
        let cut: String = message.chars().take(4000).collect();
        let _ = std::fs::write(TERMINATION_LOG, cut);
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => run_serve(args).await,
        Command::Bench(args) => run_bench(args).await,
        Command::Infer(args) => run_infer(args).await,
        Command::Optimize(args) => {
            use tractor::crd::recipe::ConvertFormat;
            use tractor::optimize::cli;
            let options = cli::OptimizeOptions {
                input: args.input,
                output: args.output,
                recipe: args.recipe,
                fold: args.fold,
                prune: args.prune,
                quantize: args.quantize,
                block_size: args.block_size,
                calibration: args.calibration,
                convert: args.convert.map(|_| ConvertFormat::Nnef),
                validate: args.validate,
                metric: args.metric,
                max_drop: args.max_drop,
                report: args.report,
                no_measure: args.no_measure,
            };
            let finished = cli::optimize(&options).await?;
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
        Command::Merge(args) => {
            use tractor::crd::recipe::MergeMode;
            use tractor::optimize::cli;
            let mode = if args.mode == "compose" { MergeMode::Compose } else { MergeMode::Average };
            let options =
                cli::MergeOptions { mode, models: args.models, map: args.map, output: args.output };
            let report = tractor::optimize::cli::merge(&options).await?;
            eprintln!("wrote {}: {}", options.output, report.summary);
            Ok(())
        }
        Command::Crd => operator_cli::print_crds(),
        Command::Controller(args) => operator_cli::run_controller(args).await,
        Command::Rollout(args) => operator_cli::run_rollout(args).await,
        Command::Route(args) => operator_cli::run_route(args).await,
        Command::Up(args) => operator_cli::run_up(args).await,
    }
}

async fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = ServeConfig {
        name: args.name.unwrap_or_else(|| serve::default_model_name(&args.model)),
        model_location: args.model,
        version: args.model_version,
        sha256: args.sha256,
        listen: SocketAddr::new(args.host, args.http_port),
        max_batch_size: args.max_batch_size,
        max_batch_delay: Duration::from_micros(args.max_batch_delay_us),
        max_inflight: args.max_inflight,
        max_body_bytes: args.max_body_bytes,
        request_timeout: Duration::from_millis(args.request_timeout_ms),
        threads: args.engine_threads,
        workers: args.workers,
        processing: args
            .processing
            .as_deref()
            .map(tractor::process::ProcessingConfig::from_file)
            .transpose()?,
    };
    serve::run(config, serve::shutdown_signal()).await?;
    Ok(())
}

async fn run_bench(args: BenchArgs) -> anyhow::Result<()> {
    let target = match (args.in_process, args.url, args.model) {
        (Some(model_path), _, _) => Target::InProcess { model_path, threads: args.engine_threads },
        (None, Some(url), Some(model)) => Target::Http { url, model, input: args.input },
        _ => bail!("give --url and --model, or --in-process MODEL_FILE"),
    };
    let stop = match (args.duration, args.requests) {
        (_, Some(n)) => StopAfter::Requests(n),
        (Some(d), None) => StopAfter::Duration(d),
        (None, None) => StopAfter::Duration(Duration::from_secs(10)),
    };
    let config = BenchConfig {
        target,
        concurrency: args.concurrency,
        stop,
        batch: args.batch.max(1),
        warmup: args.warmup,
    };
    let report = bench::run(&config).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.human());
    }
    Ok(())
}

async fn run_infer(args: InferArgs) -> anyhow::Result<()> {
    let body = if args.input.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .context("reading standard input")?;
        buf
    } else {
        std::fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?
    };
    serde_json::from_slice::<serde_json::Value>(&body)
        .with_context(|| format!("{} is not JSON", args.input.display()))?;
    let endpoint = Endpoint::new(&args.url, &args.model, args.model_version.as_deref());
    let http = reqwest::Client::new();
    let answer = client::post_json(&http, &endpoint.infer_url(), body).await?;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_flags_parse_as_documented() {
        let cli = Cli::try_parse_from([
            "tractor",
            "serve",
            "--model",
            "m.onnx",
            "--max-batch-size",
            "1",
            "--engine-threads",
            "2",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else { panic!("not serve") };
        assert_eq!(args.max_batch_size, 1);
        assert_eq!(args.engine_threads, Threads::Count(2));
        assert!(
            Cli::try_parse_from(["tractor", "serve", "--model", "m", "--engine-threads", "0"])
                .is_err()
        );
    }
}
