//! Label and field selectors.

use crate::resources::ResourceDef;
use crate::status::ApiError;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(pub Vec<Req>);

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 317
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn label_err(s: &str, why: &str) -> ApiError {
    ApiError::bad_request(format!("unable to parse requirement: {why}: {s}"))
}

/// Split on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c)
            }
            ')' => {
                depth -= 1;
                cur.push(c)
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(LabelSelector(reqs));
        }
        for part in split_top(s) {
            let p = part.trim();
            if p.is_empty() {
                return Err(label_err(s, "found '', expected: identifier"));
            }
            let req = if let Some(k) = p.strip_prefix('!') {
                let k = k.trim();
                if !valid_key(k) {
                    return Err(label_err(s, "invalid label key"));
                }
                Req::NotExists(k.to_string())
            } else if let Some(i) = p.find("!=") {
                let (k, v) = (p[..i].trim(), p[i + 2..].trim());
                Req::NotEq(k.into(), v.into())
            } else if let Some(i) = p.find("==") {
                let (k, v) = (p[..i].trim(), p[i + 2..].trim());
                Req::Eq(k.into(), v.into())
            } else if let Some(i) = p.find('=') {
                let (k, v) = (p[..i].trim(), p[i + 1..].trim());
                Req::Eq(k.into(), v.into())
            } else if let Some((k, rest)) = split_set_op(p, " notin ") {
                Req::NotIn(
                    k,
                    parse_set(&rest).ok_or_else(|| label_err(s, "invalid set"))?,
                )
            } else if let Some((k, rest)) = split_set_op(p, " in ") {
                Req::In(
                    k,
                    parse_set(&rest).ok_or_else(|| label_err(s, "invalid set"))?,
                )
            } else {
                if !valid_key(p) {
                    return Err(label_err(s, "invalid label key"));
                }
                Req::Exists(p.to_string())
            };
            match &req {
                Req::Eq(k, v) | Req::NotEq(k, v) => {
                    if !valid_key(k) {
                        return Err(label_err(s, "invalid label key"));
                    }
                    if !valid_value(v) {
                        return Err(label_err(s, "invalid label value"));
                    }
                }
                Req::In(k, vs) | Req::NotIn(k, vs)
                    if !valid_key(k) || !vs.iter().all(|v| valid_value(v)) =>
                {
                    return Err(label_err(s, "invalid label key or value"));
                }
                _ => {}
            }
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    /// Build from a `metav1.LabelSelector` object (`matchLabels` + `matchExpressions`).
    pub fn from_object(sel: &Value) -> LabelSelector {
        let mut reqs = Vec::new();
        if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in m {
                reqs.push(Req::Eq(
                    k.clone(),
                    v.as_str().unwrap_or_default().to_string(),
                ));
            }
        }
        if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e["key"].as_str().unwrap_or_default().to_string();
                let values: Vec<String> = e["values"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                match e["operator"].as_str().unwrap_or_default() {
                    "In" => reqs.push(Req::In(key, values)),
                    "NotIn" => reqs.push(Req::NotIn(key, values)),
                    "Exists" => reqs.push(Req::Exists(key)),
                    "DoesNotExist" => reqs.push(Req::NotExists(key)),
                    _ => {}
                }
            }
        }
        LabelSelector(reqs)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches_labels(&self, labels: Option<&Value>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::NotEq(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.matches_labels(obj.pointer("/metadata/labels"))
    }
}

fn split_set_op(p: &str, op: &str) -> Option<(String, String)> {
    let i = p.find(op)?;
    Some((
        p[..i].trim().to_string(),
        p[i + op.len()..].trim().to_string(),
    ))
}

fn parse_set(s: &str) -> Option<Vec<String>> {
    let inner = s.strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect(),
    )
}

#[derive(Debug, Clone, Default)]
pub struct FieldSelector(pub Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn parse(s: &str, def: &ResourceDef) -> Result<Self, ApiError> {
        let mut out = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector(out));
        }
        for part in s.split(',') {
            let p = part.trim();
            let (k, neg, v) = if let Some(i) = p.find("!=") {
                (&p[..i], true, &p[i + 2..])
            } else if let Some(i) = p.find("==") {
                (&p[..i], false, &p[i + 2..])
            } else if let Some(i) = p.find('=') {
                (&p[..i], false, &p[i + 1..])
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{p}'"
                )));
            };
            let k = k.trim();
            if k != "metadata.name" && k != "metadata.namespace" && !def.field_labels.contains(&k) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {k}"
                )));
            }
            out.push((k.to_string(), neg, v.trim().to_string()));
        }
        Ok(FieldSelector(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Evaluate against an object in its storage shape. Event fields accept both
    /// core (`involvedObject.*`) and events.k8s.io (`regarding.*`) spellings.
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(k, neg, v)| {
            let actual = field_value(obj, k);
            (actual == *v) != *neg
        })
    }
}

fn field_value(obj: &Value, key: &str) -> String {
    let key = key
        .replace("regarding.", "involvedObject.")
        .replace("reportingController", "reportingComponent");
    let s = |p: &str| match obj.pointer(p) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    match key.as_str() {
        "metadata.name" => s("/metadata/name"),
        "metadata.namespace" => s("/metadata/namespace"),
        "source" => s("/source/component"),
        "status.podIPs" => s("/status/podIP"),
        "spec.hostNetwork" => {
            let v = s("/spec/hostNetwork");
            if v.is_empty() { "false".into() } else { v }
        }
        "spec.unschedulable" => {
            let v = s("/spec/unschedulable");
            if v.is_empty() { "false".into() } else { v }
        }
        other => s(&format!("/{}", other.replace('.', "/"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_grammar() {
        let l = json!({"app": "web", "tier": "front"});
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches_labels(Some(&l));
        assert!(m("app=web"));
        assert!(m("app==web,tier"));
        assert!(!m("app!=web"));
        assert!(m("app in (web, api)"));
        assert!(!m("app notin (web)"));
        assert!(m("!missing"));
        assert!(!m("missing"));
        assert!(m("tier in (front),app"));
        assert!(LabelSelector::parse("a b c").is_err());
    }
}
