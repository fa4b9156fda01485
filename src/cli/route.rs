//! `tractor route`: the weighted router in front of a model's versions.

use std::net::SocketAddr;

use anyhow::bail;
use clap::Args;

#[derive(Debug, Args)]
pub struct RouteArgs {
    /// Address for traffic.
    #[arg(long, env = "TRACTOR_ROUTE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Address of the admin API (/admin/stats, /admin/routes, /metrics, /healthz).
    #[arg(long, env = "TRACTOR_ROUTE_ADMIN_LISTEN", default_value = "127.0.0.1:9090")]
    pub admin_listen: SocketAddr,
    /// Port for gRPC traffic, on the traffic address's host; 0 turns it off.
    #[arg(long, env = "TRACTOR_ROUTE_GRPC_PORT", default_value_t = 0)]
    pub grpc_port: u16,
    /// A version's gRPC endpoint as NAME=URL (with --backend); repeat for each.
    #[arg(long = "grpc-backend", requires = "backends")]
    pub grpc_backends: Vec<String>,
    /// A version as NAME=URL[@WEIGHT]; repeat for each.
    #[arg(long = "backend", value_parser = tractor::route::parse_backend, conflicts_with_all = ["routes_file", "routes_configmap"])]
    pub backends: Vec<tractor::contract::routes::Backend>,
    /// Version that gets a copy of every request, measured for agreement.
    #[arg(long, requires = "backends")]
    pub shadow: Option<String>,
    /// Routing table file (JSON), watched for changes.
    #[arg(long, env = "TRACTOR_ROUTES_FILE", conflicts_with = "routes_configmap")]
    pub routes_file: Option<std::path::PathBuf>,
    /// Routing table ConfigMap in POD_NAMESPACE, watched through the API.
    #[arg(long, env = "TRACTOR_ROUTES_CONFIGMAP")]
    pub routes_configmap: Option<String>,
    /// The namespace of --routes-configmap (the pod's own, in a cluster).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Keep each value of this header on one version.
    #[arg(long, env = "TRACTOR_STICKY_HEADER")]
    pub sticky_header: Option<String>,
    /// Retry a failed canary request once on the stable (first) version.
    #[arg(long, env = "TRACTOR_RETRY_ON_STABLE")]
    pub retry_on_stable: bool,
    /// A backend whose answer has not begun within this is a 502.
    #[arg(long, env = "TRACTOR_BACKEND_TIMEOUT_MS", default_value_t = 30_000)]
    pub backend_timeout_ms: u64,
    /// The longest one request may take, retry and answer included: 504
    /// when no answer has begun by then, and an answer still streaming is cut.
    #[arg(long, env = "TRACTOR_REQUEST_TIMEOUT_MS", default_value_t = 60_000,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_ms: u64,
    /// Largest request body forwarded; larger ones are refused with 413
    /// before any version sees them.
    #[arg(long, env = "TRACTOR_MAX_BODY_BYTES", default_value_t = 64 << 20)]
    pub max_body_bytes: usize,
    /// Largest backend answer relayed (streamed, never held whole): 502 when
    /// its length says so up front, cut when it streams past it.
    #[arg(long, env = "TRACTOR_MAX_RESPONSE_BYTES", default_value_t = 256 << 20)]
    pub max_response_bytes: u64,
    /// Requests forwarded at once; beyond it, 503 with Retry-After.
    #[arg(long, env = "TRACTOR_MAX_INFLIGHT", default_value_t = 1024)]
    pub max_inflight: usize,
    #[command(flatten)]
    pub connections: super::serve::ConnectionArgs,

    // Access control (issue 12; docs/security.md).
    /// The router's own bearer token to its backends (a file holding the
    /// token), sent instead of the caller's; re-read when it changes.
    #[arg(long, env = "TRACTOR_BACKEND_TOKEN_FILE")]
    pub backend_token_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub auth: tractor::auth::AuthArgs,
    #[command(flatten)]
    pub tls: tractor::tls::TlsArgs,
    #[command(flatten)]
    pub backend_tls: tractor::tls::BackendTlsArgs,
}

pub async fn run(args: RouteArgs) -> anyhow::Result<()> {
    use tractor::route::{RouteConfig, RoutesSource};
    let tls = args.tls.files().map(tractor::tls::TlsServer::new).transpose()?;
    let grpc = match args.grpc_port {
        0 => None,
        port => Some(tractor::route::grpc::GrpcListen {
            addr: SocketAddr::new(args.listen.ip(), port),
            tls: tls.as_ref().map(tractor::tls::TlsServer::for_h2).transpose()?,
        }),
    };
    let routes = match (args.routes_file, args.routes_configmap) {
        (Some(path), _) => RoutesSource::File(path),
        (None, Some(name)) => RoutesSource::ConfigMap { namespace: args.namespace, name },
        (None, None) => {
            if args.backends.is_empty() {
                bail!("give --backend NAME=URL[@WEIGHT], --routes-file or --routes-configmap");
            }
            let mut backends = args.backends;
            for entry in &args.grpc_backends {
                let Some((version, url)) = entry.split_once('=') else {
                    bail!("--grpc-backend {entry:?}: give NAME=URL");
                };
                let Some(backend) = backends.iter_mut().find(|b| b.version == version) else {
                    bail!("--grpc-backend {entry:?}: no --backend named {version:?}");
                };
                backend.grpc = Some(url.to_string());
            }
            if backends.len() == 1 && backends[0].weight == 0 {
                backends[0].weight = 100;
            }
            RoutesSource::Static(tractor::contract::routes::RouteTable {
                backends,
                shadow: args.shadow,
            })
        }
    };
    let config = RouteConfig {
        listen: args.listen,
        admin_listen: args.admin_listen,
        routes,
        sticky_header: args.sticky_header,
        retry_on_stable: args.retry_on_stable,
        backend_timeout: std::time::Duration::from_millis(args.backend_timeout_ms),
        request_timeout: std::time::Duration::from_millis(args.request_timeout_ms),
        max_body_bytes: args.max_body_bytes,
        max_response_bytes: args.max_response_bytes,
        max_inflight: args.max_inflight,
        connections: tractor::listen::ConnectionLimits::from(&args.connections),
        auth: tractor::auth::AuthConfig {
            backend_token_file: args.backend_token_file,
            ..args.auth.config()
        },
        backend_tls: args.backend_tls.backend_tls()?,
    };
    tractor::route::run_with_grpc(config, tls, grpc, tractor::serve::shutdown_signal()).await?;
    Ok(())
}
