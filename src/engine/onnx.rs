//! Reading ONNX into tract: every input dimension a symbol where the file
//! leaves it open (the batch one shared symbol), names read before
//! decluttering, typing.

use std::io::Cursor;

use tract_onnx::prelude::{
    DatumType, Framework, InferenceFact, InferenceModel, InferenceModelExt, Symbol, TDim,
    TypedModel,
};
use tract_onnx::tract_hir::infer::{DimFact, Factoid, ShapeFactoid};
use tract_onnx::tract_hir::internal::SpecialOps;

use super::{EngineError, ModelFormat};

pub(super) struct TypedOnnx {
    pub(super) model: TypedModel,
    pub(super) batch: Symbol,
}

/// Parses ONNX and types it with the batch axis symbolic, decluttered.
pub(super) fn onnx_to_typed(bytes: &[u8]) -> Result<TypedOnnx, EngineError> {
    let (inference, batch, _) = onnx_to_inference(bytes)?;
    Ok(TypedOnnx { model: type_inference(inference)?, batch })
}

pub(super) type InferenceOnnx = (InferenceModel, Symbol, (Vec<String>, Vec<String>));

/// Parses ONNX, with every input dimension a symbol where the file leaves
/// it open, and reads the input and output names.
pub(super) fn onnx_to_inference(bytes: &[u8]) -> Result<InferenceOnnx, EngineError> {
    let mut inference =
        tract_onnx::onnx().model_for_read(&mut Cursor::new(bytes)).map_err(|e| {
            EngineError::ParseModel { format: ModelFormat::Onnx, reason: format!("{e:#}") }
        })?;
    let batch = declare_input_symbols(&mut inference)?;
    // Names are read before decluttering: once an Identity is folded away,
    // an input and an output share one outlet.
    let names = io_names(&inference);
    Ok((inference, batch, names))
}

/// Types a parsed graph, declutters it, casts symbolic outputs to int64.
pub(super) fn type_inference(inference: InferenceModel) -> Result<TypedModel, EngineError> {
    let mut model = inference
        .into_typed()
        .and_then(|m| m.into_decluttered())
        .map_err(|e| EngineError::Prepare(format!("{e:#}")))?;
    cast_symbolic_outputs(&mut model).map_err(|e| EngineError::Prepare(format!("{e:#}")))?;
    Ok(model)
}

/// Makes every input shape fully symbolic where the file leaves it open, and
/// returns the batch symbol.
///
/// Exporters write the batch axis as a named `dim_param` (`batch`, `N`), as
/// `-1`/`?` or leave it unnamed (skl2onnx). Naming it once, the same symbol on
/// every input, lets tract's analysis unify it with the outputs' declared
/// shapes instead of failing with `Impossible to unify Sym(N) with Val(1)`
/// as a concrete batch does.
fn declare_input_symbols(
    model: &mut tract_onnx::prelude::InferenceModel,
) -> Result<Symbol, EngineError> {
    let unsupported = |what, name: &str, reason: String| EngineError::UnsupportedModel {
        what,
        name: name.to_string(),
        reason,
    };
    let declared_batch = (0..model.inputs.len()).find_map(|i| {
        let fact = model.input_fact(i).ok()?;
        match fact.shape.dim(0)?.concretize()? {
            TDim::Sym(s) => Some(s),
            _ => None,
        }
    });
    let batch = declared_batch.unwrap_or_else(|| model.symbols.sym("batch"));
    for i in 0..model.inputs.len() {
        let name = model.node(model.inputs[i].node).name.clone();
        let fact = model.input_fact(i).map_err(|e| unsupported("input", &name, e.to_string()))?;
        let dt = fact
            .datum_type
            .concretize()
            .ok_or_else(|| unsupported("input", &name, "declares no element type".into()))?;
        if fact.shape.is_open() {
            return Err(unsupported("input", &name, "declares no shape".into()));
        }
        let dims: Vec<DimFact> = fact
            .shape
            .dims()
            .enumerate()
            .map(|(axis, d)| {
                DimFact::from(d.concretize().unwrap_or_else(|| {
                    if axis == 0 {
                        TDim::Sym(batch.clone())
                    } else {
                        TDim::Sym(model.symbols.sym(&format!("{name}_{axis}")))
                    }
                }))
            })
            .collect();
        model
            .set_input_fact(i, InferenceFact::dt_shape(dt, ShapeFactoid::closed(dims.into())))
            .map_err(|e| unsupported("input", &name, format!("{e:#}")))?;
    }
    Ok(batch)
}

/// Input names (their source nodes) and output names (their labels, as
/// ONNX names them) of a graph.
pub(super) fn io_names<F, O>(model: &tract_onnx::prelude::Graph<F, O>) -> (Vec<String>, Vec<String>)
where
    F: tract_onnx::prelude::Fact + Clone + 'static,
    O: std::fmt::Debug
        + std::fmt::Display
        + AsRef<dyn tract_onnx::prelude::Op>
        + AsMut<dyn tract_onnx::prelude::Op>
        + Clone
        + 'static,
{
    let inputs = model.inputs.iter().map(|o| model.node(o.node).name.clone()).collect();
    let outputs = model
        .outputs
        .iter()
        .map(|o| {
            model
                .outlet_label(*o)
                .map(str::to_string)
                .unwrap_or_else(|| model.node(o.node).name.clone())
        })
        .collect();
    (inputs, outputs)
}

/// tract computes some integer outputs (an `ArgMax` feeding a `Gather`, in
/// skl2onnx classifiers) as symbolic dimensions (`TDim`); ONNX declares them
/// int64, so they are cast back to int64 at the output.
fn cast_symbolic_outputs(model: &mut TypedModel) -> tract_onnx::prelude::TractResult<()> {
    for i in 0..model.outputs.len() {
        let outlet = model.outputs[i];
        if model.outlet_fact(outlet)?.datum_type != DatumType::TDim {
            continue;
        }
        let label = model.outlet_label(outlet).map(str::to_string);
        let name = format!("{}.tractor_cast_i64", model.node(outlet.node).name);
        let cast = tract_onnx::tract_core::ops::cast::cast(DatumType::I64);
        let casted = model.wire_node(name, cast, &[outlet])?[0];
        model.outputs[i] = casted;
        if let Some(label) = label {
            model.set_outlet_label(casted, label)?;
        }
    }
    Ok(())
}
