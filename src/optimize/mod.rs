//! ONNX graph passes on the protobuf (`tract_onnx::pb`), an accuracy gate,
//! and the driver `tractor optimize` runs.
//!
//! Passes propose, the driver applies and checks: each pass rewrites a copy
//! of the model; the driver keeps it only when the graph's inputs and
//! outputs (names, types, shapes) are unchanged and every value read is
//! produced, naming the pass in the error otherwise.

pub mod cli;
pub mod data;
pub mod evaluate;
pub mod fold;
pub mod graph;
pub mod merge;
pub mod progress;
pub mod prune;
pub mod quantize;

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use tract_onnx::pb;

use crate::crd::recipe::{self, Pass, Recipe};
pub use data::Dataset;
pub use evaluate::Gate;

use crate::engine::declared::{self, Budget, DeclaredError};
use crate::engine::{EngineOptions, Model, ModelFormat};

/// Batch sizes the report measures latency at: one request alone, and a full
/// dynamic batch of `tractor serve`'s default `--max-batch-size`.
pub const LATENCY_BATCHES: [usize; 2] = [1, 32];

/// Time spent measuring each latency figure; enough for a stable median on
/// the small models here, short enough for a Job.
pub const LATENCY_BUDGET: Duration = Duration::from_millis(400);

/// How many copies of a model's weights the optimizer may hold at its peak,
/// so a model may declare at most the memory budget divided by this: the
/// decoded protobuf, a layer's float copy and its transposed rows, the
/// rewritten model and its encoding, and two tract loads while timing
/// (about six), with room for what that count misses. docs/performance.md
/// has the measured peak RSS of the 117 MB model (dynamic-int8).
pub const WORKING_COPIES: u64 = 8;

/// Errors of one pass, before the driver names it.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Graph(#[from] graph::GraphError),
    #[error("{0}")]
    Rewrite(String),
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error(transparent)]
    Data(#[from] data::DataError),
    #[error("a model it reads: {0}")]
    Declared(#[from] DeclaredError),
    #[error("the pass failed on this model (a defect to report): {0}")]
    Panicked(String),
}

/// Errors of `tractor optimize`.
#[derive(Debug, thiserror::Error)]
pub enum OptimizeError {
    #[error("pass {index} ({name}): {source}")]
    Pass {
        index: usize,
        name: &'static str,
        #[source]
        source: PassError,
    },
    #[error("pass {index} ({name}) changed the model's {what}: before {before}, after {after}")]
    Interface {
        index: usize,
        name: &'static str,
        what: &'static str,
        before: String,
        after: String,
    },
    #[error("pass {index} ({name}) left the graph inconsistent: {source}")]
    Wiring {
        index: usize,
        name: &'static str,
        #[source]
        source: graph::GraphError,
    },
    #[error("the input model: {0}")]
    Input(#[from] graph::GraphError),
    /// A size the input declares over the budget, refused before any pass.
    #[error(
        "the input model: {source} (the optimizer may use {budget} bytes for a model's \
         weights, 1/{WORKING_COPIES} of its memory budget; set --memory-budget to change it)"
    )]
    Declared {
        budget: u64,
        #[source]
        source: DeclaredError,
    },
    #[error("loading the {which} model in tract: {source}")]
    Load {
        which: &'static str,
        #[source]
        source: crate::engine::EngineError,
    },
    #[error("validation: {0}")]
    Evaluate(#[from] evaluate::EvaluateError),
    #[error("measuring latency: {0}")]
    Latency(#[source] crate::engine::EngineError),
    #[error("the recipe: {0}")]
    Recipe(#[from] recipe::RecipeError),
}

/// What passes may need besides the model.
#[derive(Debug, Default)]
pub struct Context {
    /// Calibration data for `static-int8`.
    pub calibration: Option<Dataset>,
    /// Validation data and gate.
    pub validation: Option<(Dataset, recipe::Metric, f64)>,
    /// Other models a `merge` pass names, already fetched, by location.
    pub models: HashMap<String, Vec<u8>>,
    /// Measure latencies (the report's before/after and the quantizer's
    /// per-layer choice). Off only in tests that check structure.
    pub measure: bool,
    /// Bytes this run may use (`--memory-budget`); `None`: the memory
    /// available when it starts ([`declared::available_memory`]).
    pub memory_budget: Option<u64>,
}

impl Context {
    /// What a model read by this run may declare: its share of the memory
    /// budget ([`WORKING_COPIES`]).
    pub fn declared_budget(&self) -> Budget {
        let memory =
            self.memory_budget.or_else(declared::available_memory).unwrap_or(isize::MAX as u64);
        Budget { max_bytes: memory / WORKING_COPIES }
    }
}

/// Size and count figures of a model at one point of the recipe.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Figures {
    pub parameters: u64,
    pub non_zero: u64,
    pub file_bytes: u64,
    /// The file gzipped (level 6): how well sparsity compresses.
    pub gzip_bytes: u64,
}

/// One pass's line in the report.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PassReport {
    pub name: &'static str,
    #[serde(flatten)]
    pub figures: Figures,
    /// What the pass did (per-layer choices, folded nodes...).
    pub notes: serde_json::Value,
}

/// Median engine latencies, in microseconds, at [`LATENCY_BATCHES`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Latency {
    pub batch: usize,
    pub original_us: f64,
    pub optimized_us: f64,
    /// optimized / original, the median of interleaved pairs: below 1 is faster.
    pub ratio: f64,
}

/// The JSON report `tractor optimize` writes.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub recipe: Recipe,
    pub original: Figures,
    pub passes: Vec<PassReport>,
    pub optimized: Figures,
    pub output_format: &'static str,
    pub latency: Vec<Latency>,
    pub validation: Option<Gate>,
    /// False when the gate refused the model; no output is written then.
    pub passed: bool,
    pub reason: Option<String>,
    /// Plain words on size and speed ("smaller but not faster"...).
    pub summary: String,
}

/// The result of running a recipe.
#[derive(Debug)]
pub struct Outcome {
    pub bytes: Vec<u8>,
    pub format: ModelFormat,
    pub report: Report,
}

/// A model between passes.
enum Artifact {
    Onnx(Box<pb::ModelProto>),
    Nnef(Vec<u8>),
}

/// Figures of an encoded model.
pub fn figures(bytes: &[u8], stats: graph::ParamStats) -> Figures {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let gzip_bytes =
        gz.write_all(bytes).and_then(|()| gz.finish()).map(|v| v.len() as u64).unwrap_or(0);
    Figures {
        parameters: stats.parameters,
        non_zero: stats.non_zero,
        file_bytes: bytes.len() as u64,
        gzip_bytes,
    }
}

/// Applies one pass to a model, returning the proposal, its notes, and a
/// remark for the report's summary.
fn apply_pass(
    pass: &Pass,
    model: &pb::ModelProto,
    ctx: &Context,
) -> Result<(Artifact, serde_json::Value, Option<String>), PassError> {
    let mut proposal = model.clone();
    let mut remark = None;
    let notes = match pass {
        Pass::Fold => serde_json::to_value(fold::fold(&mut proposal)?),
        Pass::Quantize(q) => {
            let (out, notes) = quantize::quantize(model, q, ctx)?;
            remark = notes.remark();
            proposal = out;
            serde_json::to_value(notes)
        }
        Pass::Convert(c) => {
            let recipe::ConvertFormat::Nnef = c.format;
            let bytes =
                crate::engine::onnx_to_nnef_with(&graph::encode(model), c.compress, c.batch)?;
            return Ok((
                Artifact::Nnef(bytes),
                serde_json::json!({"format": "nnef", "compressed": c.compress, "batch": c.batch}),
                None,
            ));
        }
        Pass::Prune(p) => serde_json::to_value(prune::prune(&mut proposal, p)?),
        Pass::Merge(m) => {
            let others = m
                .models
                .iter()
                .map(|l| {
                    let bytes = ctx.models.get(l).ok_or_else(|| {
                        PassError::Rewrite(format!("model {l:?} was not fetched"))
                    })?;
                    let other = graph::decode(bytes)?;
                    declared::check_model(&other, &ctx.declared_budget())?;
                    Ok(other)
                })
                .collect::<Result<Vec<_>, PassError>>()?;
            let (out, notes) = match m.mode {
                recipe::MergeMode::Compose => merge::compose(model, &others[0], &m.map)?,
                recipe::MergeMode::Average => {
                    let all: Vec<&pb::ModelProto> = std::iter::once(model).chain(&others).collect();
                    merge::average(&all)?
                }
            };
            proposal = out;
            serde_json::to_value(notes)
        }
    };
    Ok((Artifact::Onnx(Box::new(proposal)), notes.unwrap_or(serde_json::Value::Null), remark))
}

/// Runs a pass so that a defect in it is an error naming the pass, not a
/// dead process: each pass works on its own copy of the model, so nothing
/// it half-changed is seen after a panic. Allocations stay bounded by the
/// declared-size check before the first pass, which `catch_unwind` could not
/// undo (an allocation failure aborts).
fn contained<T>(pass: impl FnOnce() -> Result<T, PassError>) -> Result<T, PassError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(pass)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "no message".into());
        Err(PassError::Panicked(message))
    })
}

/// The driver's check after a pass: same interface, consistent wiring.
fn check_pass(
    index: usize,
    name: &'static str,
    before: &pb::ModelProto,
    after: &pb::ModelProto,
) -> Result<(), OptimizeError> {
    let (a, b) = (graph::interface(before), graph::interface(after));
    let describe = |v: &[(String, pb::TypeProto)]| {
        v.iter().map(|(n, t)| format!("{n}:{}", type_text(t))).collect::<Vec<_>>().join(", ")
    };
    for (what, before, after) in
        [("inputs", &a.inputs, &b.inputs), ("outputs", &a.outputs, &b.outputs)]
    {
        if before != after {
            return Err(OptimizeError::Interface {
                index,
                name,
                what,
                before: describe(before),
                after: describe(after),
            });
        }
    }
    let g = graph::graph(after)?;
    graph::check_wiring(g).map_err(|source| OptimizeError::Wiring { index, name, source })
}

fn type_text(t: &pb::TypeProto) -> String {
    match &t.value {
        Some(pb::type_proto::Value::TensorType(t)) => {
            let dims: Vec<String> = t
                .shape
                .iter()
                .flat_map(|s| &s.dim)
                .map(|d| match &d.value {
                    Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) => v.to_string(),
                    Some(pb::tensor_shape_proto::dimension::Value::DimParam(p)) => p.clone(),
                    None => "?".into(),
                })
                .collect();
            format!("{}[{}]", t.elem_type, dims.join(","))
        }
        _ => "?".into(),
    }
}

/// Runs a recipe on ONNX bytes: the passes, then the measurements and the
/// gate, all in this one call so before and after share the machine state.
///
/// # Errors
/// A pass that fails or breaks the interface, and models tract cannot load
/// or run. A refused gate is not an error: see [`Report::passed`].
pub fn run(input: &[u8], recipe: &Recipe, ctx: &Context) -> Result<Outcome, OptimizeError> {
    recipe.check()?;
    let original = graph::decode(input)?;
    let budget = ctx.declared_budget();
    declared::check_model(&original, &budget)
        .map_err(|source| OptimizeError::Declared { budget: budget.max_bytes, source })?;
    let original_figures = figures(input, graph::param_stats(&original));
    let mut current = Artifact::Onnx(Box::new(original.clone()));
    let mut passes = Vec::new();
    let mut remarks = Vec::new();
    for (index, pass) in recipe.passes.iter().enumerate() {
        let name = pass.name();
        let Artifact::Onnx(model) = &current else {
            // Recipe::check keeps convert last.
            break;
        };
        // A pass can run for minutes on a large model (calibration, learned
        // rounding): say which one is running before it starts.
        let of = recipe.passes.len();
        tracing::info!(pass = name, index, of, "pass {} of {of} ({name}) started", index + 1);
        let started = std::time::Instant::now();
        let (proposal, notes, remark) = contained(|| apply_pass(pass, model, ctx))
            .map_err(|source| OptimizeError::Pass { index, name, source })?;
        remarks.extend(remark);
        let figures = match &proposal {
            Artifact::Onnx(p) => {
                let composes =
                    matches!(pass, Pass::Merge(m) if m.mode == recipe::MergeMode::Compose);
                if composes {
                    // Compose changes the outputs (and may add inputs) by
                    // design; the wiring is still checked.
                    graph::check_wiring(graph::graph(p)?)
                        .map_err(|source| OptimizeError::Wiring { index, name, source })?;
                } else {
                    check_pass(index, name, model, p)?;
                }
                figures(&graph::encode(p), graph::param_stats(p))
            }
            Artifact::Nnef(bytes) => figures(bytes, graph::param_stats(model)),
        };
        tracing::info!(
            pass = name,
            index,
            file_bytes = figures.file_bytes,
            seconds = started.elapsed().as_secs_f64(),
            "pass applied"
        );
        passes.push(PassReport { name, figures, notes });
        current = proposal;
    }
    let (bytes, format, optimized_figures) = match current {
        Artifact::Onnx(m) => {
            let bytes = graph::encode(&m);
            let f = figures(&bytes, graph::param_stats(&m));
            (bytes, ModelFormat::Onnx, f)
        }
        Artifact::Nnef(bytes) => {
            let f = passes
                .last()
                .map(|p| p.figures.clone())
                .unwrap_or_else(|| original_figures.clone());
            (bytes, ModelFormat::Nnef, f)
        }
    };
    let options = EngineOptions::default();
    let before = Model::load(input, ModelFormat::Onnx, &options)
        .map_err(|source| OptimizeError::Load { which: "original", source })?;
    let after = Model::load(&bytes, format, &options)
        .map_err(|source| OptimizeError::Load { which: "optimized", source })?;
    // Names and types: a convert pass may fix the batch on purpose.
    let io = |m: &Model| {
        m.inputs()
            .iter()
            .chain(m.outputs())
            .map(|t| (t.name.clone(), t.datatype))
            .collect::<Vec<_>>()
    };
    let composed = recipe
        .passes
        .iter()
        .any(|p| matches!(p, Pass::Merge(m) if m.mode == recipe::MergeMode::Compose));
    if !composed && io(&before) != io(&after) {
        return Err(OptimizeError::Interface {
            index: recipe.passes.len().saturating_sub(1),
            name: recipe.passes.last().map(Pass::name).unwrap_or("none"),
            what: "interface as tract loads it",
            before: format!("{:?}", before.inputs()),
            after: format!("{:?}", after.inputs()),
        });
    }
    let mut latency = Vec::new();
    if ctx.measure {
        tracing::info!("measuring latency: the original and the optimized model, interleaved");
        for batch in LATENCY_BATCHES {
            if batch > 1 && !(before.is_batchable() && after.is_batchable()) {
                continue;
            }
            // Interleaved, as the quantizer's checks: one after the other,
            // a slow stretch of this shared machine lands on one model only.
            let (a, b, ratio) =
                evaluate::paired_latency(&before, &after, batch, LATENCY_BUDGET * 2)
                    .map_err(OptimizeError::Latency)?;
            let (a, b) = (a.as_secs_f64() * 1e6, b.as_secs_f64() * 1e6);
            latency.push(Latency { batch, original_us: a, optimized_us: b, ratio });
        }
    }
    let validation = match &ctx.validation {
        Some((data, metric, max_drop)) => {
            tracing::info!(?metric, "accuracy gate: both models on the validation data");
            Some(evaluate::compare(&before, &after, data, *metric, *max_drop)?)
        }
        None => None,
    };
    let passed = validation.as_ref().is_none_or(|g| g.passed);
    let reason = validation.as_ref().and_then(Gate::reason);
    let mut summary = summarize(&original_figures, &optimized_figures, &latency);
    for r in remarks {
        summary.push_str("; ");
        summary.push_str(&r);
    }
    let report = Report {
        recipe: recipe.clone(),
        original: original_figures,
        passes,
        optimized: optimized_figures,
        output_format: match format {
            ModelFormat::Onnx => "onnx",
            ModelFormat::Nnef => "nnef",
        },
        latency,
        validation,
        passed,
        reason,
        summary,
    };
    Ok(Outcome { bytes, format, report })
}

/// Says plainly whether the result is smaller, faster, both or neither.
fn summarize(before: &Figures, after: &Figures, latency: &[Latency]) -> String {
    let size = after.file_bytes as f64 / before.file_bytes.max(1) as f64;
    let mut s = format!("file size {:.3} of the original", size);
    if latency.is_empty() {
        s.push_str("; latency not measured");
        return s;
    }
    let parts: Vec<String> =
        latency.iter().map(|l| format!("{:.2}x latency at batch {}", l.ratio, l.batch)).collect();
    s.push_str(&format!("; {}", parts.join(", ")));
    let faster = latency.iter().all(|l| l.ratio < 0.95);
    let slower = latency.iter().any(|l| l.ratio > 1.05);
    s.push_str(match (size < 0.95, faster, slower) {
        (true, true, _) => ": smaller and faster",
        (true, false, false) => ": smaller but not faster",
        (true, false, true) => ": smaller but slower",
        (false, true, _) => ": faster, not smaller",
        (false, false, true) => ": slower and not smaller",
        (false, false, false) => ": neither smaller nor faster",
    });
    s
}
