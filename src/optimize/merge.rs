//! The `merge` pass: `compose` chains two models into one graph; `average`
//! makes the element-wise average of models of identical architecture (a
//! weight soup).

use std::collections::{HashMap, HashSet};

use tract_onnx::pb;

use super::PassError;
use super::graph::{self, Namer};
use crate::crd::recipe::NameMap;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MergeNotes {
    pub models: usize,
    /// compose: (output of the first, input of the second) pairs wired.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub wired: Vec<(String, String)>,
    /// compose: names of the second model renamed to avoid collisions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub renamed: Vec<(String, String)>,
}

/// Chains `second` after `first`: each input of `second` is fed by the
/// output of `first` that `map` names, or by the output of the same name;
/// the others become inputs of the result. The result's outputs are the
/// second's. Names of `second` that clash with `first` are renamed.
///
/// # Errors
/// Map entries naming missing outputs or inputs, and a second model with no
/// input fed by the first.
pub fn compose(
    first: &pb::ModelProto,
    second: &pb::ModelProto,
    map: &[NameMap],
) -> Result<(pb::ModelProto, MergeNotes), PassError> {
    let g1 = graph::graph(first)?;
    let g2 = graph::graph(second)?;
    let outputs1: HashSet<&String> = g1.output.iter().map(|o| &o.name).collect();
    let inits2: HashSet<&String> = g2.initializer.iter().map(|t| &t.name).collect();
    let inputs2: Vec<&pb::ValueInfoProto> =
        g2.input.iter().filter(|v| !inits2.contains(&v.name)).collect();
    for m in map {
        if !outputs1.contains(&m.output) {
            return Err(PassError::Rewrite(format!(
                "the first model has no output {:?}",
                m.output
            )));
        }
        if !inputs2.iter().any(|v| v.name == m.input) {
            return Err(PassError::Rewrite(format!("the second model has no input {:?}", m.input)));
        }
    }
    let mut wiring: HashMap<String, String> = HashMap::new();
    for v in &inputs2 {
        let from = map.iter().find(|m| m.input == v.name).map(|m| m.output.clone());
        let from = from.or_else(|| outputs1.contains(&v.name).then(|| v.name.clone()));
        if let Some(f) = from {
            wiring.insert(v.name.clone(), f);
        }
    }
    if wiring.is_empty() {
        return Err(PassError::Rewrite(
            "no input of the second model is fed by the first: name them with --map OUT=IN".into(),
        ));
    }
    // Rename every name of the second that the first already uses.
    let mut namer = Namer::new(g1);
    let taken = Namer::new(g1);
    let mut renames: HashMap<String, String> = HashMap::new();
    let mut all2: Vec<String> = Vec::new();
    all2.extend(g2.initializer.iter().map(|t| t.name.clone()));
    all2.extend(g2.input.iter().chain(&g2.output).map(|v| v.name.clone()));
    for n in &g2.node {
        all2.extend(n.output.iter().cloned());
        all2.push(n.name.clone());
    }
    let mut notes = MergeNotes { models: 2, wired: Vec::new(), renamed: Vec::new() };
    for name in all2 {
        if name.is_empty() || wiring.contains_key(&name) || renames.contains_key(&name) {
            continue;
        }
        if taken.taken_contains(&name) {
            let new = namer.fresh(&format!("second/{name}"));
            notes.renamed.push((name.clone(), new.clone()));
            renames.insert(name, new);
        }
    }
    let rename = |s: &String| -> String {
        if let Some(w) = wiring.get(s) {
            return w.clone();
        }
        renames.get(s).cloned().unwrap_or_else(|| s.clone())
    };
    let mut out = first.clone();
    let g = graph::graph_mut(&mut out)?;
    for t in &g2.initializer {
        let mut t = t.clone();
        t.name = rename(&t.name);
        g.initializer.push(t);
    }
    for n in &g2.node {
        let mut n = n.clone();
        n.name = renames.get(&n.name).cloned().unwrap_or(n.name);
        n.input =
            n.input.iter().map(|i| if i.is_empty() { i.clone() } else { rename(i) }).collect();
        n.output = n.output.iter().map(&rename).collect();
        g.node.push(n);
    }
    for v in &inputs2 {
        if !wiring.contains_key(&v.name) {
            let mut v = (*v).clone();
            v.name = rename(&v.name);
            g.input.push(v);
        }
    }
    g.output = g2
        .output
        .iter()
        .map(|v| {
            let mut v = v.clone();
            v.name = rename(&v.name);
            v
        })
        .collect();
    g.value_info.extend(g2.value_info.iter().map(|v| {
        let mut v = v.clone();
        v.name = rename(&v.name);
        v
    }));
    let mut wired: Vec<(String, String)> = wiring.into_iter().map(|(i, o)| (o, i)).collect();
    wired.sort();
    notes.wired = wired;
    merge_opsets(&mut out, second);
    graph::remove_unused(graph::graph_mut(&mut out)?);
    Ok((out, notes))
}

fn merge_opsets(out: &mut pb::ModelProto, other: &pb::ModelProto) {
    for o in &other.opset_import {
        match out.opset_import.iter_mut().find(|x| x.domain == o.domain) {
            Some(x) => x.version = x.version.max(o.version),
            None => out.opset_import.push(o.clone()),
        }
    }
    out.ir_version = out.ir_version.max(other.ir_version);
}

/// The element-wise average of models whose graphs are identical apart from
/// float weight values.
///
/// # Errors
/// Models whose nodes, interfaces or initializer names, shapes or types differ.
pub fn average(models: &[&pb::ModelProto]) -> Result<(pb::ModelProto, MergeNotes), PassError> {
    let Some((first, rest)) = models.split_first() else {
        return Err(PassError::Rewrite("average needs at least one model".into()));
    };
    let g0 = graph::graph(first)?;
    let mut sums: Vec<Option<Vec<f64>>> = g0
        .initializer
        .iter()
        .map(|t| graph::read_f32(t).ok().map(|f| f.data.iter().map(|v| f64::from(*v)).collect()))
        .collect();
    for (k, m) in rest.iter().enumerate() {
        let g = graph::graph(m)?;
        let differ = |what: &str| {
            PassError::Rewrite(format!("model {} differs from the first: {what}", k + 2))
        };
        if g.node.len() != g0.node.len() {
            return Err(differ(&format!("{} nodes against {}", g.node.len(), g0.node.len())));
        }
        for (a, b) in g0.node.iter().zip(&g.node) {
            if a.op_type != b.op_type
                || a.input != b.input
                || a.output != b.output
                || a.attribute != b.attribute
            {
                return Err(differ(&format!(
                    "node {:?} ({}) against {:?} ({})",
                    b.name, b.op_type, a.name, a.op_type
                )));
            }
        }
        if graph::interface(first) != graph::interface(m) {
            return Err(differ("inputs or outputs"));
        }
        if g.initializer.len() != g0.initializer.len() {
            return Err(differ("number of weights"));
        }
        let by_name: HashMap<&String, &pb::TensorProto> =
            g.initializer.iter().map(|t| (&t.name, t)).collect();
        for (i, a) in g0.initializer.iter().enumerate() {
            let b =
                by_name.get(&a.name).ok_or_else(|| differ(&format!("no weight {:?}", a.name)))?;
            if a.dims != b.dims || a.data_type != b.data_type {
                return Err(differ(&format!(
                    "weight {:?} has dims {:?} against {:?}",
                    a.name, b.dims, a.dims
                )));
            }
            match &mut sums[i] {
                Some(sum) => {
                    let f = graph::read_f32(b)?;
                    sum.iter_mut().zip(&f.data).for_each(|(s, v)| *s += f64::from(*v));
                }
                None if a.raw_data != b.raw_data || a.int64_data != b.int64_data => {
                    return Err(differ(&format!("non-float weight {:?} has other values", a.name)));
                }
                None => {}
            }
        }
    }
    let mut out = (*first).clone();
    let g = graph::graph_mut(&mut out)?;
    let n = models.len() as f64;
    for (t, sum) in g.initializer.iter_mut().zip(sums) {
        if let Some(sum) = sum {
            let data: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
            let dims: Vec<usize> = t.dims.iter().map(|d| *d as usize).collect();
            *t = graph::f32_tensor(&t.name, &dims, &data);
        }
    }
    Ok((out, MergeNotes { models: models.len(), wired: Vec::new(), renamed: Vec::new() }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimize::graph::testing::{model, run, values};
    use crate::optimize::graph::{f32_tensor, node};

    fn linear(w: &[f32], out: &str) -> pb::ModelProto {
        model(
            ("x", &[None, Some(2)]),
            (out, &[None, Some(2)]),
            vec![node("MatMul", "mm", &["x", "w"], &[out])],
            vec![f32_tensor("w", &[2, 2], w)],
        )
    }

    #[test]
    fn compose_equals_running_the_parts() {
        let a = linear(&values(4, 1, 1.0), "h");
        // Second model: its input named "x" too, and same weight name "w".
        let mut b = linear(&values(4, 2, 1.0), "y");
        graph::graph_mut(&mut b).unwrap().node.push(node("Relu", "relu", &["y"], &["z"]));
        graph::graph_mut(&mut b).unwrap().output[0].name = "z".into();
        let (c, notes) =
            compose(&a, &b, &[NameMap { output: "h".into(), input: "x".into() }]).unwrap();
        assert_eq!(notes.wired, vec![("h".to_string(), "x".to_string())]);
        assert!(notes.renamed.iter().any(|(from, _)| from == "w"), "{notes:?}");
        graph::check_wiring(graph::graph(&c).unwrap()).unwrap();
        let x = values(6, 3, 2.0);
        let h = run(&a, &[3, 2], &x);
        let expected = run(&b, &[3, 2], &h);
        let got = run(&c, &[3, 2], &x);
        for (e, g) in expected.iter().zip(&got) {
            assert!((e - g).abs() <= 1e-5 * e.abs().max(1.0), "{expected:?} vs {got:?}");
        }
        let bad =
            compose(&a, &b, &[NameMap { output: "nope".into(), input: "x".into() }]).unwrap_err();
        assert!(bad.to_string().contains("nope"));
    }

    #[test]
    fn average_of_linear_models_is_the_average_of_outputs() {
        let a = linear(&[1.0, 2.0, 3.0, 4.0], "y");
        let b = linear(&[3.0, 0.0, -1.0, 2.0], "y");
        let (m, notes) = average(&[&a, &b]).unwrap();
        assert_eq!(notes.models, 2);
        let w = graph::read_f32(&graph::graph(&m).unwrap().initializer[0]).unwrap();
        assert_eq!(w.data, vec![2.0, 1.0, 1.0, 3.0]);
        let x = values(4, 7, 1.0);
        let (ya, yb, ym) = (run(&a, &[2, 2], &x), run(&b, &[2, 2], &x), run(&m, &[2, 2], &x));
        for i in 0..4 {
            assert!((ym[i] - (ya[i] + yb[i]) / 2.0).abs() < 1e-5);
        }
    }

    #[test]
    fn average_refuses_different_graphs() {
        let a = linear(&[1.0; 4], "y");
        let mut b = linear(&[1.0; 4], "y");
        graph::graph_mut(&mut b).unwrap().node[0].op_type = "Add".into();
        let err = average(&[&a, &b]).unwrap_err();
        assert!(err.to_string().contains("model 2 differs"), "{err}");
    }
}
