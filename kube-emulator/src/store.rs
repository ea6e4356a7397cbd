//! The object store: one global resourceVersion counter, watch history, metadata rules,
//! finalizers, and owner-reference garbage collection.

use crate::resources::{self, ResourceDef};
use crate::status::ApiError;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

pub fn now_ts() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub fn now_micro() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

pub fn parse_ts(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&chrono::Utc))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(&self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change in the store's history.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub storage: &'static str,
    pub namespace: String,
    pub etype: EventType,
    pub object: Value,
    pub old: Option<Value>,
}

type Key = (String, String);

struct Inner {
    rv: u64,
    objects: HashMap<&'static str, BTreeMap<Key, Value>>,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    /// Every change with rv > compacted is in `history`.
    compacted: u64,
}

/// The shared store.
pub struct Store {
    inner: Mutex<Inner>,
    rv_tx: watch::Sender<u64>,
    /// The established CustomResourceDefinitions (kept in step with the stored CRD objects).
    pub crds: crate::crd::Registry,
}

/// What a delete did.
pub enum DeleteOutcome {
    /// Removed from storage; the last state.
    Removed(Value),
    /// Marked for deletion (finalizers / graceful pod deletion); the current state.
    Pending(Value),
}

fn has_generation(storage: &str) -> bool {
    // custom resources (storage `plural.group`) have a generation, like the built-in workloads
    storage.contains('.')
        || matches!(
            storage,
            "deployments"
                | "replicasets"
                | "statefulsets"
                | "networkpolicies"
                | "poddisruptionbudgets"
                | "customresourcedefinitions"
        )
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn rand_suffix(n: usize) -> String {
    use rand::Rng;
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| ALPHA[rng.random_range(0..ALPHA.len())] as char)
        .collect()
}

pub fn generate_name(prefix: &str) -> String {
    format!("{prefix}{}", rand_suffix(5))
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

impl Store {
    pub fn new(history_limit: usize) -> Arc<Self> {
        let (rv_tx, _) = watch::channel(1);
        Arc::new(Store {
            inner: Mutex::new(Inner {
                rv: 1,
                objects: HashMap::new(),
                history: VecDeque::new(),
                history_limit,
                compacted: 0,
            }),
            rv_tx,
            crds: Default::default(),
        })
    }

    /// The definition a storage's objects are kept as (built-in or a CRD's storage version).
    pub fn def_of(&self, storage: &str) -> &'static ResourceDef {
        resources::RESOURCES
            .iter()
            .find(|r| r.storage == storage)
            .or_else(|| self.crds.by_storage(storage))
            .expect("known storage")
    }

    /// A served definition: built-in first, then the established CRDs.
    pub fn find_def(
        &self,
        group: &str,
        version: &str,
        plural: &str,
    ) -> Option<&'static ResourceDef> {
        resources::find(group, version, plural).or_else(|| self.crds.find(group, version, plural))
    }

    /// Every served definition (built-ins then custom resources).
    pub fn all_defs(&self) -> Vec<&'static ResourceDef> {
        let mut v: Vec<&'static ResourceDef> = resources::RESOURCES.iter().collect();
        v.extend(self.crds.defs());
        v
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.rv_tx.subscribe()
    }

    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    pub fn compacted_rv(&self) -> u64 {
        self.lock().compacted
    }

    /// Drop all watch history (the next watch from an older RV gets 410 Gone).
    pub fn compact(&self) {
        let mut g = self.lock();
        g.history.clear();
        g.compacted = g.rv;
    }

    pub fn set_history_limit(&self, n: usize) {
        self.lock().history_limit = n;
    }

    pub fn get(&self, storage: &str, ns: &str, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .get(storage)
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned()
    }

    /// All objects of a storage (in `ns` if given), plus the list resourceVersion.
    pub fn list(&self, storage: &str, ns: Option<&str>) -> (Vec<Value>, u64) {
        let g = self.lock();
        let items = g
            .objects
            .get(storage)
            .map(|m| {
                m.iter()
                    .filter(|((n, _), _)| ns.is_none_or(|x| x == n))
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default();
        (items, g.rv)
    }

    pub fn namespace_exists(&self, ns: &str) -> bool {
        self.get("namespaces", "", ns).is_some()
    }

    /// Changes after `rv` (Err(oldest) when `rv` is compacted away).
    pub fn changes_since(&self, rv: u64) -> Result<(Vec<Arc<Change>>, u64), u64> {
        let g = self.lock();
        if rv < g.compacted {
            return Err(g.compacted + 1);
        }
        let start = g.history.partition_point(|c| c.rv <= rv);
        Ok((g.history.iter().skip(start).cloned().collect(), g.rv))
    }

    fn record(&self, g: &mut Inner, change: Change) {
        let crd_gone = self.follow_crd(&change);
        let rv = change.rv;
        g.history.push_back(Arc::new(change));
        while g.history.len() > g.history_limit {
            if let Some(c) = g.history.pop_front() {
                g.compacted = c.rv;
            }
        }
        self.rv_tx.send_replace(rv);
        if let Some(storage) = crd_gone {
            self.drop_storage(g, storage);
        }
    }

    /// Keep the CRD registry in step; returns the storage of a deleted CRD's resources.
    fn follow_crd(&self, change: &Change) -> Option<&'static str> {
        if change.storage != crate::crd::CRD_STORAGE {
            return None;
        }
        match change.etype {
            EventType::Deleted => self.crds.remove(meta_str(&change.object, "name")),
            _ => {
                self.crds.establish(&change.object);
                None
            }
        }
    }

    /// Delete every object of a storage (the resources of a deleted CRD).
    fn drop_storage(&self, g: &mut Inner, storage: &'static str) {
        let Some(objs) = g.objects.remove(storage) else {
            return;
        };
        for ((ns, _), mut o) in objs {
            let rv = Self::next_rv(g);
            o["metadata"]["resourceVersion"] = json!(rv.to_string());
            let change = Change {
                rv,
                storage,
                namespace: ns,
                etype: EventType::Deleted,
                object: o,
                old: None,
            };
            self.record(g, change);
        }
        self.gc_locked(g);
    }

    fn next_rv(g: &mut Inner) -> u64 {
        g.rv += 1;
        g.rv
    }

    /// Create an object. `obj` must carry metadata.name (or generateName).
    pub fn create(&self, def: &ResourceDef, ns: &str, mut obj: Value) -> Result<Value, ApiError> {
        let storage = def.storage;
        let primary = self.def_of(storage);
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be an object",
            ));
        }
        let meta = obj
            .as_object_mut()
            .unwrap()
            .entry("metadata")
            .or_insert_with(|| json!({}));
        if !meta.is_object() {
            *meta = json!({});
        }
        let meta = meta.as_object_mut().unwrap();
        let mut name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if name.is_empty() {
            if let Some(g) = meta.get("generateName").and_then(Value::as_str) {
                name = generate_name(g);
            } else {
                return Err(ApiError::invalid(
                    def,
                    "",
                    &[(
                        "metadata.name".into(),
                        "Required value: name or generateName is required".into(),
                    )],
                ));
            }
        }
        if !is_dns_subdomain(&name) && storage != "events" {
            return Err(ApiError::invalid(
                def,
                &name,
                &[(
                    "metadata.name".into(),
                    format!(
                        "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
                    ),
                )],
            ));
        }
        if let Some(mns) = meta.get("namespace").and_then(Value::as_str)
            && def.namespaced
            && !mns.is_empty()
            && mns != ns
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        meta.insert("name".into(), json!(name));
        if def.namespaced {
            meta.insert("namespace".into(), json!(ns));
        } else {
            meta.remove("namespace");
        }
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(now_ts()));
        meta.remove("deletionTimestamp");
        meta.remove("deletionGracePeriodSeconds");
        meta.remove("selfLink");
        if has_generation(storage) {
            meta.insert("generation".into(), json!(1));
        } else {
            meta.remove("generation");
        }
        let o = obj.as_object_mut().unwrap();
        o.insert("apiVersion".into(), json!(primary.api_version()));
        o.insert("kind".into(), json!(primary.kind));

        prune_nulls(&mut obj);
        let mut g = self.lock();
        let key_ns = if def.namespaced {
            ns.to_string()
        } else {
            String::new()
        };
        if def.namespaced
            && !g
                .objects
                .get("namespaces")
                .is_some_and(|m| m.contains_key(&(String::new(), ns.to_string())))
        {
            return Err(ApiError::namespace_not_found(ns));
        }
        if def.namespaced
            && g.objects
                .get("namespaces")
                .and_then(|m| m.get(&(String::new(), ns.to_string())))
                .is_some_and(|n| n.pointer("/metadata/deletionTimestamp").is_some())
        {
            return Err(ApiError::status(
                403,
                "Forbidden",
                format!(
                    "{} \"{}\" is forbidden: unable to create new content in namespace {} because it is being terminated",
                    def.qualified(),
                    name,
                    ns
                ),
                Some(json!({"name": name, "kind": def.plural})),
            ));
        }
        let key = (key_ns.clone(), name.clone());
        if g.objects.get(storage).is_some_and(|m| m.contains_key(&key)) {
            return Err(ApiError::already_exists(def, &name));
        }
        let rv = Self::next_rv(&mut g);
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        g.objects
            .entry(storage)
            .or_default()
            .insert(key, obj.clone());
        self.record(
            &mut g,
            Change {
                rv,
                storage,
                namespace: key_ns,
                etype: EventType::Added,
                object: obj.clone(),
                old: None,
            },
        );
        Ok(obj)
    }

    /// Replace an object with `new` (already fully computed by the caller). Checks the
    /// resourceVersion precondition when `new` carries one. Handles generation, removal of
    /// objects whose finalizers emptied after deletion.
    pub fn replace(
        &self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        mut new: Value,
        subresource: Option<&str>,
    ) -> Result<Value, ApiError> {
        let storage = def.storage;
        let primary = self.def_of(storage);
        let mut g = self.lock();
        let key_ns = if def.namespaced {
            ns.to_string()
        } else {
            String::new()
        };
        let key = (key_ns.clone(), name.to_string());
        let Some(old) = g.objects.get(storage).and_then(|m| m.get(&key)).cloned() else {
            return Err(ApiError::not_found(def, name));
        };
        let sent_rv = meta_str(&new, "resourceVersion").to_string();
        if !sent_rv.is_empty() && sent_rv != meta_str(&old, "resourceVersion") {
            return Err(ApiError::conflict(def, name));
        }
        if !new.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be an object",
            ));
        }
        let new_name = meta_str(&new, "name");
        if !new_name.is_empty() && new_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({new_name}) does not match the name on the URL ({name})"
            )));
        }
        // carry over immutable metadata
        {
            let om = old["metadata"].as_object().cloned().unwrap_or_default();
            if !new["metadata"].is_object() {
                new["metadata"] = json!({});
            }
            let nm = new["metadata"].as_object_mut().unwrap();
            for k in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match om.get(k) {
                    Some(v) => {
                        nm.insert(k.into(), v.clone());
                    }
                    None => {
                        nm.remove(k);
                    }
                }
            }
        }
        prune_nulls(&mut new);
        let o = new.as_object_mut().unwrap();
        o.insert("apiVersion".into(), json!(primary.api_version()));
        o.insert("kind".into(), json!(primary.kind));
        let has_status_sub = primary.subresources.contains(&"status");
        match subresource {
            Some("status") => {
                // only status changes; everything else comes from the stored object
                let status = new.get("status").cloned();
                let meta = new["metadata"].clone();
                let mut merged = old.clone();
                match status {
                    Some(s) => merged["status"] = s,
                    None => {
                        merged.as_object_mut().unwrap().remove("status");
                    }
                }
                if let Some(mf) = meta.get("managedFields") {
                    merged["metadata"]["managedFields"] = mf.clone();
                }
                new = merged;
            }
            _ => {
                if has_status_sub {
                    match old.get("status") {
                        Some(s) => new["status"] = s.clone(),
                        None => {
                            new.as_object_mut().unwrap().remove("status");
                        }
                    }
                }
                if has_generation(storage) {
                    let strip = |v: &Value| {
                        let mut v = v.clone();
                        if let Some(m) = v.as_object_mut() {
                            m.remove("metadata");
                            m.remove("status");
                        }
                        v
                    };
                    let gen_old = old
                        .pointer("/metadata/generation")
                        .and_then(Value::as_i64)
                        .unwrap_or(1);
                    let new_gen = if strip(&old) != strip(&new) {
                        gen_old + 1
                    } else {
                        gen_old
                    };
                    new["metadata"]["generation"] = json!(new_gen);
                }
                // an object being deleted may not gain finalizers? (allowed in real k8s); keep simple
            }
        }
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        if new == old {
            // no-op writes do not bump the resourceVersion
            return Ok(old);
        }
        let rv = Self::next_rv(&mut g);
        new["metadata"]["resourceVersion"] = json!(rv.to_string());
        let deleting = new.pointer("/metadata/deletionTimestamp").is_some();
        let finalizers_empty = new
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(|a| a.is_empty());
        let graceful_pod = storage == "pods"
            && new
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                > 0;
        if deleting && finalizers_empty && !graceful_pod && storage != "namespaces" {
            g.objects.get_mut(storage).unwrap().remove(&key);
            self.record(
                &mut g,
                Change {
                    rv,
                    storage,
                    namespace: key_ns,
                    etype: EventType::Deleted,
                    object: new.clone(),
                    old: Some(old),
                },
            );
            self.gc_locked(&mut g);
            return Ok(new);
        }
        g.objects.get_mut(storage).unwrap().insert(key, new.clone());
        self.record(
            &mut g,
            Change {
                rv,
                storage,
                namespace: key_ns,
                etype: EventType::Modified,
                object: new.clone(),
                old: Some(old),
            },
        );
        if deleting {
            self.gc_locked(&mut g);
        }
        Ok(new)
    }

    /// Read-modify-write helper for internal controllers (no RV precondition).
    pub fn update_with(
        &self,
        storage: &'static str,
        ns: &str,
        name: &str,
        subresource: Option<&str>,
        f: impl FnOnce(&mut Value),
    ) -> Option<Value> {
        let def = self.def_of(storage);
        let mut obj = self.get(storage, ns, name)?;
        f(&mut obj);
        obj["metadata"].as_object_mut()?.remove("resourceVersion");
        self.replace(def, ns, name, obj, subresource).ok()
    }

    /// Delete with DeleteOptions semantics.
    pub fn delete(
        &self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        opts: &Value,
    ) -> Result<DeleteOutcome, ApiError> {
        let storage = def.storage;
        let mut g = self.lock();
        let key_ns = if def.namespaced {
            ns.to_string()
        } else {
            String::new()
        };
        let key = (key_ns.clone(), name.to_string());
        let Some(old) = g.objects.get(storage).and_then(|m| m.get(&key)).cloned() else {
            return Err(ApiError::not_found(def, name));
        };
        if let Some(pre) = opts.get("preconditions") {
            if let Some(uid) = pre.get("uid").and_then(Value::as_str)
                && uid != meta_str(&old, "uid")
            {
                return Err(ApiError::conflict_msg(
                    def,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta_str(&old, "uid")
                    ),
                ));
            }
            if let Some(rv) = pre.get("resourceVersion").and_then(Value::as_str)
                && rv != meta_str(&old, "resourceVersion")
            {
                return Err(ApiError::conflict_msg(
                    def,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        meta_str(&old, "resourceVersion")
                    ),
                ));
            }
        }
        let propagation = opts
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .map(String::from)
            .or_else(
                || match opts.get("orphanDependents").and_then(Value::as_bool) {
                    Some(true) => Some("Orphan".into()),
                    Some(false) => Some("Background".into()),
                    None => None,
                },
            )
            .unwrap_or_else(|| {
                // replicasets/deployments default to background; all default background in apps/v1
                "Background".into()
            });
        let mut new = old.clone();
        let mut finalizers: Vec<Value> = new
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let already_deleting = old.pointer("/metadata/deletionTimestamp").is_some();
        match propagation.as_str() {
            "Foreground"
                if !already_deleting && !finalizers.contains(&json!("foregroundDeletion")) =>
            {
                finalizers.push(json!("foregroundDeletion"));
            }
            "Orphan" if !already_deleting && !finalizers.contains(&json!("orphan")) => {
                finalizers.push(json!("orphan"));
            }
            _ => {}
        }
        if storage == "namespaces" {
            if !already_deleting {
                new["metadata"]["deletionTimestamp"] = json!(now_ts());
                new["status"]["phase"] = json!("Terminating");
                self.put_locked(&mut g, storage, &key, new.clone(), old);
            }
            self.gc_locked(&mut g);
            let still = g.objects.get(storage).and_then(|m| m.get(&key)).cloned();
            return Ok(match still {
                Some(v) => DeleteOutcome::Pending(v),
                None => DeleteOutcome::Removed(new),
            });
        }
        let grace = opts.get("gracePeriodSeconds").and_then(Value::as_i64);
        let pod_graceful = storage == "pods"
            && old
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty())
            && !already_deleting
            && grace.unwrap_or_else(|| {
                old.pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(30)
            }) > 0;
        if !finalizers.is_empty() || pod_graceful {
            if already_deleting && finalizers.is_empty() && storage == "pods" && grace == Some(0) {
                // force delete of a terminating pod
            } else {
                let m = new["metadata"].as_object_mut().unwrap();
                if !already_deleting {
                    let g_secs = if pod_graceful {
                        grace.unwrap_or_else(|| {
                            old.pointer("/spec/terminationGracePeriodSeconds")
                                .and_then(Value::as_i64)
                                .unwrap_or(30)
                        })
                    } else {
                        0
                    };
                    let ts = chrono::Utc::now() + chrono::Duration::seconds(g_secs);
                    m.insert(
                        "deletionTimestamp".into(),
                        json!(ts.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                    );
                    m.insert("deletionGracePeriodSeconds".into(), json!(g_secs));
                }
                m.insert("finalizers".into(), Value::Array(finalizers));
                if new == old {
                    return Ok(DeleteOutcome::Pending(old));
                }
                let rv = Self::next_rv(&mut g);
                new["metadata"]["resourceVersion"] = json!(rv.to_string());
                g.objects.get_mut(storage).unwrap().insert(key, new.clone());
                self.record(
                    &mut g,
                    Change {
                        rv,
                        storage,
                        namespace: key_ns,
                        etype: EventType::Modified,
                        object: new.clone(),
                        old: Some(old),
                    },
                );
                self.gc_locked(&mut g);
                return Ok(DeleteOutcome::Pending(new));
            }
        }
        let removed = self.remove_locked(&mut g, storage, &key);
        self.gc_locked(&mut g);
        Ok(DeleteOutcome::Removed(removed.unwrap_or(new)))
    }

    fn remove_locked(&self, g: &mut Inner, storage: &'static str, key: &Key) -> Option<Value> {
        let mut obj = g.objects.get_mut(storage)?.remove(key)?;
        let old = obj.clone();
        let rv = Self::next_rv(g);
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        if storage == "pods" && obj.pointer("/metadata/deletionTimestamp").is_none() {
            obj["metadata"]["deletionTimestamp"] = json!(now_ts());
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        }
        self.record(
            g,
            Change {
                rv,
                storage,
                namespace: key.0.clone(),
                etype: EventType::Deleted,
                object: obj.clone(),
                old: Some(old),
            },
        );
        Some(obj)
    }

    /// Remove a (terminating) pod for good: the kubelet's final delete.
    pub fn finalize_pod(&self, ns: &str, name: &str) {
        let mut g = self.lock();
        let key = (ns.to_string(), name.to_string());
        let Some(obj) = g.objects.get("pods").and_then(|m| m.get(&key)) else {
            return;
        };
        let fin_empty = obj
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(|a| a.is_empty());
        if fin_empty {
            self.remove_locked(&mut g, "pods", &key);
            self.gc_locked(&mut g);
        } else {
            // keep it until the finalizers are removed, but no longer graceful
            let mut new = obj.clone();
            let old = obj.clone();
            new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            if new != old {
                let rv = Self::next_rv(&mut g);
                new["metadata"]["resourceVersion"] = json!(rv.to_string());
                g.objects
                    .get_mut("pods")
                    .unwrap()
                    .insert(key.clone(), new.clone());
                self.record(
                    &mut g,
                    Change {
                        rv,
                        storage: "pods",
                        namespace: key.0,
                        etype: EventType::Modified,
                        object: new,
                        old: Some(old),
                    },
                );
            }
        }
    }

    /// Garbage collection: background deletion of dependents whose owners are gone,
    /// foreground/orphan finalizers, and namespace termination.
    fn gc_locked(&self, g: &mut Inner) {
        for _round in 0..50 {
            let mut changed = false;
            // live uids
            let mut uids: HashMap<String, (&'static str, Key, bool)> = HashMap::new();
            for (storage, m) in g.objects.iter() {
                for (k, v) in m {
                    let deleting = v.pointer("/metadata/deletionTimestamp").is_some();
                    uids.insert(
                        meta_str(v, "uid").to_string(),
                        (storage, k.clone(), deleting),
                    );
                }
            }
            // collect actions
            let mut to_delete: Vec<(&'static str, Key)> = Vec::new();
            let mut to_strip_owner: Vec<(&'static str, Key, String)> = Vec::new();
            let mut to_unfinalize: Vec<(&'static str, Key, &'static str)> = Vec::new();
            let mut dependents: HashMap<String, usize> = HashMap::new();
            for (storage, m) in g.objects.iter() {
                for (k, v) in m {
                    let owners = v
                        .pointer("/metadata/ownerReferences")
                        .and_then(Value::as_array);
                    let Some(owners) = owners else { continue };
                    if owners.is_empty() {
                        continue;
                    }
                    let mut all_gone = true;
                    for o in owners {
                        let uid = o["uid"].as_str().unwrap_or_default();
                        if let Some((os, ok, deleting)) = uids.get(uid) {
                            {
                                all_gone = false;
                                *dependents.entry(uid.to_string()).or_default() += 1;
                                let owner = &g.objects[os][ok];
                                let fins = owner
                                    .pointer("/metadata/finalizers")
                                    .and_then(Value::as_array);
                                let has = |f: &str| fins.is_some_and(|a| a.iter().any(|x| x == f));
                                if *deleting
                                    && has("foregroundDeletion")
                                    && v.pointer("/metadata/deletionTimestamp").is_none()
                                {
                                    to_delete.push((storage, k.clone()));
                                }
                                if *deleting && has("orphan") {
                                    to_strip_owner.push((storage, k.clone(), uid.to_string()));
                                }
                            }
                        }
                    }
                    if all_gone && v.pointer("/metadata/deletionTimestamp").is_none() {
                        to_delete.push((storage, k.clone()));
                    }
                }
            }
            for (storage, m) in g.objects.iter() {
                for (k, v) in m {
                    if v.pointer("/metadata/deletionTimestamp").is_none() {
                        continue;
                    }
                    let uid = meta_str(v, "uid");
                    let fins = v.pointer("/metadata/finalizers").and_then(Value::as_array);
                    let has = |f: &str| fins.is_some_and(|a| a.iter().any(|x| x == f));
                    if has("foregroundDeletion") && !dependents.contains_key(uid) {
                        to_unfinalize.push((storage, k.clone(), "foregroundDeletion"));
                    }
                    if has("orphan") && !dependents.contains_key(uid) {
                        to_unfinalize.push((storage, k.clone(), "orphan"));
                    }
                }
            }
            // namespaces being terminated
            let terminating_ns: Vec<String> = g
                .objects
                .get("namespaces")
                .map(|m| {
                    m.values()
                        .filter(|v| v.pointer("/metadata/deletionTimestamp").is_some())
                        .map(|v| meta_str(v, "name").to_string())
                        .collect()
                })
                .unwrap_or_default();
            for ns in &terminating_ns {
                let mut empty = true;
                for (storage, m) in g.objects.iter() {
                    if *storage == "namespaces" {
                        continue;
                    }
                    for (k, _) in m.range((ns.clone(), String::new())..) {
                        if &k.0 != ns {
                            break;
                        }
                        empty = false;
                        to_delete.push((storage, k.clone()));
                    }
                }
                if empty {
                    let key = (String::new(), ns.clone());
                    self.remove_locked(g, "namespaces", &key);
                    changed = true;
                }
            }
            for (storage, key) in to_delete {
                let Some(obj) = g.objects.get(storage).and_then(|m| m.get(&key)).cloned() else {
                    continue;
                };
                let fins_empty = obj
                    .pointer("/metadata/finalizers")
                    .and_then(Value::as_array)
                    .is_none_or(|a| a.is_empty());
                let scheduled = obj
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty());
                let in_terminating_ns = terminating_ns.contains(&key.0);
                if storage == "pods" && scheduled && !in_terminating_ns {
                    if obj.pointer("/metadata/deletionTimestamp").is_none() {
                        let grace = obj
                            .pointer("/spec/terminationGracePeriodSeconds")
                            .and_then(Value::as_i64)
                            .unwrap_or(30);
                        self.mark_deleting(g, storage, &key, grace);
                        changed = true;
                    }
                } else if fins_empty {
                    self.remove_locked(g, storage, &key);
                    changed = true;
                } else if obj.pointer("/metadata/deletionTimestamp").is_none() {
                    self.mark_deleting(g, storage, &key, 0);
                    changed = true;
                }
            }
            for (storage, key, uid) in to_strip_owner {
                let Some(obj) = g.objects.get(storage).and_then(|m| m.get(&key)).cloned() else {
                    continue;
                };
                let mut new = obj.clone();
                if let Some(a) = new
                    .pointer_mut("/metadata/ownerReferences")
                    .and_then(Value::as_array_mut)
                {
                    a.retain(|o| o["uid"] != json!(uid));
                }
                self.put_locked(g, storage, &key, new, obj);
                changed = true;
            }
            for (storage, key, fin) in to_unfinalize {
                let Some(obj) = g.objects.get(storage).and_then(|m| m.get(&key)).cloned() else {
                    continue;
                };
                let mut new = obj.clone();
                if let Some(a) = new
                    .pointer_mut("/metadata/finalizers")
                    .and_then(Value::as_array_mut)
                {
                    a.retain(|f| f != fin);
                }
                let empty = new
                    .pointer("/metadata/finalizers")
                    .and_then(Value::as_array)
                    .is_none_or(|a| a.is_empty());
                if empty {
                    g.objects.get_mut(storage).unwrap().insert(key.clone(), new);
                    self.remove_locked(g, storage, &key);
                } else {
                    self.put_locked(g, storage, &key, new, obj);
                }
                changed = true;
            }
            if !changed {
                break;
            }
        }
    }

    fn mark_deleting(&self, g: &mut Inner, storage: &'static str, key: &Key, grace: i64) {
        let Some(obj) = g.objects.get(storage).and_then(|m| m.get(key)).cloned() else {
            return;
        };
        let mut new = obj.clone();
        let ts = chrono::Utc::now() + chrono::Duration::seconds(grace);
        new["metadata"]["deletionTimestamp"] =
            json!(ts.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        new["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        self.put_locked(g, storage, key, new, obj);
    }

    fn put_locked(
        &self,
        g: &mut Inner,
        storage: &'static str,
        key: &Key,
        mut new: Value,
        old: Value,
    ) {
        let rv = Self::next_rv(g);
        new["metadata"]["resourceVersion"] = json!(rv.to_string());
        g.objects
            .get_mut(storage)
            .unwrap()
            .insert(key.clone(), new.clone());
        self.record(
            g,
            Change {
                rv,
                storage,
                namespace: key.0.clone(),
                etype: EventType::Modified,
                object: new,
                old: Some(old),
            },
        );
    }

    /// Record (or aggregate) a core/v1 Event about `obj`, like client-go's event recorder.
    pub fn record_event(
        &self,
        obj: &Value,
        etype: &str,
        reason: &str,
        message: &str,
        component: &str,
        field_path: Option<&str>,
    ) {
        let ns = {
            let n = meta_str(obj, "namespace");
            if n.is_empty() { "default" } else { n }
        };
        let name = meta_str(obj, "name");
        let uid = meta_str(obj, "uid");
        let now = now_ts();
        // aggregate with an identical existing event
        let existing = {
            let g = self.lock();
            g.objects.get("events").and_then(|m| {
                m.range((ns.to_string(), String::new())..)
                    .take_while(|(k, _)| k.0 == ns)
                    .map(|(_, v)| v)
                    .find(|e| {
                        e.pointer("/involvedObject/uid").and_then(Value::as_str) == Some(uid)
                            && e["reason"] == json!(reason)
                            && e["message"] == json!(message)
                            && e["type"] == json!(etype)
                    })
                    .cloned()
            })
        };
        if let Some(e) = existing {
            let en = meta_str(&e, "name").to_string();
            self.update_with("events", ns, &en, None, |e| {
                let c = e["count"].as_i64().unwrap_or(1);
                e["count"] = json!(c + 1);
                e["lastTimestamp"] = json!(now.clone());
            });
            return;
        }
        let ts_hex = format!(
            "{:x}",
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        );
        let mut involved = json!({
            "kind": obj["kind"],
            "namespace": meta_str(obj, "namespace"),
            "name": name,
            "uid": uid,
            "apiVersion": obj["apiVersion"],
            "resourceVersion": meta_str(obj, "resourceVersion"),
        });
        if let Some(fp) = field_path {
            involved["fieldPath"] = json!(fp);
        }
        if meta_str(obj, "namespace").is_empty() {
            involved.as_object_mut().unwrap().remove("namespace");
        }
        let ev = json!({
            "metadata": {"name": format!("{name}.{ts_hex}"), "namespace": ns},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "source": {"component": component, "host": if component == "kubelet" { json!("kwok-node-0") } else { Value::Null }},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "type": etype,
            "eventTime": null,
            "reportingComponent": component,
            "reportingInstance": if component == "kubelet" { "kwok-node-0" } else { "" },
        });
        let mut ev = ev;
        if ev["source"]["host"].is_null() {
            ev["source"].as_object_mut().unwrap().remove("host");
        }
        let _ = self.create(resources::by_storage("events"), ns, ev);
    }
}

/// Drop null-valued fields recursively (the apiserver's Go structs omit them).
pub fn prune_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            for x in m.values_mut() {
                prune_nulls(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(prune_nulls),
        _ => {}
    }
}

/// Shallow helper for building maps.
pub fn obj_map(v: &Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}
