//! Dynamic batching: requests that arrive together run as one batch.
//!
//! `slots` worker threads share one queue. A free worker takes the first
//! request, then gathers more until the batch holds `max_batch_rows` rows or
//! `max_delay` has passed since the first one, runs the batch, and hands
//! every caller exactly its own rows. Only one worker gathers at a time, so
//! while the others compute, requests pile up in the queue and the next batch
//! fills from it without waiting: under load the delay costs nothing, and it
//! only adds latency when the server is idle.
//!
//! The workers are plain threads waiting with `recv_timeout`, not tokio
//! tasks: tokio's timer rounds every wait up to the next millisecond, which
//! turned a 100 µs batching window into a 1 ms one (measured: p50 at
//! concurrency 1 went from 0.2 ms to 1.3 ms).
//!
//! With `max_batch_rows <= 1` every request runs alone, through the same
//! queue and workers, so both modes share one code path and one set of metrics.
//!
//! # Ragged batches
//! Requests whose shapes differ only on variable axes (sequence lengths)
//! share a batch when the model has an attention mask input: each input is
//! zero-padded to the longest (`attention_mask` 0 on the padding, so the
//! padding is invisible to the model), and each caller's outputs are cut
//! back to its own lengths. A model without a mask batches only equal
//! shapes. The padding is bounded: no request over `--max-sequence` joins
//! a batch, and the padded batch's bytes are counted before anything is
//! allocated. A model whose rows are not independent
//! ([`Model::rows_independent`]) never joins separate requests.
//!
//! # Failures
//! The engine catches its own panics and names the node a request's values
//! broke ([`EngineError::Refused`]); a batch refused that way runs again one
//! request at a time, so only the request that caused it gets the error. A
//! panic that still escapes a batch restarts the worker's loop (a fresh
//! gather, a fresh engine state) and its callers get an internal error;
//! [`EngineHealth`] counts workers and restarts, and declares the engine
//! failed, for liveness, once no worker is left or
//! [`MAX_FAILED_BATCHES_IN_A_ROW`] batches in a row ended in a panic.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError, channel};
use std::sync::{Arc, Mutex, OnceLock, TryLockError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::engine::guard::panic_message;
use crate::engine::{Dim, EngineError, Model, Tensor, TensorError};

/// Batches in a row (on any worker) that may end in an escaped panic before
/// the engine counts as failed. One is a bug met by one request; this many
/// with no success between means the engine itself is broken.
pub const MAX_FAILED_BATCHES_IN_A_ROW: usize = 8;

/// How a scheduler batches and how much it runs at once.
#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    /// Most rows in one batch; `<= 1` turns batching off.
    pub max_batch_rows: usize,
    /// Longest wait for more requests after the first.
    pub max_delay: Duration,
    /// Batches running at once (engine worker threads).
    pub slots: usize,
}

impl BatchPolicy {
    pub fn batching(&self) -> bool {
        self.max_batch_rows > 1
    }
}

/// What a caller gets back.
#[derive(Debug)]
pub struct Completed {
    pub outputs: Vec<Tensor>,
    /// From submission to the start of the batch's computation.
    pub queued: Duration,
    /// The engine's time on the whole batch.
    pub compute: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("the scheduler is shutting down")]
    Closed,
    /// The worker running the request panicked outside the engine's own
    /// guard and dropped it; the worker restarted.
    #[error("the engine worker failed while running this request")]
    WorkerLost,
    #[error("cannot join the batch: {0}")]
    Join(String),
}

/// What the workers tell the server about themselves: how many are alive,
/// how often they restarted, and, once the engine cannot recover, why.
pub struct EngineHealth {
    alive: AtomicUsize,
    failed_in_a_row: AtomicUsize,
    failure: OnceLock<String>,
    hooks: HealthHooks,
}

/// Called on worker events, for metrics and the termination message.
#[derive(Clone)]
pub struct HealthHooks {
    pub workers: Arc<dyn Fn(usize) + Send + Sync>,
    pub restarted: Arc<dyn Fn() + Send + Sync>,
    pub failed: Arc<dyn Fn(&str) + Send + Sync>,
}

impl Default for HealthHooks {
    fn default() -> HealthHooks {
        HealthHooks {
            workers: Arc::new(|_| {}),
            restarted: Arc::new(|| {}),
            failed: Arc::new(|_| {}),
        }
    }
}

impl EngineHealth {
    pub fn new(hooks: HealthHooks) -> EngineHealth {
        EngineHealth {
            alive: AtomicUsize::new(0),
            failed_in_a_row: AtomicUsize::new(0),
            failure: OnceLock::new(),
            hooks,
        }
    }

    /// Workers able to take a batch.
    pub fn workers_alive(&self) -> usize {
        self.alive.load(Ordering::SeqCst)
    }

    /// Why the engine cannot recover, once it cannot.
    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    /// Whether a request sent now can be served.
    pub fn can_serve(&self) -> bool {
        self.failure().is_none() && self.workers_alive() > 0
    }

    /// Declares the engine failed; the first cause is kept.
    pub fn fail(&self, cause: String) {
        if self.failure.set(cause).is_ok()
            && let Some(cause) = self.failure()
        {
            tracing::error!(%cause, "the engine cannot recover; liveness now fails");
            (self.hooks.failed)(cause);
        }
    }

    fn worker_started(&self) {
        let n = self.alive.fetch_add(1, Ordering::SeqCst) + 1;
        (self.hooks.workers)(n);
    }

    fn worker_stopped(&self, closing: bool) {
        let n = self.alive.fetch_sub(1, Ordering::SeqCst).saturating_sub(1);
        (self.hooks.workers)(n);
        if n == 0 && !closing {
            self.fail("every engine worker has stopped".into());
        }
    }

    fn batch_succeeded(&self) {
        self.failed_in_a_row.store(0, Ordering::SeqCst);
    }

    /// Counts an escaped panic; true when the worker should go on.
    fn batch_panicked(&self, reason: &str) -> bool {
        (self.hooks.restarted)();
        let in_a_row = self.failed_in_a_row.fetch_add(1, Ordering::SeqCst) + 1;
        if in_a_row >= MAX_FAILED_BATCHES_IN_A_ROW {
            self.fail(format!("{in_a_row} engine batches in a row panicked; the last: {reason}"));
            return false;
        }
        true
    }
}

struct Job {
    inputs: Vec<Tensor>,
    rows: usize,
    submitted: Instant,
    reply: oneshot::Sender<Result<Completed, BatchError>>,
}

/// Handle to submit requests; cheap to clone. The workers stop once every
/// handle is dropped.
#[derive(Clone)]
pub struct Scheduler {
    queue: Sender<Job>,
    policy: BatchPolicy,
}

/// Called with the rows of every batch run, for metrics.
pub type BatchObserver = Arc<dyn Fn(usize) + Send + Sync>;

impl Scheduler {
    /// Starts `policy.slots` worker threads.
    ///
    /// # Errors
    /// The operating system refusing to start a thread.
    pub fn start(
        model: Arc<Model>,
        mut policy: BatchPolicy,
        observe: BatchObserver,
        health: Arc<EngineHealth>,
    ) -> std::io::Result<Scheduler> {
        if !model.is_batchable() {
            policy.max_batch_rows = 1;
        }
        policy.slots = policy.slots.max(1);
        let joining = Arc::new(Joining::of(&model));
        if policy.batching() {
            tracing::info!(
                separate_requests = joining.requests,
                ragged = joining.padding.is_some(),
                "dynamic batching"
            );
        }
        let (queue, receiver) = channel();
        let receiver = Arc::new(Mutex::new(receiver));
        for slot in 0..policy.slots {
            let (model, receiver, observe) = (model.clone(), receiver.clone(), observe.clone());
            let (worker_health, joining) = (health.clone(), joining.clone());
            health.worker_started();
            let spawned = std::thread::Builder::new().name(format!("tractor-engine-{slot}")).spawn(
                move || {
                    let worker = Worker { model: &model, policy, joining: &joining };
                    supervise(&worker, &receiver, &observe, &worker_health)
                },
            );
            if let Err(e) = spawned {
                health.worker_stopped(true);
                return Err(e);
            }
        }
        Ok(Scheduler { queue, policy })
    }

    pub fn policy(&self) -> BatchPolicy {
        self.policy
    }

    /// Queues one request of `rows` rows and waits for its outputs. The
    /// queue is unbounded: the server's in-flight limit bounds it.
    ///
    /// # Errors
    /// The engine's error for the batch, or the workers having stopped.
    pub async fn submit(&self, inputs: Vec<Tensor>, rows: usize) -> Result<Completed, BatchError> {
        let (reply, answer) = oneshot::channel();
        let job = Job { inputs, rows, submitted: Instant::now(), reply };
        self.queue.send(job).map_err(|_| BatchError::Closed)?;
        // A reply dropped unanswered: the worker unwound with the job.
        answer.await.map_err(|_| BatchError::WorkerLost)?
    }
}

/// Runs one worker's loop, restarting it after a panic escapes a batch,
/// until the queue closes or the engine is declared failed.
fn supervise(
    worker: &Worker<'_>,
    receiver: &Mutex<Receiver<Job>>,
    observe: &BatchObserver,
    health: &EngineHealth,
) {
    let closing = loop {
        match catch_unwind(AssertUnwindSafe(|| work(worker, receiver, observe, health))) {
            Ok(()) => break true,
            Err(panic) => {
                let reason = panic_message(panic.as_ref());
                tracing::error!(%reason, "an engine worker panicked; restarting it");
                if !health.batch_panicked(&reason) {
                    break false;
                }
            }
        }
    };
    health.worker_stopped(closing);
}

/// What one worker thread runs with.
struct Worker<'a> {
    model: &'a Model,
    policy: BatchPolicy,
    joining: &'a Joining,
}

/// One worker: gather a batch (holding the queue), then run it (not holding it).
fn work(
    worker: &Worker<'_>,
    receiver: &Mutex<Receiver<Job>>,
    observe: &BatchObserver,
    health: &EngineHealth,
) {
    let mut carried: Option<Job> = None;
    loop {
        if health.failure().is_some() {
            return;
        }
        let batch = match (carried.take(), receiver.try_lock()) {
            // Another worker holds the queue, waiting in `recv` for a request
            // that may never come: waiting for the lock would hold the carried
            // request back until the next one arrives. It runs alone.
            (Some(job), Err(TryLockError::WouldBlock)) => {
                if job.reply.is_closed() {
                    continue;
                }
                vec![job]
            }
            (job, locked) => {
                carried = job;
                // A worker that panicked while gathering poisoned the lock;
                // the receiver itself is whole.
                let queue = match locked {
                    Ok(queue) => queue,
                    Err(TryLockError::Poisoned(p)) => p.into_inner(),
                    Err(TryLockError::WouldBlock) => {
                        receiver.lock().unwrap_or_else(|p| p.into_inner())
                    }
                };
                match gather(&queue, worker.policy, worker.joining, &mut carried) {
                    Some(batch) => batch,
                    None => return,
                }
            }
        };
        observe(batch.iter().map(|j| j.rows).sum());
        run_batch(worker.model, worker.joining, batch);
        health.batch_succeeded();
    }
}

/// Takes the first live request, then more until the batch is full, the
/// window closes, or a request does not fit (it is carried to the next batch).
/// `None` once the queue is closed and empty.
fn gather(
    queue: &Receiver<Job>,
    policy: BatchPolicy,
    joining: &Joining,
    carried: &mut Option<Job>,
) -> Option<Vec<Job>> {
    let first = loop {
        let job = match carried.take() {
            Some(job) => job,
            None => queue.recv().ok()?,
        };
        if !job.reply.is_closed() {
            break job; // otherwise its caller timed out or went away
        }
    };
    let deadline = Instant::now() + policy.max_delay;
    let mut rows = first.rows;
    let mut dims = joining.dims(&first);
    let mut batch = vec![first];
    while joining.requests && rows < policy.max_batch_rows {
        let next = match queue.try_recv() {
            Ok(job) => job,
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match queue.recv_timeout(left) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
        };
        if next.reply.is_closed() {
            continue;
        }
        let admitted = (rows + next.rows <= policy.max_batch_rows)
            .then(|| joining.admits(&batch[0], rows + next.rows, dims.as_ref(), &next))
            .flatten();
        let Some(joined) = admitted else {
            *carried = Some(next);
            break;
        };
        dims = joined;
        rows += next.rows;
        batch.push(next);
    }
    Some(batch)
}

fn same_trailing_shapes(a: &Job, b: &Job) -> bool {
    a.inputs.iter().zip(&b.inputs).all(|(x, y)| x.shape.get(1..) == y.shape.get(1..))
}

/// How separate requests may share a batch, read once from the model.
#[derive(Debug, Clone)]
struct Joining {
    /// Whether separate requests may share a batch at all.
    requests: bool,
    /// Set when requests of different lengths may be padded together.
    padding: Option<Padding>,
    max_sequence: usize,
    /// Most bytes of all the padded inputs of one batch together.
    max_batch_bytes: usize,
    /// Bytes of one element, per input.
    element_bytes: Vec<usize>,
}

/// The variable axes (by dimension name) of every input and output.
#[derive(Debug, Clone)]
struct Padding {
    inputs: Vec<Vec<Option<String>>>,
    outputs: Vec<Vec<Option<String>>>,
}

/// Variable dimension name -> length, for one request or a padded batch.
type Dims = BTreeMap<String, usize>;

fn variable_axes(spec: &crate::engine::TensorSpec) -> Vec<Option<String>> {
    spec.shape
        .iter()
        .map(|d| match d {
            Dim::Dynamic(name) => Some(name.clone()),
            Dim::Fixed(_) | Dim::Batch => None,
        })
        .collect()
}

impl Joining {
    fn of(model: &Model) -> Joining {
        let inputs: Vec<_> = model.inputs().iter().map(variable_axes).collect();
        let outputs: Vec<_> = model.outputs().iter().map(variable_axes).collect();
        let masked =
            model.inputs().iter().any(|s| s.name.to_ascii_lowercase().contains("attention_mask"));
        let named: Vec<&String> = inputs.iter().flatten().flatten().collect();
        // An output axis the inputs do not name could not be cut back.
        let answerable = outputs.iter().flatten().flatten().all(|name| named.contains(&name));
        let padding =
            (masked && !named.is_empty() && answerable).then_some(Padding { inputs, outputs });
        Joining {
            requests: model.rows_independent(),
            padding,
            max_sequence: model.plan_limits().max_sequence,
            max_batch_bytes: model.max_tensor_bytes(),
            element_bytes: model.inputs().iter().map(|s| s.datatype.size_of()).collect(),
        }
    }

    /// A job's variable lengths; `None` (it runs alone, and the engine says
    /// what is wrong) when its inputs disagree on one or one is out of
    /// bounds, or the model is not padded.
    fn dims(&self, job: &Job) -> Option<Dims> {
        let padding = self.padding.as_ref()?;
        let mut dims = Dims::new();
        for (tensor, axes) in job.inputs.iter().zip(&padding.inputs) {
            if tensor.shape.len() != axes.len() {
                return None;
            }
            for (len, name) in tensor.shape.iter().zip(axes) {
                let Some(name) = name else { continue };
                if *len == 0 || *len > self.max_sequence {
                    return None;
                }
                if *dims.entry(name.clone()).or_insert(*len) != *len {
                    return None;
                }
            }
        }
        Some(dims)
    }

    /// Whether `next` may join a batch that starts with `first`, would then
    /// hold `rows` rows, and is padded to `dims` so far: the new padded
    /// lengths when it may.
    fn admits(
        &self,
        first: &Job,
        rows: usize,
        dims: Option<&Dims>,
        next: &Job,
    ) -> Option<Option<Dims>> {
        let (Some(padding), Some(dims)) = (&self.padding, dims) else {
            return same_trailing_shapes(first, next).then_some(None);
        };
        let own = self.dims(next)?;
        let fixed_agree =
            first.inputs.iter().zip(&next.inputs).zip(&padding.inputs).all(|((a, b), axes)| {
                a.shape.len() == b.shape.len()
                    && a.shape
                        .iter()
                        .zip(&b.shape)
                        .zip(axes)
                        .skip(1)
                        .all(|((x, y), n)| n.is_some() || x == y)
            });
        if !fixed_agree {
            return None;
        }
        let mut joined = dims.clone();
        for (name, len) in own {
            let at = joined.entry(name).or_insert(len);
            *at = (*at).max(len);
        }
        let bytes = self.padded_bytes(first, rows, &joined)?;
        (bytes <= self.max_batch_bytes).then_some(Some(joined))
    }

    /// Bytes of every input of a batch of `rows` rows padded to `dims`;
    /// `None` on overflow.
    fn padded_bytes(&self, first: &Job, rows: usize, dims: &Dims) -> Option<usize> {
        let padding = self.padding.as_ref()?;
        first.inputs.iter().zip(&padding.inputs).zip(&self.element_bytes).try_fold(
            0usize,
            |total, ((tensor, axes), size)| {
                let elements = padded_shape(&tensor.shape, axes, rows, dims)
                    .iter()
                    .try_fold(1usize, |n, d| n.checked_mul(*d))?;
                total.checked_add(elements.checked_mul(*size)?)
            },
        )
    }
}

/// `shape` with `rows` rows and every variable axis at its length in `dims`.
fn padded_shape(shape: &[usize], axes: &[Option<String>], rows: usize, dims: &Dims) -> Vec<usize> {
    shape
        .iter()
        .zip(axes)
        .enumerate()
        .map(|(axis, (len, name))| match name.as_ref().and_then(|n| dims.get(n)) {
            _ if axis == 0 => rows,
            Some(padded) => *padded,
            None => *len,
        })
        .collect()
}

/// Joins the jobs' inputs along the batch axis, each padded to the
/// batch's lengths when they differ.
fn join_inputs(
    model: &Model,
    joining: &Joining,
    batch: &[Job],
) -> Result<Vec<Tensor>, TensorError> {
    let ragged = !batch.iter().all(|j| same_trailing_shapes(&batch[0], j));
    let padding = joining.padding.as_ref().filter(|_| ragged);
    let dims: Dims = match padding {
        Some(_) => {
            batch.iter().filter_map(|j| joining.dims(j)).fold(Dims::new(), |mut all, own| {
                for (name, len) in own {
                    let at = all.entry(name).or_insert(len);
                    *at = (*at).max(len);
                }
                all
            })
        }
        None => Dims::new(),
    };
    (0..model.inputs().len())
        .map(|i| match padding {
            Some(padding) => {
                let padded: Vec<Tensor> = batch
                    .iter()
                    .map(|j| {
                        let input = &j.inputs[i];
                        input.resized(&padded_shape(
                            &input.shape,
                            &padding.inputs[i],
                            j.rows,
                            &dims,
                        ))
                    })
                    .collect::<Result<_, _>>()?;
                Tensor::concat_rows(&padded.iter().collect::<Vec<_>>())
            }
            None => Tensor::concat_rows(&batch.iter().map(|j| &j.inputs[i]).collect::<Vec<_>>()),
        })
        .collect()
}

/// One job's rows of the batch's outputs, cut back to its own lengths.
fn own_outputs(
    joining: &Joining,
    outputs: &[Tensor],
    offset: usize,
    job: &Job,
) -> Result<Vec<Tensor>, TensorError> {
    let own = joining.dims(job);
    outputs
        .iter()
        .enumerate()
        .map(|(o, output)| {
            let rows = output.rows(offset, job.rows)?;
            match (&joining.padding, &own) {
                (Some(padding), Some(own)) => {
                    let shape = padded_shape(&rows.shape, &padding.outputs[o], job.rows, own);
                    if shape == rows.shape { Ok(rows) } else { rows.resized(&shape) }
                }
                _ => Ok(rows),
            }
        })
        .collect()
}

fn run_batch(model: &Model, joining: &Joining, mut batch: Vec<Job>) {
    let started = Instant::now();
    if batch.len() == 1 {
        let job = batch.pop().expect("one job");
        let result = model.run(&job.inputs).map_err(BatchError::from).map(|outputs| Completed {
            outputs,
            queued: started - job.submitted,
            compute: started.elapsed(),
        });
        let _ = job.reply.send(result);
        return;
    }
    let outputs = join_inputs(model, joining, &batch)
        .map_err(|e| BatchError::Join(e.to_string()))
        .and_then(|inputs| Ok(model.run(&inputs)?));
    // One request's values refused the batch (an index out of range, a
    // size over the budget only the joined batch reaches): each runs alone,
    // so the others are not refused for it.
    if let Err(BatchError::Engine(e)) = &outputs
        && e.is_input_error()
    {
        for job in batch {
            run_batch(model, joining, vec![job]);
        }
        return;
    }
    let compute = started.elapsed();
    let mut offset = 0;
    for job in batch {
        let result = match &outputs {
            Ok(outputs) => own_outputs(joining, outputs, offset, &job)
                .map_err(|e| BatchError::Join(e.to_string()))
                .map(|outputs| Completed { outputs, queued: started - job.submitted, compute }),
            Err(e) => Err(BatchError::Join(e.to_string())),
        };
        offset += job.rows;
        let _ = job.reply.send(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_in_a_row_fail_the_engine_and_a_success_resets_the_count() {
        let failed = Arc::new(Mutex::new(None::<String>));
        let seen = failed.clone();
        let hooks = HealthHooks {
            failed: Arc::new(move |cause| *seen.lock().unwrap() = Some(cause.to_string())),
            ..HealthHooks::default()
        };
        let health = EngineHealth::new(hooks);
        health.worker_started();
        assert!(health.can_serve());
        for _ in 0..MAX_FAILED_BATCHES_IN_A_ROW - 1 {
            assert!(health.batch_panicked("boom"));
        }
        health.batch_succeeded();
        for _ in 0..MAX_FAILED_BATCHES_IN_A_ROW - 1 {
            assert!(health.batch_panicked("boom"));
        }
        assert!(health.failure().is_none());
        assert!(!health.batch_panicked("boom"));
        assert!(health.failure().unwrap().contains("in a row panicked; the last: boom"));
        assert!(!health.can_serve());
        assert!(failed.lock().unwrap().as_deref().unwrap().contains("boom"));
    }

    /// Two workers, and a request that does not fit the first worker's
    /// batch: it is carried while the second worker waits on the empty
    /// queue. It used to wait for the lock until a later request arrived.
    #[tokio::test]
    async fn a_carried_request_is_answered_while_another_worker_waits_on_the_queue() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/models/digits-mlp-v2.onnx");
        let model =
            Model::load_path(std::path::Path::new(path), &crate::engine::EngineOptions::default())
                .unwrap();
        let policy =
            BatchPolicy { max_batch_rows: 4, max_delay: Duration::from_millis(50), slots: 2 };
        let health = Arc::new(EngineHealth::new(HealthHooks::default()));
        let scheduler =
            Scheduler::start(Arc::new(model), policy, Arc::new(|_| {}), health).unwrap();
        let rows = |n: usize| {
            let data = crate::engine::TensorData::F32(vec![0.5; n * 64]);
            vec![Tensor::new(vec![n, 64], data).unwrap()]
        };
        for round in 0..5 {
            let answers = tokio::time::timeout(
                Duration::from_secs(10),
                futures::future::join(scheduler.submit(rows(3), 3), scheduler.submit(rows(3), 3)),
            )
            .await
            .unwrap_or_else(|_| panic!("round {round}: a request of two was never answered"));
            assert!(answers.0.is_ok() && answers.1.is_ok(), "round {round}");
        }
    }

    #[test]
    fn the_last_worker_stopping_unexpectedly_fails_the_engine() {
        let health = EngineHealth::new(HealthHooks::default());
        health.worker_started();
        health.worker_stopped(true);
        assert!(health.failure().is_none(), "a closing queue is not a failure");
        health.worker_started();
        health.worker_stopped(false);
        assert_eq!(health.failure(), Some("every engine worker has stopped"));
    }
}
