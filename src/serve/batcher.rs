//! Dynamic batching: requests that arrive together run as one batch.
//!
//! One scheduler task owns the queue. It waits for a free engine slot, takes
//! the first request, then gathers more until the batch holds
//! `max_batch_rows` rows or `max_delay` has passed since the first one; the
//! batch runs on a blocking thread and every caller gets exactly its own rows
//! back. While all slots are busy, requests pile up in the queue, so that
//! under load batches fill without waiting at all: the delay only costs
//! latency when the server is idle.
//!
//! With `max_batch_rows <= 1` every request runs alone, through the same
//! queue and slots, so both modes share one code path and one set of metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::Instrument;

use crate::engine::{EngineError, Model, Tensor};

/// How a scheduler batches and how much it runs at once.
#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    /// Most rows in one batch; `<= 1` turns batching off.
    pub max_batch_rows: usize,
    /// Longest wait for more requests after the first.
    pub max_delay: Duration,
    /// Batches running at once (engine slots).
    pub slots: usize,
    /// Requests that may wait in the queue.
    pub queue_capacity: usize,
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
    #[error("cannot join the batch: {0}")]
    Join(String),
}

struct Job {
    inputs: Vec<Tensor>,
    rows: usize,
    submitted: Instant,
    reply: oneshot::Sender<Result<Completed, BatchError>>,
}

/// Handle to submit requests; cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    queue: mpsc::Sender<Job>,
    policy: BatchPolicy,
}

/// Called with the rows of every batch run, for metrics.
pub type BatchObserver = Arc<dyn Fn(usize) + Send + Sync>;

impl Scheduler {
    /// Starts the scheduler task on the current tokio runtime.
    pub fn start(model: Arc<Model>, mut policy: BatchPolicy, observe: BatchObserver) -> Scheduler {
        if !model.is_batchable() {
            policy.max_batch_rows = 1;
        }
        policy.slots = policy.slots.max(1);
        let (queue, receiver) = mpsc::channel(policy.queue_capacity.max(1));
        tokio::spawn(
            run_queue(model, policy, receiver, observe)
                .instrument(tracing::info_span!("batcher", max_rows = policy.max_batch_rows)),
        );
        Scheduler { queue, policy }
    }

    pub fn policy(&self) -> BatchPolicy {
        self.policy
    }

    /// Queues one request of `rows` rows and waits for its outputs.
    ///
    /// # Errors
    /// The engine's error for the batch, or the scheduler having stopped.
    pub async fn submit(&self, inputs: Vec<Tensor>, rows: usize) -> Result<Completed, BatchError> {
        let (reply, answer) = oneshot::channel();
        let job = Job { inputs, rows, submitted: Instant::now(), reply };
        self.queue.send(job).await.map_err(|_| BatchError::Closed)?;
        answer.await.map_err(|_| BatchError::Closed)?
    }
}

async fn run_queue(
    model: Arc<Model>,
    policy: BatchPolicy,
    mut receiver: mpsc::Receiver<Job>,
    observe: BatchObserver,
) {
    let slots = Arc::new(Semaphore::new(policy.slots));
    let mut carried: Option<Job> = None;
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match carried.take() {
            Some(job) => job,
            None => match receiver.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        if first.reply.is_closed() {
            continue; // its caller timed out or went away
        }
        let mut rows = first.rows;
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + policy.max_delay;
        while rows < policy.max_batch_rows {
            let next = match receiver.try_recv() {
                Ok(job) => job,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(deadline, receiver.recv()).await {
                        Ok(Some(job)) => job,
                        _ => break,
                    }
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            };
            if next.reply.is_closed() {
                continue;
            }
            if rows + next.rows > policy.max_batch_rows || !same_trailing_shapes(&batch[0], &next) {
                carried = Some(next);
                break;
            }
            rows += next.rows;
            batch.push(next);
        }
        let model = model.clone();
        let observe = observe.clone();
        tokio::task::spawn_blocking(move || {
            observe(rows);
            run_batch(&model, batch);
            drop(permit);
        });
    }
}

fn same_trailing_shapes(a: &Job, b: &Job) -> bool {
    a.inputs.iter().zip(&b.inputs).all(|(x, y)| x.shape.get(1..) == y.shape.get(1..))
}

fn run_batch(model: &Model, mut batch: Vec<Job>) {
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
    let joined: Result<Vec<Tensor>, String> = (0..model.inputs().len())
        .map(|i| Tensor::concat_rows(&batch.iter().map(|j| &j.inputs[i]).collect::<Vec<_>>()))
        .collect();
    let outputs = joined.map_err(BatchError::Join).and_then(|inputs| Ok(model.run(&inputs)?));
    let compute = started.elapsed();
    let mut offset = 0;
    for job in batch {
        let result = match &outputs {
            Ok(outputs) => outputs
                .iter()
                .map(|o| o.rows(offset, job.rows))
                .collect::<Result<Vec<_>, _>>()
                .map_err(BatchError::Join)
                .map(|outputs| Completed { outputs, queued: started - job.submitted, compute }),
            Err(e) => Err(BatchError::Join(e.to_string())),
        };
        offset += job.rows;
        let _ = job.reply.send(result);
    }
}
