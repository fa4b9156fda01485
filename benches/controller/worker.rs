//! The measured side: the controller's real code against the fake API,
//! with a clock on every reconcile and the process's memory and CPU read
//! from the kernel.
//!
//! Two ways to drive it:
//! - [`direct`]: `controller::reconcile_object` (what the `Controller`
//!   calls for each object the watch delivers) on every `ModelDeployment`
//!   in turn, one at a time, pass after pass until the fleet converges,
//!   then one pass more with nothing to do: the cost of one reconcile;
//! - [`start_run`]: the real `controller::run` (watches, owns, requeues,
//!   concurrent reconciles), timed through the `reconcile` span it opens
//!   (by a `tracing` layer, [`Timings`]), while the driver moves the
//!   fleet on: throughput and latency under the load of a whole fleet.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use hdrhistogram::Histogram;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams};
use kube::runtime::events::Reporter;
use serde_json::{Value, json};
use tracing::span::{Attributes, Id};
use tracing::{Subscriber, field::Field, field::Visit};
use tracing_subscriber::layer::{Context as LayerContext, Layer};
use tracing_subscriber::registry::LookupSpan;

use tractor::controller::{self, Context, ControllerMetrics, OperatorConfig};
use tractor::controller::{RouterStats, RouterStatsError};
use tractor::crd::ModelDeployment;
use tractor::plan::CanaryFigures;

use super::story::Progress;

/// Passes over the fleet a stage may take to converge in [`direct`].
const MAX_PASSES: usize = 8;

/// A healthy canary: the router's figures for every analysis.
struct HealthyRouter;

impl RouterStats for HealthyRouter {
    fn read<'a>(
        &'a self,
        _: &'a ModelDeployment,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Option<CanaryFigures>, RouterStatsError>> {
        let figures =
            CanaryFigures { requests: 200, errors: 0, latency_p99_ms: Some(12.0), agreement: None };
        Box::pin(async move { Ok(Some(figures)) })
    }
    fn reset<'a>(&'a self, _: &'a ModelDeployment) -> BoxFuture<'a, Result<(), RouterStatsError>> {
        Box::pin(async { Ok(()) })
    }
}

/// A client of the fake API at `url` (`http://127.0.0.1:PORT`).
pub fn client(url: &str) -> Client {
    let config = kube::Config::new(url.parse().expect("a URL"));
    Client::try_from(config).expect("a client")
}

/// The controller's context, as `tractor controller` builds it, with the
/// router's statistics answered in memory and the wall clock.
pub fn context(client: Client) -> Arc<Context> {
    Arc::new(Context {
        client,
        config: OperatorConfig {
            image: "registry.example.com/tractor:bench".into(),
            artifact_store: "s3://artifacts/tractor".into(),
            store_credentials: Some("store-credentials".into()),
            log_format: "json".into(),
            tracing: Default::default(),
            allowed_images: vec![],
            allowed_jwks_urls: vec![],
            operator_namespace: "tractor-system".into(),
            admin_token: controller::access::AdminToken::from_token("controller-token".into()),
        },
        metrics: ControllerMetrics::default(),
        router: Arc::new(HealthyRouter),
        reporter: Reporter { controller: "tractor".into(), instance: Some("bench".into()) },
        now: Box::new(Timestamp::now),
    })
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

/// Percentiles of a histogram of microseconds, in milliseconds.
pub fn summary(h: &Histogram<u64>) -> Value {
    let ms = |us: u64| us as f64 / 1000.0;
    json!({ "count": h.len(), "mean_ms": h.mean() / 1000.0,
        "p50_ms": ms(h.value_at_quantile(0.50)), "p90_ms": ms(h.value_at_quantile(0.90)),
        "p99_ms": ms(h.value_at_quantile(0.99)), "max_ms": ms(h.max()) })
}

fn record(h: &mut Histogram<u64>, elapsed: Duration) {
    h.saturating_record(elapsed.as_micros().max(1) as u64);
}

/// Peak and current resident memory of this process, in KiB
/// (`VmHWM`, `VmRSS` of `/proc/self/status`).
pub fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// User and system CPU time of this process so far, in seconds.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// What the process measured, for the report.
fn process_figures() -> Value {
    let (peak, rss) = memory_kib();
    json!({ "cpu_seconds": cpu_seconds(), "peak_rss_kib": peak, "rss_kib": rss })
}

async fn bench_get(client: &Client, method: http::Method, path: &str) -> Result<Value, String> {
    let request = http::Request::builder()
        .method(method)
        .uri(format!("/bench/{path}"))
        .body(vec![])
        .map_err(|e| e.to_string())?;
    let text = client.request_text(request).await.map_err(|e| format!("/bench/{path}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("/bench/{path}: {e}"))
}

/// API requests answered so far, watches left out.
async fn requests(client: &Client) -> Result<u64, String> {
    let counts: BTreeMap<String, u64> =
        serde_json::from_value(bench_get(client, http::Method::GET, "requests").await?)
            .map_err(|e| e.to_string())?;
    Ok(counts.iter().filter(|(k, _)| !k.starts_with("WATCH")).map(|(_, v)| v).sum())
}

/// One pass: every `ModelDeployment` through `reconcile_object`, in turn.
/// Returns the latencies, the errors, the API requests, wall and CPU seconds.
async fn pass(
    ctx: &Arc<Context>,
    client: &Client,
) -> Result<(Histogram<u64>, u64, u64, f64, f64), String> {
    let all =
        Api::<DynamicObject>::all_with(client.clone(), &controller::model_deployment_resource());
    let list = all.list(&ListParams::default()).await.map_err(|e| format!("listing: {e}"))?;
    let before = requests(client).await?;
    let mut h = histogram();
    let mut errors = 0;
    let (started, cpu) = (Instant::now(), cpu_seconds());
    for md in list.items {
        let t = Instant::now();
        let result = controller::reconcile_object(Arc::new(md), ctx.clone()).await;
        record(&mut h, t.elapsed());
        if let Err(e) = result {
            errors += 1;
            if errors <= 3 {
                eprintln!("reconcile failed: {e}");
            }
        }
    }
    let (wall, cpu) = (started.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    let calls = requests(client).await? - before;
    Ok((h, errors, calls, wall, cpu))
}

/// Every `ModelDeployment` reconciled in turn until the fleet holds what
/// each stage asks for (`deployed`, then `canary` after the driver's edit),
/// plus one pass with nothing left to do after each.
///
/// # Errors
/// A stage that does not converge in [`MAX_PASSES`] passes, with what is
/// still wrong; a request to the API that fails.
pub async fn direct(client: &Client) -> Result<Value, String> {
    let ctx = context(client.clone());
    let mut passes = vec![];
    let mut all = histogram();
    let mut steady = histogram();
    for stage in ["deployed", "canary"] {
        if stage == "canary" {
            bench_get(client, http::Method::POST, "canary").await?;
        }
        let mut converged = false;
        for n in 1..=MAX_PASSES + 1 {
            let label = if converged { "steady" } else { "converging" };
            let (h, errors, calls, wall, cpu) = pass(&ctx, client).await?;
            all.add(&h).map_err(|e| e.to_string())?;
            if converged {
                steady.add(&h).map_err(|e| e.to_string())?;
            }
            let check =
                bench_get(client, http::Method::GET, &format!("check?stage={stage}")).await?;
            passes.push(json!({ "stage": stage, "pass": n, "kind": label, "errors": errors,
                "requests": calls, "wall_seconds": wall, "cpu_seconds": cpu, "latency": summary(&h),
                "problems": check["count"] }));
            if converged {
                break;
            }
            converged = check["count"] == 0;
            if !converged && n == MAX_PASSES {
                return Err(format!("{stage}: not converged after {n} passes: {}", check["first"]));
            }
        }
    }
    Ok(json!({ "mode": "direct", "passes": passes, "all": summary(&all),
        "steady": summary(&steady), "process": process_figures() }))
}

/// What the reconcile spans measured since the last [`Timings::take`].
#[derive(Default)]
struct Window {
    latency: Option<Histogram<u64>>,
    first_start: Option<Instant>,
    last_end: Option<Instant>,
}

/// Times every `reconcile` span (the one `controller::reconcile` opens) and
/// notes which `ModelDeployment`s were reconciled.
#[derive(Default)]
pub struct Timings {
    window: Mutex<Window>,
    seen: Mutex<HashSet<String>>,
    /// Reconciles started, and finished.
    counts: Mutex<(u64, u64)>,
}

/// When a reconcile started, kept in its span.
struct Started(Instant);

#[derive(Default)]
struct Names {
    namespace: String,
    name: String,
}

impl Visit for Names {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &value);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}").trim_matches('"').to_string();
        match field.name() {
            "namespace" => self.namespace = text,
            "name" => self.name = text,
            _ => {}
        }
    }
}

struct Layered(&'static Timings);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Layered {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        if attrs.metadata().name() != "reconcile" {
            return;
        }
        let now = Instant::now();
        let mut names = Names::default();
        attrs.record(&mut names);
        self.0.seen.lock().unwrap().insert(format!("{}/{}", names.namespace, names.name));
        self.0.window.lock().unwrap().first_start.get_or_insert(now);
        self.0.counts.lock().unwrap().0 += 1;
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Started(now));
        }
    }

    fn on_close(&self, id: Id, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(Started(at)) = span.extensions_mut().remove::<Started>() else { return };
        let now = Instant::now();
        let mut window = self.0.window.lock().unwrap();
        record(window.latency.get_or_insert_with(histogram), now - at);
        window.last_end = Some(now);
        self.0.counts.lock().unwrap().1 += 1;
    }
}

impl Timings {
    /// The process's timings, installed with the global subscriber on
    /// first use: info-level JSON logs formatted as the controller's (and
    /// thrown away), plus the span clock.
    pub fn global() -> &'static Timings {
        static TIMINGS: OnceLock<&'static Timings> = OnceLock::new();
        TIMINGS.get_or_init(|| {
            use tracing_subscriber::layer::SubscriberExt;
            let timings: &'static Timings = Box::leak(Box::default());
            let subscriber = tracing_subscriber::registry()
                .with(tracing_subscriber::EnvFilter::new("info"))
                .with(tracing_subscriber::fmt::layer().json().with_writer(std::io::sink))
                .with(Layered(timings));
            tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
            timings
        })
    }

    /// How far the controller got since [`Timings::restart`].
    pub fn progress(&self) -> Progress {
        let (started, done) = *self.counts.lock().unwrap();
        Progress {
            seen: self.seen.lock().unwrap().len(),
            done,
            running: started.saturating_sub(done),
        }
    }

    /// Forgets everything: a new controller starts.
    pub fn restart(&self) {
        self.seen.lock().unwrap().clear();
        *self.counts.lock().unwrap() = (0, 0);
        *self.window.lock().unwrap() = Window::default();
    }

    /// The window's figures, and a new window.
    pub fn take(&self) -> Value {
        let window = std::mem::take(&mut *self.window.lock().unwrap());
        let latency = window.latency.unwrap_or_else(histogram);
        let busy = match (window.first_start, window.last_end) {
            (Some(a), Some(b)) if b > a => (b - a).as_secs_f64(),
            _ => 0.0,
        };
        json!({ "latency": summary(&latency), "busy_seconds": busy, "process": process_figures() })
    }
}

/// The real controller, running until dropped.
pub struct Running(tokio::task::JoinHandle<Result<(), kube::Error>>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts `controller::run` against the API at `client`, `concurrency`
/// reconciles at once, timed by [`Timings::global`].
pub fn start_run(client: Client, concurrency: u16) -> Running {
    let timings = Timings::global();
    timings.restart();
    Running(tokio::spawn(async move {
        controller::run_watching(context(client), &[], concurrency).await
    }))
}
