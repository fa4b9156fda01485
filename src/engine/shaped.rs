//! Models tract types only once their non-batch dimensions are concrete:
//! a plan per sequence length (or image size), built on first use and
//! kept in a [`PlanCache`], the batch axis symbolic in every plan.
//!
//! # Invariants
//! - The specs say `Dim::Dynamic(name)` for every variable non-batch axis,
//!   the same name on every input and output that shares the symbol.
//! - A request whose inputs disagree on a shared dimension, or whose
//!   dimension is over `max_sequence`, is refused before any build.

use std::sync::Arc;

use tract_onnx::prelude::{
    DatumType, InferenceFact, InferenceModel, RunOptions, Symbol, TDim, TypedModel,
};
use tract_onnx::tract_hir::infer::{DimFact, Factoid, ShapeFactoid};
use tract_onnx::tract_hir::internal::DimLike;

use super::plans::{Build, PlanCache, PlanLimits, PlanObserver, PlanStats, Runner};
use super::{Dim, EngineError, Tensor, TensorSpec, datatype_of, type_inference};

/// The graph before typing, and how to make a plan of it for one key.
struct Source {
    inference: InferenceModel,
    batch: Symbol,
    /// The variable non-batch dimensions of the inputs; a key holds one
    /// value for each, in this order.
    symbols: Vec<Symbol>,
    run_options: RunOptions,
}

impl Source {
    /// The graph with every input dimension in `symbols` set from `key`,
    /// typed and decluttered.
    fn typed(&self, key: &[usize]) -> Result<TypedModel, EngineError> {
        let mut model = self.inference.clone();
        for i in 0..model.inputs.len() {
            let fact = model.input_fact(i).map_err(prepare)?;
            let dt = fact
                .datum_type
                .concretize()
                .ok_or_else(|| EngineError::Prepare(format!("input {i} has no element type")))?;
            let dims: Vec<DimFact> = fact
                .shape
                .dims()
                .map(|d| match d.concretize() {
                    Some(TDim::Sym(s)) => match self.symbols.iter().position(|x| *x == s) {
                        Some(j) => TDim::Val(key[j] as i64),
                        None => TDim::Sym(s),
                    },
                    Some(other) => other,
                    None => TDim::Sym(self.batch.clone()),
                })
                .map(DimFact::from)
                .collect();
            model
                .set_input_fact(i, InferenceFact::dt_shape(dt, ShapeFactoid::closed(dims.into())))
                .map_err(prepare)?;
        }
        type_inference(model)
    }

    fn optimize(&self, typed: TypedModel, max_tensor_bytes: usize) -> Result<Runner, EngineError> {
        typed
            .into_optimized()
            .and_then(|m| m.into_runnable_with_options(&self.run_options))
            .map(|plan| Runner::new(plan).with_max_tensor_bytes(max_tensor_bytes))
            .map_err(prepare)
    }

    fn builder(
        self: &Arc<Source>,
        max_tensor_bytes: usize,
    ) -> impl Fn(&[usize]) -> Result<Runner, EngineError> + Send + Sync + 'static {
        let source = self.clone();
        move |key: &[usize]| source.optimize(source.typed(key)?, max_tensor_bytes)
    }
}

fn prepare(e: impl std::fmt::Display) -> EngineError {
    EngineError::Prepare(format!("{e:#}"))
}

/// Plans per shape of one model, and where each input holds a variable
/// dimension.
pub(super) struct ShapePlans {
    source: Arc<Source>,
    /// Per input, per axis: the index in `source.symbols` of its dimension.
    places: Vec<Vec<Option<usize>>>,
    input_names: Vec<String>,
    max_tensor_bytes: usize,
    cache: PlanCache<Runner>,
}

impl std::fmt::Debug for ShapePlans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShapePlans").field("cache", &self.cache).finish()
    }
}

/// What loading found: the plans, the specs, the weights' size.
pub(super) struct Loaded {
    pub plans: ShapePlans,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub weight_bytes: usize,
    pub threads: usize,
}

impl ShapePlans {
    /// Prepares `inference` (batch symbol `batch`, its other input
    /// dimensions symbols) for plans per shape, building the plan with
    /// every such dimension 1 now, so that a model tract cannot type at
    /// all fails at load, not at its first request.
    ///
    /// # Errors
    /// No variable non-batch dimension to fix (then nothing would help), or
    /// the graph failing to type or optimize at length 1.
    pub(super) fn load(
        inference: InferenceModel,
        batch: Symbol,
        names: (Vec<String>, Vec<String>),
        run_options: impl FnOnce(usize) -> (usize, RunOptions),
    ) -> Result<Loaded, EngineError> {
        let mut symbols: Vec<Symbol> = Vec::new();
        let mut places = Vec::new();
        for i in 0..inference.inputs.len() {
            let fact = inference.input_fact(i).map_err(prepare)?;
            let axes = fact
                .shape
                .dims()
                .map(|d| match d.concretize() {
                    Some(TDim::Sym(s)) if s != batch => {
                        Some(symbols.iter().position(|x| *x == s).unwrap_or_else(|| {
                            symbols.push(s.clone());
                            symbols.len() - 1
                        }))
                    }
                    _ => None,
                })
                .collect();
            places.push(axes);
        }
        if symbols.is_empty() {
            return Err(EngineError::Prepare(
                "the graph does not type with the batch symbolic, and it has no other \
                 variable dimension to fix"
                    .into(),
            ));
        }
        let source = Source { inference, batch, symbols, run_options: RunOptions::default() };
        let ones = vec![1; source.symbols.len()];
        let probe = source.typed(&ones)?;
        let weight_bytes = super::weight_bytes(&probe);
        let (threads, run_options) = run_options(weight_bytes);
        let source = Arc::new(Source { run_options, ..source });
        let inputs = source.input_specs(&names.0)?;
        // Output axes the file leaves undeclared are told apart by a second
        // probe at other lengths: an axis that follows them is variable.
        let undeclared = (0..source.inference.outputs.len()).any(|i| {
            source.inference.output_fact(i).map_or(true, |f| {
                f.shape.is_open() || f.shape.dims().any(|d| d.concretize().is_none())
            })
        });
        let others: Vec<usize> = (0..source.symbols.len()).map(|j| j + 2).collect();
        let second = if undeclared { Some(source.typed(&others)?) } else { None };
        let outputs =
            source.output_specs(&probe, second.as_ref().map(|m| (m, &others[..])), &names.1)?;
        let max_tensor_bytes = super::default_max_tensor_bytes();
        let first = source.optimize(probe, max_tensor_bytes)?;
        let symbol_names = source.symbols.iter().map(|s| s.to_string()).collect();
        let cache =
            PlanCache::new(symbol_names, PlanLimits::default(), source.builder(max_tensor_bytes));
        cache.insert(&ones, first);
        let plans = ShapePlans { source, places, input_names: names.0, max_tensor_bytes, cache };
        Ok(Loaded { plans, inputs, outputs, weight_bytes, threads })
    }

    /// The same plans under another per-tensor budget: kept plans get a
    /// new guard, later builds use it.
    pub(super) fn with_max_tensor_bytes(&self, bytes: usize) -> ShapePlans {
        self.rebuilt(self.cache.limits(), bytes, None)
    }

    /// The same plans under other limits, telling `observer` of each hit,
    /// build and eviction.
    pub(super) fn with_limits(
        &self,
        limits: PlanLimits,
        observer: Option<PlanObserver>,
    ) -> ShapePlans {
        self.rebuilt(limits, self.max_tensor_bytes, observer)
    }

    fn rebuilt(
        &self,
        limits: PlanLimits,
        bytes: usize,
        observer: Option<PlanObserver>,
    ) -> ShapePlans {
        let build: Build<Runner> = Arc::new(self.source.builder(bytes));
        ShapePlans {
            source: self.source.clone(),
            places: self.places.clone(),
            input_names: self.input_names.clone(),
            max_tensor_bytes: bytes,
            cache: self.cache.rebuilt(
                limits,
                Some(build),
                |r| r.with_max_tensor_bytes(bytes),
                observer,
            ),
        }
    }

    pub(super) fn limits(&self) -> PlanLimits {
        self.cache.limits()
    }

    pub(super) fn stats(&self) -> PlanStats {
        self.cache.stats()
    }

    pub(super) fn max_tensor_bytes(&self) -> usize {
        self.max_tensor_bytes
    }

    /// The values of the variable dimensions in these inputs' shapes.
    ///
    /// # Errors
    /// [`EngineError::Shape`] when two inputs disagree on one dimension, or
    /// one is 0 or over `max_sequence`.
    pub(super) fn key(&self, shapes: &[&[usize]]) -> Result<Vec<usize>, EngineError> {
        let mut key: Vec<Option<(usize, usize)>> = vec![None; self.source.symbols.len()];
        for (input, (shape, axes)) in shapes.iter().zip(&self.places).enumerate() {
            for (axis, place) in axes.iter().enumerate() {
                let (Some(j), Some(&value)) = (place, shape.get(axis)) else { continue };
                match key[*j] {
                    None => key[*j] = Some((value, input)),
                    Some((seen, first)) if seen != value => {
                        return Err(EngineError::Shape(format!(
                            "inputs {:?} and {:?} share dimension {:?} but have {seen} and \
                             {value} on it",
                            self.input_names[first],
                            self.input_names[input],
                            self.cache.symbols()[*j]
                        )));
                    }
                    Some(_) => {}
                }
            }
        }
        let key: Vec<usize> = key.into_iter().map(|v| v.map_or(1, |(value, _)| value)).collect();
        self.cache.check(&key)?;
        Ok(key)
    }

    /// The plan for these input shapes, built if none is kept.
    ///
    /// # Errors
    /// As [`ShapePlans::key`], and a plan tract cannot build for them.
    pub(super) fn runner(&self, inputs: &[Tensor]) -> Result<Runner, EngineError> {
        let shapes: Vec<&[usize]> = inputs.iter().map(|t| &t.shape[..]).collect();
        self.cache.get(&self.key(&shapes)?)
    }
}

impl Source {
    fn symbol_dim(&self, axis: usize, d: &TDim) -> Option<Dim> {
        match d {
            TDim::Val(n) => usize::try_from(*n).ok().map(Dim::Fixed),
            TDim::Sym(s) if axis == 0 && *s == self.batch => Some(Dim::Batch),
            TDim::Sym(s) if self.symbols.contains(s) => Some(Dim::Dynamic(s.to_string())),
            _ => None,
        }
    }

    fn input_specs(&self, names: &[String]) -> Result<Vec<TensorSpec>, EngineError> {
        (0..self.inference.inputs.len())
            .map(|i| {
                let fact = self.inference.input_fact(i).map_err(prepare)?;
                let name = names.get(i).cloned().unwrap_or_default();
                let dt = fact.datum_type.concretize().unwrap_or(DatumType::TDim);
                let datatype = supported(dt, &name, "input")?;
                let shape = fact
                    .shape
                    .dims()
                    .enumerate()
                    .map(|(axis, d)| {
                        let d = d.concretize().unwrap_or(TDim::Sym(self.batch.clone()));
                        self.symbol_dim(axis, &d).unwrap_or_else(|| Dim::Dynamic(d.to_string()))
                    })
                    .collect();
                Ok(TensorSpec { name, datatype, shape })
            })
            .collect()
    }

    /// Output specs: the file's declared dimensions where it has them,
    /// else the probe's (and, for axes that vary, the second probe's).
    fn output_specs(
        &self,
        probe: &TypedModel,
        second: Option<(&TypedModel, &[usize])>,
        names: &[String],
    ) -> Result<Vec<TensorSpec>, EngineError> {
        probe
            .outputs
            .iter()
            .enumerate()
            .map(|(i, outlet)| {
                let name = names.get(i).cloned().unwrap_or_default();
                let fact = probe.outlet_fact(*outlet).map_err(prepare)?;
                let datatype = supported(fact.datum_type, &name, "output")?;
                let declared = self.inference.output_fact(i).ok();
                let shape = fact
                    .shape
                    .iter()
                    .enumerate()
                    .map(|(axis, d)| {
                        let declared = declared
                            .and_then(|f| f.shape.dims().nth(axis))
                            .and_then(|d| d.concretize())
                            .and_then(|d| self.symbol_dim(axis, &d));
                        declared.unwrap_or_else(|| self.probed_dim(axis, d, i, second))
                    })
                    .collect();
                Ok(TensorSpec { name, datatype, shape })
            })
            .collect()
    }

    fn probed_dim(
        &self,
        axis: usize,
        d: &TDim,
        output: usize,
        second: Option<(&TypedModel, &[usize])>,
    ) -> Dim {
        let Some(dim) = self.symbol_dim(axis, d) else { return Dim::Dynamic(d.to_string()) };
        let Dim::Fixed(first) = dim else { return dim };
        let other = second.and_then(|(model, key)| {
            let outlet = model.outputs.get(output)?;
            let other = model.outlet_fact(*outlet).ok()?.shape.get(axis)?.to_usize().ok()?;
            Some((other, key.iter().position(|v| *v == other)))
        });
        match other {
            Some((other, Some(j))) if other != first => Dim::Dynamic(self.symbols[j].to_string()),
            Some((other, None)) if other != first => Dim::Dynamic("?".into()),
            _ => dim,
        }
    }
}

fn supported(
    dt: DatumType,
    name: &str,
    what: &'static str,
) -> Result<super::DataType, EngineError> {
    datatype_of(dt).ok_or_else(|| EngineError::UnsupportedModel {
        what,
        name: name.to_string(),
        reason: format!(
            "has element type {dt:?}; tractor serves {}",
            super::DataType::supported_list()
        ),
    })
}
