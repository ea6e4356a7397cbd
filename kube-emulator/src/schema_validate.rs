//! Structural-schema handling of custom resources, as the apiextensions apiserver does it:
//! pruning of unknown fields, defaulting, then validation of the `openAPIV3Schema` subset that
//! CRDs use (types, `enum`, `required`, `minimum`/`maximum`, `pattern`, `format: int32`,
//! `minLength`/`maxLength`, `minItems`/`maxItems`). Messages follow the real apiserver's
//! `field.Error` strings.

use serde_json::{Value, json};

/// One validation failure: (field path, message after the path).
pub type Cause = (String, String);

/// Prune fields the schema does not know (unless `x-kubernetes-preserve-unknown-fields`);
/// returns the paths of the pruned fields (for `fieldValidation=Strict`).
pub fn prune(schema: &Value, v: &mut Value, path: &str, pruned: &mut Vec<String>) {
    if schema["x-kubernetes-preserve-unknown-fields"] == json!(true)
        && schema.get("properties").is_none()
    {
        return;
    }
    match v {
        Value::Object(m) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                let keep_unknown = schema["x-kubernetes-preserve-unknown-fields"] == json!(true);
                let keys: Vec<String> = m.keys().cloned().collect();
                for k in keys {
                    let child = join(path, &k);
                    match props.get(&k) {
                        // metadata is validated by the apiserver itself, never pruned
                        Some(_) if path.is_empty() && k == "metadata" => {}
                        Some(s) => prune(s, m.get_mut(&k).unwrap(), &child, pruned),
                        None if keep_unknown || (path.is_empty() && is_type_meta(&k)) => {}
                        None => {
                            m.remove(&k);
                            pruned.push(child);
                        }
                    }
                }
            } else if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for (k, child) in m.iter_mut() {
                    prune(ap, child, &join(path, k), pruned);
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = schema.get("items") {
                for (i, x) in a.iter_mut().enumerate() {
                    prune(items, x, &format!("{path}[{i}]"), pruned);
                }
            }
        }
        _ => {}
    }
}

fn is_type_meta(k: &str) -> bool {
    matches!(k, "apiVersion" | "kind" | "metadata")
}

fn join(path: &str, k: &str) -> String {
    if path.is_empty() {
        k.to_string()
    } else {
        format!("{path}.{k}")
    }
}

/// Apply `default` values of the schema to absent fields (recursively, objects only).
pub fn apply_defaults(schema: &Value, v: &mut Value) {
    match v {
        Value::Object(m) => {
            let Some(props) = schema.get("properties").and_then(Value::as_object) else {
                if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                    m.values_mut().for_each(|c| apply_defaults(ap, c));
                }
                return;
            };
            for (k, s) in props {
                if !m.contains_key(k)
                    && let Some(d) = s.get("default")
                {
                    m.insert(k.clone(), d.clone());
                }
                if let Some(c) = m.get_mut(k) {
                    apply_defaults(s, c);
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = schema.get("items") {
                a.iter_mut().for_each(|x| apply_defaults(items, x));
            }
        }
        _ => {}
    }
}

/// Validate `v` (at `path`) against `schema`, collecting causes.
pub fn validate(schema: &Value, v: &Value, path: &str, causes: &mut Vec<Cause>) {
    if v.is_null() {
        if schema["nullable"] != json!(true) && schema.get("type").is_some() {
            let ty = schema["type"].as_str().unwrap_or_default();
            causes.push((
                path.into(),
                format!("Invalid value: \"null\": {path} in body must be of type {ty}: \"null\""),
            ));
        }
        return;
    }
    if !type_ok(schema, v, path, causes) {
        return;
    }
    enum_ok(schema, v, path, causes);
    number_ok(schema, v, path, causes);
    string_ok(schema, v, path, causes);
    match v {
        Value::Object(m) => object_ok(schema, m, path, causes),
        Value::Array(a) => array_ok(schema, a, path, causes),
        _ => {}
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_ok(schema: &Value, v: &Value, path: &str, causes: &mut Vec<Cause>) -> bool {
    if schema["x-kubernetes-int-or-string"] == json!(true) {
        if matches!(json_type(v), "integer" | "string") {
            return true;
        }
        causes.push((
            path.into(),
            format!(
                "Invalid value: \"{}\": {path} in body must be of type integer,string: \"{}\"",
                json_type(v),
                json_type(v)
            ),
        ));
        return false;
    }
    let Some(want) = schema.get("type").and_then(Value::as_str) else {
        return true;
    };
    let got = json_type(v);
    let ok = want == got || (want == "number" && got == "integer");
    if !ok {
        causes.push((
            path.into(),
            format!("Invalid value: \"{got}\": {path} in body must be of type {want}: \"{got}\""),
        ));
    }
    ok
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn enum_ok(schema: &Value, v: &Value, path: &str, causes: &mut Vec<Cause>) {
    let Some(allowed) = schema.get("enum").and_then(Value::as_array) else {
        return;
    };
    if !allowed.contains(v) {
        let list: Vec<String> = allowed.iter().map(show).collect();
        causes.push((
            path.into(),
            format!(
                "Unsupported value: {}: supported values: {}",
                show(v),
                list.join(", ")
            ),
        ));
    }
}

fn number_ok(schema: &Value, v: &Value, path: &str, causes: &mut Vec<Cause>) {
    let Some(n) = v.as_f64() else { return };
    let shown = show(v);
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        let excl = schema["exclusiveMinimum"] == json!(true);
        if n < min || (excl && n == min) {
            let rel = if excl {
                "greater than"
            } else {
                "greater than or equal to"
            };
            causes.push((
                path.into(),
                format!(
                    "Invalid value: {shown}: {path} in body should be {rel} {}",
                    num(min)
                ),
            ));
        }
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        let excl = schema["exclusiveMaximum"] == json!(true);
        if n > max || (excl && n == max) {
            let rel = if excl {
                "less than"
            } else {
                "less than or equal to"
            };
            causes.push((
                path.into(),
                format!(
                    "Invalid value: {shown}: {path} in body should be {rel} {}",
                    num(max)
                ),
            ));
        }
    }
    let fmt = schema.get("format").and_then(Value::as_str);
    let out_of = |lo: f64, hi: f64| n < lo || n > hi || n.fract() != 0.0;
    let bad_fmt = match fmt {
        Some("int32") => out_of(i32::MIN as f64, i32::MAX as f64),
        Some("int64") => out_of(i64::MIN as f64, i64::MAX as f64),
        _ => false,
    };
    if bad_fmt {
        let f = fmt.unwrap_or_default();
        causes.push((
            path.into(),
            format!("Invalid value: {shown}: {path} in body must be of type {f}: {shown}"),
        ));
    }
}

fn num(f: f64) -> String {
    if f.fract() == 0.0 {
        format!("{}", f as i64)
    } else {
        f.to_string()
    }
}

fn string_ok(schema: &Value, v: &Value, path: &str, causes: &mut Vec<Cause>) {
    let Some(s) = v.as_str() else { return };
    let len = s.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && len > max
    {
        causes.push((
            path.into(),
            format!("Too long: may not be more than {max} bytes"),
        ));
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && len < min
    {
        causes.push((
            path.into(),
            format!(
                "Invalid value: {}: {path} in body should be at least {min} chars long",
                show(v)
            ),
        ));
    }
    if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
        match regex::Regex::new(p) {
            Ok(re) if !re.is_match(s) => causes.push((
                path.into(),
                format!(
                    "Invalid value: {}: {path} in body should match '{p}'",
                    show(v)
                ),
            )),
            _ => {}
        }
    }
}

fn object_ok(
    schema: &Value,
    m: &serde_json::Map<String, Value>,
    path: &str,
    causes: &mut Vec<Cause>,
) {
    if let Some(req) = schema.get("required").and_then(Value::as_array) {
        for r in req.iter().filter_map(Value::as_str) {
            if !m.contains_key(r) {
                causes.push((join(path, r), "Required value".into()));
            }
        }
    }
    let props = schema.get("properties").and_then(Value::as_object);
    let extra = schema.get("additionalProperties").filter(|a| a.is_object());
    for (k, child) in m {
        if path.is_empty() && k == "metadata" {
            continue;
        }
        if let Some(s) = props.and_then(|p| p.get(k)).or(extra) {
            validate(s, child, &join(path, k), causes);
        }
    }
}

fn array_ok(schema: &Value, a: &[Value], path: &str, causes: &mut Vec<Cause>) {
    let n = a.len() as u64;
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
        && n > max
    {
        causes.push((
            path.into(),
            format!("Too many: {n}: must have at most {max} items"),
        ));
    }
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
        && n < min
    {
        causes.push((
            path.into(),
            format!("Invalid value: {n}: {path} in body should have at least {min} items"),
        ));
    }
    if let Some(items) = schema.get("items") {
        for (i, x) in a.iter().enumerate() {
            validate(items, x, &format!("{path}[{i}]"), causes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Value {
        json!({"type": "object", "properties": {"spec": {"type": "object", "required": ["image"], "properties": {
            "image": {"type": "string", "pattern": "^[a-z./:0-9-]+$"},
            "transport": {"type": "string", "enum": ["stdio", "sse"], "default": "stdio"},
            "port": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 65535},
            "tags": {"type": "array", "items": {"type": "string"}}
        }}}})
    }

    fn check(v: Value) -> Vec<Cause> {
        let mut c = Vec::new();
        validate(&schema(), &v, "", &mut c);
        c
    }

    #[test]
    fn enum_required_range_pattern_type() {
        let c = check(json!({"spec": {"transport": "carrier-pigeon", "port": 70000, "tags": [1]}}));
        let texts: Vec<String> = c.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        assert!(
            texts.contains(&"spec.image: Required value".to_string()),
            "{texts:?}"
        );
        assert!(texts.contains(&"spec.transport: Unsupported value: \"carrier-pigeon\": supported values: \"stdio\", \"sse\"".to_string()), "{texts:?}");
        assert!(texts.contains(&"spec.port: Invalid value: 70000: spec.port in body should be less than or equal to 65535".to_string()), "{texts:?}");
        assert!(texts.contains(&"spec.tags[0]: Invalid value: \"integer\": spec.tags[0] in body must be of type string: \"integer\"".to_string()), "{texts:?}");
        let c = check(json!({"spec": {"image": "UPPER", "port": 0}}));
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(check(json!({"spec": {"image": "ok:1", "port": 8080}})).is_empty());
        assert_eq!(
            check(json!({"spec": {"image": "a", "port": 3000000000u64}})).len(),
            2
        );
    }

    #[test]
    fn defaults_and_pruning() {
        let mut v = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n", "x": 1}, "spec": {"image": "a", "bogus": 1}, "other": 2});
        let mut pruned = Vec::new();
        prune(&schema(), &mut v, "", &mut pruned);
        apply_defaults(&schema(), &mut v);
        assert_eq!(pruned, vec!["other".to_string(), "spec.bogus".to_string()]);
        assert_eq!(v["spec"]["transport"], "stdio");
        assert_eq!(v["metadata"]["x"], 1);
    }
}
