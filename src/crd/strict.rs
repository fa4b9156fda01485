//! Unknown fields, found as `kubectl apply --validate=strict` finds them:
//! a document walked against the CRD's own schema, where a key the schema
//! does not declare is an error naming its path, with the nearest declared
//! name when one is near (`spec.serving.replica`: did you mean `replicas`?).
//!
//! The schema is the API server's definition of a known field, and it has
//! the names a suggestion is chosen from; serde's view (`serde_ignored`)
//! would need the schema for suggestions anyway, and misses what internally
//! tagged enums buffer. `metadata` is walked against `ObjectMeta`'s schema,
//! which the API server checks it with.

use serde_json::Value;

/// A key no schema declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownField {
    /// As `kubectl explain` writes it: `spec.rollout.steps[0].pauze`.
    pub path: String,
    /// The nearest declared name at that place, when one is near.
    pub suggestion: Option<String>,
}

impl std::fmt::Display for UnknownField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown field \"{}\"", self.path)?;
        if let Some(near) = &self.suggestion {
            write!(f, " (did you mean `{near}`?)")?;
        }
        Ok(())
    }
}

/// Every unknown field of a `ModelDeployment` document, in document order.
pub fn unknown_fields(document: &Value) -> Vec<UnknownField> {
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(super::ModelDeployment::crd()).unwrap_or_default();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut found = Vec::new();
    walk(schema, document, "", &mut found);
    found
}

/// `ObjectMeta`'s schema, its nested types inlined, as the walk needs it.
fn object_meta_schema() -> Value {
    let generator = schemars::generate::SchemaSettings::openapi3()
        .with(|s| s.inline_subschemas = true)
        .into_generator();
    generator
        .into_root_schema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>()
        .to_value()
}

fn walk(schema: &Value, value: &Value, path: &str, found: &mut Vec<UnknownField>) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    match value {
        Value::Object(fields) => {
            let declared = schema.get("properties").and_then(Value::as_object);
            let values_schema = schema.get("additionalProperties").filter(|a| a.is_object());
            for (key, child) in fields {
                let here = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                if path.is_empty() && key == "metadata" {
                    walk(&object_meta_schema(), child, &here, found);
                } else if path.is_empty() && (key == "apiVersion" || key == "kind") {
                    // The type's own fields, which a CRD schema leaves to
                    // the API server; the reader checks their values.
                } else if let Some(child_schema) = declared.and_then(|d| d.get(key)) {
                    walk(child_schema, child, &here, found);
                } else if let Some(values_schema) = values_schema {
                    walk(values_schema, child, &here, found);
                } else if declared.is_some() {
                    let names = declared.into_iter().flat_map(|d| d.keys());
                    found.push(UnknownField { path: here, suggestion: nearest(key, names) });
                }
            }
        }
        Value::Array(items) => {
            if let Some(items_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk(items_schema, item, &format!("{path}[{i}]"), found);
                }
            }
        }
        _ => {}
    }
}

/// The declared name most like `key`, if any is like it at all: Jaro
/// similarity over 0.7, the measure and the threshold clap's own "did you
/// mean" uses for flags.
fn nearest<'a>(key: &str, names: impl Iterator<Item = &'a String>) -> Option<String> {
    names
        .map(|name| (strsim::jaro(key, name), name))
        .filter(|(similarity, _)| *similarity > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, name)| name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn document(spec: Value) -> Value {
        json!({ "apiVersion": "tractor.dev/v1alpha1", "kind": "ModelDeployment",
                "metadata": { "name": "digits", "labels": { "team": "ml" } }, "spec": spec })
    }

    #[test]
    fn typos_are_named_by_path_with_the_nearest_name() {
        let found = unknown_fields(&document(json!({
            "model": { "name": "d", "version": "1", "source": { "uri": "m.onnx" } },
            "serving": { "replica": 3, "nodeSelector": { "any-label": "x" } },
            "rollout": { "steps": [{ "weight": 10 }, { "weight": 20, "pauze": "1s" }],
                         "analysis": { "intervall": "5s", "zzz": 1 } },
            "optimize": { "passes": [{ "type": "fold" }] }
        })));
        // Sorted: the order of a JSON object's keys is not the point here.
        let mut said: Vec<String> = found.iter().map(ToString::to_string).collect();
        said.sort();
        assert_eq!(
            said,
            [
                "unknown field \"spec.rollout.analysis.intervall\" (did you mean `interval`?)",
                "unknown field \"spec.rollout.analysis.zzz\"",
                "unknown field \"spec.rollout.steps[1].pauze\" (did you mean `pause`?)",
                "unknown field \"spec.serving.replica\" (did you mean `replicas`?)",
            ]
        );
    }

    #[test]
    fn metadata_is_checked_as_object_meta_and_known_documents_pass() {
        let mut doc = document(json!({
            "model": { "name": "d", "version": "1", "source": { "uri": "m.onnx" } },
            "serving": { "resources": { "limits": { "memory": "1Gi" } } }
        }));
        assert_eq!(unknown_fields(&doc), []);
        doc["metadata"]["lables"] = json!({});
        let found = unknown_fields(&doc);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, "metadata.lables");
        assert_eq!(found[0].suggestion.as_deref(), Some("labels"));
    }
}
