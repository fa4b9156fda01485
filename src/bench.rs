//! `tractor bench`: a load generator for any V2 endpoint, in the spirit of
//! Triton's `perf_analyzer`, plus an in-process mode that runs the engine
//! directly on the same inputs, as the baseline for serving overhead.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::client::{self, ClientError, Endpoint, Protocol};
use crate::engine::{EngineOptions, Model, Threads};
use crate::latency;

/// Distinct generated requests a run cycles through.
const GENERATED_INPUTS: u64 = 32;

/// When a run of one concurrency level stops.
#[derive(Debug, Clone, Copy)]
pub enum StopAfter {
    Duration(Duration),
    Requests(usize),
}

#[derive(Debug, Clone)]
pub enum Target {
    /// A running V2 server.
    Http { url: String, model: String, input: Option<PathBuf> },
    /// The engine in this process, no HTTP at all.
    InProcess { model_path: PathBuf, threads: Threads },
}

#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub target: Target,
    pub concurrency: Vec<usize>,
    pub stop: StopAfter,
    /// Rows per generated request.
    pub batch: usize,
    /// Requests sent first and not measured.
    pub warmup: usize,
    /// Bearer token sent with every request (servers with `--auth-file`).
    pub token: Option<String>,
    /// REST JSON, REST binary, or gRPC (`Target::Http`'s URL is then the
    /// gRPC port's).
    pub protocol: Protocol,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error("every request failed; the first error: {0}")]
    AllFailed(String),
    #[error(transparent)]
    Send(#[from] reqwest::Error),
    #[error("{status}: {body}")]
    Status { status: reqwest::StatusCode, body: String },
    #[error(transparent)]
    Join(#[from] tokio::task::JoinError),
}

/// Latency figures in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// The figures of one concurrency level.
#[derive(Debug, Clone, Serialize)]
pub struct LevelResult {
    pub concurrency: usize,
    pub requests: usize,
    pub errors: usize,
    pub duration_s: f64,
    pub throughput_rps: f64,
    pub latency_ms: Latency,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target: String,
    pub batch: usize,
    pub results: Vec<LevelResult>,
}

impl Report {
    /// One line per concurrency level, for people.
    pub fn human(&self) -> String {
        let mut out = format!("target {} (batch {})\n", self.target, self.batch);
        for r in &self.results {
            out.push_str(&format!(
                "concurrency {:>3}: {:>9.1} req/s  p50 {:>8.3} ms  p90 {:>8.3} ms  p99 {:>8.3} ms  ({} requests, {} errors)\n",
                r.concurrency, r.throughput_rps, r.latency_ms.p50, r.latency_ms.p90, r.latency_ms.p99, r.requests, r.errors
            ));
            if let Some(e) = &r.first_error {
                out.push_str(&format!("  first error: {e}\n"));
            }
        }
        out
    }
}

/// Nearest-rank percentiles of the latencies (microseconds) in `histogram`,
/// in milliseconds, each the upper bound of its bucket (so at most 0.1% high).
pub fn latency_summary(histogram: &Histogram<u64>) -> Latency {
    if histogram.is_empty() {
        return Latency { mean: 0.0, p50: 0.0, p90: 0.0, p99: 0.0, max: 0.0 };
    }
    let ms = |micros: u64| micros as f64 / 1e3;
    Latency {
        mean: histogram.mean() / 1e3,
        p50: ms(histogram.value_at_quantile(0.50)),
        p90: ms(histogram.value_at_quantile(0.90)),
        p99: ms(histogram.value_at_quantile(0.99)),
        max: ms(histogram.max()),
    }
}

/// Runs every concurrency level in turn.
///
/// # Errors
/// An unreachable endpoint, unreadable input, or a level where every
/// request failed.
pub async fn run(config: &BenchConfig) -> Result<Report, BenchError> {
    let (label, runner) = prepare(config).await?;
    let mut results = Vec::new();
    for &concurrency in &config.concurrency {
        for _ in 0..config.warmup {
            let _ = runner.once().await;
        }
        let result = run_level(&runner, concurrency.max(1), config.stop).await;
        if result.requests > 0 && result.errors == result.requests {
            return Err(BenchError::AllFailed(result.first_error.unwrap_or_default()));
        }
        results.push(result);
    }
    Ok(Report { target: label, batch: config.batch, results })
}

#[derive(Clone)]
enum Runner {
    /// Requests cycle through `bodies`, so a generated load is not one input
    /// repeated (which would hide caching and make agreement all or nothing).
    Http {
        http: reqwest::Client,
        url: String,
        bodies: Arc<Vec<bytes::Bytes>>,
        /// `Inference-Header-Content-Length` of binary bodies.
        header_length: Arc<Vec<Option<usize>>>,
        next: Arc<std::sync::atomic::AtomicUsize>,
    },
    /// Over one HTTP/2 connection, as Triton's gRPC clients do.
    Grpc {
        client: client::GrpcClient,
        url: String,
        requests: Arc<Vec<crate::contract::grpc::ModelInferRequest>>,
        next: Arc<std::sync::atomic::AtomicUsize>,
    },
    Engine {
        model: Arc<Model>,
        inputs: Arc<Vec<crate::engine::Tensor>>,
    },
}

impl Runner {
    async fn once(&self) -> Result<(), BenchError> {
        match self {
            Runner::Http { http, url, bodies, header_length, next } => {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % bodies.len();
                let body = &bodies[i];
                let mut request = http.post(url).body(body.clone());
                request = match header_length.get(i).copied().flatten() {
                    Some(len) => request
                        .header("content-type", "application/octet-stream")
                        .header(crate::contract::v2::HEADER_LENGTH, len),
                    None => request.header("content-type", "application/json"),
                };
                let response = request.send().await?;
                let status = response.status();
                let text = response.bytes().await?;
                if status.is_success() {
                    Ok(())
                } else {
                    Err(BenchError::Status { status, body: String::from_utf8_lossy(&text).into() })
                }
            }
            Runner::Grpc { client, url, requests, next } => {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % requests.len();
                let mut client = client.clone();
                client.model_infer(requests[i].clone()).await.map(|_| ()).map_err(|status| {
                    BenchError::Client(ClientError::Status {
                        url: url.clone(),
                        status: status.code() as u16,
                        body: status.message().to_string(),
                    })
                })
            }
            Runner::Engine { model, inputs } => {
                let (model, inputs) = (model.clone(), inputs.clone());
                Ok(tokio::task::spawn_blocking(move || model.run(&inputs).map(|_| ())).await??)
            }
        }
    }
}

async fn prepare(config: &BenchConfig) -> Result<(String, Runner), BenchError> {
    match &config.target {
        Target::Http { url, model, input } if config.protocol == Protocol::Grpc => {
            if input.is_some() {
                return Err(BenchError::AllFailed(
                    "--input is a V2 REST body; over gRPC the requests are generated".into(),
                ));
            }
            let mut grpc = client::grpc_client(url, config.token.as_deref()).await?;
            let specs = client::grpc_input_specs(&mut grpc, url, model).await?;
            let requests = (1..=GENERATED_INPUTS)
                .map(|seed| {
                    let tensors = client::synthetic_inputs(&specs, config.batch, seed);
                    client::grpc_request(model, &specs, &tensors)
                })
                .collect();
            let label = format!("{url} gRPC ModelInfer {model}");
            let runner = Runner::Grpc {
                client: grpc,
                url: url.clone(),
                requests: Arc::new(requests),
                next: Arc::default(),
            };
            Ok((label, runner))
        }
        Target::Http { url, model, input } => {
            let mut headers = reqwest::header::HeaderMap::new();
            if let Some(token) = &config.token
                && let Ok(value) = format!("Bearer {token}").parse()
            {
                headers.insert(reqwest::header::AUTHORIZATION, value);
            }
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(1024)
                .default_headers(headers)
                .build()
                .map_err(|source| ClientError::Http { url: url.clone(), source })?;
            let endpoint = Endpoint::new(url, model, None);
            let binary = config.protocol == Protocol::RestBinary;
            let mut header_length = Vec::new();
            let bodies: Vec<bytes::Bytes> = match input {
                Some(path) => vec![
                    std::fs::read(path)
                        .map_err(|e| ClientError::Input {
                            path: path.display().to_string(),
                            reason: e.to_string(),
                        })?
                        .into(),
                ],
                None => {
                    let specs = client::fetch_input_specs(&http, &endpoint).await?;
                    (1..=GENERATED_INPUTS)
                        .map(|seed| {
                            let tensors = client::synthetic_inputs(&specs, config.batch, seed);
                            if binary {
                                let (body, len) = client::v2_binary_request(&specs, &tensors);
                                header_length.push(Some(len));
                                return body.into();
                            }
                            serde_json::to_vec(&client::v2_request(&specs, &tensors))
                                .expect("JSON values always serialize")
                                .into()
                        })
                        .collect()
                }
            };
            let runner = Runner::Http {
                http,
                url: endpoint.infer_url(),
                bodies: Arc::new(bodies),
                header_length: Arc::new(header_length),
                next: Arc::default(),
            };
            Ok((endpoint.infer_url(), runner))
        }
        Target::InProcess { model_path, threads } => {
            let options = EngineOptions { threads: *threads };
            let model = Model::load_path(model_path, &options)?;
            let inputs = client::synthetic_inputs(model.inputs(), config.batch, 1);
            let label = format!("in-process engine {}", model_path.display());
            Ok((label, Runner::Engine { model: Arc::new(model), inputs: Arc::new(inputs) }))
        }
    }
}

/// When a worker should stop: after a deadline, or once a shared request
/// budget is spent.
#[derive(Clone)]
struct Quota {
    deadline: Option<Instant>,
    budget: Option<Arc<std::sync::atomic::AtomicUsize>>,
}

impl Quota {
    fn take(&self) -> bool {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        match &self.budget {
            Some(b) => b
                .fetch_update(
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                    |n| n.checked_sub(1),
                )
                .is_ok(),
            None => true,
        }
    }
}

/// What one worker saw.
struct Tally {
    /// Microseconds of the requests that succeeded.
    latencies: Histogram<u64>,
    errors: usize,
    first_error: Option<String>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally { latencies: latency::histogram(), errors: 0, first_error: None }
    }
}

impl Tally {
    fn record<E: Into<BenchError>>(&mut self, started: Instant, result: Result<(), E>) {
        match result {
            Ok(()) => {
                latency::record(&mut self.latencies, started.elapsed());
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| e.into().to_string());
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        // Both histograms auto-resize, so adding never runs out of range.
        let _ = self.latencies.add(&other.latencies);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

async fn run_level(runner: &Runner, concurrency: usize, stop: StopAfter) -> LevelResult {
    let started = Instant::now();
    let quota = Quota {
        deadline: match stop {
            StopAfter::Duration(d) => Some(started + d),
            StopAfter::Requests(_) => None,
        },
        budget: match stop {
            StopAfter::Requests(n) => Some(Arc::new(std::sync::atomic::AtomicUsize::new(n))),
            StopAfter::Duration(_) => None,
        },
    };
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let quota = quota.clone();
        match runner.clone() {
            // The engine baseline runs on its own thread with no hand-off per
            // request, so that it measures the engine and nothing else.
            Runner::Engine { model, inputs } => {
                workers.spawn_blocking(move || {
                    let mut tally = Tally::default();
                    while quota.take() {
                        let t0 = Instant::now();
                        tally.record(t0, model.run(&inputs).map(|_| ()));
                    }
                    tally
                });
            }
            http => {
                workers.spawn(async move {
                    let mut tally = Tally::default();
                    while quota.take() {
                        let t0 = Instant::now();
                        tally.record(t0, http.once().await);
                    }
                    tally
                });
            }
        }
    }
    let mut total = Tally::default();
    while let Some(joined) = workers.join_next().await {
        if let Ok(tally) = joined {
            total.merge(tally);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ok = usize::try_from(total.latencies.len()).unwrap_or(usize::MAX);
    LevelResult {
        concurrency,
        requests: ok + total.errors,
        errors: total.errors,
        duration_s: elapsed,
        throughput_rps: if elapsed > 0.0 { ok as f64 / elapsed } else { 0.0 },
        latency_ms: latency_summary(&total.latencies),
        first_error: total.first_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(samples_ms: impl IntoIterator<Item = u64>) -> Histogram<u64> {
        let mut h = latency::histogram();
        for ms in samples_ms {
            h.record(ms * 1000).unwrap();
        }
        h
    }

    /// Within the histogram's precision of `want`, and never below it.
    fn near(got: f64, want: f64) -> bool {
        got >= want && got <= want * 1.001
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let l = latency_summary(&histogram(1..=100));
        assert!(near(l.p50, 50.0) && near(l.p90, 90.0) && near(l.p99, 99.0), "{l:?}");
        assert!(near(l.max, 100.0), "{l:?}");
        assert!((l.mean - 50.5).abs() < 50.5e-3, "{l:?}");
        assert!(near(latency_summary(&histogram([3])).p99, 3.0));
        assert_eq!(latency_summary(&latency::histogram()).p50, 0.0);
    }

    #[test]
    fn tallies_merge_latencies_and_keep_the_first_error() {
        let mut a = Tally::default();
        a.record(Instant::now(), Ok::<(), BenchError>(()));
        let mut b = Tally::default();
        b.record(Instant::now(), Err(BenchError::AllFailed("boom".into())));
        b.record(Instant::now(), Err(BenchError::AllFailed("later".into())));
        a.merge(b);
        assert_eq!((a.latencies.len(), a.errors), (1, 2));
        assert_eq!(a.first_error.as_deref(), Some("every request failed; the first error: boom"));
    }
}
