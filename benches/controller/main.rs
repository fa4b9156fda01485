//! The controller at scale (issue #14): N `ModelDeployment`s (1,000 by
//! default) through the controller's real code against a fast in-memory
//! API server, with reconciles per second, latency per reconcile and the
//! controller's memory. `docs/performance.md` says what each figure means.
//!
//! ```text
//! cargo bench --bench controller                 # N=1000, both modes
//! cargo bench --bench controller -- --n 200 --modes run
//! cargo bench --bench controller -- --modes run --concurrency 4
//! ```
//!
//! This process holds the fake API (`fake_api.rs`) and the fleet
//! (`fleet.rs`); the controller runs in a child process (this same binary
//! with `--worker`), so its memory and CPU are its own and not the API's.

mod fake_api;
mod fleet;
mod story;
mod worker;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

/// How long one stage may take to converge before the run fails.
const DEADLINE: Duration = Duration::from_secs(600);
/// The issue's goals.
const GOAL_P99_MS: f64 = 20.0;
const GOAL_RSS_MB: f64 = 200.0;

struct Options {
    n: usize,
    modes: Vec<String>,
    /// Reconciles at once in `run` mode, as `--max-concurrent-reconciles`.
    concurrency: u16,
    worker: Option<(String, String)>,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        n: 1000,
        modes: vec!["direct".into(), "run".into()],
        concurrency: tractor::controller::DEFAULT_CONCURRENT_RECONCILES,
        worker: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--n" => options.n = value()?.parse().map_err(|e| format!("--n: {e}"))?,
            "--modes" => options.modes = value()?.split(',').map(str::to_string).collect(),
            "--concurrency" => {
                options.concurrency = match value()?.parse() {
                    Ok(0) | Err(_) => return Err("--concurrency: a number from 1 to 65535".into()),
                    Ok(n) => n,
                }
            }
            "--worker" => {
                let mode = value()?;
                let url = args.next().ok_or("--worker MODE URL")?;
                options.worker = Some((mode, url));
            }
            // What cargo passes to every bench target.
            "--bench" => {}
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if let Some(bad) = options.modes.iter().find(|m| !["direct", "run"].contains(&m.as_str())) {
        return Err(format!("unknown mode {bad:?}: direct, run"));
    }
    Ok(options)
}

fn main() {
    let options = match options() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    let result = match options.worker {
        Some((mode, url)) => runtime.block_on(worker_main(&mode, &url)),
        None => runtime.block_on(drive(options.n, &options.modes, options.concurrency)),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------- the child

/// The controller's side, in the child: `direct` prints its report and
/// exits; `run` starts `controller::run` and answers `progress` and `take`
/// lines on stdin with JSON lines on stdout until stdin closes.
async fn worker_main(mode: &str, url: &str) -> Result<(), String> {
    let client = worker::client(url);
    match mode {
        "direct" => {
            let report = worker::direct(&client).await?;
            println!("{report}");
        }
        "run" => {
            let timings = worker::Timings::global();
            let concurrency = std::env::var(CONCURRENCY_ENV)
                .ok()
                .and_then(|c| c.parse().ok())
                .unwrap_or(tractor::controller::DEFAULT_CONCURRENT_RECONCILES);
            let _running = worker::start_run(client, concurrency);
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            std::thread::spawn(move || {
                for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            while let Some(line) = rx.recv().await {
                let answer = match line.trim() {
                    "progress" => {
                        let p = timings.progress();
                        json!({ "seen": p.seen, "done": p.done, "running": p.running })
                    }
                    "take" => timings.take(),
                    other => json!({ "error": format!("unknown command {other:?}") }),
                };
                println!("{answer}");
            }
        }
        other => return Err(format!("unknown worker mode {other:?}")),
    }
    Ok(())
}

/// The variable the `run` worker takes its concurrency from, named as the
/// operator's own.
const CONCURRENCY_ENV: &str = "TRACTOR_MAX_CONCURRENT_RECONCILES";

fn spawn_worker(mode: &str, url: &str, concurrency: u16) -> Result<Child, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    Command::new(exe)
        .args(["--worker", mode, url])
        .env(CONCURRENCY_ENV, concurrency.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("starting the worker: {e}"))
}

/// The `run` worker as the story sees it; killed on drop.
struct ChildController {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl ChildController {
    fn start(url: &str, concurrency: u16) -> Result<ChildController, String> {
        let mut child = spawn_worker("run", url, concurrency)?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        Ok(ChildController { child, stdin, stdout })
    }

    fn ask(&mut self, command: &str) -> Result<Value, String> {
        tokio::task::block_in_place(|| {
            writeln!(self.stdin, "{command}").map_err(|e| format!("the worker: {e}"))?;
            let mut line = String::new();
            self.stdout.read_line(&mut line).map_err(|e| format!("the worker: {e}"))?;
            serde_json::from_str(&line).map_err(|e| format!("the worker said {line:?}: {e}"))
        })
    }
}

impl Drop for ChildController {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl story::Controller for ChildController {
    async fn progress(&mut self) -> Result<story::Progress, String> {
        let answer = self.ask("progress")?;
        let number = |k: &str| answer[k].as_u64().ok_or_else(|| format!("progress: {answer}"));
        Ok(story::Progress {
            seen: number("seen")? as usize,
            done: number("done")?,
            running: number("running")?,
        })
    }
    async fn take(&mut self) -> Result<Value, String> {
        self.ask("take")
    }
}

// ---------------------------------------------------------------- the driver

async fn drive(n: usize, modes: &[String], concurrency: u16) -> Result<(), String> {
    println!("controller benchmark: N={n} ModelDeployments ({})", fleet::census(n));
    println!("{}; run mode: {concurrency} reconciles at once", machine());
    let mut rows = vec![];
    let mut memory = vec![];
    let mut per_object = vec![];
    if modes.iter().any(|m| m == "direct") {
        let (api, url) = fleet::serve(n).await?;
        let child = spawn_worker("direct", &url, concurrency)?;
        let output = tokio::task::block_in_place(|| child.wait_with_output())
            .map_err(|e| format!("the direct worker: {e}"))?;
        let text = String::from_utf8_lossy(&output.stdout);
        let report: Value = serde_json::from_str(text.trim())
            .map_err(|e| format!("the direct worker failed ({e}): {text}"))?;
        for pass in report["passes"].as_array().into_iter().flatten() {
            let label = format!(
                "direct {} pass {} ({})",
                pass["stage"].as_str().unwrap_or("?"),
                pass["pass"],
                pass["kind"].as_str().unwrap_or("?")
            );
            rows.push(row(
                &label,
                &pass["latency"],
                pass["wall_seconds"].as_f64(),
                pass["requests"].as_u64(),
                pass["cpu_seconds"].as_f64(),
            ));
        }
        memory.push(("direct worker", report["process"].clone()));
        drop(api);
    }
    if modes.iter().any(|m| m == "run") {
        let (api, url) = fleet::serve(n).await?;
        let report =
            story::run(&api, n, || ChildController::start(&url, concurrency), DEADLINE).await?;
        let mut cpu_before = 0.0;
        for stage in report["stages"].as_array().into_iter().flatten() {
            let name = stage["stage"].as_str().unwrap_or("?");
            let cpu = stage["process"]["cpu_seconds"].as_f64().unwrap_or(0.0);
            if name == "restart" {
                cpu_before = 0.0;
            }
            let reconciles = stage["reconciles"].as_u64().unwrap_or(0);
            let mut latency = stage["latency"].clone();
            latency["count"] = json!(reconciles);
            let label = format!("run {name}");
            rows.push(row(
                &label,
                &latency,
                stage["wall_seconds"].as_f64(),
                stage["requests"].as_u64(),
                Some(cpu - cpu_before),
            ));
            cpu_before = cpu;
            let events = stage["events"].as_u64().unwrap_or(0);
            per_object.push(format!(
                "run {name}: {:.1} reconciles and {:.1} Events per ModelDeployment",
                reconciles as f64 / n as f64,
                events as f64 / n as f64
            ));
            let process = stage["process"].clone();
            match name {
                "canary" => memory.push(("run worker after deployed and canary", process)),
                "restart" => memory.push(("run worker after a restart", process)),
                _ => {}
            }
        }
    }
    print_table(&rows);
    for line in &per_object {
        println!("{line}");
    }
    print_memory(&memory);
    Ok(())
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let profile =
        if cfg!(debug_assertions) { "debug (not what the figures are for)" } else { "release" };
    format!(
        "machine: {cpus} CPUs ({}), {profile} build",
        model.unwrap_or_else(|| "unknown CPU".into())
    )
}

struct Row {
    label: String,
    reconciles: u64,
    per_second: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    requests_per: f64,
    cpu_ms_per: f64,
}

fn row(
    label: &str,
    latency: &Value,
    wall: Option<f64>,
    requests: Option<u64>,
    cpu: Option<f64>,
) -> Row {
    let reconciles = latency["count"].as_u64().unwrap_or(0);
    let per = |x: f64| if reconciles == 0 { 0.0 } else { x / reconciles as f64 };
    let ms = |k: &str| latency[k].as_f64().unwrap_or(0.0);
    Row {
        label: label.to_string(),
        reconciles,
        per_second: wall.filter(|w| *w > 0.0).map_or(0.0, |w| reconciles as f64 / w),
        p50: ms("p50_ms"),
        p90: ms("p90_ms"),
        p99: ms("p99_ms"),
        max: ms("max_ms"),
        requests_per: per(requests.unwrap_or(0) as f64),
        cpu_ms_per: per(cpu.unwrap_or(0.0) * 1000.0),
    }
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<38} {:>10} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>10}",
        "what",
        "reconciles",
        "per s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "p99/goal",
        "API/rec",
        "CPU ms/rec"
    );
    for r in rows {
        println!(
            "{:<38} {:>10} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9.1} {:>10.2}",
            r.label,
            r.reconciles,
            r.per_second,
            r.p50,
            r.p90,
            r.p99,
            r.max,
            r.p99 / GOAL_P99_MS,
            r.requests_per,
            r.cpu_ms_per
        );
    }
}

fn print_memory(memory: &[(&str, Value)]) {
    println!();
    println!("{:<38} {:>14} {:>14} {:>10}", "memory", "peak RSS MB", "RSS MB", "peak/goal");
    for (what, process) in memory {
        let mb = |k: &str| process[k].as_f64().unwrap_or(0.0) / 1024.0;
        println!(
            "{:<38} {:>14.1} {:>14.1} {:>10.2}",
            what,
            mb("peak_rss_kib"),
            mb("rss_kib"),
            mb("peak_rss_kib") / GOAL_RSS_MB
        );
    }
    println!();
    println!("goals (issue #14): p99 under {GOAL_P99_MS} ms, memory under {GOAL_RSS_MB} MB");
}
