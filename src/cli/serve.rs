//! `tractor serve`: one model version over the Open Inference Protocol.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use tractor::engine::Threads;
use tractor::serve::{self, ServeConfig};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Model file or URI: a path, file://, http(s):// or s3:// (ONNX or NNEF).
    #[arg(long, env = "TRACTOR_MODEL")]
    pub model: String,
    /// Model name in the V2 paths; defaults to the file stem.
    #[arg(long, env = "TRACTOR_MODEL_NAME")]
    pub name: Option<String>,
    /// Version reported in every answer, so callers behind a router know who answered.
    #[arg(long, env = "TRACTOR_MODEL_VERSION", default_value = "1")]
    pub model_version: String,
    /// Refuse to start unless the artifact has this sha256 (hex).
    #[arg(long, env = "TRACTOR_SHA256")]
    pub sha256: Option<String>,
    #[arg(long, env = "TRACTOR_HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,
    #[arg(long, env = "TRACTOR_HTTP_PORT", default_value_t = 8000)]
    pub http_port: u16,
    /// Most rows in one dynamic batch; batching is off when <= 1.
    #[arg(long, env = "TRACTOR_MAX_BATCH_SIZE", default_value_t = 32)]
    pub max_batch_size: usize,
    /// Longest wait for a batch to fill, in microseconds. 0 still batches
    /// under load (batches fill from the queue while the engine is busy) and
    /// adds no latency when idle; measured best at every concurrency here.
    #[arg(long, env = "TRACTOR_MAX_BATCH_DELAY_US", default_value_t = 0)]
    pub max_batch_delay_us: u64,
    /// Requests served at once; more are answered 503 with Retry-After.
    #[arg(long, env = "TRACTOR_MAX_INFLIGHT", default_value_t = 256)]
    pub max_inflight: usize,
    /// Largest request body accepted (413 above).
    #[arg(long, env = "TRACTOR_MAX_BODY_BYTES", default_value_t = 64 << 20)]
    pub max_body_bytes: usize,
    /// Per-request timeout in milliseconds (504 above).
    #[arg(long, env = "TRACTOR_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// Threads for tract's matrix products: "auto" (all cores for models over 4 MiB) or a count.
    #[arg(long, env = "TRACTOR_ENGINE_THREADS", default_value = "auto")]
    pub engine_threads: Threads,
    /// Batches the engine runs at once; 0 = cores divided by engine threads.
    #[arg(long, env = "TRACTOR_WORKERS", default_value_t = 0)]
    pub workers: usize,
    /// Input and output processing spec (YAML or JSON): images, named
    /// features, labels. Applied on the KServe V1 endpoint, and on V2
    /// requests that set `"parameters": {"processing": true}`.
    #[arg(long, env = "TRACTOR_PROCESSING")]
    pub processing: Option<PathBuf>,
    /// Elements of all a request's input tensors together (400 above);
    /// default a quarter of --max-body-bytes, as many as a body of FP32
    /// binary data carries.
    #[arg(long, env = "TRACTOR_MAX_REQUEST_ELEMENTS")]
    pub max_request_elements: Option<usize>,
    /// Bytes of any one tensor the engine may compute; a node whose output
    /// would be larger (a size taken from the request's values) is refused
    /// with a 400 before it runs. Default a quarter of the memory this
    /// process may use (cgroup limit, else the machine's).
    #[arg(long, env = "TRACTOR_MAX_TENSOR_BYTES")]
    pub max_tensor_bytes: Option<usize>,
    /// Where to write why the engine cannot recover, when liveness turns
    /// false (the kubelet's termination message); "" writes nowhere.
    #[arg(long, env = "TRACTOR_TERMINATION_LOG", default_value = "/dev/termination-log")]
    pub termination_log: PathBuf,
}

/// The flags in the units the server works in; reading the processing
/// file is the one step that can fail.
impl TryFrom<ServeArgs> for ServeConfig {
    type Error = anyhow::Error;

    fn try_from(args: ServeArgs) -> anyhow::Result<ServeConfig> {
        Ok(ServeConfig {
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
            max_request_elements: args.max_request_elements,
            max_tensor_bytes: args.max_tensor_bytes,
            termination_log: (!args.termination_log.as_os_str().is_empty())
                .then_some(args.termination_log),
            processing: args
                .processing
                .as_deref()
                .map(tractor::process::ProcessingConfig::from_file)
                .transpose()?,
        })
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    serve::run(ServeConfig::try_from(args)?, serve::shutdown_signal()).await?;
    Ok(())
}
