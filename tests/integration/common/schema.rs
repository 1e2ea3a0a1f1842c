//! A JSON Schema checker for the subset `reports/schema/result.v1.schema.json` uses: `$ref`
//! (to `#/$defs/…`), `type`, `const`, `enum`, `oneOf`, `required`, `properties`,
//! `additionalProperties`, `items` and `minimum`. Returns every violation, with its path.

use serde_json::Value;

pub fn violations(schema: &Value, value: &Value) -> Vec<String> {
    let mut found = Vec::new();
    check(schema, schema, value, "", &mut found);
    found
}

fn check(root: &Value, schema: &Value, value: &Value, path: &str, found: &mut Vec<String>) {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let target = reference
            .strip_prefix("#/")
            .and_then(|pointer| root.pointer(&format!("/{pointer}")))
            .unwrap_or_else(|| panic!("unsupported $ref {reference}"));
        return check(root, target, value, path, found);
    }
    if let Some(expected) = schema.get("type") {
        let names: Vec<&str> = match expected {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if !names.iter().any(|name| is_type(value, name)) {
            found.push(format!("{path}: expected {names:?}, found {value}"));
            return;
        }
    }
    if let Some(constant) = schema.get("const")
        && constant != value
    {
        found.push(format!("{path}: expected {constant}, found {value}"));
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        found.push(format!("{path}: {value} is not one of {options:?}"));
    }
    if let Some(branches) = schema.get("oneOf").and_then(Value::as_array) {
        let matching = branches
            .iter()
            .filter(|branch| {
                let mut inner = Vec::new();
                check(root, branch, value, path, &mut inner);
                inner.is_empty()
            })
            .count();
        if matching != 1 {
            found.push(format!(
                "{path}: matches {matching} of the oneOf branches, not 1"
            ));
        }
    }
    if let (Some(minimum), Some(n)) = (
        schema.get("minimum").and_then(Value::as_f64),
        value.as_f64(),
    ) && n < minimum
    {
        found.push(format!("{path}: {n} is below {minimum}"));
    }
    if let Some(object) = value.as_object() {
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !object.contains_key(name) {
                found.push(format!("{path}: required field {name} is missing"));
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        for (name, field) in object {
            let at = format!("{path}/{name}");
            match properties.and_then(|p| p.get(name)) {
                Some(sub) => check(root, sub, field, &at, found),
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => found.push(format!("{at}: not allowed")),
                    Some(sub @ Value::Object(_)) => check(root, sub, field, &at, found),
                    _ => {}
                },
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            check(root, items, item, &format!("{path}/{i}"), found);
        }
    }
}

fn is_type(value: &Value, name: &str) -> bool {
    match name {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        other => panic!("unsupported type {other}"),
    }
}

/// Fields `value` holds that the schema does not name, wherever the schema describes an object
/// by its `properties` (and allows no other fields by an `additionalProperties` schema): the
/// committed schema must describe everything the one `RunResult` type writes.
pub fn undocumented(schema: &Value, value: &Value) -> Vec<String> {
    let mut found = Vec::new();
    walk(schema, schema, value, "", &mut found);
    found
}

fn walk(root: &Value, schema: &Value, value: &Value, path: &str, found: &mut Vec<String>) {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let target = reference
            .strip_prefix("#/")
            .and_then(|pointer| root.pointer(&format!("/{pointer}")))
            .unwrap_or_else(|| panic!("unsupported $ref {reference}"));
        return walk(root, target, value, path, found);
    }
    if let Some(branches) = schema.get("oneOf").and_then(Value::as_array) {
        for branch in branches {
            let mut inner = Vec::new();
            check(root, branch, value, path, &mut inner);
            if inner.is_empty() {
                walk(root, branch, value, path, found);
            }
        }
    }
    if let (Some(object), Some(properties)) = (
        value.as_object(),
        schema.get("properties").and_then(Value::as_object),
    ) {
        for (name, field) in object {
            let at = format!("{path}/{name}");
            match (properties.get(name), schema.get("additionalProperties")) {
                (Some(sub), _) => walk(root, sub, field, &at, found),
                (None, Some(sub @ Value::Object(_))) => walk(root, sub, field, &at, found),
                (None, Some(Value::Bool(true))) => {}
                (None, _) => found.push(format!("{at}: written by RunResult, not in the schema")),
            }
        }
    } else if let (Some(object), Some(sub @ Value::Object(_))) =
        (value.as_object(), schema.get("additionalProperties"))
    {
        for (name, field) in object {
            walk(root, sub, field, &format!("{path}/{name}"), found);
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            walk(root, items, item, &format!("{path}/{i}"), found);
        }
    }
}
