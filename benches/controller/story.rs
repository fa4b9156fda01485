//! The story the real `controller::run` is taken through, stage by stage,
//! by the driver that holds the fake API:
//!
//! 1. `deployed`: the fleet exists, the controller starts and brings every
//!    `ModelDeployment` to version 1, Succeeded;
//! 2. `canary`: version 2 asked for on some; their canaries reach the first
//!    step;
//! 3. `restart`: a new controller over the converged fleet reconciles each
//!    one once and finds nothing to do.
//!
//! A stage ends when [`fleet::check`] finds nothing wrong and the
//! controller has been idle for [`SETTLE`]; past the deadline it fails
//! with what is still wrong.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::fake_api::FakeApi;
use super::fleet::{self, Stage};

/// How long the reconcile count must stay still for a stage to be over.
const SETTLE: Duration = Duration::from_millis(300);
const POLL: Duration = Duration::from_millis(50);

/// How far a controller got since it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Distinct `ModelDeployment`s whose reconcile started.
    pub seen: usize,
    /// Reconciles finished.
    pub done: u64,
    /// Reconciles started and not finished.
    pub running: u64,
}

/// A running controller the story can ask how far it got.
#[allow(async_fn_in_trait)]
pub trait Controller {
    /// How far it got since it started.
    async fn progress(&mut self) -> Result<Progress, String>;
    /// Latency and process figures since the last call.
    async fn take(&mut self) -> Result<Value, String>;
}

fn api_requests(api: &FakeApi) -> u64 {
    api.requests().iter().filter(|(k, _)| !k.starts_with("WATCH")).map(|(_, v)| v).sum()
}

/// Events the controller has recorded: one per transition when reconciles
/// see their own writes, more when they race them. kube-rs writes a repeat
/// of a recent Event as a PATCH of its series, so both count.
fn events_recorded(api: &FakeApi) -> u64 {
    let requests = api.requests();
    ["POST events", "PATCH merge events"].iter().filter_map(|k| requests.get(*k)).sum()
}

/// Waits until `done` holds and the controller has settled (nothing
/// running, nothing finished for [`SETTLE`]); returns the time `done`
/// first held.
async fn settle<C: Controller>(
    controller: &mut C,
    deadline: Instant,
    mut done: impl FnMut(usize) -> Result<(), String>,
) -> Result<Instant, String> {
    let mut converged: Option<Instant> = None;
    let mut last = (Instant::now(), u64::MAX);
    loop {
        let progress = controller.progress().await?;
        let now = Instant::now();
        if progress.done != last.1 || progress.running > 0 {
            last = (now, progress.done);
        }
        if converged.is_none() {
            match done(progress.seen) {
                Ok(()) => converged = Some(now),
                Err(problem) if now > deadline => return Err(problem),
                Err(_) => {}
            }
        }
        if let Some(at) = converged
            && now - last.0 >= SETTLE
        {
            return Ok(at);
        }
        if now > deadline + SETTLE * 10 {
            return Err("the controller never went idle".into());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The fleet holds what `stage` asks for: the statuses first (cheap), then
/// every object.
fn fleet_at(api: &FakeApi, n: usize, stage: Stage) -> Result<(), String> {
    let pending = fleet::phases_pending(api, n, stage);
    if pending > 0 {
        return Err(format!("{pending} of {n} without the status expected"));
    }
    match fleet::check(api, n, stage).len() {
        0 => Ok(()),
        wrong => Err(format!("{wrong} problems with the objects")),
    }
}

/// The first things wrong at `stage`, for an error.
fn wrong(api: &FakeApi, n: usize, stage: Stage) -> String {
    let problems = fleet::check(api, n, stage);
    format!("{:?}", &problems[..problems.len().min(5)])
}

/// One stage's figures.
fn stage(
    name: &str,
    wall: Duration,
    (reconciles, requests, events): (u64, u64, u64),
    mut window: Value,
) -> Value {
    window["stage"] = json!(name);
    window["events"] = json!(events);
    window["wall_seconds"] = json!(wall.as_secs_f64());
    window["reconciles"] = json!(reconciles);
    window["requests"] = json!(requests);
    window
}

/// Runs the three stages over a fleet of `n` already created in `api`,
/// starting a controller with `start` (twice: the third stage is a restart).
///
/// # Errors
/// A stage that does not converge within `deadline`, with what is wrong.
pub async fn run<C: Controller>(
    api: &FakeApi,
    n: usize,
    mut start: impl FnMut() -> Result<C, String>,
    deadline: Duration,
) -> Result<Value, String> {
    let mut stages = vec![];

    let (t0, r0, e0) = (Instant::now(), api_requests(api), events_recorded(api));
    let mut controller = start()?;
    let at = settle(&mut controller, t0 + deadline, |_| fleet_at(api, n, Stage::Deployed))
        .await
        .map_err(|e| format!("deployed: {e}; {}", wrong(api, n, Stage::Deployed)))?;
    let deployed = controller.progress().await?.done;
    let window = controller.take().await?;
    let counts = (deployed, api_requests(api) - r0, events_recorded(api) - e0);
    stages.push(stage("deployed", at - t0, counts, window));

    let (t1, r1, e1) = (Instant::now(), api_requests(api), events_recorded(api));
    fleet::start_canaries(api, n);
    let at = settle(&mut controller, t1 + deadline, |_| fleet_at(api, n, Stage::Canary))
        .await
        .map_err(|e| format!("canary: {e}; {}", wrong(api, n, Stage::Canary)))?;
    let total = controller.progress().await?.done;
    let window = controller.take().await?;
    let counts = (total - deployed, api_requests(api) - r1, events_recorded(api) - e1);
    stages.push(stage("canary", at - t1, counts, window));
    drop(controller);

    let (t2, r2, e2) = (Instant::now(), api_requests(api), events_recorded(api));
    let mut controller = start()?;
    let at = settle(&mut controller, t2 + deadline, |seen| match seen >= n {
        true => Ok(()),
        false => Err(format!("{seen} of {n} reconciled after a restart")),
    })
    .await
    .map_err(|e| format!("restart: {e}"))?;
    fleet_at(api, n, Stage::Canary).map_err(|e| format!("after the restart: {e}"))?;
    let total = controller.progress().await?.done;
    let window = controller.take().await?;
    let counts = (total, api_requests(api) - r2, events_recorded(api) - e2);
    stages.push(stage("restart", at - t2, counts, window));
    Ok(json!({ "mode": "run", "stages": stages }))
}
