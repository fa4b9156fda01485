//! `tractor bench`: a load generator for any V2 endpoint, or the engine
//! in-process as the baseline.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Args;

use tractor::bench::{self, BenchConfig, StopAfter, Target};
use tractor::engine::Threads;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Base URL of a V2 server, e.g. http://127.0.0.1:8000.
    #[arg(long, env = "TRACTOR_URL", required_unless_present = "in_process")]
    pub url: Option<String>,
    /// Model name on the server.
    #[arg(long, required_unless_present = "in_process")]
    pub model: Option<String>,
    /// Run this model file in-process instead (the baseline for serving overhead).
    #[arg(long, value_name = "MODEL_FILE", conflicts_with_all = ["url", "input"])]
    pub in_process: Option<PathBuf>,
    /// Engine threads for --in-process.
    #[arg(long, default_value = "auto", requires = "in_process")]
    pub engine_threads: Threads,
    /// Concurrency levels to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub concurrency: Vec<usize>,
    /// How long each level runs (e.g. 10s, 500ms).
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "requests")]
    pub duration: Option<Duration>,
    /// Requests per level instead of a duration.
    #[arg(long)]
    pub requests: Option<usize>,
    /// V2 request body to send; generated from the model metadata when absent.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Rows per generated request.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Unmeasured requests before each level.
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Bearer token for a server with access control (docs/security.md).
    #[arg(long, env = "TRACTOR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// How to send requests; with `grpc`, --url is the gRPC port's
    /// (http://HOST:8001).
    #[arg(long, value_enum, default_value = "rest")]
    pub protocol: tractor::client::Protocol,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
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
        token: args.token,
        protocol: args.protocol,
    };
    let report = bench::run(&config).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.human());
    }
    Ok(())
}
