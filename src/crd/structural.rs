//! Makes the schema of an internally tagged enum structural, and as strict
//! as the types that read it.
//!
//! `#[serde(tag = "type")]` enums derive a `oneOf` of objects that each fix
//! the tag to one value. Kubernetes wants every property declared once at
//! the top, and kube-rs hoists them, but refuses a tag whose schema differs
//! between variants (`enum: [fold]` vs `enum: [quantize]`). This merges the
//! variants: properties are united, the tag's allowed values too, and only
//! what every variant requires stays required at the top.
//!
//! What goes with which variant stays, as a `oneOf` of value validations
//! that a structural schema allows (no types, descriptions or defaults
//! inside): per variant its tag value, its required fields (`quantize`
//! needs `mode`), its own allowed values of a property variants share
//! (`mode` of `quantize` is not `mode` of `merge`), and, for a variant that
//! denies unknown fields, the other variants' properties as forbidden. The
//! per-variant properties sit in an `allOf` inside each branch, where
//! kube-rs's hoisting (which only looks at a `oneOf`'s direct properties)
//! leaves them. So the API server refuses what serde would refuse, and
//! `tests/crds.rs` checks it by generating schema-valid documents.

use serde_json::{Map, Value, json};

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

/// One variant of a tagged enum, as schemars derived it.
struct Variant {
    properties: Map<String, Value>,
    required: Vec<Value>,
    /// `deny_unknown_fields`: schemars writes `additionalProperties: false`.
    closed: bool,
}

impl Variant {
    fn of(schema: &Value) -> Variant {
        let properties = schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|props| props.iter().map(|(k, v)| (k.clone(), const_as_enum(v))).collect())
            .unwrap_or_default();
        Variant {
            properties,
            required: schema.get("required").and_then(Value::as_array).cloned().unwrap_or_default(),
            closed: schema.get("additionalProperties") == Some(&Value::Bool(false)),
        }
    }

    /// The value validations that tell this variant from the merged object.
    fn branch(&self, merged: &Map<String, Value>) -> Value {
        let mut branch = Map::new();
        branch.insert("required".into(), Value::Array(self.required.clone()));
        let own_values: Map<String, Value> = self
            .properties
            .iter()
            .filter_map(|(name, schema)| {
                let values = schema.get("enum")?;
                let shared = merged.get(name).and_then(|m| m.get("enum"));
                (shared != Some(values)).then(|| (name.clone(), json!({ "enum": values })))
            })
            .collect();
        if !own_values.is_empty() {
            branch.insert("allOf".into(), json!([{ "properties": own_values }]));
        }
        if self.closed {
            let forbidden: Vec<Value> = merged
                .keys()
                .filter(|name| !self.properties.contains_key(*name))
                .map(|name| json!({ "required": [name] }))
                .collect();
            if !forbidden.is_empty() {
                branch.insert("not".into(), json!({ "anyOf": forbidden }));
            }
        }
        Value::Object(branch)
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
        let variants: Vec<Variant> = match object.remove(key) {
            Some(Value::Array(v)) => v.iter().map(Variant::of).collect(),
            _ => continue,
        };
        let mut properties: Map<String, Value> = Map::new();
        for variant in &variants {
            for (name, schema) in &variant.properties {
                match properties.get_mut(name) {
                    None => {
                        properties.insert(name.clone(), schema.clone());
                    }
                    Some(existing) => unite(existing, schema),
                }
            }
        }
        // A default at the top applies to every variant: the API server
        // would write `fallback: true` into a prune pass, whose type refuses
        // it. Defaults stay on properties every variant has; serde fills in
        // the others when it reads the variant.
        for (name, schema) in properties.iter_mut() {
            if !variants.iter().all(|v| v.properties.contains_key(name))
                && let Value::Object(schema) = schema
            {
                schema.remove("default");
            }
        }
        let required: Vec<Value> = variants
            .first()
            .map(|first| {
                first
                    .required
                    .iter()
                    .filter(|r| variants.iter().all(|v| v.required.contains(r)))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let branches: Vec<Value> = variants.iter().map(|v| v.branch(&properties)).collect();
        object.insert("type".into(), Value::String("object".into()));
        let merged = object.entry("properties").or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(merged) = merged {
            for (name, schema) in properties {
                merged.entry(name).or_insert(schema);
            }
        }
        if !required.is_empty() {
            object.insert("required".into(), Value::Array(required));
        }
        object.insert(key.into(), Value::Array(branches));
    }
}

/// schemars writes a variant's tag as `const: "name"`, and a string enum
/// whose values have doc comments as a `oneOf` of such consts; as
/// `enum: [...]` either can be united with the other variants' values and
/// narrowed per variant. (kube-rs would hoist the `oneOf` into an `enum`
/// later anyway, dropping the values' descriptions the same way.)
fn const_as_enum(schema: &Value) -> Value {
    let mut schema = schema.clone();
    if let Value::Object(map) = &mut schema {
        if let Some(value) = map.remove("const") {
            map.insert("enum".into(), Value::Array(vec![value]));
        }
        let consts: Option<Vec<Value>> = map
            .get("oneOf")
            .and_then(Value::as_array)
            .filter(|values| !values.is_empty())
            .and_then(|values| values.iter().map(|v| v.get("const").cloned()).collect());
        if let Some(values) = consts {
            let kind = map["oneOf"][0].get("type").cloned();
            map.remove("oneOf");
            map.insert("enum".into(), Value::Array(values));
            if let Some(kind) = kind {
                map.entry("type").or_insert(kind);
            }
        }
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
        assert_eq!(v["properties"]["type"]["enum"], json!(["fold", "prune"]));
        assert!(v["properties"]["type"].get("description").is_none());
        assert_eq!(v["properties"]["sparsity"]["type"], "number");
        assert_eq!(v["required"], json!(["type"]));
        // What goes with which variant stays, as value validations only.
        assert_eq!(
            v["oneOf"],
            json!([
                { "required": ["type"], "allOf": [{ "properties": { "type": { "enum": ["fold"] } } }] },
                { "required": ["type", "sparsity"], "allOf": [{ "properties": { "type": { "enum": ["prune"] } } }] }
            ])
        );
    }

    #[test]
    fn a_closed_variant_forbids_the_others_fields_and_shared_names_keep_their_own_values() {
        let mut schema: schemars::Schema = json!({
            "oneOf": [
                { "type": "object", "additionalProperties": false,
                  "properties": { "type": { "type": "string", "const": "quantize" },
                                  "mode": { "type": "string", "enum": ["weight-int8", "weight-int4"] },
                                  "fallback": { "type": "boolean", "default": true } },
                  "required": ["type", "mode"] },
                { "type": "object", "additionalProperties": false,
                  "properties": { "type": { "type": "string", "const": "merge" },
                                  "mode": { "type": "string", "enum": ["compose", "average"] } },
                  "required": ["type", "mode"] }
            ]
        })
        .try_into()
        .unwrap();
        merge_tagged_variants(&mut schema);
        let v = schema.as_value();
        assert_eq!(
            v["properties"]["mode"]["enum"],
            json!(["weight-int8", "weight-int4", "compose", "average"])
        );
        assert_eq!(v["required"], json!(["type", "mode"]));
        assert!(
            v["properties"]["fallback"].get("default").is_none(),
            "a default at the top would be written into merge passes too: {v}"
        );
        let merge = &v["oneOf"][1];
        assert_eq!(merge["allOf"][0]["properties"]["mode"]["enum"], json!(["compose", "average"]));
        assert_eq!(merge["not"], json!({ "anyOf": [{ "required": ["fallback"] }] }));
        assert!(
            v["oneOf"][0].get("not").is_none(),
            "quantize has every property but none of merge's"
        );
    }
}
