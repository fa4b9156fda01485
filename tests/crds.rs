//! `crds/` holds exactly what `tractor crd` prints, the schemas are
//! structural as Kubernetes requires, and every document they accept parses
//! with the Rust types: the generator below walks the schemas and writes
//! schema-valid objects, as the API server would store them (defaults
//! applied), covering each optional field present and absent, each enum
//! value and each `oneOf` branch.

use serde_json::{Map, Value, json};

use tractor::crd::{ModelDeployment, ModelVersion};

#[test]
fn committed_crds_match_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/tractor.dev.yaml");
    let committed = std::fs::read_to_string(&path).unwrap();
    let generated = tractor::crd::crds_yaml().unwrap();
    assert!(
        committed == generated,
        "crds/tractor.dev.yaml drifted from src/crd; run `cargo run -- crd > crds/tractor.dev.yaml`"
    );
}

/// What a structural schema must not say inside `oneOf`/`anyOf`/`allOf`/`not`.
const NOT_IN_JUNCTORS: [&str; 5] =
    ["type", "description", "default", "additionalProperties", "nullable"];
const JUNCTORS: [&str; 4] = ["oneOf", "anyOf", "allOf", "not"];

/// Kubernetes refuses non-structural schemas: every node with properties is
/// an object, no node lacks a type, and the logical junctors only add value
/// validations to properties declared outside them.
fn check_structural(path: &str, node: &Value) {
    let Value::Object(map) = node else { return };
    if map.contains_key("properties") {
        assert_eq!(map.get("type").and_then(Value::as_str), Some("object"), "{path}");
    }
    let int_or_string = map.contains_key("x-kubernetes-int-or-string");
    let typed = map.contains_key("type")
        || int_or_string
        || map.contains_key("x-kubernetes-preserve-unknown-fields");
    assert!(typed || path.ends_with("/metadata"), "{path} has no type: {node}");
    let declared = map.get("properties").and_then(Value::as_object);
    for key in JUNCTORS {
        if let Some(junctor) = map.get(key) {
            // The one exception Kubernetes makes: int-or-string's anyOf of types.
            if !(int_or_string && key == "anyOf") {
                check_junctor(&format!("{path}/{key}"), junctor, declared);
            }
        }
    }
    if let Some(Value::Object(props)) = map.get("properties") {
        for (name, child) in props {
            check_structural(&format!("{path}/{name}"), child);
        }
    }
    if let Some(items) = map.get("items") {
        check_structural(&format!("{path}[]"), items);
    }
    if let Some(Value::Object(_)) = map.get("additionalProperties") {
        check_structural(&format!("{path}{{}}"), &map["additionalProperties"]);
    }
}

/// Inside a junctor: no types, descriptions, defaults; properties (and
/// required names) only where the object outside declares them.
fn check_junctor(path: &str, junctor: &Value, declared: Option<&Map<String, Value>>) {
    match junctor {
        Value::Array(branches) => {
            for (i, branch) in branches.iter().enumerate() {
                check_junctor(&format!("{path}[{i}]"), branch, declared);
            }
        }
        Value::Object(map) => {
            for key in NOT_IN_JUNCTORS {
                assert!(!map.contains_key(key), "{path} sets {key} inside a junctor");
            }
            let is_declared = |name: &str| declared.is_some_and(|d| d.contains_key(name));
            if let Some(Value::Object(props)) = map.get("properties") {
                for name in props.keys() {
                    assert!(is_declared(name), "{path} speaks of {name}, not declared outside");
                }
            }
            for name in map.get("required").and_then(Value::as_array).into_iter().flatten() {
                assert!(is_declared(name.as_str().unwrap_or_default()), "{path} requires {name}");
            }
            for key in JUNCTORS {
                if let Some(inner) = map.get(key) {
                    check_junctor(&format!("{path}/{key}"), inner, declared);
                }
            }
        }
        _ => panic!("{path}: a junctor is a schema or a list of schemas"),
    }
}

fn schema_of(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> Value {
    let json = serde_json::to_value(crd).unwrap();
    json["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn schemas_are_structural_and_carry_the_validations() {
    use kube::CustomResourceExt;
    for crd in [ModelDeployment::crd(), ModelVersion::crd()] {
        let json = serde_json::to_value(&crd).unwrap();
        check_structural(crd.metadata.name.as_deref().unwrap(), &schema_of(&crd));
        assert!(
            json["spec"]["versions"][0]["subresources"].is_object()
                || crd.spec.names.kind == "ModelVersion"
        );
    }
    let md = serde_json::to_value(ModelDeployment::crd()).unwrap().to_string();
    assert!(md.contains("isSorted()"), "step weights must increase");
    let mv = serde_json::to_value(ModelVersion::crd()).unwrap().to_string();
    assert!(mv.contains("self == oldSelf"), "a ModelVersion is immutable");
}

// ---------------------------------------------------------------- the generator

/// A string that matches `pattern` (anchors removed: proptest's regex
/// generator does not take them, and the CRD's patterns are whole-string)
/// and fits the length bounds; drawn from a fixed seed, so the documents are
/// the same on every run.
fn sample_matching(pattern: &str, min: usize, max: usize) -> String {
    use proptest::strategy::{Strategy, ValueTree};
    let body = pattern.trim_start_matches('^').trim_end_matches('$');
    let strategy = proptest::string::string_regex(body)
        .unwrap_or_else(|e| panic!("cannot generate strings for {pattern}: {e}"));
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..1000 {
        let sample = strategy.new_tree(&mut runner).unwrap().current();
        if (min..=max).contains(&sample.chars().count()) {
            return sample;
        }
    }
    panic!("no sample of {pattern} between {min} and {max} characters");
}

fn number(node: &Map<String, Value>, key: &str) -> Option<f64> {
    node.get(key).and_then(Value::as_f64)
}

/// The constraints a `oneOf` branch adds to the object it sits in.
struct Branch {
    required: Vec<String>,
    /// Allowed values a branch narrows a property to.
    values: Map<String, Value>,
    forbidden: Vec<String>,
}

impl Branch {
    fn of(branch: &Value) -> Branch {
        let names = |v: Option<&Value>| -> Vec<String> {
            v.and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect()
        };
        let mut values = Map::new();
        for inner in branch.get("allOf").and_then(Value::as_array).into_iter().flatten() {
            for (name, schema) in
                inner.get("properties").and_then(Value::as_object).into_iter().flatten()
            {
                let allowed = schema.get("enum").cloned();
                values.insert(name.clone(), allowed.expect("a branch narrows a property by enum"));
            }
        }
        let forbidden = branch
            .get("not")
            .and_then(|n| n.get("anyOf"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|alternative| names(alternative.get("required")))
            .collect();
        Branch { required: names(branch.get("required")), values, forbidden }
    }

    fn none() -> Branch {
        Branch { required: Vec::new(), values: Map::new(), forbidden: Vec::new() }
    }
}

/// Every alternative a schema node offers, each a schema-valid value as
/// the API server would store it. Alternatives of an object change one
/// property at a time from a minimal object (plus one with every property),
/// so the count grows with the schema's size, not with its combinations.
fn alternatives(path: &str, schema: &Value) -> Vec<Value> {
    let Value::Object(node) = schema else { panic!("{path}: not a schema") };
    let mut found = alternatives_not_null(path, node);
    if node.get("nullable") == Some(&Value::Bool(true)) {
        found.push(Value::Null);
    }
    found
}

fn alternatives_not_null(path: &str, node: &Map<String, Value>) -> Vec<Value> {
    if let Some(Value::Array(values)) = node.get("enum") {
        return values.clone();
    }
    if node.contains_key("x-kubernetes-int-or-string") {
        return vec![json!(2), json!("500m")];
    }
    if node.contains_key("x-kubernetes-preserve-unknown-fields") {
        return vec![json!({}), json!({ "anything": [1, "two"] })];
    }
    match node.get("type").and_then(Value::as_str) {
        Some("object") => objects(path, node),
        Some("array") => {
            let items =
                node.get("items").unwrap_or_else(|| panic!("{path}: an array without items"));
            let mut found = vec![json!([])];
            found.extend(alternatives(&format!("{path}[]"), items).into_iter().map(|a| json!([a])));
            if let Some(min) = node.get("minItems").and_then(Value::as_u64) {
                found.retain(|a| a.as_array().is_some_and(|a| a.len() as u64 >= min));
            }
            found
        }
        Some("string") => {
            let min = node.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
            let max = node.get("maxLength").and_then(Value::as_u64).unwrap_or(256) as usize;
            if let Some(pattern) = node.get("pattern").and_then(Value::as_str) {
                vec![json!(sample_matching(pattern, min, max))]
            } else if node.get("format").and_then(Value::as_str) == Some("date-time") {
                vec![json!("2027-01-15T08:00:00Z")]
            } else {
                vec![json!("x".repeat(min.max(1)))]
            }
        }
        Some("integer") => {
            let min = number(node, "minimum").unwrap_or(-3.0) as i64;
            let max = number(node, "maximum").map(|m| m as i64);
            let mut found = vec![json!(min)];
            found.extend(max.map(|m| json!(m)));
            found
        }
        Some("number") => {
            let min = number(node, "minimum").unwrap_or(-1.5);
            let mut found = vec![json!(min)];
            found.extend(number(node, "maximum").map(|m| json!(m)));
            found
        }
        Some("boolean") => vec![json!(true), json!(false)],
        other => panic!("{path}: no generator for type {other:?}"),
    }
}

fn objects(path: &str, node: &Map<String, Value>) -> Vec<Value> {
    match node.get("oneOf").and_then(Value::as_array) {
        Some(branches) => {
            branches.iter().flat_map(|branch| objects_in(path, node, &Branch::of(branch))).collect()
        }
        None => objects_in(path, node, &Branch::none()),
    }
}

/// The alternatives of an object under one `oneOf` branch's constraints.
fn objects_in(path: &str, node: &Map<String, Value>, branch: &Branch) -> Vec<Value> {
    let empty = Map::new();
    let properties = node.get("properties").and_then(Value::as_object).unwrap_or(&empty);
    if properties.is_empty() {
        return match node.get("additionalProperties") {
            Some(values @ Value::Object(_)) => {
                let mut found = vec![json!({})];
                found.extend(
                    alternatives(&format!("{path}{{}}"), values)
                        .into_iter()
                        .map(|v| json!({ "key": v })),
                );
                found
            }
            _ => vec![json!({})],
        };
    }
    let mut required: Vec<String> = node
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str().map(str::to_string))
        .collect();
    required.extend(branch.required.iter().cloned());
    let options: Vec<(String, Vec<Value>)> = properties
        .iter()
        .filter(|(name, _)| !branch.forbidden.contains(name))
        .map(|(name, schema)| {
            let here = format!("{path}.{name}");
            let choices = match branch.values.get(name) {
                Some(Value::Array(values)) => values.clone(),
                _ => alternatives(&here, schema),
            };
            assert!(!choices.is_empty(), "{here}: no value is valid");
            (name.clone(), choices)
        })
        .collect();
    for name in &branch.forbidden {
        assert!(
            properties.get(name).and_then(|p| p.get("default")).is_none(),
            "{path}.{name}: the API server writes its default into an object whose variant forbids it"
        );
    }
    // The object with its required properties only, defaults applied as
    // the API server applies them to an absent property.
    let mut minimal = Map::new();
    for (name, choices) in &options {
        if required.contains(name) {
            minimal.insert(name.clone(), choices[0].clone());
        } else if let Some(default) = properties[name].get("default") {
            minimal.insert(name.clone(), default.clone());
        }
    }
    for name in &required {
        assert!(minimal.contains_key(name), "{path}: {name} is required but cannot be given");
    }
    let mut found = vec![Value::Object(minimal.clone())];
    let mut full = minimal.clone();
    for (name, choices) in &options {
        full.insert(name.clone(), choices[0].clone());
        for choice in choices {
            let mut one = minimal.clone();
            one.insert(name.clone(), choice.clone());
            found.push(Value::Object(one));
        }
    }
    found.push(Value::Object(full));
    found
}

/// Whole objects: every alternative of the schema, with the apiVersion,
/// kind and metadata a stored object has.
fn documents(kind: &str, schema: &Value) -> Vec<Value> {
    alternatives(kind, schema)
        .into_iter()
        .map(|mut document| {
            document["apiVersion"] = json!("tractor.dev/v1alpha1");
            document["kind"] = json!(kind);
            document["metadata"] = json!({ "name": "digits", "namespace": "default" });
            document
        })
        .collect()
}

/// Every object the CRD schemas accept parses with the types the
/// controller reads them with: a schema that lets through what serde
/// refuses (`passes: [{type: quantize}]` without `mode`, a default written
/// into the wrong variant) would otherwise stop the object at the
/// controller instead of at `kubectl apply`.
#[test]
fn every_schema_valid_document_parses_with_the_types() {
    use kube::CustomResourceExt;
    let md = documents("ModelDeployment", &schema_of(&ModelDeployment::crd()));
    let mv = documents("ModelVersion", &schema_of(&ModelVersion::crd()));
    assert!(md.len() > 200 && mv.len() > 50, "{} and {} documents", md.len(), mv.len());
    let mut passes = std::collections::BTreeSet::new();
    for document in &md {
        if let Err(e) = tractor::crd::parse_object(document.clone()) {
            panic!("a schema-valid ModelDeployment does not parse: {e}\n{document:#}");
        }
        for pass in document["spec"]["optimize"]["passes"].as_array().into_iter().flatten() {
            passes.insert(pass["type"].as_str().unwrap_or_default().to_string());
        }
    }
    assert_eq!(
        passes.into_iter().collect::<Vec<_>>(),
        ["convert", "fold", "merge", "prune", "quantize"],
        "every oneOf branch was generated"
    );
    for document in &mv {
        if let Err(e) = serde_path_to_error::deserialize::<_, ModelVersion>(document.clone()) {
            panic!("a schema-valid ModelVersion does not parse: {e}\n{document:#}");
        }
    }
}

/// The branch the issue found: a quantize pass needs its mode, at the API
/// server, not only in serde; and a merge pass's `mode` is not quantize's.
#[test]
fn a_pass_schema_requires_what_its_variant_requires() {
    use kube::CustomResourceExt;
    let schema = schema_of(&ModelDeployment::crd());
    let pass =
        &schema["properties"]["spec"]["properties"]["optimize"]["properties"]["passes"]["items"];
    let branch = |kind: &str| {
        pass["oneOf"]
            .as_array()
            .expect("the pass schema keeps one branch per variant")
            .iter()
            .find(|b| b["allOf"][0]["properties"]["type"]["enum"] == json!([kind]))
            .unwrap_or_else(|| panic!("no branch for {kind}: {pass:#}"))
            .clone()
    };
    assert!(branch("quantize")["required"].as_array().unwrap().contains(&json!("mode")));
    assert_eq!(
        branch("merge")["allOf"][0]["properties"]["mode"]["enum"],
        json!(["compose", "average"])
    );
    let forbidden = branch("prune")["not"]["anyOf"].to_string();
    assert!(forbidden.contains("\"fallback\"") && forbidden.contains("\"mode\""), "{forbidden}");
    assert!(
        pass["properties"]["fallback"].get("default").is_none(),
        "{:#}",
        pass["properties"]["fallback"]
    );
}

/// Issue 14: `kubectl get md` answers "is it ready, and why not" without
/// `-o yaml`: a Ready column read from the condition the planner writes,
/// and the status message.
#[test]
fn kubectl_get_shows_ready_and_the_message() {
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(ModelDeployment::crd()).unwrap();
    let columns = crd["spec"]["versions"][0]["additionalPrinterColumns"].as_array().unwrap();
    let names: Vec<&str> = columns.iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names, ["Ready", "Phase", "Stable", "Canary", "Weight", "Message", "Age"]);
    let path = |name: &str| {
        columns.iter().find(|c| c["name"] == name).unwrap()["jsonPath"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(path("Ready"), r#".status.conditions[?(@.type=="Ready")].status"#);
    assert_eq!(path("Message"), ".status.message");
}

/// Issue 14: a duration the controller cannot parse (`pause: banana`) is
/// refused by the schema at `kubectl apply`; every form the docs and
/// examples use still applies. Whatever the schema's pattern lets through,
/// `validate`'s parser (humantime) reads.
#[test]
fn the_schema_refuses_durations_the_controller_cannot_parse() {
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(ModelDeployment::crd()).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let rollout = &spec["properties"]["rollout"]["properties"];
    let fields = [
        &rollout["steps"]["items"]["properties"]["pause"],
        &rollout["analysis"]["properties"]["interval"],
        &rollout["analysis"]["properties"]["maxLatencyP99"],
        &rollout["keepWarm"],
        &rollout["progressDeadline"],
        &spec["properties"]["serving"]["properties"]["batching"]["properties"]["maxBatchDelay"],
    ];
    for field in fields {
        assert_eq!(field["pattern"], tractor::crd::DURATION_PATTERN, "{field}");
    }
    let pattern = regex::Regex::new(tractor::crd::DURATION_PATTERN).unwrap();
    let good = [
        "30s", "5m", "10m", "1h", "250ms", "500us", "2ms", "1m 30s", "1h30m", "1.5s", " 10s ",
        "2 min", "3 hours", "1d", "1week", "µs", "100µs",
    ];
    for text in good.iter().filter(|t| **t != "µs") {
        assert!(pattern.is_match(text), "{text:?} is refused by the schema");
        assert!(humantime::parse_duration(text.trim()).is_ok(), "{text:?}");
    }
    let bad = [
        "banana",
        "",
        " ",
        "10",
        "s",
        "10 seconds ago",
        "1.s",
        ".5s",
        "-5s",
        "5s,",
        "5 parsecs",
        "1m30",
        "PT30S",
        "µs",
    ];
    for text in bad {
        assert!(!pattern.is_match(text), "{text:?} passes the schema");
        assert!(humantime::parse_duration(text.trim()).is_err(), "{text:?} parses, though");
    }
}
