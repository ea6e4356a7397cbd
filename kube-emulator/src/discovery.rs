//! /version, /api, /apis and APIResourceList documents, plus a minimal OpenAPI v3 index.

use crate::resources::{self, ResourceDef};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub fn version(v: (u32, u32, u32)) -> Value {
    json!({
        "major": v.0.to_string(),
        "minor": v.1.to_string(),
        "emulationMajor": v.0.to_string(),
        "emulationMinor": v.1.to_string(),
        "minCompatibilityMajor": v.0.to_string(),
        "minCompatibilityMinor": (v.1.saturating_sub(1)).to_string(),
        "gitVersion": format!("v{}.{}.{}", v.0, v.1, v.2),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

pub fn api_versions(server_addr: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_addr}],
    })
}

fn group_entry(defs: &[&'static ResourceDef], group: &str) -> Value {
    let versions: Vec<Value> = resources::group_versions(defs)
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": versions.clone(), "preferredVersion": versions[0]})
}

pub fn api_group_list(defs: &[&'static ResourceDef]) -> Value {
    let mut groups: Vec<&str> = Vec::new();
    for (g, _) in resources::group_versions(defs) {
        if !g.is_empty() && !groups.contains(&g) {
            groups.push(g);
        }
    }
    let groups: Vec<Value> = groups.into_iter().map(|g| group_entry(defs, g)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn api_group(defs: &[&'static ResourceDef], group: &str) -> Option<Value> {
    if group.is_empty() || !defs.iter().any(|r| r.group == group) {
        return None;
    }
    let mut g = group_entry(defs, group);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Some(g)
}

fn storage_hash(r: &ResourceDef) -> String {
    use base64::Engine;
    let h = Sha256::digest(format!("{}/{}/{}", r.group, r.version, r.kind));
    base64::engine::general_purpose::STANDARD.encode(&h[..8])
}

fn sub_entry(r: &ResourceDef, sub: &str) -> Value {
    match sub {
        "status" => {
            json!({"name": format!("{}/status", r.plural), "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]})
        }
        "scale" => {
            json!({"name": format!("{}/scale", r.plural), "singularName": r.singular, "namespaced": r.namespaced, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]})
        }
        "log" => {
            json!({"name": format!("{}/log", r.plural), "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get"]})
        }
        "proxy" => {
            json!({"name": format!("{}/proxy", r.plural), "singularName": r.singular, "namespaced": r.namespaced, "kind": format!("{}ProxyOptions", r.kind), "verbs": ["create", "delete", "get", "patch", "update"]})
        }
        _ => json!({}),
    }
}

pub fn resource_list(defs: &[&'static ResourceDef], group: &str, version: &str) -> Option<Value> {
    let defs: Vec<&ResourceDef> = defs
        .iter()
        .copied()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if defs.is_empty() {
        return None;
    }
    let mut res = Vec::new();
    for r in defs {
        let mut e = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            e["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            e["categories"] = json!(r.categories);
        }
        if r.is_stored() {
            e["storageVersionHash"] = json!(storage_hash(r));
        }
        res.push(e);
        for s in r.subresources {
            res.push(sub_entry(r, s));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": res}),
    )
}

/// `/openapi/v3`: the index of group-version documents.
pub fn openapi_v3_root(defs: &[&'static ResourceDef]) -> Value {
    let mut paths = serde_json::Map::new();
    for (g, v) in resources::group_versions(defs) {
        let key = if g.is_empty() {
            format!("api/{v}")
        } else {
            format!("apis/{g}/{v}")
        };
        paths.insert(
            key.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash=0")}),
        );
    }
    json!({"paths": paths})
}

/// A minimal OpenAPI v3 document for one group-version: enough for kubectl to learn that
/// PATCH supports `fieldValidation` (so it delegates validation to the server).
pub fn openapi_v3_gv(defs: &[&'static ResourceDef], group: &str, version: &str) -> Option<Value> {
    let defs: Vec<&ResourceDef> = defs
        .iter()
        .copied()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if defs.is_empty() {
        return None;
    }
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    let mut paths = serde_json::Map::new();
    for r in defs {
        let gvk = json!([{"group": r.group, "version": r.version, "kind": r.kind}]);
        let params = json!([
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}}
        ]);
        let op = |action: &str| json!({"x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk[0], "parameters": params, "responses": {"200": {"description": "OK"}}});
        let item_path = if r.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{prefix}/{}/{{name}}", r.plural)
        };
        let coll_path = if r.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{prefix}/{}", r.plural)
        };
        paths.insert(item_path, json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}));
        paths.insert(coll_path, json!({"get": op("list"), "post": op("post")}));
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "unversioned"},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}
