//! CustomResourceDefinitions: creating a CRD establishes it at once (status conditions
//! `NamesAccepted`/`Established`), and every served version is then served under
//! `/apis/GROUP/VERSION/...` through the same generic handlers as the built-in kinds, with the
//! version's `openAPIV3Schema` applied on writes (pruning, defaults, validation) and its
//! `additionalPrinterColumns` used for `kubectl get`. Deleting a CRD deletes its resources.
//!
//! `crds/` holds copies of the ToolHive operator's CRDs (`crd-mcpservers.yaml`,
//! `crd-mcpremoteproxies.yaml`, taken unchanged from `shared/data/toolhive-operator/`), which
//! `--toolhive-operator` installs at start, plus `toolhive-config-crds.yaml`: emulator-written
//! stand-ins for MCPExternalAuthConfig and MCPOIDCConfig (not upstream; see the file).

use crate::resources::ResourceDef;
use crate::schema_validate;
use crate::status::ApiError;
use crate::store::meta_str;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

/// The storage name of CustomResourceDefinition objects.
pub const CRD_STORAGE: &str = "customresourcedefinitions";

/// The bundled ToolHive CRDs (YAML; the first two are unchanged upstream copies).
pub const TOOLHIVE_CRDS: &[&str] = &[
    include_str!("../crds/crd-mcpservers.yaml"),
    include_str!("../crds/crd-mcpremoteproxies.yaml"),
    include_str!("../crds/toolhive-config-crds.yaml"),
];

/// One served version of a CRD.
#[derive(Debug, Clone)]
pub struct Version {
    pub def: &'static ResourceDef,
    pub schema: Value,
    pub columns: Vec<Value>,
}

#[derive(Debug)]
struct Crd {
    name: String,
    storage: &'static str,
    /// Served versions, highest Kubernetes version priority first.
    versions: Vec<Version>,
    storage_def: &'static ResourceDef,
}

/// The CRDs of one emulator.
#[derive(Debug, Default)]
pub struct Registry {
    crds: RwLock<Vec<Arc<Crd>>>,
}

fn intern_str(s: &str) -> &'static str {
    static STRS: OnceLock<Mutex<HashMap<String, &'static str>>> = OnceLock::new();
    let mut m = STRS.get_or_init(Default::default).lock().unwrap();
    if let Some(v) = m.get(s) {
        return v;
    }
    let leaked: &'static str = Box::leak(s.to_string().into_boxed_str());
    m.insert(s.to_string(), leaked);
    leaked
}

fn intern_strs(v: &Value) -> &'static [&'static str] {
    let items: Vec<&'static str> = v
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).map(intern_str).collect())
        .unwrap_or_default();
    if items.is_empty() {
        return &[];
    }
    Box::leak(items.into_boxed_slice())
}

/// Definitions are leaked once per distinct shape (many test emulators share them).
fn intern_def(d: ResourceDef) -> &'static ResourceDef {
    static DEFS: OnceLock<Mutex<Vec<&'static ResourceDef>>> = OnceLock::new();
    let mut v = DEFS.get_or_init(Default::default).lock().unwrap();
    if let Some(x) = v.iter().find(|x| ***x == d) {
        return x;
    }
    let leaked: &'static ResourceDef = Box::leak(Box::new(d));
    v.push(leaked);
    leaked
}

/// Kubernetes version priority: GA > beta > alpha, higher numbers first.
fn version_priority(v: &str) -> (u8, u32, u32) {
    let Some(rest) = v.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let major: u32 = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    let (class, minor) = if tail.is_empty() {
        (3, 0)
    } else if let Some(b) = tail.strip_prefix("beta") {
        (2, b.parse().unwrap_or(0))
    } else if let Some(a) = tail.strip_prefix("alpha") {
        (1, a.parse().unwrap_or(0))
    } else {
        (0, 0)
    };
    (class, major, minor)
}

fn version_def(spec: &Value, v: &Value, storage: &'static str) -> ResourceDef {
    let names = &spec["names"];
    let status_sub = v.pointer("/subresources/status").is_some();
    let subs: &'static [&'static str] = if status_sub { &["status"] } else { &[] };
    ResourceDef {
        group: intern_str(spec["group"].as_str().unwrap_or_default()),
        version: intern_str(v["name"].as_str().unwrap_or_default()),
        plural: intern_str(names["plural"].as_str().unwrap_or_default()),
        singular: intern_str(names["singular"].as_str().unwrap_or_default()),
        kind: intern_str(names["kind"].as_str().unwrap_or_default()),
        namespaced: spec["scope"] != json!("Cluster"),
        short_names: intern_strs(&names["shortNames"]),
        categories: intern_strs(&names["categories"]),
        subresources: subs,
        field_labels: &[],
        storage,
        verbs: crate::resources::ALL_VERBS,
        has_spec: false,
    }
}

fn build(crd: &Value) -> Option<Crd> {
    let spec = &crd["spec"];
    let storage = intern_str(meta_str(crd, "name"));
    let mut versions = Vec::new();
    let mut storage_def = None;
    for v in spec["versions"].as_array()? {
        let def = intern_def(version_def(spec, v, storage));
        if v["storage"] == json!(true) {
            storage_def = Some(def);
        }
        if v["served"] == json!(false) {
            continue;
        }
        versions.push(Version {
            def,
            schema: v
                .pointer("/schema/openAPIV3Schema")
                .cloned()
                .unwrap_or(json!({})),
            columns: v["additionalPrinterColumns"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        });
    }
    versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v.def.version)));
    Some(Crd {
        name: storage.to_string(),
        storage,
        versions,
        storage_def: storage_def?,
    })
}

impl Registry {
    /// (Re)establish a CRD from its object.
    pub fn establish(&self, crd: &Value) {
        let Some(c) = build(crd) else { return };
        let mut g = self.crds.write().unwrap();
        g.retain(|x| x.name != c.name);
        g.push(Arc::new(c));
    }

    /// Forget a CRD; returns the storage of its resources.
    pub fn remove(&self, name: &str) -> Option<&'static str> {
        let mut g = self.crds.write().unwrap();
        let pos = g.iter().position(|c| c.name == name)?;
        Some(g.remove(pos).storage)
    }

    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
        self.version(group, version, plural).map(|v| v.def)
    }

    fn version(&self, group: &str, version: &str, plural: &str) -> Option<Version> {
        let g = self.crds.read().unwrap();
        g.iter().flat_map(|c| c.versions.iter()).find_map(|v| {
            (v.def.group == group && v.def.version == version && v.def.plural == plural)
                .then(|| v.clone())
        })
    }

    /// The served version behind `def` (None for built-in kinds).
    pub fn version_of(&self, def: &ResourceDef) -> Option<Version> {
        self.version(def.group, def.version, def.plural)
    }

    /// The storage version's definition of a CR storage.
    pub fn by_storage(&self, storage: &str) -> Option<&'static ResourceDef> {
        let g = self.crds.read().unwrap();
        g.iter()
            .find(|c| c.storage == storage)
            .map(|c| c.storage_def)
    }

    /// Every served CR definition (preferred version first within a CRD).
    pub fn defs(&self) -> Vec<&'static ResourceDef> {
        let g = self.crds.read().unwrap();
        g.iter()
            .flat_map(|c| c.versions.iter().map(|v| v.def))
            .collect()
    }
}

/// What the apiextensions apiserver adds on create: accepted names, established conditions.
pub fn establish_status(mut crd: Value) -> Value {
    let now = crate::store::now_ts();
    let stored: Vec<Value> = crd["spec"]["versions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|v| v["storage"] == json!(true))
                .map(|v| v["name"].clone())
                .collect()
        })
        .unwrap_or_default();
    let mut names = crd["spec"]["names"].clone();
    if names.get("listKind").is_none() {
        names["listKind"] = json!(format!(
            "{}List",
            names["kind"].as_str().unwrap_or_default()
        ));
    }
    crd["status"] = json!({
        "acceptedNames": names,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
        ],
        "storedVersions": stored,
    });
    crd
}

/// 422 checks of a CRD object (the subset that matters for serving it).
pub fn validate_crd(def: &ResourceDef, crd: &Value) -> Result<(), ApiError> {
    let name = meta_str(crd, "name");
    let spec = &crd["spec"];
    let mut causes = Vec::new();
    let group = spec["group"].as_str().unwrap_or_default();
    let plural = spec
        .pointer("/names/plural")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if group.is_empty() {
        causes.push(("spec.group".into(), "Required value".into()));
    }
    if plural.is_empty()
        || spec
            .pointer("/names/kind")
            .and_then(Value::as_str)
            .is_none()
    {
        causes.push(("spec.names.plural".into(), "Required value".into()));
    } else if name != format!("{plural}.{group}") {
        causes.push((
            "metadata.name".into(),
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    let storage = versions
        .iter()
        .filter(|v| v["storage"] == json!(true))
        .count();
    if versions.is_empty() {
        causes.push((
            "spec.versions".into(),
            "Invalid value: null: must have exactly one version marked as storage version".into(),
        ));
    } else if storage != 1 {
        causes.push((
            "spec.versions".into(),
            format!(
                "Invalid value: {}: must have exactly one version marked as storage version",
                versions.len()
            ),
        ));
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(def, name, &causes))
    }
}

/// Admission of a custom resource: prune unknown fields, apply defaults, validate. With
/// `strict` (fieldValidation=Strict) unknown fields are a 400 instead of being dropped.
pub fn admit(v: &Version, obj: &mut Value, strict: bool) -> Result<(), ApiError> {
    let mut pruned = Vec::new();
    schema_validate::prune(&v.schema, obj, "", &mut pruned);
    if strict && !pruned.is_empty() {
        let list: Vec<String> = pruned
            .iter()
            .map(|p| format!("unknown field \"{p}\""))
            .collect();
        let kind = v.def.kind;
        return Err(ApiError::bad_request(format!(
            "{kind} in version \"{}\" cannot be handled as a {kind}: strict decoding error: {}",
            v.def.version,
            list.join(", ")
        )));
    }
    schema_validate::apply_defaults(&v.schema, obj);
    let mut causes = Vec::new();
    schema_validate::validate(&v.schema, obj, "", &mut causes);
    if causes.is_empty() {
        Ok(())
    } else {
        Err(invalid_cr(v.def, meta_str(obj, "name"), &causes))
    }
}

fn invalid_cr(def: &ResourceDef, name: &str, causes: &[(String, String)]) -> ApiError {
    let mut e = ApiError::invalid(def, name, causes);
    if let Some(cs) = e
        .body
        .pointer_mut("/details/causes")
        .and_then(Value::as_array_mut)
    {
        for c in cs {
            let msg = c["message"].as_str().unwrap_or_default();
            let reason = if msg.starts_with("Unsupported value") {
                "FieldValueNotSupported"
            } else if msg.starts_with("Required value") {
                "FieldValueRequired"
            } else if msg.contains("must be of type") {
                "FieldValueTypeInvalid"
            } else {
                "FieldValueInvalid"
            };
            c["reason"] = json!(reason);
        }
    }
    e
}

/// Parse the bundled ToolHive CRDs.
pub fn toolhive_crds() -> Vec<Value> {
    TOOLHIVE_CRDS
        .iter()
        .flat_map(|y| serde_norway::Deserializer::from_str(y))
        .filter_map(|d| serde::Deserialize::deserialize(d).ok())
        .filter(|v: &Value| v.is_object())
        .collect()
}

// ------------------------------------------------------------------------------------------
// printer columns
// ------------------------------------------------------------------------------------------

/// Table column definitions: NAME then the version's additionalPrinterColumns.
pub fn table_columns(v: &Version) -> Vec<Value> {
    let mut cols = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}),
    ];
    for c in &v.columns {
        cols.push(json!({
            "name": c["name"],
            "type": c["type"],
            "format": c.get("format").cloned().unwrap_or(json!("")),
            "description": c.get("description").cloned().unwrap_or(json!("")),
            "priority": c.get("priority").cloned().unwrap_or(json!(0)),
        }));
    }
    cols
}

/// Table cells of one object.
pub fn table_cells(v: &Version, o: &Value) -> Vec<Value> {
    let mut cells = vec![json!(meta_str(o, "name"))];
    for c in &v.columns {
        let found = json_path(o, c["jsonPath"].as_str().unwrap_or_default());
        let cell = match (found.first(), c["type"].as_str()) {
            (None, _) => Value::Null,
            (Some(x), Some("date")) => json!(crate::tables::age(x.as_str().unwrap_or_default())),
            (Some(x), _) if found.len() == 1 => (*x).clone(),
            _ => json!(found.iter().map(|x| plain(x)).collect::<Vec<_>>().join(",")),
        };
        cells.push(cell);
    }
    cells
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The JSONPath subset printer columns use: `.a.b`, `[N]`, `[*]`, `[?(@.k=='v')]`.
pub fn json_path<'a>(root: &'a Value, path: &str) -> Vec<&'a Value> {
    let mut cur = vec![root];
    let mut rest = path.trim().trim_start_matches('{').trim_end_matches('}');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            cur = cur.into_iter().filter_map(|v| v.get(key)).collect();
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else {
                return vec![];
            };
            let sel = &r[..end];
            cur = cur.into_iter().flat_map(|v| select(v, sel)).collect();
            rest = &r[end + 1..];
        } else {
            return vec![];
        }
    }
    cur
}

fn select<'a>(v: &'a Value, sel: &str) -> Vec<&'a Value> {
    let Some(items) = v.as_array() else {
        return vec![];
    };
    if sel == "*" {
        return items.iter().collect();
    }
    if let Ok(i) = sel.parse::<usize>() {
        return items.get(i).into_iter().collect();
    }
    let Some(cond) = sel.strip_prefix("?(@.").and_then(|s| s.strip_suffix(')')) else {
        return vec![];
    };
    let Some((field, want)) = cond.split_once("==") else {
        return vec![];
    };
    let want = want.trim().trim_matches(['\'', '"']);
    items
        .iter()
        .filter(|x| x.get(field.trim()).map(plain).as_deref() == Some(want))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_crds_parse_and_establish() {
        let crds = toolhive_crds();
        assert_eq!(crds.len(), 4);
        let reg = Registry::default();
        for c in &crds {
            reg.establish(c);
        }
        let d = reg
            .find("toolhive.stacklok.dev", "v1beta1", "mcpservers")
            .unwrap();
        assert_eq!(
            (d.kind, d.namespaced, d.subresources),
            ("MCPServer", true, &["status"][..])
        );
        assert_eq!(
            reg.by_storage("mcpservers.toolhive.stacklok.dev")
                .unwrap()
                .version,
            "v1beta1"
        );
        assert!(
            reg.find("toolhive.stacklok.dev", "v1alpha1", "mcpremoteproxies")
                .is_some()
        );
        let defs = reg.defs();
        assert_eq!(defs[0].version, "v1beta1", "preferred version first");
        assert_eq!(
            reg.remove("mcpservers.toolhive.stacklok.dev"),
            Some("mcpservers.toolhive.stacklok.dev")
        );
        assert!(
            reg.find("toolhive.stacklok.dev", "v1beta1", "mcpservers")
                .is_none()
        );
    }

    #[test]
    fn json_path_filters() {
        let o = json!({"status": {"conditions": [{"type": "X", "status": "False"}, {"type": "Ready", "status": "True"}], "phase": "Ready"}});
        assert_eq!(
            json_path(&o, ".status.conditions[?(@.type=='Ready')].status"),
            vec![&json!("True")]
        );
        assert_eq!(json_path(&o, ".status.phase"), vec![&json!("Ready")]);
        assert_eq!(
            json_path(&o, ".status.conditions[0].type"),
            vec![&json!("X")]
        );
        assert!(json_path(&o, ".spec.nope").is_empty());
    }

    #[test]
    fn version_order() {
        let mut v = vec!["v1alpha1", "v1", "v2beta1", "v1beta2"];
        v.sort_by_key(|x| std::cmp::Reverse(version_priority(x)));
        assert_eq!(v, vec!["v1", "v2beta1", "v1beta2", "v1alpha1"]);
    }
}
