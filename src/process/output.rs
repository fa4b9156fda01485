//! Output steps: `softmax`, `affine`, then at most one decision (`topK`,
//! `argmax`, `threshold`), turning each output row into a JSON answer an
//! application can use: `{"label": "7", "score": 0.98, "top_k": [...]}` or
//! `{"value": 151.3}`.

use std::path::Path;

use serde_json::{Value, json};

use super::{ProcessError, spec_error};
use crate::crd::processing::{DecisionSpec, Labels, ValidOutput};
use crate::engine::{Dim, Tensor, TensorSpec, element_count};

#[derive(Debug, Clone, PartialEq)]
enum Decision {
    /// The processed row as `{"value": ...}`.
    Value,
    TopK {
        k: usize,
        labels: Option<Vec<String>>,
    },
    Argmax {
        labels: Option<Vec<String>>,
    },
    Threshold {
        threshold: f64,
        labels: [String; 2],
    },
}

/// An output's processing checked against the model output.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputStep {
    name: String,
    index: usize,
    batched: bool,
    /// Values per row when the model fixes it.
    width: Option<usize>,
    softmax: bool,
    affine: Option<(f64, f64)>,
    decision: Decision,
}

impl OutputStep {
    /// Checks an output, already checked on its own
    /// ([`OutputProcessing::check`]), against the model output.
    ///
    /// [`OutputProcessing::check`]: crate::crd::processing::OutputProcessing::check
    ///
    /// # Errors
    /// [`ProcessError::Spec`] naming the field under `field`: `k` over the
    /// width, labels whose count differs from the width, an unreadable
    /// labels file, a threshold on a row of more than two values.
    pub fn new(
        spec: &ValidOutput,
        index: usize,
        model: &TensorSpec,
        field: &str,
        base_dir: Option<&Path>,
    ) -> Result<OutputStep, ProcessError> {
        let batched = model.shape.first() == Some(&Dim::Batch);
        let row_dims = if batched { &model.shape[1..] } else { &model.shape[..] };
        let width = row_dims
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => Some(*n),
                Dim::Batch | Dim::Dynamic(_) => None,
            })
            .collect::<Option<Vec<usize>>>()
            .and_then(|dims| element_count(&dims));
        let labels = |sub: &str,
                      source: &Option<Labels>|
         -> Result<Option<Vec<String>>, ProcessError> {
            let labels = match source {
                Some(Labels::Inline(list)) => list.clone(),
                Some(Labels::File(path)) => read_labels(path, base_dir, &format!("{field}.{sub}"))?,
                None => return Ok(None),
            };
            if let Some(w) = width
                && labels.len() != w
            {
                return Err(spec_error(
                    format!("{field}.{sub}.labels"),
                    format!(
                        "{} labels, but output {:?} has {w} values per row",
                        labels.len(),
                        model.name
                    ),
                ));
            }
            Ok(Some(labels))
        };
        let decision = match &spec.decision {
            DecisionSpec::TopK { k, labels: source } => {
                if width.is_some_and(|w| *k > w) {
                    return Err(spec_error(
                        format!("{field}.topK.k"),
                        format!("{k} is not between 1 and the output width {}", width.unwrap_or(0)),
                    ));
                }
                Decision::TopK { k: *k, labels: labels("topK", source)? }
            }
            DecisionSpec::Argmax { labels: source } => {
                Decision::Argmax { labels: labels("argmax", source)? }
            }
            DecisionSpec::Threshold { threshold, labels } => {
                if width.is_some_and(|w| w > 2) || width == Some(0) {
                    return Err(spec_error(
                        format!("{field}.threshold"),
                        format!(
                            "output {:?} has {} values per row; a threshold reads one score (or the second of two)",
                            model.name,
                            width.unwrap_or(0)
                        ),
                    ));
                }
                Decision::Threshold { threshold: *threshold, labels: labels.clone() }
            }
            DecisionSpec::Value => Decision::Value,
        };
        Ok(OutputStep {
            name: model.name.clone(),
            index,
            batched,
            width,
            softmax: spec.softmax,
            affine: spec.affine,
            decision,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The model output's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// One answer per row of `tensor`.
    ///
    /// # Errors
    /// [`ProcessError::Output`] when the tensor does not have `rows` rows or
    /// its rows do not have the width the labels were checked against.
    pub fn answer_rows(&self, tensor: &Tensor, rows: usize) -> Result<Vec<Value>, ProcessError> {
        let error = |reason: String| ProcessError::Output { output: self.name.clone(), reason };
        if !self.batched && rows != 1 {
            return Err(error(format!("has no batch axis but the request has {rows} rows")));
        }
        if self.batched && tensor.shape.first() != Some(&rows) {
            return Err(error(format!("has shape {:?}, expected {rows} rows", tensor.shape)));
        }
        let values = tensor.data.to_f64();
        let width = values.len() / rows.max(1);
        if self.width.is_some_and(|w| w != width) || width == 0 {
            return Err(error(format!("has {width} values per row, expected {:?}", self.width)));
        }
        values.chunks_exact(width).map(|row| self.answer(row)).collect()
    }

    /// The answer for one row.
    ///
    /// # Errors
    /// [`ProcessError::Output`]: an empty row, or a class with no label.
    fn answer(&self, row: &[f64]) -> Result<Value, ProcessError> {
        let error = |reason: String| ProcessError::Output { output: self.name.clone(), reason };
        let empty = || error("the output row is empty".into());
        let mut row = row.to_vec();
        if self.softmax {
            softmax(&mut row);
        }
        if let Some((scale, offset)) = self.affine {
            row.iter_mut().for_each(|x| *x = *x * scale + offset);
        }
        let label = |labels: &Option<Vec<String>>, i: usize| -> Result<String, ProcessError> {
            match labels {
                None => Ok(i.to_string()),
                Some(l) => l
                    .get(i)
                    .cloned()
                    .ok_or_else(|| error(format!("class {i} has no label ({} labels)", l.len()))),
            }
        };
        Ok(match &self.decision {
            Decision::Value => match row.as_slice() {
                [one] => json!({ "value": number(*one) }),
                many => json!({ "value": many.iter().map(|x| number(*x)).collect::<Vec<_>>() }),
            },
            Decision::TopK { k, labels } => {
                let best = top_k(&row, *k);
                let entries = best
                    .iter()
                    .map(|&(i, s)| {
                        Ok(json!({ "label": label(labels, i)?, "index": i, "score": number(s) }))
                    })
                    .collect::<Result<Vec<Value>, ProcessError>>()?;
                let (i, s) = best.first().copied().ok_or_else(empty)?;
                json!({ "label": label(labels, i)?, "index": i, "score": number(s), "top_k": entries })
            }
            Decision::Argmax { labels } => {
                let (i, s) = top_k(&row, 1).first().copied().ok_or_else(empty)?;
                json!({ "label": label(labels, i)?, "index": i, "score": number(s) })
            }
            Decision::Threshold { threshold, labels } => {
                // One score, or the positive class's of two.
                let score = *row.last().ok_or_else(empty)?;
                let positive = score >= *threshold;
                json!({ "label": labels[usize::from(positive)], "score": number(score) })
            }
        })
    }
}

/// JSON has no NaN or infinity: they become null rather than failing the answer.
fn number(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// Softmax in place, shifted by the maximum so large logits do not overflow.
pub fn softmax(row: &mut [f64]) {
    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return;
    }
    let mut sum = 0.0;
    for x in row.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    row.iter_mut().for_each(|x| *x /= sum);
}

/// The `k` highest scores as (index, score), highest first; ties go to
/// the lower index, and NaN ranks below everything, so the order is
/// deterministic.
pub fn top_k(row: &[f64], k: usize) -> Vec<(usize, f64)> {
    let key = |x: f64| if x.is_nan() { f64::NEG_INFINITY } else { x };
    let mut order: Vec<(usize, f64)> = row.iter().copied().enumerate().collect();
    order.sort_by(|a, b| key(b.1).total_cmp(&key(a.1)).then(a.0.cmp(&b.0)));
    order.truncate(k);
    order
}

/// One label per line; trailing blank lines are dropped (files end with a
/// newline), inner ones kept so line numbers stay class indices.
///
/// # Errors
/// [`ProcessError::Spec`] for `{field}.labelsFile` when the file cannot be read.
fn read_labels(
    path: &str,
    base_dir: Option<&Path>,
    field: &str,
) -> Result<Vec<String>, ProcessError> {
    let path = Path::new(path);
    let full = match base_dir {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    };
    let text = std::fs::read_to_string(&full).map_err(|e| {
        spec_error(format!("{field}.labelsFile"), format!("cannot read {}: {e}", full.display()))
    })?;
    let mut labels: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    while labels.last().is_some_and(String::is_empty) {
        labels.pop();
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::processing::{Affine, Argmax, OutputProcessing, Threshold, TopK};
    use crate::engine::TensorData;

    fn model(width: usize) -> TensorSpec {
        TensorSpec::f32_rows("logits", width)
    }

    /// The whole path a spec takes: checked alone, then against the model.
    fn checked(
        spec: &OutputProcessing,
        width: usize,
        base_dir: Option<&Path>,
    ) -> Result<OutputStep, ProcessError> {
        OutputStep::new(&spec.check("outputs[0]")?, 0, &model(width), "outputs[0]", base_dir)
    }

    fn step(spec: OutputProcessing, width: usize) -> OutputStep {
        checked(&spec, width, None).unwrap()
    }

    fn rows(values: Vec<f32>, width: usize) -> Tensor {
        Tensor::new(vec![values.len() / width, width], TensorData::F32(values)).unwrap()
    }

    #[test]
    fn softmax_of_known_logits() {
        // ln 1, ln 2, ln 5 -> 1/8, 2/8, 5/8.
        let mut row = [0.0, 2f64.ln(), 5f64.ln()];
        softmax(&mut row);
        for (got, want) in row.iter().zip([0.125, 0.25, 0.625]) {
            assert!((got - want).abs() < 1e-12, "{row:?}");
        }
        // Shifted by the max: 1000 and 1000 do not overflow.
        let mut big = [1000.0, 1000.0];
        softmax(&mut big);
        assert_eq!(big, [0.5, 0.5]);
    }

    #[test]
    fn top_k_ties_go_to_the_lower_index_and_nan_ranks_last() {
        let row = [0.2, 0.5, f64::NAN, 0.5, 0.1];
        assert_eq!(top_k(&row, 3), vec![(1, 0.5), (3, 0.5), (0, 0.2)]);
        let all: Vec<usize> = top_k(&row, 5).into_iter().map(|(i, _)| i).collect();
        assert_eq!(all, vec![1, 3, 0, 4, 2]);
    }

    #[test]
    fn top_k_with_labels_after_softmax() {
        let spec = OutputProcessing {
            name: "logits".into(),
            softmax: Some(true),
            top_k: Some(TopK {
                k: Some(2),
                labels: Some(vec!["a".into(), "b".into(), "c".into()]),
                labels_file: None,
            }),
            ..Default::default()
        };
        let s = step(spec, 3);
        let t = rows(vec![0.0, 5f32.ln(), 2f32.ln(), 1.0, 1.0, 1.0], 3);
        let answers = s.answer_rows(&t, 2).unwrap();
        assert_eq!(answers[0]["label"], "b");
        assert_eq!(answers[0]["index"], 1);
        assert!((answers[0]["score"].as_f64().unwrap() - 0.625).abs() < 1e-6);
        assert_eq!(answers[0]["top_k"][1]["label"], "c");
        assert!((answers[0]["top_k"][1]["score"].as_f64().unwrap() - 0.25).abs() < 1e-6);
        // Three equal logits: a, then b.
        assert_eq!(answers[1]["top_k"][0]["label"], "a");
        assert_eq!(answers[1]["top_k"][1]["label"], "b");
    }

    #[test]
    fn affine_undoes_a_standardized_target() {
        let spec = OutputProcessing {
            name: "logits".into(),
            affine: Some(Affine { scale: Some(77.0), offset: Some(152.0) }),
            ..Default::default()
        };
        let answers = step(spec, 1).answer_rows(&rows(vec![0.5, -1.0], 1), 2).unwrap();
        assert_eq!(answers, vec![json!({"value": 190.5}), json!({"value": 75.0})]);
    }

    #[test]
    fn argmax_and_threshold_decide() {
        let spec = OutputProcessing {
            name: "logits".into(),
            argmax: Some(Argmax::default()),
            ..Default::default()
        };
        let answers = step(spec, 3).answer_rows(&rows(vec![0.1, 0.7, 0.2], 3), 1).unwrap();
        assert_eq!(answers[0]["label"], "1");
        let spec = OutputProcessing {
            name: "logits".into(),
            threshold: Some(Threshold {
                threshold: Some(0.75),
                labels: Some(vec!["ham".into(), "spam".into()]),
            }),
            ..Default::default()
        };
        let answers = step(spec, 1).answer_rows(&rows(vec![0.75, 0.5], 1), 2).unwrap();
        assert_eq!(answers[0], json!({"label": "spam", "score": 0.75}));
        assert_eq!(answers[1], json!({"label": "ham", "score": 0.5}));
    }

    #[test]
    fn specs_that_cannot_fit_name_the_field() {
        let labels = |n: usize| Some((0..n).map(|i| i.to_string()).collect::<Vec<_>>());
        let cases = [
            (
                OutputProcessing {
                    top_k: Some(TopK { labels: labels(9), ..Default::default() }),
                    ..Default::default()
                },
                "outputs[0].topK.labels",
            ),
            (
                OutputProcessing {
                    top_k: Some(TopK { k: Some(11), ..Default::default() }),
                    ..Default::default()
                },
                "outputs[0].topK.k",
            ),
            (
                OutputProcessing {
                    argmax: Some(Argmax {
                        labels_file: Some("/nonexistent/labels.txt".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                "outputs[0].argmax.labelsFile",
            ),
            (
                OutputProcessing { threshold: Some(Threshold::default()), ..Default::default() },
                "outputs[0].threshold",
            ),
            (
                OutputProcessing {
                    argmax: Some(Argmax::default()),
                    top_k: Some(TopK::default()),
                    ..Default::default()
                },
                "outputs[0]",
            ),
        ];
        for (spec, field) in cases {
            match checked(&spec, 10, None) {
                Err(ProcessError::Spec { field: f, reason }) => assert_eq!(f, field, "{reason}"),
                other => panic!("{spec:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn labels_files_are_read_relative_to_the_spec() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("l.txt"), "cat\ndog\n\n").unwrap();
        let spec = OutputProcessing {
            name: "logits".into(),
            argmax: Some(Argmax { labels: None, labels_file: Some("l.txt".into()) }),
            ..Default::default()
        };
        let s = checked(&spec, 2, Some(dir.path())).unwrap();
        let answers = s.answer_rows(&rows(vec![0.1, 0.9], 2), 1).unwrap();
        assert_eq!(answers[0]["label"], "dog");
    }
}
