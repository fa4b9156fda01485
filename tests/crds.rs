//! `crds/` holds exactly what `tractor crd` prints, and the schemas are
//! structural as Kubernetes requires.

use serde_json::Value;

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

/// Kubernetes refuses non-structural schemas: every node with properties is
/// an object, no `oneOf`/`anyOf` declares properties, no node lacks a type.
fn check_structural(path: &str, node: &Value) {
    let Value::Object(map) = node else { return };
    for key in ["oneOf", "anyOf", "allOf"] {
        assert!(!map.contains_key(key), "{path} has {key}");
    }
    if map.contains_key("properties") {
        assert_eq!(map.get("type").and_then(Value::as_str), Some("object"), "{path}");
    }
    let typed = map.contains_key("type")
        || map.contains_key("x-kubernetes-int-or-string")
        || map.contains_key("x-kubernetes-preserve-unknown-fields");
    assert!(typed || path.ends_with("/metadata"), "{path} has no type: {node}");
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

#[test]
fn schemas_are_structural_and_carry_the_validations() {
    use kube::CustomResourceExt;
    for crd in [tractor::crd::ModelDeployment::crd(), tractor::crd::ModelVersion::crd()] {
        let json = serde_json::to_value(&crd).unwrap();
        let schema = &json["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        check_structural(crd.metadata.name.as_deref().unwrap(), schema);
        assert!(
            json["spec"]["versions"][0]["subresources"].is_object()
                || crd.spec.names.kind == "ModelVersion"
        );
    }
    let md = serde_json::to_value(tractor::crd::ModelDeployment::crd()).unwrap().to_string();
    assert!(md.contains("isSorted()"), "step weights must increase");
    let mv = serde_json::to_value(tractor::crd::ModelVersion::crd()).unwrap().to_string();
    assert!(mv.contains("self == oldSelf"), "a ModelVersion is immutable");
}
