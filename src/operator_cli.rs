//! The operator's subcommands: `crd`, `controller` and `rollout`. Part of
//! the binary (not the library), so errors end here as `anyhow`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::Reporter;
use serde_json::json;

use tractor::controller::{self, ControllerMetrics, HttpRouterStats, OperatorConfig};
use tractor::crd::{ABORT_ANNOTATION, ModelDeployment, ModelDeploymentStatus, PROMOTE_ANNOTATION};
use tractor::local;

#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Image every role runs (serving pods, router, optimization jobs).
    #[arg(long, env = "TRACTOR_IMAGE", default_value = "ghcr.io/tractor-dev/tractor:latest")]
    image: String,
    /// Where optimization jobs write artifacts, e.g. s3://bucket/tractor.
    #[arg(
        long,
        env = "TRACTOR_ARTIFACT_STORE",
        default_value = "file:///var/lib/tractor/artifacts"
    )]
    artifact_store: String,
    /// Secret whose keys become environment variables of jobs and serving pods.
    #[arg(long, env = "TRACTOR_STORE_CREDENTIALS")]
    store_credentials: Option<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "TRACTOR_METRICS_ADDR", default_value = "0.0.0.0:8081")]
    metrics_addr: SocketAddr,
    /// Elect a leader through a Lease so that several replicas can run.
    #[arg(long, env = "TRACTOR_LEADER_ELECTION", default_value_t = false)]
    leader_election: bool,
    /// Namespace of the leader Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "tractor-system")]
    lease_namespace: String,
    /// This replica's identity in the Lease.
    #[arg(long, env = "POD_NAME", default_value = "tractor-controller")]
    identity: String,
}

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
    #[arg(long, short, env = "TRACTOR_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Act on a `tractor up` on this machine that keeps its state here
    /// (its `--state-dir`, `.tractor` by default) instead of a cluster.
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

/// `tractor crd`: both CustomResourceDefinitions as YAML.
pub fn print_crds() -> anyhow::Result<()> {
    print!("{}", tractor::crd::crds_yaml().context("rendering the CRDs")?);
    Ok(())
}

pub async fn run_controller(args: ControllerArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
    let metrics = ControllerMetrics::default();
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let http = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("listening on {}", args.metrics_addr))?;
    tokio::spawn(serve_health(http, metrics.clone(), ready.clone()));

    // Ready means "up and connected", not "leading": a follower that waits
    // for the Lease must be Ready too, or a rolling update would stall on it.
    ready.store(true, std::sync::atomic::Ordering::SeqCst);
    let lease = args.leader_election.then(|| {
        controller::leader::LeaseLock::new(
            client.clone(),
            &args.lease_namespace,
            "tractor-controller",
            &args.identity,
        )
    });
    if let Some(lease) = &lease {
        lease.acquire().await?;
    }
    let ctx = Arc::new(controller::Context {
        client,
        config: OperatorConfig {
            image: args.image,
            artifact_store: args.artifact_store,
            store_credentials: args.store_credentials,
            log_format: std::env::var("TRACTOR_LOG_FORMAT").unwrap_or_else(|_| "json".into()),
        },
        metrics,
        router: Arc::new(HttpRouterStats::default()),
        reporter: Reporter { controller: "tractor".into(), instance: Some(args.identity.clone()) },
        now: Box::new(Timestamp::now),
    });
    match &lease {
        Some(lease) => {
            tokio::select! {
                result = controller::run(ctx) => result.context("running the controller")?,
                lost = lease.keep() => bail!("lost leadership: {lost}"),
            }
        }
        None => controller::run(ctx).await.context("running the controller")?,
    }
    Ok(())
}

async fn serve_health(
    listener: tokio::net::TcpListener,
    metrics: ControllerMetrics,
    ready: Arc<std::sync::atomic::AtomicBool>,
) {
    use axum::http::StatusCode;
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.load(std::sync::atomic::Ordering::SeqCst);
                async move {
                    if ready {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "starting")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let families = metrics.registry.gather();
                async move {
                    let mut out = Vec::new();
                    let _ = prometheus::Encoder::encode(
                        &prometheus::TextEncoder::new(),
                        &families,
                        &mut out,
                    );
                    String::from_utf8(out).unwrap_or_default()
                }
            }),
        );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the health server stopped");
    }
}

pub async fn run_rollout(args: RolloutArgs) -> anyhow::Result<()> {
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
    let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
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
        out.push_str(&format!("stable: {} ({}%)\n", stable.version, stable.weight));
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

#[derive(Debug, Args)]
pub struct RouteArgs {
    /// Address for traffic.
    #[arg(long, env = "TRACTOR_ROUTE_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Address of the admin API (/admin/stats, /admin/routes, /metrics, /healthz).
    #[arg(long, env = "TRACTOR_ROUTE_ADMIN_LISTEN", default_value = "127.0.0.1:9090")]
    admin_listen: SocketAddr,
    /// A version as NAME=URL[@WEIGHT]; repeat for each.
    #[arg(long = "backend", value_parser = tractor::route::parse_backend, conflicts_with_all = ["routes_file", "routes_configmap"])]
    backends: Vec<tractor::contract::routes::Backend>,
    /// Version that gets a copy of every request, measured for agreement.
    #[arg(long, requires = "backends")]
    shadow: Option<String>,
    /// Routing table file (JSON), watched for changes.
    #[arg(long, env = "TRACTOR_ROUTES_FILE", conflicts_with = "routes_configmap")]
    routes_file: Option<std::path::PathBuf>,
    /// Routing table ConfigMap in POD_NAMESPACE, watched through the API.
    #[arg(long, env = "TRACTOR_ROUTES_CONFIGMAP")]
    routes_configmap: Option<String>,
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Keep each value of this header on one version.
    #[arg(long, env = "TRACTOR_STICKY_HEADER")]
    sticky_header: Option<String>,
    /// Retry a failed canary request once on the stable (first) version.
    #[arg(long, env = "TRACTOR_RETRY_ON_STABLE")]
    retry_on_stable: bool,
    #[arg(long, env = "TRACTOR_BACKEND_TIMEOUT_MS", default_value_t = 30_000)]
    backend_timeout_ms: u64,
    #[arg(long, env = "TRACTOR_MAX_BODY_BYTES", default_value_t = 64 << 20)]
    max_body_bytes: usize,
    #[arg(long, env = "TRACTOR_MAX_INFLIGHT", default_value_t = 1024)]
    max_inflight: usize,
}

pub async fn run_route(args: RouteArgs) -> anyhow::Result<()> {
    use tractor::route::{RouteConfig, RoutesSource};
    let routes = match (args.routes_file, args.routes_configmap) {
        (Some(path), _) => RoutesSource::File(path),
        (None, Some(name)) => RoutesSource::ConfigMap { namespace: args.namespace, name },
        (None, None) => {
            if args.backends.is_empty() {
                bail!("give --backend NAME=URL[@WEIGHT], --routes-file or --routes-configmap");
            }
            let mut backends = args.backends;
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
        max_body_bytes: args.max_body_bytes,
        max_inflight: args.max_inflight,
    };
    tractor::route::run(config, tractor::serve::shutdown_signal()).await?;
    Ok(())
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// The ModelDeployment YAML (several documents play in order).
    #[arg(long, short = 'f')]
    file: std::path::PathBuf,
    /// Port of the router, where clients send requests.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Where artifacts, logs and the status are kept, so a restart resumes.
    #[arg(long, default_value = ".tractor")]
    state_dir: std::path::PathBuf,
    /// Print events as JSON lines.
    #[arg(long)]
    json: bool,
}

pub async fn run_up(args: UpArgs) -> anyhow::Result<()> {
    let config = tractor::local::UpConfig {
        file: args.file,
        port: args.port,
        state_dir: args.state_dir,
        json: args.json,
        tractor: std::env::current_exe().context("finding the tractor binary")?,
    };
    tractor::local::up(config, tractor::serve::shutdown_signal()).await?;
    Ok(())
}
