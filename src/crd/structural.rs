//! Makes the schema of an internally tagged enum structural.
//!
//! `#[serde(tag = "type")]` enums derive a `oneOf` of objects that each fix
//! the tag to one value. Kubernetes wants every property declared once at
//! the top, and kube-rs hoists them, but refuses a tag whose schema differs
//! between variants (`enum: [fold]` vs `enum: [quantize]`). This merges the
//! variants first: properties are united, the tag's allowed values too, and
//! only what every variant requires stays required. The API server still
//! checks types, ranges and allowed values; which fields go with which
//! variant is checked by serde when the controller reads the spec.

use serde_json::{Map, Value};

/// A `#[schemars(transform = ...)]` for fields whose type holds tagged enums.
pub fn merge_tagged_variants(schema: &mut schemars::Schema) {
    if let Some(object) = schema.as_object_mut() {
        merge_object(object);
    }
}

fn merge_value(value: &mut Value) {
    match value {
        Value::Object(object) => merge_object(object),
        Value::Array(items) => items.iter_mut().for_each(merge_value),
        _ => {}
    }
}

fn merge_object(object: &mut Map<String, Value>) {
    for child in object.values_mut() {
        merge_value(child);
    }
    for key in ["oneOf", "anyOf"] {
        let Some(Value::Array(variants)) = object.get(key) else { continue };
        let all_objects = !variants.is_empty()
            && variants.iter().all(|v| v.get("properties").is_some_and(Value::is_object));
        if !all_objects {
            continue;
        }
        let variants = match object.remove(key) {
            Some(Value::Array(v)) => v,
            _ => continue,
        };
        let mut properties: Map<String, Value> = Map::new();
        let mut required: Option<Vec<Value>> = None;
        for variant in &variants {
            if let Some(Value::Object(props)) = variant.get("properties") {
                for (name, schema) in props {
                    let schema = const_as_enum(schema);
                    match properties.get_mut(name) {
                        None => {
                            properties.insert(name.clone(), schema);
                        }
                        Some(existing) => unite(existing, &schema),
                    }
                }
            }
            let variant_required: Vec<Value> =
                variant.get("required").and_then(Value::as_array).cloned().unwrap_or_default();
            required = Some(match required {
                None => variant_required,
                Some(prev) => prev.into_iter().filter(|r| variant_required.contains(r)).collect(),
            });
        }
        object.insert("type".into(), Value::String("object".into()));
        let merged = object.entry("properties").or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(merged) = merged {
            for (name, schema) in properties {
                merged.entry(name).or_insert(schema);
            }
        }
        if let Some(required) = required.filter(|r| !r.is_empty()) {
            object.insert("required".into(), Value::Array(required));
        }
    }
}

/// schemars writes a variant's tag as `const: "name"`; as `enum: ["name"]`
/// it can be united with the other variants' tags.
fn const_as_enum(schema: &Value) -> Value {
    let mut schema = schema.clone();
    if let Value::Object(map) = &mut schema
        && let Some(value) = map.remove("const")
    {
        map.insert("enum".into(), Value::Array(vec![value]));
    }
    schema
}

/// Unites two schemas of the same property: allowed values are joined, and a
/// description that differs between variants is dropped.
fn unite(existing: &mut Value, other: &Value) {
    let (Value::Object(a), Value::Object(b)) = (existing, other) else { return };
    if let (Some(Value::Array(values)), Some(Value::Array(more))) =
        (a.get("enum").cloned(), b.get("enum"))
    {
        let mut values = values;
        for v in more {
            if !values.contains(v) {
                values.push(v.clone());
            }
        }
        a.insert("enum".into(), Value::Array(values));
    }
    let same_description = a.get("description") == b.get("description");
    if !same_description {
        a.remove("description");
    }
    for (key, value) in b {
        if key != "description" {
            a.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn const_tags_are_united_too() {
        let mut schema: schemars::Schema = json!({
            "oneOf": [
                { "type": "object", "properties": { "type": { "type": "string", "const": "fold" } }, "required": ["type"] },
                { "type": "object", "properties": { "type": { "type": "string", "const": "quantize" } }, "required": ["type"] }
            ]
        })
        .try_into()
        .unwrap();
        merge_tagged_variants(&mut schema);
        assert_eq!(schema.as_value()["properties"]["type"]["enum"], json!(["fold", "quantize"]));
        assert!(schema.as_value()["properties"]["type"].get("const").is_none());
    }

    #[test]
    fn tagged_variants_become_one_structural_object() {
        let mut schema: schemars::Schema = json!({
            "oneOf": [
                { "type": "object", "properties": { "type": { "type": "string", "enum": ["fold"], "description": "a" } }, "required": ["type"] },
                { "type": "object", "properties": { "type": { "type": "string", "enum": ["prune"], "description": "b" },
                                                     "sparsity": { "type": "number" } }, "required": ["type", "sparsity"] }
            ]
        })
        .try_into()
        .unwrap();
        merge_tagged_variants(&mut schema);
        let v = schema.as_value();
        assert!(v.get("oneOf").is_none());
        assert_eq!(v["properties"]["type"]["enum"], json!(["fold", "prune"]));
        assert!(v["properties"]["type"].get("description").is_none());
        assert_eq!(v["properties"]["sparsity"]["type"], "number");
        assert_eq!(v["required"], json!(["type"]));
    }
}
