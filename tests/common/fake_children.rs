//! `tractor up`'s children played in-process ([`Launcher`]), so its runner
//! can be driven tick by tick without real models: a `serve` answers its
//! health check on the port its arguments name; a `route` answers its admin
//! API with the canary figures the test sets, for every version of the
//! routes file it was given, and counts the resets. Every launch's argv is
//! kept, so a test reads what `up` passed.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::routing::{get, post};
use tractor::contract::routes::{RouteTable, StatsReport, VersionStats};
use tractor::local::{Launched, Launcher};
use tractor::plan::CanaryFigures;

#[derive(Default)]
pub struct FakeChildren {
    launched: Mutex<Vec<Vec<String>>>,
    figures: Arc<Mutex<Option<CanaryFigures>>>,
    resets: Arc<AtomicU32>,
}

/// The value after `flag` in an argv of `--flag value` pairs.
pub fn value_of<'a>(argv: &'a [String], flag: &str) -> Option<&'a str> {
    argv.iter().position(|a| a == flag).and_then(|i| argv.get(i + 1)).map(String::as_str)
}

impl FakeChildren {
    /// What the router reports for each version from now on (`None`: no traffic).
    pub fn set_figures(&self, figures: Option<CanaryFigures>) {
        *self.figures.lock().unwrap() = figures;
    }

    pub fn resets(&self) -> u32 {
        self.resets.load(Ordering::SeqCst)
    }

    /// The argv of the last `serve` started for `version`.
    pub fn serve_argv(&self, version: &str) -> Option<Vec<String>> {
        let launched = self.launched.lock().unwrap();
        launched
            .iter()
            .rev()
            .find(|argv| {
                argv.first().is_some_and(|s| s == "serve")
                    && value_of(argv, "--model-version") == Some(version)
            })
            .cloned()
    }

    fn router_app(&self, routes: PathBuf) -> axum::Router {
        let figures = self.figures.clone();
        let resets = self.resets.clone();
        axum::Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/admin/stats",
                get(move || {
                    let report = stats_report(&routes, *figures.lock().unwrap());
                    async move { Json(report) }
                }),
            )
            .route(
                "/admin/stats/reset",
                post(move || {
                    resets.fetch_add(1, Ordering::SeqCst);
                    async { "reset" }
                }),
            )
    }
}

/// The figures for every version the routes file names, as a router that
/// saw that traffic on each would report them.
fn stats_report(routes: &Path, figures: Option<CanaryFigures>) -> StatsReport {
    let table: RouteTable = std::fs::read(routes)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    let versions = figures
        .map(|f| {
            table
                .backends
                .iter()
                .map(|b| {
                    let stats = VersionStats {
                        requests: f.requests,
                        errors: f.errors,
                        latency_p50_ms: f.latency_p99_ms,
                        latency_p99_ms: f.latency_p99_ms,
                        agreement: f.agreement,
                        ..VersionStats::default()
                    };
                    (b.version.clone(), stats)
                })
                .collect()
        })
        .unwrap_or_default();
    StatsReport { versions }
}

fn refused(why: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, why)
}

impl Launcher for FakeChildren {
    fn launch(&self, argv: &[String], _log: &Path) -> std::io::Result<Box<dyn Launched>> {
        let (address, app) = match argv.first().map(String::as_str) {
            Some("serve") => {
                let port = value_of(argv, "--http-port")
                    .ok_or_else(|| refused(format!("serve without --http-port: {argv:?}")))?;
                let app = axum::Router::new().route("/v2/health/ready", get(|| async { "ready" }));
                (format!("127.0.0.1:{port}"), app)
            }
            Some("route") => {
                let admin = value_of(argv, "--admin-listen")
                    .ok_or_else(|| refused(format!("route without --admin-listen: {argv:?}")))?;
                let routes = value_of(argv, "--routes-file")
                    .ok_or_else(|| refused(format!("route without --routes-file: {argv:?}")))?;
                (admin.to_string(), self.router_app(PathBuf::from(routes)))
            }
            _ => return Err(refused(format!("no fake child for {argv:?}"))),
        };
        // Bound before `launch` returns: the child answers from its first tick,
        // as a process that is ready at once would.
        let listener = std::net::TcpListener::bind(&address)?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        self.launched.lock().unwrap().push(argv.to_vec());
        Ok(Box::new(FakeChild { task }))
    }
}

struct FakeChild {
    task: tokio::task::JoinHandle<()>,
}

impl Launched for FakeChild {
    fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        // A server task that ended stopped as a process exiting 1 would.
        Ok(self.task.is_finished().then(|| ExitStatus::from_raw(1 << 8)))
    }

    fn kill(&mut self) {
        self.task.abort();
    }
}
