//! Patch algorithms: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge
//! patch (the subset of built-in merge keys), and server-side apply field sets.

use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    if let Value::Object(p) = patch {
        if !target.is_object() {
            *target = Value::Object(Map::new());
        }
        let t = target.as_object_mut().unwrap();
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    } else {
        *target = patch.clone();
    }
}

fn unescape(tok: &str) -> String {
    tok.replace("~1", "/").replace("~0", "~")
}

fn split_pointer(p: &str) -> Result<Vec<String>, String> {
    if p.is_empty() {
        return Ok(vec![]);
    }
    if !p.starts_with('/') {
        return Err(format!("invalid JSON pointer {p:?}"));
    }
    Ok(p[1..].split('/').map(unescape).collect())
}

fn pointer_parent<'a>(doc: &'a mut Value, toks: &[String]) -> Result<&'a mut Value, String> {
    let mut cur = doc;
    for t in toks {
        cur = match cur {
            Value::Object(m) => m
                .get_mut(t)
                .ok_or_else(|| format!("missing path element {t}"))?,
            Value::Array(a) => {
                let i: usize = t.parse().map_err(|_| format!("invalid index {t}"))?;
                a.get_mut(i)
                    .ok_or_else(|| format!("index {i} out of range"))?
            }
            _ => return Err(format!("cannot traverse into {t}")),
        };
    }
    Ok(cur)
}

fn json_add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let toks = split_pointer(path)?;
    let Some((last, parent)) = toks.split_last() else {
        *doc = value;
        return Ok(());
    };
    match pointer_parent(doc, parent)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
            } else {
                let i: usize = last.parse().map_err(|_| format!("invalid index {last}"))?;
                if i > a.len() {
                    return Err(format!("index {i} out of range"));
                }
                a.insert(i, value);
            }
        }
        _ => return Err(format!("cannot add at {path}")),
    }
    Ok(())
}

fn json_remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let toks = split_pointer(path)?;
    let Some((last, parent)) = toks.split_last() else {
        return Err("cannot remove root".into());
    };
    match pointer_parent(doc, parent)? {
        Value::Object(m) => m.remove(last).ok_or_else(|| format!("missing key {last}")),
        Value::Array(a) => {
            let i: usize = last.parse().map_err(|_| format!("invalid index {last}"))?;
            if i >= a.len() {
                return Err(format!("index {i} out of range"));
            }
            Ok(a.remove(i))
        }
        _ => Err(format!("cannot remove at {path}")),
    }
}

/// RFC 6902 JSON patch.
pub fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops.as_array().ok_or("json patch must be an array")?;
    for op in ops {
        let path = op["path"].as_str().ok_or("missing path")?;
        match op["op"].as_str().unwrap_or_default() {
            "add" => json_add(doc, path, op.get("value").cloned().ok_or("missing value")?)?,
            "remove" => {
                json_remove(doc, path)?;
            }
            "replace" => {
                json_remove(doc, path)?;
                json_add(doc, path, op.get("value").cloned().ok_or("missing value")?)?;
            }
            "move" => {
                let from = op["from"].as_str().ok_or("missing from")?;
                let v = json_remove(doc, from)?;
                json_add(doc, path, v)?;
            }
            "copy" => {
                let from = op["from"].as_str().ok_or("missing from")?;
                let v = doc.pointer(from).cloned().ok_or("missing from value")?;
                json_add(doc, path, v)?;
            }
            "test" => {
                if doc.pointer(path) != op.get("value") {
                    return Err(format!("test operation failed at {path}"));
                }
            }
            other => return Err(format!("unknown op {other:?}")),
        }
    }
    Ok(())
}

/// The strategic-merge-patch merge key for a list field, given the path of its parent.
pub fn merge_key(path: &[String], field: &str) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "imagePullSecrets"
        | "env" => Some("name"),
        "ports" => {
            if path
                .iter()
                .any(|p| p == "containers" || p == "initContainers" || p == "ephemeralContainers")
            {
                Some("containerPort")
            } else {
                Some("port")
            }
        }
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        "hostAliases" => Some("ip"),
        "topologySpreadConstraints" => Some("topologyKey"),
        "addresses" if path.last().is_some_and(|p| p == "status") => Some("type"),
        _ => None,
    }
}

fn is_set_list(path: &[String], field: &str) -> bool {
    field == "finalizers" && path.last().is_some_and(|p| p == "metadata")
}

fn key_eq(a: &Value, b: &Value, key: &str) -> bool {
    match (a.get(key), b.get(key)) {
        (Some(x), Some(y)) => {
            x == y || (x.to_string().trim_matches('"') == y.to_string().trim_matches('"'))
        }
        _ => false,
    }
}

/// Strategic merge patch for built-in types (handles `$patch`, `$retainKeys`,
/// `$setElementOrder/…` and `$deleteFromPrimitiveList/…` directives).
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    smp(target, patch, &mut Vec::new());
}

fn smp(target: &mut Value, patch: &Value, path: &mut Vec<String>) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut m = p.clone();
            m.remove("$patch");
            *target = Value::Object(m);
            return;
        }
        Some("delete") => {
            *target = Value::Null;
            return;
        }
        _ => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let mut retain: Option<Vec<String>> = None;
    for (k, v) in p {
        if k == "$patch" {
            continue;
        }
        if k == "$retainKeys" {
            retain = v.as_array().map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            });
            continue;
        }
        if k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(del)) = (target.get_mut(field), v.as_array()) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        let t = target.as_object_mut().unwrap();
        if v.is_null() {
            t.remove(k);
            continue;
        }
        match v {
            Value::Array(items) => {
                if let Some(key) = merge_key(path, k) {
                    let existing = t.entry(k.clone()).or_insert(json!([]));
                    if !existing.is_array() {
                        *existing = json!([]);
                    }
                    path.push(k.clone());
                    merge_keyed_list(existing, items, key, path);
                    path.pop();
                } else if is_set_list(path, k) {
                    let existing = t.entry(k.clone()).or_insert(json!([]));
                    if let Value::Array(list) = existing {
                        for item in items {
                            if !list.contains(item) {
                                list.push(item.clone());
                            }
                        }
                    } else {
                        *existing = v.clone();
                    }
                } else {
                    t.insert(k.clone(), strip_directives(v));
                }
            }
            Value::Object(_) => {
                let entry = t.entry(k.clone()).or_insert(Value::Null);
                path.push(k.clone());
                smp(entry, v, path);
                path.pop();
                if entry.is_null() {
                    t.remove(k);
                }
            }
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
    if let (Some(keep), Value::Object(t)) = (retain, target) {
        t.retain(|k, _| keep.contains(k));
    }
}

fn merge_keyed_list(existing: &mut Value, items: &[Value], key: &str, path: &mut Vec<String>) {
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *existing = Value::Array(
            items
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .map(strip_directives)
                .collect(),
        );
        return;
    }
    let list = existing.as_array_mut().unwrap();
    for item in items {
        let pos = list.iter().position(|e| key_eq(e, item, key));
        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(i) = pos {
                list.remove(i);
            }
            continue;
        }
        match pos {
            Some(i) => smp(&mut list[i], item, path),
            None => list.push(strip_directives(item)),
        }
    }
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// Server-side apply field sets
// ---------------------------------------------------------------------------------------------

/// A field path in managedFields notation: elements like `f:spec`, `k:{"name":"x"}`, `v:"x"`, `.`.
pub type FieldPath = Vec<String>;

const IGNORED_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// All leaf field paths set by `obj` (apiVersion/kind/status and server-owned metadata excluded).
pub fn field_set(obj: &Value, include_status: bool) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    if let Value::Object(m) = obj {
        for (k, v) in m {
            if k == "apiVersion" || k == "kind" || (k == "status" && !include_status) {
                continue;
            }
            let mut p = vec![format!("f:{k}")];
            if k == "metadata" {
                if let Value::Object(mm) = v {
                    for (mk, mv) in mm {
                        if IGNORED_META.contains(&mk.as_str()) {
                            continue;
                        }
                        p.push(format!("f:{mk}"));
                        walk(mv, &mut p, &mut out, &[String::from("metadata")], mk);
                        p.pop();
                    }
                }
                continue;
            }
            walk(v, &mut p, &mut out, &[], k);
        }
    }
    out
}

fn walk(
    v: &Value,
    p: &mut FieldPath,
    out: &mut BTreeSet<FieldPath>,
    names: &[String],
    field: &str,
) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            let mut names = names.to_vec();
            names.push(field.to_string());
            for (k, child) in m {
                p.push(format!("f:{k}"));
                walk(child, p, out, &names, k);
                p.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => {
            if let Some(key) = merge_key(names, field) {
                let mut names = names.to_vec();
                names.push(field.to_string());
                for item in items {
                    let kv = item.get(key).cloned().unwrap_or(Value::Null);
                    let mut km = Map::new();
                    km.insert(key.to_string(), kv);
                    p.push(format!("k:{}", Value::Object(km)));
                    let mut dot = p.clone();
                    dot.push(".".into());
                    out.insert(dot);
                    if let Value::Object(im) = item {
                        for (k, child) in im {
                            p.push(format!("f:{k}"));
                            walk(child, p, out, &names, k);
                            p.pop();
                        }
                    }
                    p.pop();
                }
            } else if is_set_list(names, field) {
                for item in items {
                    p.push(format!("v:{item}"));
                    out.insert(p.clone());
                    p.pop();
                }
            } else {
                out.insert(p.clone());
            }
        }
        _ => {
            out.insert(p.clone());
        }
    }
}

/// The value at a field path (None when absent).
pub fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for el in path {
        if el == "." {
            return Some(cur);
        }
        if let Some(f) = el.strip_prefix("f:") {
            cur = cur.get(f)?;
        } else if let Some(k) = el.strip_prefix("k:") {
            let keys: Value = serde_json::from_str(k).ok()?;
            cur = cur.as_array()?.iter().find(|item| {
                keys.as_object()
                    .is_some_and(|km| km.iter().all(|(kk, kv)| key_eq(item, &json!({kk: kv}), kk)))
            })?;
        } else if let Some(v) = el.strip_prefix("v:") {
            let want: Value = serde_json::from_str(v).ok()?;
            cur = cur.as_array()?.iter().find(|x| **x == want)?;
        } else {
            return None;
        }
    }
    Some(cur)
}

/// Remove the field at `path` from `obj` (list items for `.`/`v:` paths).
pub fn remove_at(obj: &mut Value, path: &[String]) {
    let (last, parent) = match path.split_last() {
        Some(x) => x,
        None => return,
    };
    if last == "." {
        // remove the list item addressed by the parent path
        if let Some((item, list_path)) = parent.split_last()
            && let Some(k) = item.strip_prefix("k:")
            && let Some(list) = value_at_mut(obj, list_path).and_then(Value::as_array_mut)
            && let Ok(keys) = serde_json::from_str::<Value>(k)
        {
            list.retain(|it| {
                !keys
                    .as_object()
                    .is_some_and(|km| km.iter().all(|(kk, kv)| key_eq(it, &json!({kk: kv}), kk)))
            });
        }
        return;
    }
    if let Some(v) = last.strip_prefix("v:") {
        if let (Some(list), Ok(want)) = (
            value_at_mut(obj, parent).and_then(Value::as_array_mut),
            serde_json::from_str::<Value>(v),
        ) {
            list.retain(|x| *x != want);
        }
        return;
    }
    if let Some(f) = last.strip_prefix("f:")
        && let Some(Value::Object(m)) = value_at_mut(obj, parent)
    {
        m.remove(f);
    }
}

fn value_at_mut<'a>(obj: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = obj;
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            cur = cur.get_mut(f)?;
        } else if let Some(k) = el.strip_prefix("k:") {
            let keys: Value = serde_json::from_str(k).ok()?;
            cur = cur.as_array_mut()?.iter_mut().find(|item| {
                keys.as_object()
                    .is_some_and(|km| km.iter().all(|(kk, kv)| key_eq(item, &json!({kk: kv}), kk)))
            })?;
        } else {
            return None;
        }
    }
    Some(cur)
}

/// Render a field set as a `fieldsV1` tree.
pub fn to_fields_v1(set: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for el in path {
            let next = cur.entry(el.clone()).or_insert_with(|| json!({}));
            cur = next.as_object_mut().unwrap();
        }
    }
    Value::Object(root)
}

/// Parse a `fieldsV1` tree back into leaf paths.
pub fn from_fields_v1(v: &Value) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    fn rec(v: &Value, p: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
        if let Value::Object(m) = v {
            for (k, child) in m {
                p.push(k.clone());
                if child.as_object().is_some_and(|c| c.is_empty()) {
                    out.insert(p.clone());
                } else {
                    rec(child, p, out);
                }
                p.pop();
            }
        }
    }
    rec(v, &mut Vec::new(), &mut out);
    out
}

/// Human form of a path for conflict messages: `.spec.replicas`, `.spec.template.spec.containers[name="x"].image`.
pub fn display_path(path: &[String]) -> String {
    let mut s = String::new();
    for el in path {
        if el == "." {
            continue;
        }
        if let Some(f) = el.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(k) {
                let parts: Vec<String> = m.iter().map(|(kk, vv)| format!("{kk}={vv}")).collect();
                s.push_str(&format!("[{}]", parts.join(",")));
            }
        } else if let Some(v) = el.strip_prefix("v:") {
            s.push_str(&format!("[{v}]"));
        }
    }
    s
}

/// Parsed managedFields: manager -> (operation, subresource, paths).
pub type Managers = BTreeMap<(String, String, String), BTreeSet<FieldPath>>;

pub fn read_managers(obj: &Value) -> Managers {
    let mut out = Managers::new();
    if let Some(list) = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    {
        for e in list {
            let m = e["manager"].as_str().unwrap_or_default().to_string();
            let op = e["operation"].as_str().unwrap_or("Update").to_string();
            let sub = e["subresource"].as_str().unwrap_or_default().to_string();
            out.insert((m, op, sub), from_fields_v1(&e["fieldsV1"]));
        }
    }
    out
}

pub fn write_managers(
    obj: &mut Value,
    managers: &Managers,
    api_version: &str,
    times: &BTreeMap<String, String>,
) {
    let now = crate::store::now_ts();
    let list: Vec<Value> = managers
        .iter()
        .filter(|(_, set)| !set.is_empty())
        .map(|((m, op, sub), set)| {
            let mut e = json!({
                "manager": m,
                "operation": op,
                "apiVersion": api_version,
                "time": times.get(m).cloned().unwrap_or_else(|| now.clone()),
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(set),
            });
            if !sub.is_empty() {
                e["subresource"] = json!(sub);
            }
            e
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

pub fn manager_times(obj: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(list) = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    {
        for e in list {
            if let (Some(m), Some(t)) = (e["manager"].as_str(), e["time"].as_str()) {
                out.insert(m.to_string(), t.to_string());
            }
        }
    }
    out
}

/// Record an Update-operation write: the manager takes the fields whose value changed.
pub fn track_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: &str,
    api_version: &str,
) {
    let mut managers = old.map(read_managers).unwrap_or_default();
    let mut times = old.map(manager_times).unwrap_or_default();
    let include_status = subresource == "status";
    let changed: BTreeSet<FieldPath> = field_set(new, include_status)
        .into_iter()
        .filter(|p| {
            let in_status = p.first().is_some_and(|f| f == "f:status");
            if include_status != in_status {
                return false;
            }
            old.and_then(|o| value_at(o, p)) != value_at(new, p)
        })
        .collect();
    if changed.is_empty() && old.is_some() {
        write_managers(new, &managers, api_version, &times);
        return;
    }
    for ((m, _, _), set) in managers.iter_mut() {
        if m != manager {
            set.retain(|p| !changed.contains(p));
        }
    }
    let key = (
        manager.to_string(),
        "Update".to_string(),
        subresource.to_string(),
    );
    managers.entry(key).or_default().extend(changed);
    times.insert(manager.to_string(), crate::store::now_ts());
    write_managers(new, &managers, api_version, &times);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smp_containers_by_name() {
        let mut t = json!({"spec":{"containers":[{"name":"a","image":"x","env":[{"name":"A","value":"1"}],"ports":[{"containerPort":80}]},{"name":"b","image":"y"}]}});
        let p = json!({"$setElementOrder/containers":[{"name":"a"}],"spec":{"containers":[{"name":"a","image":"z","env":[{"name":"B","value":"2"}],"ports":[{"containerPort":81}]},{"name":"b","$patch":"delete"}]}});
        strategic_merge(&mut t, &p);
        let c = &t["spec"]["containers"];
        assert_eq!(c.as_array().unwrap().len(), 1);
        assert_eq!(c[0]["image"], "z");
        assert_eq!(c[0]["env"].as_array().unwrap().len(), 2);
        assert_eq!(c[0]["ports"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn json_patch_ops() {
        let mut d = json!({"a":[1,2],"b":{"c":1}});
        json_patch(&mut d, &json!([{"op":"add","path":"/a/-","value":3},{"op":"replace","path":"/b/c","value":2},{"op":"remove","path":"/a/0"}])).unwrap();
        assert_eq!(d, json!({"a":[2,3],"b":{"c":2}}));
    }

    #[test]
    fn fields_roundtrip() {
        let o = json!({"metadata":{"labels":{"a":"b"}},"spec":{"replicas":1,"template":{"spec":{"containers":[{"name":"c","image":"i"}]}}}});
        let s = field_set(&o, false);
        let back = from_fields_v1(&to_fields_v1(&s));
        assert_eq!(s, back);
        assert!(s.contains(&vec!["f:spec".to_string(), "f:replicas".to_string()]));
        let p = vec!["f:spec".to_string(), "f:replicas".to_string()];
        assert_eq!(display_path(&p), ".spec.replicas");
    }
}
