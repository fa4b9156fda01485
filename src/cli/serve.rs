//! `tractor serve`: one model version over the Open Inference Protocol.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use tractor::engine::Threads;
use tractor::listen::{self, ConnectionLimits};
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
    /// Address the REST (and gRPC) ports listen on.
    #[arg(long, env = "TRACTOR_HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,
    /// The REST port (KServe V2 and V1, health, metrics).
    #[arg(long, env = "TRACTOR_HTTP_PORT", default_value_t = 8000)]
    pub http_port: u16,
    /// The Open Inference Protocol's gRPC port (HTTP/2, the REST port's
    /// TLS, auth and limits); 0 turns it off.
    #[arg(long, env = "TRACTOR_GRPC_PORT", default_value_t = 8001)]
    pub grpc_port: u16,
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
    #[command(flatten)]
    pub connections: ConnectionArgs,

    // Access control and model sources (issue 12; docs/security.md).
    /// Model locations allowed, comma-separated: a scheme (`file`), or a
    /// scheme, host pattern and path prefix (`s3://team-models`,
    /// `https://*.example.com/models/`). Unset: any location.
    #[arg(long, env = "TRACTOR_ALLOWED_SOURCES", value_delimiter = ',')]
    pub allowed_sources: Vec<tractor::store::SourcePattern>,
    /// Largest model artifact fetched, in bytes. Unset: no bound.
    #[arg(long, env = "TRACTOR_MAX_MODEL_BYTES")]
    pub max_model_bytes: Option<u64>,
    /// An age identity file (`age-keygen` output): a model that is an age
    /// file is decrypted with it in memory, never written decrypted.
    #[arg(long, env = "TRACTOR_DECRYPTION_IDENTITY")]
    pub decryption_identity: Option<PathBuf>,
    #[command(flatten)]
    pub auth: tractor::auth::AuthArgs,
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
    /// Engine plans kept for models planned per input shape (exported
    /// transformers: one plan per sequence length), least recently used
    /// out first.
    #[arg(long, env = "TRACTOR_MAX_PLANS",
        default_value_t = tractor::engine::plans::DEFAULT_MAX_PLANS,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_plans: usize,
    /// Longest variable non-batch dimension (sequence length) a request may
    /// have, or a batch be padded to (400 above).
    #[arg(long, env = "TRACTOR_MAX_SEQUENCE",
        default_value_t = tractor::engine::plans::DEFAULT_MAX_SEQUENCE,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_sequence: usize,
    /// Classes a caller without the `raw` scope gets of each floating
    /// output wider than this: its best classes as "score:index" strings
    /// (the classification extension), against model extraction.
    #[arg(long, env = "TRACTOR_LIMIT_TOP_K",
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new()
            .range(1..=tractor::serve::output_limits::MAX_TOP_K as u64))]
    pub limit_top_k: Option<usize>,
    /// Decimals kept of every score a caller without the `raw` scope gets.
    #[arg(long, env = "TRACTOR_LIMIT_DIGITS",
        value_parser = clap::value_parser!(u32)
            .range(0..=i64::from(tractor::serve::output_limits::MAX_DIGITS)))]
    pub limit_digits: Option<u32>,
    /// Where to write why the engine cannot recover, when liveness turns
    /// false (the kubelet's termination message); "" writes nowhere.
    #[arg(long, env = "TRACTOR_TERMINATION_LOG", default_value = "/dev/termination-log")]
    pub termination_log: PathBuf,
    #[command(flatten)]
    pub tls: tractor::tls::TlsArgs,
}

/// How long connections may take and how many may be open: the same flags
/// on `serve` and `route` (docs/serving.md, "Connection limits").
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// A request's head (line and headers) must arrive within this, counted
    /// from the connection's opening or the first byte of a later request;
    /// past it the connection is closed.
    #[arg(long, env = "TRACTOR_HEADER_READ_TIMEOUT_MS",
        default_value_t = listen::DEFAULT_HEADER_READ_TIMEOUT_MS,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_ms: u64,
    /// A request's body must arrive whole within this of its head (408 past it).
    #[arg(long, env = "TRACTOR_BODY_READ_TIMEOUT_MS",
        default_value_t = listen::DEFAULT_BODY_READ_TIMEOUT_MS,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub body_read_timeout_ms: u64,
    /// A kept-alive connection without a request is closed after this.
    #[arg(long, env = "TRACTOR_IDLE_TIMEOUT_MS",
        default_value_t = listen::DEFAULT_IDLE_TIMEOUT_MS,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_ms: u64,
    /// Connections open at once; one more is answered 503 and closed.
    #[arg(long, env = "TRACTOR_MAX_CONNECTIONS",
        default_value_t = listen::DEFAULT_MAX_CONNECTIONS,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_connections: usize,
    /// After SIGTERM, connections still open this long are closed and the
    /// process exits.
    #[arg(long, env = "TRACTOR_DRAIN_TIMEOUT_MS",
        default_value_t = listen::DEFAULT_DRAIN_TIMEOUT_MS)]
    pub drain_timeout_ms: u64,
}

impl From<&ConnectionArgs> for ConnectionLimits {
    fn from(args: &ConnectionArgs) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_millis(args.header_read_timeout_ms),
            body_read_timeout: Duration::from_millis(args.body_read_timeout_ms),
            idle_timeout: Duration::from_millis(args.idle_timeout_ms),
            max_connections: args.max_connections,
            drain_timeout: Duration::from_millis(args.drain_timeout_ms),
        }
    }
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
            plans: tractor::engine::PlanLimits {
                max_plans: args.max_plans,
                max_sequence: args.max_sequence,
            },
            output_limits: tractor::serve::output_limits::OutputLimits {
                top_k: args.limit_top_k,
                digits: args.limit_digits,
            },
            termination_log: (!args.termination_log.as_os_str().is_empty())
                .then_some(args.termination_log),
            processing: args
                .processing
                .as_deref()
                .map(tractor::process::ProcessingConfig::from_file)
                .transpose()?,
            auth: args.auth.config(),
            sources: tractor::store::SourcePolicy {
                allowed: args.allowed_sources,
                max_bytes: args.max_model_bytes,
            },
            decryption_identity: args.decryption_identity,
        })
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let connections = ConnectionLimits::from(&args.connections);
    let tls = args.tls.files().map(tractor::tls::TlsServer::new).transpose()?;
    let grpc = match args.grpc_port {
        0 => None,
        port => Some(serve::GrpcListen {
            addr: SocketAddr::new(args.host, port),
            tls: tls.as_ref().map(tractor::tls::TlsServer::for_h2).transpose()?,
        }),
    };
    let config = ServeConfig::try_from(args)?;
    serve::run_with_grpc(config, connections, tls, grpc, serve::shutdown_signal()).await?;
    Ok(())
}
