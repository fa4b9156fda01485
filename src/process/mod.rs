//! Input and output processing: application-level requests in (images,
//! named fields), application-level answers out (labels with scores,
//! values in their original units), run in the server's process around the
//! engine.
//!
//! # Expected flow
//! [`ProcessingSpec`] (an API type, `crate::crd::processing`) is parsed from
//! a file or taken from the CRD; [`Processor::new`] checks it on its own
//! through [`ProcessingSpec::check`], the same check `crd::validate` runs
//! for the controller, then against the model's inputs and outputs once,
//! at start-up, and names the spec field that does not fit. Per request,
//! [`Processor::build_inputs`] turns one value per instance and input into
//! the model's batched tensors (every client mistake a
//! [`ProcessError::Input`]), and [`Processor::answers`] turns the output rows
//! into one JSON answer per instance.
//!
//! Steps are looked up by the names the spec uses, in [`INPUT_STEPS`] and
//! [`OUTPUT_STEPS`].

mod features;
mod image;
mod output;
mod tensor;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Map, Value};

use crate::crd::processing::{InputStepSpec, ProcessingError, ProcessingSpec};
use crate::engine::{DataType, Dim, Tensor, TensorData, TensorSpec, element_count};

pub use self::features::FeaturesStep;
pub use self::image::ImageStep;
pub use self::output::{OutputStep, softmax, top_k};
pub use self::tensor::TensorStep;
pub use crate::crd::processing::{INPUT_STEPS, OUTPUT_STEPS};
pub(crate) use crate::engine::json_kind;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Parse(ProcessingError),
    /// The spec does not fit the model; `field` is the spec path
    /// (`inputs[0].image.width`).
    #[error("processing spec {field}: {reason}")]
    Spec { field: String, reason: String },
    /// A request the processing cannot use: the client's mistake.
    #[error("input {input:?}: {reason}")]
    Input { input: String, reason: String },
    /// The request as a whole is malformed (instances, not one input).
    #[error("{0}")]
    Request(String),
    /// The model gave an output the spec cannot read: the server's fault.
    #[error("output {output:?}: {reason}")]
    Output { output: String, reason: String },
    /// Processed values that do not make the input tensor: the server's
    /// fault, as the steps were checked against the model at start-up.
    #[error("building input {input:?}: {reason}")]
    Build { input: String, reason: String },
    /// The request was gone (timed out, or its client left) before its
    /// processing finished; what was left undone was skipped.
    #[error("processing stopped: the request timed out or its client went away")]
    Cancelled,
}

/// Tells long processing that its request is gone, so that it stops
/// between instances and frees its slot instead of burning CPU for nobody.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// `Err(Cancelled)` once cancelled: for `?` between steps.
    ///
    /// # Errors
    /// [`ProcessError::Cancelled`] once the request is gone.
    pub fn check_now(&self) -> Result<(), ProcessError> {
        if self.is_cancelled() { Err(ProcessError::Cancelled) } else { Ok(()) }
    }
}

impl ProcessError {
    /// Whether the client caused it (an HTTP 400) rather than the server.
    pub fn is_client_error(&self) -> bool {
        matches!(self, ProcessError::Input { .. } | ProcessError::Request(_))
    }
}

/// A check of the spec alone fails as a spec that does not fit: the same
/// field paths, whichever of the two found it.
impl From<ProcessingError> for ProcessError {
    fn from(e: ProcessingError) -> ProcessError {
        match e {
            ProcessingError::Check { field, reason } => ProcessError::Spec { field, reason },
            other => ProcessError::Parse(other),
        }
    }
}

pub(crate) fn spec_error(field: impl Into<String>, reason: impl Into<String>) -> ProcessError {
    ProcessError::Spec { field: field.into(), reason: reason.into() }
}

/// One value a client sent for one input of one instance.
#[derive(Debug, Clone, Copy)]
pub enum InputValue<'a> {
    /// From a JSON body: a base64 string or `{"b64": ...}` for images, an
    /// object for features, (nested) numbers for tensors.
    Json(&'a Value),
    /// Raw bytes (an image sent as the request body).
    Bytes(&'a [u8]),
}

/// What an input step does to one instance's value.
#[derive(Debug, Clone)]
pub enum InputStep {
    Image(ImageStep),
    Features(FeaturesStep),
    Tensor(TensorStep),
}

impl InputStep {
    pub fn name(&self) -> &'static str {
        match self {
            InputStep::Image(_) => INPUT_STEPS[0],
            InputStep::Features(_) => INPUT_STEPS[1],
            InputStep::Tensor(_) => INPUT_STEPS[2],
        }
    }
}

/// One model input and how it is built.
#[derive(Debug, Clone)]
struct InputPlan {
    spec: TensorSpec,
    /// Whether axis 0 is the batch axis; otherwise one instance is the
    /// whole tensor.
    batched: bool,
    step: InputStep,
}

/// A spec checked against a model, ready to run.
#[derive(Debug, Clone)]
pub struct Processor {
    /// In the model's input order.
    inputs: Vec<InputPlan>,
    /// Outputs answered, in the spec's order; empty means raw rows.
    outputs: Vec<OutputStep>,
    model_outputs: Vec<TensorSpec>,
}

impl Processor {
    /// Checks `spec` on its own ([`ProcessingSpec::check`]), then against
    /// the model's inputs and outputs.
    ///
    /// `base_dir` resolves relative `labelsFile` paths (the spec file's folder).
    ///
    /// # Errors
    /// [`ProcessError::Spec`] naming the first field that cannot be used
    /// (two steps on one input, a zero `std`, ...) or does not fit the model
    /// (unknown input, a size that cannot produce the model's shape, labels
    /// whose count differs from the output width...), or an unreadable
    /// labels file.
    pub fn new(
        spec: &ProcessingSpec,
        model_inputs: &[TensorSpec],
        model_outputs: &[TensorSpec],
        base_dir: Option<&Path>,
    ) -> Result<Processor, ProcessError> {
        let valid = spec.check()?;
        let mut steps: Vec<Option<InputStep>> = vec![None; model_inputs.len()];
        for (i, input) in valid.inputs.iter().enumerate() {
            let field = format!("inputs[{i}]");
            let index = position(model_inputs, &input.name, &field, "input", "takes")?;
            let model = &model_inputs[index];
            let step = match &input.step {
                InputStepSpec::Image(image) => {
                    InputStep::Image(ImageStep::new(image, model, &format!("{field}.image"))?)
                }
                InputStepSpec::Features(fields) => InputStep::Features(FeaturesStep::new(
                    fields,
                    model,
                    &format!("{field}.features"),
                )?),
                InputStepSpec::Tensor => InputStep::Tensor(TensorStep::new(model)),
            };
            steps[index] = Some(step);
        }
        let inputs = steps
            .into_iter()
            .zip(model_inputs)
            .map(|(step, spec)| InputPlan {
                spec: spec.clone(),
                batched: spec.shape.first() == Some(&Dim::Batch),
                step: step.unwrap_or_else(|| InputStep::Tensor(TensorStep::new(spec))),
            })
            .collect();
        let mut outputs: Vec<OutputStep> = Vec::with_capacity(valid.outputs.len());
        for (i, output) in valid.outputs.iter().enumerate() {
            let field = format!("outputs[{i}]");
            let index = position(model_outputs, &output.name, &field, "output", "gives")?;
            outputs.push(OutputStep::new(output, index, &model_outputs[index], &field, base_dir)?);
        }
        Ok(Processor { inputs, outputs, model_outputs: model_outputs.to_vec() })
    }

    /// The step of each model input, in the model's order.
    pub fn input_steps(&self) -> impl Iterator<Item = (&str, &InputStep)> {
        self.inputs.iter().map(|p| (p.spec.name.as_str(), &p.step))
    }

    /// Whether any output is processed (otherwise answers are raw rows).
    pub fn has_output_steps(&self) -> bool {
        !self.outputs.is_empty()
    }

    /// The single image input, if the model has exactly one input and it
    /// is an image: the one case where a raw request body can be an instance.
    pub fn single_image_input(&self) -> Option<&str> {
        match self.inputs.as_slice() {
            [only] if matches!(only.step, InputStep::Image(_)) => Some(&only.spec.name),
            _ => None,
        }
    }

    /// The most JSON values (as [`json_values_upper_bound`] counts them)
    /// one instance of a well-formed request can hold, or `None` when an
    /// input has a variable size. A body over `rows` times this is refused
    /// before it is parsed into a `Value` tree, which costs 16 to 32 times
    /// its text.
    pub fn json_values_per_instance(&self) -> Option<usize> {
        // Separators, an object per instance keyed by input name, `{"b64": ...}`.
        const SLACK: usize = 8;
        let mut total = SLACK;
        for plan in &self.inputs {
            let per_input = match &plan.step {
                InputStep::Image(_) => SLACK,
                // A key, a colon and a comma per field; unknown fields are
                // refused later, but must fit to be read at all.
                InputStep::Features(step) => step.len().checked_mul(4)?.checked_add(SLACK)?,
                InputStep::Tensor(_) => {
                    let dims =
                        if plan.batched { &plan.spec.shape[1..] } else { &plan.spec.shape[..] };
                    let fixed = dims
                        .iter()
                        .map(|d| match d {
                            Dim::Fixed(n) => Some(*n),
                            _ => None,
                        })
                        .collect::<Option<Vec<usize>>>()?;
                    // Each element, its comma, and at most one bracket each.
                    element_count(&fixed)?.checked_mul(3)?.checked_add(SLACK)?
                }
            };
            total = total.checked_add(per_input)?;
        }
        Some(total)
    }

    /// Splits V1 `instances` into one value per input: with one model
    /// input an instance is that input's value; with several it is an
    /// object keyed by input name.
    ///
    /// # Errors
    /// No instances, or an instance that is not an object naming every input.
    pub fn split_instances<'a>(
        &self,
        instances: &'a [Value],
    ) -> Result<Vec<Vec<InputValue<'a>>>, ProcessError> {
        if instances.is_empty() {
            return Err(ProcessError::Request("\"instances\" is empty".into()));
        }
        if self.inputs.len() == 1 {
            return Ok(vec![instances.iter().map(InputValue::Json).collect()]);
        }
        let mut columns: Vec<Vec<InputValue<'a>>> =
            vec![Vec::with_capacity(instances.len()); self.inputs.len()];
        for (row, instance) in instances.iter().enumerate() {
            let Value::Object(fields) = instance else {
                return Err(ProcessError::Request(format!(
                    "instance {row} must be an object keyed by input name ({}), got {}",
                    quoted(self.inputs.iter().map(|p| p.spec.name.as_str())),
                    json_kind(instance)
                )));
            };
            if let Some(unknown) =
                fields.keys().find(|k| !self.inputs.iter().any(|p| &p.spec.name == *k))
            {
                return Err(ProcessError::Request(format!(
                    "instance {row} names unknown input {unknown:?}"
                )));
            }
            for (plan, column) in self.inputs.iter().zip(columns.iter_mut()) {
                let value = fields.get(&plan.spec.name).ok_or_else(|| {
                    ProcessError::Request(format!(
                        "instance {row} has no input {:?}",
                        plan.spec.name
                    ))
                })?;
                column.push(InputValue::Json(value));
            }
        }
        Ok(columns)
    }

    /// Builds the model's input tensors from one column of values per
    /// input (model order), all columns as long as the batch.
    ///
    /// Returns the tensors and the number of rows.
    ///
    /// # Errors
    /// [`ProcessError::Input`] naming the input and the instance that
    /// could not be used; [`ProcessError::Request`] for columns of
    /// different lengths or several instances for a model without a batch axis.
    pub fn build_inputs(
        &self,
        columns: &[Vec<InputValue<'_>>],
    ) -> Result<(Vec<Tensor>, usize), ProcessError> {
        self.build_inputs_until(columns, &Cancel::default())
    }

    /// As [`Processor::build_inputs`], stopping between instances once
    /// `cancel` says the request is gone.
    ///
    /// # Errors
    /// As [`Processor::build_inputs`], and [`ProcessError::Cancelled`].
    pub fn build_inputs_until(
        &self,
        columns: &[Vec<InputValue<'_>>],
        cancel: &Cancel,
    ) -> Result<(Vec<Tensor>, usize), ProcessError> {
        if columns.len() != self.inputs.len() {
            return Err(ProcessError::Request(format!(
                "the model takes {} inputs, the request gives {}",
                self.inputs.len(),
                columns.len()
            )));
        }
        let rows = columns.first().map_or(0, Vec::len);
        if rows == 0 {
            return Err(ProcessError::Request("the request has no instances".into()));
        }
        if columns.iter().any(|c| c.len() != rows) {
            return Err(ProcessError::Request("inputs disagree on the number of instances".into()));
        }
        let mut tensors = Vec::with_capacity(self.inputs.len());
        for (plan, column) in self.inputs.iter().zip(columns) {
            let input_error = |row: usize, reason: String| ProcessError::Input {
                input: plan.spec.name.clone(),
                reason: if rows > 1 { format!("instance {row}: {reason}") } else { reason },
            };
            if !plan.batched && rows > 1 {
                return Err(ProcessError::Request(format!(
                    "input {:?} has no batch axis: send one instance per request, not {rows}",
                    plan.spec.name
                )));
            }
            let tensor = match &plan.step {
                InputStep::Image(step) => {
                    let mut data = Vec::with_capacity(rows.saturating_mul(step.row_len()));
                    for (row, value) in column.iter().enumerate() {
                        cancel.check_now()?;
                        let bytes = image_bytes(value).map_err(|r| input_error(row, r))?;
                        data.extend(
                            step.process(&bytes).map_err(|r| input_error(row, r.to_string()))?,
                        );
                    }
                    float_tensor(&plan.spec, plan.batched, rows, &step.instance_shape(), data)
                }
                InputStep::Features(step) => {
                    let mut data = Vec::with_capacity(rows.saturating_mul(step.len()));
                    for (row, value) in column.iter().enumerate() {
                        cancel.check_now()?;
                        let InputValue::Json(value) = value else {
                            return Err(input_error(
                                row,
                                "features come as a JSON object, not raw bytes".into(),
                            ));
                        };
                        data.extend(step.row(value).map_err(|r| input_error(row, r))?);
                    }
                    float_tensor(&plan.spec, plan.batched, rows, &step.instance_shape(), data)
                }
                InputStep::Tensor(step) => {
                    let values = column
                        .iter()
                        .enumerate()
                        .map(|(row, v)| match v {
                            InputValue::Json(v) => Ok(*v),
                            InputValue::Bytes(_) => Err(input_error(
                                row,
                                "tensors come as JSON numbers, not raw bytes".into(),
                            )),
                        })
                        .collect::<Result<Vec<&Value>, _>>()?;
                    step.build(&values, plan.batched).map_err(|r| ProcessError::Input {
                        input: plan.spec.name.clone(),
                        reason: r.to_string(),
                    })
                }
            }?;
            tensors.push(tensor);
        }
        Ok((tensors, rows))
    }

    /// One JSON answer per instance from the model's outputs: the single
    /// processed output's answer, or an object keyed by output name when
    /// several are processed; without output steps, the raw rows (one
    /// output: its row as nested arrays; several: keyed by name).
    ///
    /// # Errors
    /// [`ProcessError::Output`] when an output does not have the rows or
    /// the width the spec expects.
    pub fn answers(&self, outputs: &[Tensor], rows: usize) -> Result<Vec<Value>, ProcessError> {
        Ok(merge_columns(self.answers_by_output(outputs, rows)?, rows))
    }

    /// Per output (name, one answer per instance), as [`Processor::answers`]
    /// describes, before merging.
    ///
    /// # Errors
    /// As [`Processor::answers`].
    pub fn answers_by_output(
        &self,
        outputs: &[Tensor],
        rows: usize,
    ) -> Result<Vec<(String, Vec<Value>)>, ProcessError> {
        if self.outputs.is_empty() {
            return self
                .model_outputs
                .iter()
                .zip(outputs)
                .map(|(spec, tensor)| {
                    raw_rows(spec, tensor, rows).map(|column| (spec.name.clone(), column))
                })
                .collect();
        }
        self.outputs
            .iter()
            .map(|step| {
                let tensor = outputs.get(step.index()).ok_or_else(|| ProcessError::Output {
                    output: step.name().to_string(),
                    reason: "the model gave no such output".into(),
                })?;
                step.answer_rows(tensor, rows).map(|column| (step.name().to_string(), column))
            })
            .collect()
    }
}

/// Where the tensor `name` is among the model's inputs or outputs (`kind`),
/// for the spec entry at `field`.
fn position(
    model: &[TensorSpec],
    name: &str,
    field: &str,
    kind: &str,
    verb: &str,
) -> Result<usize, ProcessError> {
    model.iter().position(|s| s.name == name).ok_or_else(|| {
        spec_error(
            format!("{field}.name"),
            format!(
                "the model has no {kind} {name:?}; it {verb} {}",
                quoted(model.iter().map(|s| s.name.as_str()))
            ),
        )
    })
}

/// Image bytes from a value: raw bytes, a base64 string, or `{"b64": ...}`
/// (the KServe V1 convention for binary data in JSON).
fn image_bytes<'a>(value: &InputValue<'a>) -> Result<std::borrow::Cow<'a, [u8]>, String> {
    use base64::Engine as _;
    let text = match value {
        InputValue::Bytes(bytes) => return Ok(std::borrow::Cow::Borrowed(bytes)),
        InputValue::Json(Value::String(s)) => s.as_str(),
        InputValue::Json(Value::Object(o)) => match o.get("b64") {
            Some(Value::String(s)) => s.as_str(),
            _ => {
                return Err(
                    "an image comes as a base64 string or {\"b64\": \"...\"}, and this object has no \"b64\" string".into(),
                );
            }
        },
        InputValue::Json(other) => {
            return Err(format!(
                "an image comes as a base64 string or {{\"b64\": \"...\"}}, got {}",
                json_kind(other)
            ));
        }
    };
    // Clients wrap long base64 lines; the standard alphabet has no whitespace.
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map(std::borrow::Cow::Owned)
        .map_err(|e| format!("the image is not valid base64: {e}"))
}

/// Puts `rows` instances of f32 values into a tensor of the model's float type.
fn float_tensor(
    spec: &TensorSpec,
    batched: bool,
    rows: usize,
    instance_shape: &[usize],
    data: Vec<f32>,
) -> Result<Tensor, ProcessError> {
    let shape: Vec<usize> = if batched {
        std::iter::once(rows).chain(instance_shape.iter().copied()).collect()
    } else {
        instance_shape.to_vec()
    };
    let data = match spec.datatype {
        DataType::F32 => TensorData::F32(data),
        DataType::F64 => TensorData::F64(data.into_iter().map(f64::from).collect()),
        DataType::F16 => TensorData::F16(data.into_iter().map(half::f16::from_f32).collect()),
        other => {
            return Err(ProcessError::Build {
                input: spec.name.clone(),
                reason: format!("cannot build a {other} input from floats"),
            });
        }
    };
    Tensor::new(shape, data)
        .map_err(|e| ProcessError::Build { input: spec.name.clone(), reason: e.to_string() })
}

/// Raw rows of an output, each as nested JSON arrays.
fn raw_rows(spec: &TensorSpec, tensor: &Tensor, rows: usize) -> Result<Vec<Value>, ProcessError> {
    let batched = spec.shape.first() == Some(&Dim::Batch);
    let error = |reason: String| ProcessError::Output { output: spec.name.clone(), reason };
    let values = tensor.data.to_f64();
    let integral = !matches!(tensor.datatype(), DataType::F16 | DataType::F32 | DataType::F64);
    let number = |x: f64| -> Value {
        if integral {
            Value::from(x as i64)
        } else {
            serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
        }
    };
    if !batched {
        if rows != 1 {
            return Err(error(format!("has no batch axis but the request has {rows} rows")));
        }
        return Ok(vec![nest(&values, &tensor.shape, &number)]);
    }
    if tensor.shape.first() != Some(&rows) {
        return Err(error(format!("has shape {:?}, expected {rows} rows", tensor.shape)));
    }
    let row_shape = &tensor.shape[1..];
    let row_len = element_count(row_shape).unwrap_or(0);
    Ok((0..rows)
        .map(|r| nest(&values[r * row_len..(r + 1) * row_len], row_shape, &number))
        .collect())
}

fn nest(values: &[f64], shape: &[usize], number: &dyn Fn(f64) -> Value) -> Value {
    match shape {
        [] => values.first().map_or(Value::Null, |x| number(*x)),
        [_] => Value::Array(values.iter().map(|x| number(*x)).collect()),
        [first, rest @ ..] => {
            let len = element_count(rest).unwrap_or(0);
            Value::Array(
                (0..*first).map(|i| nest(&values[i * len..(i + 1) * len], rest, number)).collect(),
            )
        }
    }
}

/// An upper bound on the JSON values in `text`, from one byte scan: every
/// value but the first follows a `,`, `:`, `[` or `{` (strings may hold
/// these too, which only raises the bound).
pub fn json_values_upper_bound(text: &[u8]) -> usize {
    1 + text.iter().filter(|b| matches!(b, b',' | b':' | b'[' | b'{')).count()
}

pub(crate) fn quoted<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
}

/// A spec with where to resolve its relative file paths: what `serve`
/// is given.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessingConfig {
    pub spec: ProcessingSpec,
    /// The spec file's folder, for relative `labelsFile` paths.
    pub base_dir: Option<std::path::PathBuf>,
}

impl ProcessingConfig {
    /// Reads a spec file (YAML or JSON).
    ///
    /// # Errors
    /// An unreadable file, or what [`ProcessingSpec::parse`] refuses, naming the file.
    pub fn from_file(path: &Path) -> Result<ProcessingConfig, ProcessError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProcessError::ReadFile {
            path: path.display().to_string(),
            source,
        })?;
        let spec =
            ProcessingSpec::parse(&text).map_err(|e| e.in_file(path.display().to_string()))?;
        Ok(ProcessingConfig { spec, base_dir: path.parent().map(Path::to_path_buf) })
    }

    /// Checks the spec against a model; see [`Processor::new`].
    ///
    /// # Errors
    /// As [`Processor::new`].
    pub fn processor(
        &self,
        inputs: &[TensorSpec],
        outputs: &[TensorSpec],
    ) -> Result<Processor, ProcessError> {
        Processor::new(&self.spec, inputs, outputs, self.base_dir.as_deref())
    }
}

/// The answers of [`Processor::answers_by_output`] as one per instance:
/// the single output's, or an object keyed by output name.
pub fn merge_columns(mut columns: Vec<(String, Vec<Value>)>, rows: usize) -> Vec<Value> {
    if columns.len() == 1 {
        return columns.pop().map(|(_, c)| c).unwrap_or_default();
    }
    let mut answers = vec![Map::new(); rows];
    for (name, column) in columns {
        for (answer, value) in answers.iter_mut().zip(column) {
            answer.insert(name.clone(), value);
        }
    }
    answers.into_iter().map(Value::Object).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancelled_processing_stops_before_the_next_instance() {
        let cancel = Cancel::default();
        assert!(cancel.check_now().is_ok());
        let seen = cancel.clone();
        cancel.cancel();
        assert!(matches!(seen.check_now(), Err(ProcessError::Cancelled)));
        let spec: ProcessingSpec = ProcessingSpec::parse(
            "inputs:\n  - name: x\n    features:\n      fields: [{name: a}, {name: b}]\n",
        )
        .unwrap();
        let model = vec![TensorSpec::f32_rows("x", 2)];
        let processor = Processor::new(&spec, &model, &model, None).unwrap();
        let row = serde_json::json!({"a": 1, "b": 2});
        let columns = vec![vec![InputValue::Json(&row); 3]];
        assert!(processor.build_inputs(&columns).is_ok());
        assert!(matches!(
            processor.build_inputs_until(&columns, &seen),
            Err(ProcessError::Cancelled)
        ));
    }

    #[test]
    fn json_values_are_bounded_from_above() {
        assert_eq!(json_values_upper_bound(b"1"), 1);
        // [1,[2,3]] holds 5 values; the bound counts 2 commas and 2 brackets.
        assert!(json_values_upper_bound(b"[1,[2,3]]") >= 5);
        assert!(json_values_upper_bound(br#"{"a":[1,2]}"#) >= 4);
    }
}
