//! What an ONNX file declares, checked before anything is built from it.
//!
//! A model file is as hostile as a request: its dimensions are numbers a
//! stranger wrote. tract and the optimizer size buffers from them, so every
//! declared size is read here first with checked arithmetic and held
//! against a [`Budget`]: initializers and `Constant` values (elements,
//! bytes, and whether the data they carry is the data their dims declare),
//! declared shapes of inputs, outputs and intermediate values, shapes that
//! `ConstantOfShape`, `Expand`, `Tile` and `Range` would build from constant
//! operands (tract folds those at load), external data locations, and the
//! node graph itself (a cycle is refused). Subgraphs (`If`, `Loop`, `Scan`)
//! are checked the same way.
//!
//! # Invariants
//! A model that passes has no tensor, dimension or constant-built shape over
//! the budget, no dimension product that overflows `u64`, no initializer
//! whose stored bytes disagree with its dims, and an acyclic graph.

use std::collections::HashMap;
use std::path::{Component, Path};

use prost::Message;
use tract_onnx::pb;

/// ONNX `TensorProto.DataType` codes read here.
mod code {
    pub const FLOAT: i32 = 1;
    pub const UINT8: i32 = 2;
    pub const INT8: i32 = 3;
    pub const UINT16: i32 = 4;
    pub const INT16: i32 = 5;
    pub const INT32: i32 = 6;
    pub const INT64: i32 = 7;
    pub const STRING: i32 = 8;
    pub const BOOL: i32 = 9;
    pub const FLOAT16: i32 = 10;
    pub const DOUBLE: i32 = 11;
    pub const UINT32: i32 = 12;
    pub const UINT64: i32 = 13;
    pub const COMPLEX64: i32 = 14;
    pub const COMPLEX128: i32 = 15;
    pub const BFLOAT16: i32 = 16;
    /// float8 (17-20), uint4/int4 (21, 22), float4 (23).
    pub const LAST_KNOWN: i32 = 23;
}

/// `TensorProto.DataLocation.EXTERNAL`.
const EXTERNAL: i32 = 1;

/// How much a model may declare: the bytes of all its constant tensors
/// together, and of any one tensor, dimension or constant-built shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub max_bytes: u64,
}

impl Budget {
    /// Whatever the machine could give: the memory available to this process
    /// now ([`available_memory`]), else `isize::MAX` (the largest allocation
    /// Rust can make, so the checked arithmetic still holds).
    pub fn from_available_memory() -> Budget {
        Budget { max_bytes: available_memory().unwrap_or(isize::MAX as u64) }
    }
}

/// The memory this process can still take: the smaller of the kernel's
/// `MemAvailable` and the room left under the cgroup's limit (v2
/// `memory.max` - `memory.current`, or v1 `memory.limit_in_bytes` -
/// `memory.usage_in_bytes`), which is what a Pod's memory limit sets.
///
/// Read by hand: two small text files; the system-information crates that
/// read them bring far more than this needs.
pub fn available_memory() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let number = |p: &str| read(p).and_then(|s| s.trim().parse::<u64>().ok());
    let meminfo = read("/proc/meminfo").and_then(|text| mem_available(&text));
    let cgroup =
        match (number("/sys/fs/cgroup/memory.max"), number("/sys/fs/cgroup/memory.current")) {
            (Some(max), used) => Some(max.saturating_sub(used.unwrap_or(0))),
            (None, _) => number("/sys/fs/cgroup/memory/memory.limit_in_bytes").map(|max| {
                max.saturating_sub(
                    number("/sys/fs/cgroup/memory/memory.usage_in_bytes").unwrap_or(0),
                )
            }),
        };
    match (meminfo, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// What a model declares that the check refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeclaredError {
    #[error("cannot decode the model as ONNX: {0}")]
    Decode(String),
    #[error("{what} has a negative dimension {dim}")]
    NegativeDimension { what: String, dim: i64 },
    #[error("{what}: the dimensions {dims:?} multiply past 2^64")]
    Overflow { what: String, dims: Vec<i64> },
    #[error("{what} declares {bytes} bytes, over the budget of {budget} bytes")]
    OverBudget { what: String, bytes: u64, budget: u64 },
    #[error(
        "the model's constant tensors declare {bytes} bytes in all, over the budget of {budget} bytes"
    )]
    TotalOverBudget { bytes: u64, budget: u64 },
    #[error("{what} declares {declared} {unit} for dims {dims:?} but holds {found}")]
    DataMismatch { what: String, dims: Vec<i64>, declared: u64, found: u64, unit: &'static str },
    #[error("{what} has unknown data type {code}")]
    UnknownType { what: String, code: i32 },
    #[error("{what}: external data {reason}")]
    External { what: String, reason: String },
    #[error("the graph has a cycle through node {node:?}")]
    Cycle { node: String },
}

/// Totals of a model that passed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Declared {
    /// Constant tensors (initializers and `Constant` values, subgraphs included).
    pub tensors: u64,
    /// Their bytes as declared (what loading them takes).
    pub bytes: u64,
}

/// Checks ONNX bytes against the memory available now: the engine's
/// check before tract reads a model.
///
/// Decoding the protobuf once more costs about one more copy of the file,
/// freed before tract starts; that is the price of refusing a 150-byte file
/// before it asks for 16 GiB.
///
/// # Errors
/// See [`check_model`]; also bytes that are not ONNX.
pub fn check_load(bytes: &[u8]) -> Result<Declared, DeclaredError> {
    check_bytes(bytes, &Budget::from_available_memory())
}

/// [`check_model`] on encoded bytes.
///
/// # Errors
/// As [`check_model`]; also bytes that are not ONNX.
pub fn check_bytes(bytes: &[u8], budget: &Budget) -> Result<Declared, DeclaredError> {
    let model = pb::ModelProto::decode(bytes).map_err(|e| DeclaredError::Decode(e.to_string()))?;
    check_model(&model, budget)
}

/// Checks everything a decoded model declares against `budget`.
///
/// # Errors
/// The first declaration refused, naming the tensor, value or node.
pub fn check_model(model: &pb::ModelProto, budget: &Budget) -> Result<Declared, DeclaredError> {
    let mut totals = Declared::default();
    if let Some(g) = &model.graph {
        check_graph(g, budget, &mut totals)?;
    }
    Ok(totals)
}

fn check_graph(
    g: &pb::GraphProto,
    budget: &Budget,
    totals: &mut Declared,
) -> Result<(), DeclaredError> {
    for t in &g.initializer {
        let bytes = check_tensor(&format!("initializer {:?}", t.name), t, budget)?;
        add(totals, bytes, budget)?;
    }
    for v in g.input.iter().chain(&g.output).chain(&g.value_info) {
        check_value_info(v, budget)?;
    }
    let constants = constants(g);
    for n in &g.node {
        for a in &n.attribute {
            let what = |kind: &str| format!("node {:?} attribute {:?}{kind}", n.name, a.name);
            if let Some(t) = &a.t {
                let bytes = check_tensor(&what(""), t, budget)?;
                add(totals, bytes, budget)?;
            }
            for (i, t) in a.tensors.iter().enumerate() {
                let bytes = check_tensor(&what(&format!("[{i}]")), t, budget)?;
                add(totals, bytes, budget)?;
            }
            if let Some(sub) = &a.g {
                check_graph(sub, budget, totals)?;
            }
            for sub in &a.graphs {
                check_graph(sub, budget, totals)?;
            }
        }
        check_built_shape(n, &constants, budget)?;
    }
    check_acyclic(g)
}

fn add(totals: &mut Declared, bytes: u64, budget: &Budget) -> Result<(), DeclaredError> {
    totals.tensors += 1;
    totals.bytes = totals.bytes.saturating_add(bytes);
    if totals.bytes > budget.max_bytes {
        return Err(DeclaredError::TotalOverBudget {
            bytes: totals.bytes,
            budget: budget.max_bytes,
        });
    }
    Ok(())
}

/// Bytes per element of an ONNX data type (strings count their count only:
/// their bytes are what the file holds; 4-bit types count a whole byte).
fn element_bytes(what: &str, code: i32) -> Result<u64, DeclaredError> {
    use code::*;
    Ok(match code {
        UINT8 | INT8 | BOOL | STRING => 1,
        UINT16 | INT16 | FLOAT16 | BFLOAT16 => 2,
        FLOAT | INT32 | UINT32 => 4,
        INT64 | DOUBLE | UINT64 | COMPLEX64 => 8,
        COMPLEX128 => 16,
        17..=LAST_KNOWN => 1,
        _ => return Err(DeclaredError::UnknownType { what: what.into(), code }),
    })
}

/// The element count of `dims`, checked, and each dimension within budget
/// (a zero elsewhere in the shape must not leave another dimension free to
/// size a buffer on its own).
fn element_count(what: &str, dims: &[i64], budget: &Budget) -> Result<u64, DeclaredError> {
    let mut count: u64 = 1;
    for d in dims {
        let d = u64::try_from(*d)
            .map_err(|_| DeclaredError::NegativeDimension { what: what.into(), dim: *d })?;
        if d > budget.max_bytes {
            return Err(DeclaredError::OverBudget {
                what: format!("{what} (a dimension of {d})"),
                bytes: d,
                budget: budget.max_bytes,
            });
        }
        count = count
            .checked_mul(d)
            .ok_or_else(|| DeclaredError::Overflow { what: what.into(), dims: dims.to_vec() })?;
    }
    Ok(count)
}

/// `count` elements of `element` bytes each, checked and within budget.
fn sized(
    what: &str,
    dims: &[i64],
    count: u64,
    element: u64,
    budget: &Budget,
) -> Result<u64, DeclaredError> {
    let bytes = count
        .checked_mul(element)
        .ok_or_else(|| DeclaredError::Overflow { what: what.into(), dims: dims.to_vec() })?;
    if bytes > budget.max_bytes {
        return Err(DeclaredError::OverBudget {
            what: what.into(),
            bytes,
            budget: budget.max_bytes,
        });
    }
    Ok(bytes)
}

/// One constant tensor: dims, size, and the data it carries. Returns its bytes.
fn check_tensor(what: &str, t: &pb::TensorProto, budget: &Budget) -> Result<u64, DeclaredError> {
    let element = element_bytes(what, t.data_type)?;
    let count = element_count(what, &t.dims, budget)?;
    let bytes = sized(what, &t.dims, count, element, budget)?;
    let mismatch = |declared: u64, found: usize, unit: &'static str| DeclaredError::DataMismatch {
        what: what.into(),
        dims: t.dims.clone(),
        declared,
        found: found as u64,
        unit,
    };
    if t.data_location == Some(EXTERNAL) {
        return check_external(what, t, bytes).map(|()| bytes);
    }
    if !t.raw_data.is_empty() {
        // 4-bit types pack two elements a byte.
        let expected = if matches!(t.data_type, 21..=23) { count.div_ceil(2) } else { bytes };
        if t.data_type != code::STRING && t.raw_data.len() as u64 != expected {
            return Err(mismatch(expected, t.raw_data.len(), "bytes of raw_data"));
        }
        return Ok(bytes);
    }
    use code::*;
    let typed = match t.data_type {
        FLOAT => Some(t.float_data.len()),
        INT32 | INT16 | INT8 | UINT16 | UINT8 | BOOL | FLOAT16 | BFLOAT16 => {
            Some(t.int32_data.len())
        }
        INT64 => Some(t.int64_data.len()),
        DOUBLE => Some(t.double_data.len()),
        UINT32 | UINT64 => Some(t.uint64_data.len()),
        STRING => Some(t.string_data.len()),
        // Complex, float8 and 4-bit packings: tract reads none of them.
        _ => None,
    };
    match typed {
        Some(found) if found as u64 != count => Err(mismatch(count, found, "elements")),
        _ => Ok(bytes),
    }
}

/// External data: a relative location that stays inside the model's
/// folder, and a length (when given) that matches the dims.
fn check_external(what: &str, t: &pb::TensorProto, bytes: u64) -> Result<(), DeclaredError> {
    let err = |reason: String| DeclaredError::External { what: what.into(), reason };
    let get = |key: &str| t.external_data.iter().find(|e| e.key == key).map(|e| e.value.as_str());
    let location = get("location").ok_or_else(|| err("has no location".into()))?;
    let path = Path::new(location);
    let inside = !location.is_empty()
        && path.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !inside {
        return Err(err(format!(
            "location {location:?} is not a relative path inside the model's folder"
        )));
    }
    let number = |key: &str| -> Result<Option<u64>, DeclaredError> {
        get(key)
            .map(|v| v.parse::<u64>().map_err(|_| err(format!("{key} {v:?} is not a byte count"))))
            .transpose()
    };
    let offset = number("offset")?.unwrap_or(0);
    if let Some(length) = number("length")? {
        if length != bytes {
            return Err(err(format!(
                "length {length} does not match the {bytes} bytes of dims {:?}",
                t.dims
            )));
        }
        offset
            .checked_add(length)
            .ok_or_else(|| err(format!("offset {offset} + length {length} overflows")))?;
    }
    Ok(())
}

/// A declared input, output or intermediate value: its fixed dimensions
/// (symbolic ones are the caller's to bound) within budget.
fn check_value_info(v: &pb::ValueInfoProto, budget: &Budget) -> Result<(), DeclaredError> {
    use pb::tensor_shape_proto::dimension::Value;
    let Some(pb::type_proto::Value::TensorType(tensor)) =
        v.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Ok(());
    };
    let Some(shape) = &tensor.shape else { return Ok(()) };
    // tract reads a negative dim_value as unknown, so it is skipped here too.
    let dims: Vec<i64> = shape
        .dim
        .iter()
        .filter_map(|d| match d.value {
            Some(Value::DimValue(n)) if n >= 0 => Some(n),
            _ => None,
        })
        .collect();
    let what = format!("value {:?}", v.name);
    let count = element_count(&what, &dims, budget)?;
    let element = element_bytes(&what, tensor.elem_type).unwrap_or(1);
    sized(&what, &dims, count, element, budget).map(|_| ())
}

/// Small integer constants of a graph by name (initializers and `Constant`
/// nodes), as ops that build shapes read them.
fn constants(g: &pb::GraphProto) -> HashMap<&str, Vec<i64>> {
    // Shapes and Range operands are short: a longer tensor is no shape.
    const MAX_LEN: usize = 64;
    let ints = |t: &pb::TensorProto| -> Option<Vec<i64>> {
        let n = usize::try_from(t.dims.iter().try_fold(1i64, |a, d| a.checked_mul(*d))?).ok()?;
        if n > MAX_LEN {
            return None;
        }
        let v: Vec<i64> = match t.data_type {
            code::INT64 if !t.raw_data.is_empty() => t
                .raw_data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
            code::INT64 => t.int64_data.clone(),
            code::INT32 if !t.raw_data.is_empty() => t
                .raw_data
                .chunks_exact(4)
                .map(|c| i64::from(i32::from_le_bytes(c.try_into().unwrap_or([0; 4]))))
                .collect(),
            code::INT32 => t.int32_data.iter().map(|v| i64::from(*v)).collect(),
            _ => return None,
        };
        (v.len() == n).then_some(v)
    };
    let mut out: HashMap<&str, Vec<i64>> = HashMap::new();
    for t in &g.initializer {
        if let Some(v) = ints(t) {
            out.insert(t.name.as_str(), v);
        }
    }
    for n in g.node.iter().filter(|n| n.op_type == "Constant") {
        let value = n.attribute.iter().find(|a| a.name == "value").and_then(|a| a.t.as_ref());
        if let (Some(t), Some(o)) = (value, n.output.first())
            && let Some(v) = ints(t)
        {
            out.insert(o.as_str(), v);
        }
    }
    out
}

/// Ops whose output size comes from a constant operand: tract folds them at
/// load, so a constant `[1 << 20, 1 << 20]` would be allocated then.
fn check_built_shape(
    n: &pb::NodeProto,
    constants: &HashMap<&str, Vec<i64>>,
    budget: &Budget,
) -> Result<(), DeclaredError> {
    let operand = |i: usize| n.input.get(i).and_then(|x| constants.get(x.as_str()));
    let what = format!("node {:?} ({})", n.name, n.op_type);
    let dims: Option<Vec<i64>> = match n.op_type.as_str() {
        // The output has at least the shape operand's elements.
        "ConstantOfShape" => operand(0).cloned(),
        "Expand" => operand(1).cloned(),
        "Tile" => match (operand(0), operand(1)) {
            (Some(x), Some(repeats)) if x.len() == repeats.len() => {
                Some(x.iter().zip(repeats).map(|(a, b)| a.saturating_mul(*b)).collect())
            }
            (_, Some(repeats)) => Some(repeats.clone()),
            _ => None,
        },
        "Range" => match (operand(0), operand(1), operand(2)) {
            (Some(start), Some(limit), Some(delta))
                if start.len() == 1 && limit.len() == 1 && delta.len() == 1 && delta[0] != 0 =>
            {
                let span = i128::from(limit[0]) - i128::from(start[0]);
                let steps = span.div_euclid(i128::from(delta[0]))
                    + i128::from(span.rem_euclid(i128::from(delta[0])) != 0);
                Some(vec![i64::try_from(steps.max(0)).unwrap_or(i64::MAX)])
            }
            _ => None,
        },
        _ => None,
    };
    let Some(dims) = dims else { return Ok(()) };
    // Negative entries mean "keep" (Expand broadcasting, -1): no size.
    let dims: Vec<i64> = dims.into_iter().map(|d| d.max(0)).collect();
    let count = element_count(&what, &dims, budget)?;
    sized(&what, &dims, count, 1, budget).map(|_| ())
}

/// Refuses a graph whose nodes read, through any path, their own outputs.
/// Nodes may come in any order (tract sorts them); a value produced by no
/// node of this graph is an input, an initializer or an outer scope's.
fn check_acyclic(g: &pb::GraphProto) -> Result<(), DeclaredError> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            producer.entry(o.as_str()).or_insert(i);
        }
    }
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); g.node.len()];
    let mut waiting: Vec<usize> = vec![0; g.node.len()];
    for (i, n) in g.node.iter().enumerate() {
        let mut from: Vec<usize> =
            n.input.iter().filter_map(|x| producer.get(x.as_str()).copied()).collect();
        from.sort_unstable();
        from.dedup();
        waiting[i] = from.len();
        for p in from {
            readers[p].push(i);
        }
    }
    // Kahn's order: whatever is left waiting sits on a cycle or behind one.
    let mut ready: Vec<usize> = (0..g.node.len()).filter(|i| waiting[*i] == 0).collect();
    let mut done = 0;
    while let Some(i) = ready.pop() {
        done += 1;
        for r in &readers[i] {
            waiting[*r] -= 1;
            if waiting[*r] == 0 {
                ready.push(*r);
            }
        }
    }
    if done == g.node.len() {
        return Ok(());
    }
    let stuck = (0..g.node.len()).find(|i| waiting[*i] > 0).unwrap_or(0);
    let n = &g.node[stuck];
    let node = if n.name.is_empty() {
        n.output.first().cloned().unwrap_or_default()
    } else {
        n.name.clone()
    };
    Err(DeclaredError::Cycle { node })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Budget = Budget { max_bytes: 1 << 20 };

    fn tensor(name: &str, data_type: i32, dims: &[i64], raw: Vec<u8>) -> pb::TensorProto {
        pb::TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type,
            raw_data: raw,
            ..Default::default()
        }
    }

    fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> pb::NodeProto {
        pb::NodeProto {
            op_type: op.into(),
            name: format!("{op}_{}", outputs.join("_")),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn with(nodes: Vec<pb::NodeProto>, inits: Vec<pb::TensorProto>) -> pb::ModelProto {
        pb::ModelProto {
            graph: Some(pb::GraphProto { node: nodes, initializer: inits, ..Default::default() }),
            ..Default::default()
        }
    }

    fn refused(m: &pb::ModelProto) -> String {
        check_model(m, &BUDGET).unwrap_err().to_string()
    }

    #[test]
    fn sizes_within_budget_pass_and_are_counted() {
        let m = with(
            vec![node("MatMul", &["x", "w"], &["y"])],
            vec![
                tensor("w", code::FLOAT, &[4, 2], vec![0; 32]),
                pb::TensorProto {
                    name: "b".into(),
                    dims: vec![2],
                    data_type: code::INT64,
                    int64_data: vec![1, 2],
                    ..Default::default()
                },
            ],
        );
        assert_eq!(check_model(&m, &BUDGET).unwrap(), Declared { tensors: 2, bytes: 48 });
    }

    #[test]
    fn overflowing_and_oversized_dims_are_refused_before_any_allocation() {
        // 2^32 x 2^32 wraps to 0 in usize: the 150-byte file of issue 11.
        let wrap = with(vec![], vec![tensor("w", code::FLOAT, &[1 << 32, 1 << 32], vec![])]);
        let e = check_model(&wrap, &Budget { max_bytes: u64::MAX }).unwrap_err().to_string();
        assert!(e.contains("multiply past 2^64") || e.contains("over the budget"), "{e}");
        assert!(refused(&wrap).contains("a dimension of 4294967296"), "{}", refused(&wrap));
        // A zero dimension does not free the others.
        let zero = with(vec![], vec![tensor("w", code::FLOAT, &[0, 1 << 40], vec![])]);
        assert!(refused(&zero).contains("a dimension of 1099511627776"), "{}", refused(&zero));
        let big = with(vec![], vec![tensor("w", code::FLOAT, &[512, 1024], vec![])]);
        assert_eq!(
            refused(&big),
            "initializer \"w\" declares 2097152 bytes, over the budget of 1048576 bytes"
        );
        let negative = with(vec![], vec![tensor("w", code::FLOAT, &[-1], vec![])]);
        assert_eq!(refused(&negative), "initializer \"w\" has a negative dimension -1");
        // Each fits, together they do not.
        let two = with(
            vec![],
            vec![
                tensor("a", code::UINT8, &[700 << 10], vec![0; 700 << 10]),
                tensor("b", code::UINT8, &[700 << 10], vec![0; 700 << 10]),
            ],
        );
        assert!(refused(&two).contains("in all, over the budget"), "{}", refused(&two));
    }

    #[test]
    fn data_that_disagrees_with_dims_is_refused() {
        let short = with(vec![], vec![tensor("w", code::FLOAT, &[4, 4], vec![0; 12])]);
        assert_eq!(
            refused(&short),
            "initializer \"w\" declares 64 bytes of raw_data for dims [4, 4] but holds 12"
        );
        let typed = with(
            vec![],
            vec![pb::TensorProto {
                name: "w".into(),
                dims: vec![3],
                data_type: code::FLOAT,
                float_data: vec![1.0],
                ..Default::default()
            }],
        );
        assert!(refused(&typed).contains("declares 3 elements"), "{}", refused(&typed));
        let empty = with(vec![], vec![tensor("w", code::FLOAT, &[8], vec![])]);
        assert!(refused(&empty).contains("but holds 0"), "{}", refused(&empty));
        let unknown = with(vec![], vec![tensor("w", 99, &[1], vec![0])]);
        assert_eq!(refused(&unknown), "initializer \"w\" has unknown data type 99");
    }

    #[test]
    fn external_data_must_stay_in_the_model_folder() {
        let external = |location: &str, length: Option<&str>| {
            let mut t = tensor("w", code::FLOAT, &[2], vec![]);
            t.data_location = Some(EXTERNAL);
            t.external_data.push(pb::StringStringEntryProto {
                key: "location".into(),
                value: location.into(),
            });
            if let Some(l) = length {
                t.external_data
                    .push(pb::StringStringEntryProto { key: "length".into(), value: l.into() });
            }
            with(vec![], vec![t])
        };
        for bad in ["../secret.bin", "/etc/passwd", "a/../../b", ""] {
            let e = refused(&external(bad, None));
            assert!(e.contains("not a relative path inside"), "{bad}: {e}");
        }
        assert!(check_model(&external("weights.bin", Some("8")), &BUDGET).is_ok());
        assert!(refused(&external("weights.bin", Some("4"))).contains("length 4 does not match"));
    }

    #[test]
    fn cycles_are_refused_and_unsorted_acyclic_graphs_pass() {
        let cycle = with(
            vec![
                node("Relu", &["b"], &["a"]),
                node("Relu", &["a"], &["b"]),
                node("Relu", &["x"], &["y"]),
            ],
            vec![],
        );
        assert_eq!(refused(&cycle), "the graph has a cycle through node \"Relu_a\"");
        let selfloop = with(vec![node("Add", &["x", "s"], &["s"])], vec![]);
        assert!(refused(&selfloop).contains("cycle"), "{}", refused(&selfloop));
        let unsorted =
            with(vec![node("Relu", &["h"], &["y"]), node("Relu", &["x"], &["h"])], vec![]);
        assert!(check_model(&unsorted, &BUDGET).is_ok());
    }

    #[test]
    fn shapes_built_from_constants_are_bounded() {
        let i64s = |name: &str, v: &[i64]| {
            tensor(
                name,
                code::INT64,
                &[v.len() as i64],
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        };
        let huge = with(
            vec![node("ConstantOfShape", &["shape"], &["y"])],
            vec![i64s("shape", &[1 << 20, 1 << 20])],
        );
        assert!(refused(&huge).contains("ConstantOfShape"), "{}", refused(&huge));
        let expand =
            with(vec![node("Expand", &["x", "s"], &["y"])], vec![i64s("s", &[1 << 62, 4])]);
        assert!(
            refused(&expand).contains("(Expand) (a dimension of 4611686018427387904)"),
            "{}",
            refused(&expand)
        );
        let range = with(
            vec![node("Range", &["a", "b", "c"], &["y"])],
            vec![i64s("a", &[0]), i64s("b", &[i64::MAX]), i64s("c", &[1])],
        );
        assert!(refused(&range).contains("Range"), "{}", refused(&range));
        let small = with(
            vec![node("Range", &["a", "b", "c"], &["y"]), node("Expand", &["x", "s"], &["z"])],
            vec![i64s("a", &[10]), i64s("b", &[0]), i64s("c", &[-3]), i64s("s", &[-1, 8])],
        );
        assert!(check_model(&small, &BUDGET).is_ok());
    }

    #[test]
    fn declared_value_shapes_are_bounded() {
        use pb::tensor_shape_proto::{Dimension, dimension::Value};
        let info = |dims: Vec<Value>| pb::ValueInfoProto {
            name: "x".into(),
            r#type: Some(pb::TypeProto {
                denotation: String::new(),
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: code::FLOAT,
                    shape: Some(pb::TensorShapeProto {
                        dim: dims
                            .into_iter()
                            .map(|v| Dimension { denotation: String::new(), value: Some(v) })
                            .collect(),
                    }),
                })),
            }),
            ..Default::default()
        };
        let mut m = with(vec![], vec![]);
        let g = m.graph.as_mut().unwrap();
        g.input.push(info(vec![Value::DimParam("batch".into()), Value::DimValue(64)]));
        assert!(check_model(&m, &BUDGET).is_ok());
        m.graph
            .as_mut()
            .unwrap()
            .value_info
            .push(info(vec![Value::DimValue(1 << 40), Value::DimValue(1 << 40)]));
        assert!(refused(&m).contains("value \"x\""), "{}", refused(&m));
    }

    #[test]
    fn subgraphs_are_checked_too() {
        let inner = pb::GraphProto {
            initializer: vec![tensor("w", code::FLOAT, &[4], vec![0; 3])],
            ..Default::default()
        };
        let mut n = node("If", &["c"], &["y"]);
        n.attribute.push(pb::AttributeProto {
            name: "then_branch".into(),
            r#type: 5,
            g: Some(inner),
            ..Default::default()
        });
        assert!(refused(&with(vec![n], vec![])).contains("holds 3"));
    }

    #[test]
    fn meminfo_is_read_in_bytes() {
        let text = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   22574212 kB\n";
        assert_eq!(mem_available(text), Some(22_574_212 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
    }
}
