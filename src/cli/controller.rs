//! `tractor controller`: the Kubernetes operator, with its health and
//! metrics server and optional leader election.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::Args;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::Reporter;

use tractor::controller::{self, ControllerMetrics, HttpRouterStats, OperatorConfig};

/// What shapes the objects the operator writes: shared by `controller`
/// and `render`, so a render uses the same settings as the running operator.
#[derive(Debug, Args)]
pub struct OperatorOptions {
    /// Image every role runs (serving pods, router, optimization jobs).
    /// Unset: the image of the controller's own pod (read through the API
    /// from POD_NAME and POD_NAMESPACE), so whatever set that image (Helm,
    /// a kustomize `images:` override, an admission policy) sets every
    /// pod's; outside a pod, this binary's release image.
    #[arg(long, env = "TRACTOR_IMAGE")]
    image: Option<String>,
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
    /// Image prefixes `spec.serving.image` may name (comma-separated, each
    /// ending in '/', ':' or '@'); empty: only the operator's own image.
    #[arg(long, env = "TRACTOR_ALLOWED_IMAGES", value_delimiter = ',')]
    allowed_images: Vec<String>,
    /// URL prefixes `spec.serving.auth.jwks.url` may name (comma-separated,
    /// each https://HOST/...): the identity providers routers may fetch
    /// keys from; empty: JWKS from ConfigMaps only.
    #[arg(long, env = "TRACTOR_ALLOWED_JWKS_URLS", value_delimiter = ',')]
    allowed_jwks_urls: Vec<String>,
}

/// The image of this binary's release, when nothing names another.
pub const RELEASE_IMAGE: &str = concat!("ghcr.io/tractor-dev/tractor:", env!("CARGO_PKG_VERSION"));

impl OperatorOptions {
    /// The checked settings, for an operator in `operator_namespace` whose
    /// own pod runs `running_image` (if it runs in one).
    pub fn config(
        self,
        operator_namespace: String,
        admin_token: controller::access::AdminToken,
        running_image: Option<String>,
    ) -> anyhow::Result<OperatorConfig> {
        controller::access::check_image_prefixes(&self.allowed_images)
            .map_err(|e| anyhow::anyhow!("--allowed-images: {e}"))?;
        controller::access::check_jwks_prefixes(&self.allowed_jwks_urls)
            .map_err(|e| anyhow::anyhow!("--allowed-jwks-urls: {e}"))?;
        Ok(OperatorConfig {
            image: self.image.or(running_image).unwrap_or_else(|| RELEASE_IMAGE.into()),
            artifact_store: self.artifact_store,
            store_credentials: self.store_credentials,
            log_format: std::env::var("TRACTOR_LOG_FORMAT").unwrap_or_else(|_| "json".into()),
            tracing: controller::objects::TracingConfig::from_lookup(|name| {
                std::env::var(name).ok()
            }),
            allowed_images: self.allowed_images,
            allowed_jwks_urls: self.allowed_jwks_urls,
            operator_namespace,
            admin_token,
        })
    }
}

#[derive(Debug, Args)]
pub struct ControllerArgs {
    #[command(flatten)]
    operator: OperatorOptions,
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
    /// Watch only these namespaces (comma-separated), for an install with a
    /// Role in each instead of a ClusterRole; empty: every namespace.
    #[arg(long, env = "TRACTOR_WATCH_NAMESPACES", value_delimiter = ',')]
    watch_namespaces: Vec<String>,
    /// Reconciles that run at once in each watch (the whole cluster, or
    /// each of --watch-namespaces); one ModelDeployment is never
    /// reconciled twice at once.
    #[arg(
        long,
        env = "TRACTOR_MAX_CONCURRENT_RECONCILES",
        default_value_t = controller::DEFAULT_CONCURRENT_RECONCILES,
        value_parser = clap::value_parser!(u16).range(1..=1024)
    )]
    max_concurrent_reconciles: u16,
}

pub async fn run(args: ControllerArgs) -> anyhow::Result<()> {
    for namespace in &args.watch_namespaces {
        tractor::crd::check_object_name("--watch-namespaces", namespace)?;
    }
    let admin_token =
        controller::access::AdminToken::generate().context("making the controller's token")?;
    let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
    let running_image = match (&args.operator.image, std::env::var("POD_NAME")) {
        (None, Ok(pod)) => Some(controller::own_image(&client, &args.lease_namespace, &pod).await?),
        _ => None,
    };
    let config =
        args.operator.config(args.lease_namespace.clone(), admin_token.clone(), running_image)?;
    tracing::info!(image = %config.image, "the image of the pods the operator creates");
    let metrics = ControllerMetrics::default();
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let http = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("listening on {}", args.metrics_addr))?;
    tokio::spawn(serve_health(http, metrics.clone(), ready.clone()));

    // Ready means "the process is up", not "leading" and not "connected"
    // (the client has not called the API yet): a follower that waits for
    // the Lease must be Ready too, or a rolling update would stall on it.
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
    let namespaces = args.watch_namespaces;
    let concurrency = args.max_concurrent_reconciles;
    let ctx = Arc::new(controller::Context {
        router: Arc::new(HttpRouterStats::new(client.clone(), &admin_token)),
        client,
        config,
        metrics,
        reporter: Reporter { controller: "tractor".into(), instance: Some(args.identity.clone()) },
        now: Box::new(Timestamp::now),
    });
    match &lease {
        Some(lease) => {
            tokio::select! {
                result = controller::run_watching(ctx, &namespaces, concurrency) => result.context("running the controller")?,
                lost = lease.keep() => bail!("lost leadership: {lost}"),
            }
        }
        None => controller::run_watching(ctx, &namespaces, concurrency)
            .await
            .context("running the controller")?,
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
