//! What stands between a request's values and the engine taking the
//! process down.
//!
//! Every node of a plan is evaluated through [`Guard::eval`]:
//!
//! - A node whose output size is not known at load time (it depends on the
//!   batch, on another input dimension, or on input *values*: a `Range`
//!   whose limit is an input, a `Tile` whose repeats are) has that size
//!   computed from the concrete inputs before it runs, and a tensor over the
//!   budget is refused. Rust aborts the process when an allocation fails
//!   (`catch_unwind` cannot catch that), so this check is what keeps a
//!   hostile value from costing the process.
//! - A `Gather` or `GatherElements` has its indices checked against the
//!   gathered axis: tract indexes with them unchecked and panics.
//! - The evaluation itself runs under `catch_unwind`, so an op that still
//!   panics on a value fails the request, not the worker.
//!
//! # Invariants
//! Checks read the plan and the node's inputs only; a node the guard cannot
//! size beforehand (its output facts stay symbolic) runs unchecked and the
//! nodes after it are checked on its concrete output.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use tract_onnx::prelude::{
    DatumType, IntoArcTensor, TDim, TValue, TVec, TypedFact, TypedModel, TypedNode,
};
use tract_onnx::tract_core::internal::{EvalContext, OpState};
use tract_onnx::tract_core::ops::array::{Gather, GatherElements};
use tract_onnx::tract_core::plan;

/// Integer tensors up to this many elements are handed to `output_facts` as
/// constants: shapes, repeats, `Range` bounds, axes. Larger ones are data,
/// whose values never size an output.
const KONST_MAX_ELEMENTS: usize = 64;

/// Why a node did not run on a request's values. Each names the node and
/// its op, so the client (a 400) and the log can tell where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NodeFailure {
    #[error(
        "node {node:?} ({op}) would produce a {datum_type:?} tensor of shape {shape:?} \
         ({bytes} bytes), over the engine's limit of {limit} bytes per tensor"
    )]
    TooLarge {
        node: String,
        op: String,
        datum_type: DatumType,
        shape: Vec<usize>,
        bytes: String,
        limit: usize,
    },
    #[error("node {node:?} ({op}): index {index} is out of range for axis {axis} of size {size}")]
    IndexOutOfRange { node: String, op: String, index: i64, axis: usize, size: usize },
    #[error("node {node:?} ({op}) cannot size its output from this input: {reason}")]
    Unsizable { node: String, op: String, reason: String },
    #[error("node {node:?} ({op}) failed on this input: {reason}")]
    Failed { node: String, op: String, reason: String },
    #[error("node {node:?} ({op}) panicked on this input: {reason}")]
    Panicked { node: String, op: String, reason: String },
}

impl NodeFailure {
    /// Whether the engine panicked (counted apart: a panic is worth a look
    /// even when the request caused it).
    pub fn is_panic(&self) -> bool {
        matches!(self, NodeFailure::Panicked { .. })
    }
}

/// What to check before a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Every output shape is known at load: nothing.
    Nothing,
    /// Output shapes in symbols the run resolves (batch, input dims):
    /// evaluated with them, then from the concrete inputs if that fails.
    Shape,
    /// The op mints its own symbols from values (`Range`, `DynTile`):
    /// output facts from the concrete inputs.
    Values,
}

/// The checks of one plan, by node id, and the budget they enforce.
#[derive(Debug, Clone)]
pub struct Guard {
    checks: Vec<Check>,
    max_tensor_bytes: usize,
}

impl Guard {
    /// Decides, once per plan, which nodes need a check at run time.
    pub fn new(model: &TypedModel, max_tensor_bytes: usize) -> Guard {
        let checks = model
            .nodes()
            .iter()
            .map(|node| {
                if node.op().mints_runtime_symbols() {
                    Check::Values
                } else if node.outputs.iter().all(|o| o.fact.shape.is_concrete()) {
                    Check::Nothing
                } else {
                    Check::Shape
                }
            })
            .collect();
        Guard { checks, max_tensor_bytes }
    }

    pub fn max_tensor_bytes(&self) -> usize {
        self.max_tensor_bytes
    }

    /// Evaluates one node as tract's own `plan::eval` does, after the
    /// checks, with panics caught.
    ///
    /// # Errors
    /// A [`NodeFailure`] naming the node: a refused size or index, tract's
    /// error, or a caught panic.
    pub fn eval(
        &self,
        ctx: &EvalContext<'_>,
        state: Option<&mut (dyn OpState + 'static)>,
        node: &TypedNode,
        inputs: TVec<TValue>,
    ) -> Result<TVec<TValue>, NodeFailure> {
        let run = AssertUnwindSafe(|| {
            self.check(ctx, node, &inputs)?;
            plan::eval(ctx, state, node, inputs).map_err(|e| NodeFailure::Failed {
                node: node.name.clone(),
                op: node.op().name().to_string(),
                reason: format!("{e:#}"),
            })
        });
        match catch_unwind(run) {
            Ok(result) => result,
            Err(panic) => Err(NodeFailure::Panicked {
                node: node.name.clone(),
                op: node.op().name().to_string(),
                reason: panic_message(panic.as_ref()),
            }),
        }
    }

    fn check(
        &self,
        ctx: &EvalContext<'_>,
        node: &TypedNode,
        inputs: &[TValue],
    ) -> Result<(), NodeFailure> {
        check_indices(node, inputs)?;
        let check = self.checks.get(node.id).copied().unwrap_or(Check::Values);
        if check == Check::Nothing {
            return Ok(());
        }
        if check == Check::Shape {
            let mut sized = true;
            for output in &node.outputs {
                match output.fact.shape.eval_to_usize(ctx.symbols) {
                    Ok(shape) => self.check_size(node, output.fact.datum_type, &shape)?,
                    Err(_) => {
                        sized = false;
                        break;
                    }
                }
            }
            if sized {
                return Ok(());
            }
        }
        // The op's own arithmetic on hostile values can panic (a length
        // past i64) where its evaluation would allocate: refused either way.
        let facts = catch_unwind(AssertUnwindSafe(|| facts_from_values(node, inputs))).map_err(
            |panic| NodeFailure::Unsizable {
                node: node.name.clone(),
                op: node.op().name().to_string(),
                reason: panic_message(panic.as_ref()),
            },
        )?;
        // tract cannot say beforehand when the facts stay symbolic: the
        // nodes after this one will see its concrete output.
        let Some(facts) = facts else { return Ok(()) };
        for fact in &facts {
            let mut shape = Vec::with_capacity(fact.shape.len());
            for dim in fact.shape.iter() {
                match dim.eval(ctx.symbols).to_i64() {
                    Ok(n) => match usize::try_from(n) {
                        Ok(n) => shape.push(n),
                        Err(_) => {
                            return Err(NodeFailure::Unsizable {
                                node: node.name.clone(),
                                op: node.op().name().to_string(),
                                reason: format!("its output would have dimension {n}"),
                            });
                        }
                    },
                    Err(_) => break,
                }
            }
            if shape.len() == fact.shape.len() {
                self.check_size(node, fact.datum_type, &shape)?;
            }
        }
        Ok(())
    }

    fn check_size(
        &self,
        node: &TypedNode,
        datum_type: DatumType,
        shape: &[usize],
    ) -> Result<(), NodeFailure> {
        let bytes = shape.iter().try_fold(datum_type.size_of(), |acc, d| acc.checked_mul(*d));
        match bytes {
            Some(b) if b <= self.max_tensor_bytes => Ok(()),
            _ => Err(NodeFailure::TooLarge {
                node: node.name.clone(),
                op: node.op().name().to_string(),
                datum_type,
                shape: shape.to_vec(),
                bytes: bytes.map_or_else(|| "more than 2^64".to_string(), |b| b.to_string()),
                limit: self.max_tensor_bytes,
            }),
        }
    }
}

/// The node's output facts computed from its concrete inputs, small
/// integer tensors as constants; `None` when the op cannot say.
fn facts_from_values(node: &TypedNode, inputs: &[TValue]) -> Option<TVec<TypedFact>> {
    let facts: TVec<TypedFact> = inputs
        .iter()
        .map(|value| {
            let dt = value.datum_type();
            let small_integers = value.len() <= KONST_MAX_ELEMENTS
                && (dt.is_integer() || dt == DatumType::TDim)
                && value.try_as_plain_ram().is_ok();
            if small_integers {
                TypedFact::try_from(value.clone().into_arc_tensor()).ok()
            } else {
                Some(TypedFact::dt_shape(
                    dt,
                    value.shape().iter().map(|d| TDim::from(*d)).collect::<TVec<_>>(),
                ))
            }
        })
        .collect::<Option<_>>()?;
    let refs: TVec<&TypedFact> = facts.iter().collect();
    node.op.output_facts(&refs).ok()
}

/// Indices of a `Gather` or `GatherElements` within the gathered axis
/// (negative ones count from the end, as ONNX says).
fn check_indices(node: &TypedNode, inputs: &[TValue]) -> Result<(), NodeFailure> {
    let axis = if let Some(gather) = node.op_as::<Gather>() {
        gather.axis
    } else if let Some(gather) = node.op_as::<GatherElements>() {
        gather.axis
    } else {
        return Ok(());
    };
    let (Some(data), Some(indices)) = (inputs.first(), inputs.get(1)) else { return Ok(()) };
    // Packed (exotic) data has no plain shape to check against; the
    // catch_unwind around the evaluation still holds.
    if data.try_as_plain_ram().is_err() {
        return Ok(());
    }
    let Some(&size) = data.shape().get(axis) else { return Ok(()) };
    let Ok(indices) = indices.cast_to::<i64>() else { return Ok(()) };
    let Ok(plain) = indices.try_as_plain_ram() else { return Ok(()) };
    let Ok(values) = plain.as_slice::<i64>() else { return Ok(()) };
    let len = i64::try_from(size).unwrap_or(i64::MAX);
    if let Some(&index) = values.iter().find(|&&i| i < -len || i >= len) {
        return Err(NodeFailure::IndexOutOfRange {
            node: node.name.clone(),
            op: node.op().name().to_string(),
            index,
            axis,
            size,
        });
    }
    Ok(())
}

/// The text of a caught panic (`panic!("...")` payloads are `&str` or `String`).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// The default budget for one tensor: a quarter of the memory this process
/// may use (its cgroup's limit, else the machine's), at least 64 MiB. A
/// quarter leaves room for the model's weights, the request and the
/// tensors alive at the same time.
pub fn default_max_tensor_bytes() -> usize {
    static DEFAULT: OnceLock<usize> = OnceLock::new();
    *DEFAULT.get_or_init(|| {
        let limit = memory_limit_bytes().unwrap_or(4 << 30);
        usize::try_from(limit / 4).unwrap_or(usize::MAX).max(64 << 20)
    })
}

/// The memory this process may use: the smallest of its cgroup's limit (v2
/// `memory.max`, v1 `memory.limit_in_bytes`) and the machine's `MemTotal`.
/// Read by hand: three small files, where a system-information crate would
/// add a dependency tree for one number.
fn memory_limit_bytes() -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let cgroup_v2 = read("/sys/fs/cgroup/memory.max").and_then(|s| s.trim().parse::<u64>().ok());
    let cgroup_v1 = read("/sys/fs/cgroup/memory/memory.limit_in_bytes")
        .and_then(|s| s.trim().parse::<u64>().ok());
    let total = read("/proc/meminfo").and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        kib.checked_mul(1024)
    });
    [cgroup_v2, cgroup_v1, total].into_iter().flatten().min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_messages_are_read_from_both_payload_kinds() {
        let text = catch_unwind(|| panic!("index {} out of bounds", 7)).unwrap_err();
        assert_eq!(panic_message(text.as_ref()), "index 7 out of bounds");
        let fixed = catch_unwind(|| panic!("fixed")).unwrap_err();
        assert_eq!(panic_message(fixed.as_ref()), "fixed");
    }

    #[test]
    fn the_default_budget_is_at_least_64_mib() {
        assert!(default_max_tensor_bytes() >= 64 << 20);
    }
}
