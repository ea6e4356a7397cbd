//! Watchers of one namespace of one cluster: Deployments and Pods labelled as managed by the
//! gateway, and Events. kube-rs `watcher`s with `default_backoff()` feed reflector stores; a
//! `410 Gone` makes the watcher relist on its own. Every event invalidates the cached status of
//! the instance it concerns; a debounce tick then re-derives the instance from the stores, writes
//! its row when something changed, and wakes the operation driving it.
//!
//! Nothing is lost to a database outage: an instance whose re-derivation could not be read or
//! written stays dirty and is derived again on the next tick, and the "everything may have
//! changed" pass after a (re)list is retried until the database answers. A watch failing while
//! its cluster's kubeconfig or credentials changed hands over to a watch with new clients.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::{StreamExt, stream::BoxStream};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use uuid::Uuid;

use super::manifests::{INSTANCE_LABEL, MANAGED_BY};
use super::{Clients, ClusterManager, health, manifests, store};
use dataloaders::models::InstanceRow;
use health::Observed;
use kube::api::ListParams;

/// A running namespace watch.
pub struct WatchHandle {
    pub task: tokio::task::JoinHandle<()>,
    /// True while all three watches are listed and healthy.
    pub synced: Arc<AtomicBool>,
    /// Asks the watch to stop (its cluster was removed or its credentials changed).
    pub stop: Arc<tokio::sync::Notify>,
    /// The credentials the watch's clients were built from ([`Clients::source`]).
    pub source: String,
}

/// Starts watching `namespace` of `cluster`.
pub fn spawn(
    mgr: ClusterManager,
    cluster: Uuid,
    namespace: String,
    clients: Clients,
) -> WatchHandle {
    let synced = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(tokio::sync::Notify::new());
    let source = clients.source.clone();
    let task = tokio::spawn(run(
        mgr,
        (cluster, namespace),
        clients,
        synced.clone(),
        stop.clone(),
    ));
    WatchHandle {
        task,
        synced,
        stop,
        source,
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Deployment,
    Pod,
    Event,
}

enum Touch {
    /// An object changed; the instances it concerns.
    Object(Vec<Uuid>),
    /// A (re)list of this kind finished.
    Synced(Kind),
    /// Nothing to do (a relist in progress).
    None,
}

fn instance_of(labels: Option<&std::collections::BTreeMap<String, String>>) -> Option<Uuid> {
    labels?.get(INSTANCE_LABEL)?.parse().ok()
}

/// What the watch of one kind reports: for each change, the instances it concerns.
type Touches = BoxStream<'static, Result<Touch, (String, watcher::Error)>>;

/// Watches one kind into its reflector store; `concerns` names the instances a change touches.
fn touches<K>(
    writer: reflector::store::Writer<K>,
    api: Api<K>,
    cfg: watcher::Config,
    kind: Kind,
    what: &'static str,
    concerns: impl Fn(&K) -> Vec<Uuid> + Send + 'static,
) -> Touches
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    reflector::reflector(writer, watcher(api, cfg).default_backoff())
        .map(move |ev| match ev {
            Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o)) => {
                Ok(Touch::Object(concerns(&o)))
            }
            Ok(watcher::Event::InitDone) => Ok(Touch::Synced(kind)),
            Ok(_) => Ok(Touch::None),
            Err(e) => Err((what.to_string(), e)),
        })
        .boxed()
}

async fn run(
    mgr: ClusterManager,
    (cluster, ns): (Uuid, String),
    clients: Clients,
    synced: Arc<AtomicBool>,
    stop: Arc<tokio::sync::Notify>,
) {
    let selector = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
    let cfg = watcher::Config::default().labels(&selector);
    let (d_store, d_writer) = reflector::store::<Deployment>();
    let (p_store, p_writer) = reflector::store::<Pod>();
    let (e_store, e_writer) = reflector::store::<Event>();
    let d_api: Api<Deployment> = Api::namespaced(clients.watch.clone(), &ns);
    let p_api: Api<Pod> = Api::namespaced(clients.watch.clone(), &ns);
    let e_api: Api<Event> = Api::namespaced(clients.watch.clone(), &ns);

    let of_labels = |m: &kube::api::ObjectMeta| -> Vec<Uuid> {
        instance_of(m.labels.as_ref()).into_iter().collect()
    };
    let ds = touches(
        d_writer,
        d_api,
        cfg.clone(),
        Kind::Deployment,
        "deployments",
        move |d| of_labels(&d.metadata),
    );
    let ps = touches(p_writer, p_api, cfg, Kind::Pod, "pods", move |p| {
        of_labels(&p.metadata)
    });
    let es = {
        let (d_store, p_store, ns) = (d_store.clone(), p_store.clone(), ns.clone());
        touches(
            e_writer,
            e_api,
            watcher::Config::default(),
            Kind::Event,
            "events",
            move |e| event_instances(e, &ns, &d_store, &p_store),
        )
    };
    let mut merged = futures_util::stream::select_all(vec![ds, ps, es]);
    let mut ready = [false; 3];
    let mut dirty: HashSet<Uuid> = HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(150));
    let mut ticks: u64 = 0;
    let mut stopping = mgr.inner().stopping.subscribe();
    let mut last_error_log = std::time::Instant::now() - Duration::from_secs(60);
    // A (re)list finished: every live instance of the namespace is to be derived again.
    let mut resync = false;
    // The first list of this watch: its clients may be new (credentials changed, an API server
    // restarted), whose resource versions need not follow those seen before.
    let mut first_list = true;
    loop {
        tokio::select! {
            _ = stopping.changed() => break,
            _ = stop.notified() => break,
            item = merged.next() => match item {
                None => break,
                Some(Ok(Touch::Object(ids))) => {
                    for id in ids {
                        mgr.inner().status_cache.invalidate(&id).await;
                        dirty.insert(id);
                    }
                    synced.store(ready.iter().all(|r| *r), Ordering::SeqCst);
                }
                Some(Ok(Touch::Synced(kind))) => {
                    ready[kind as usize] = true;
                    synced.store(ready.iter().all(|r| *r), Ordering::SeqCst);
                    // Anything may have changed while we were not watching.
                    resync = true;
                }
                Some(Ok(Touch::None)) => {}
                Some(Err((what, e))) => {
                    synced.store(false, Ordering::SeqCst);
                    crate::metrics::watch_restarted(&clients.endpoint);
                    if last_error_log.elapsed() > Duration::from_secs(10) {
                        last_error_log = std::time::Instant::now();
                        tracing::warn!(%cluster, namespace = %ns, %what,
                            error = %describe_watch_error(&e),
                            "watch failed; retrying with backoff");
                    }
                    if mgr.source_changed(cluster, &clients.source).await {
                        tracing::info!(%cluster, namespace = %ns,
                            "the cluster's kubeconfig or credentials changed; watching with new clients");
                        let mgr = mgr.clone();
                        tokio::spawn(async move { mgr.forget_cluster(cluster).await });
                        break;
                    }
                }
            },
            _ = tick.tick() => {
                ticks += 1;
                // The ToolHive operator's workloads are not watched (they carry its labels, not
                // the gateway's): its instances here are re-read every 20 ticks (3 s).
                if ticks.is_multiple_of(20) && !first_list {
                    mark_live(&mgr, (cluster, &ns), &mut dirty, false, true).await;
                }
                if resync && mark_live(&mgr, (cluster, &ns), &mut dirty, first_list, false).await {
                    resync = false;
                    first_list = false;
                }
                // Only with every store listed: a missing Deployment must mean "deleted".
                if ready.iter().all(|r| *r) {
                    let ctx = (&mgr, &clients, cluster, ns.as_str());
                    derive_dirty(ctx, &mut dirty, (&d_store, &p_store, &e_store)).await;
                }
            }
        }
    }
    synced.store(false, Ordering::SeqCst);
}

/// Marks the live instances of `(cluster, ns)` dirty (only the operator's with
/// `operator_only`; after the watch's first list, also forgetting the resource versions recorded
/// for them); false when the database did not answer.
async fn mark_live(
    mgr: &ClusterManager,
    (cluster, ns): (Uuid, &str),
    dirty: &mut HashSet<Uuid>,
    first_list: bool,
    operator_only: bool,
) -> bool {
    let Ok(live) = store::live_in(&mgr.inner().pool, cluster, ns, operator_only).await else {
        return false;
    };
    for id in live {
        mgr.inner().status_cache.invalidate(&id).await;
        if first_list {
            mgr.inner().applied_rv.lock().unwrap().remove(&id);
        }
        dirty.insert(id);
    }
    true
}

/// How deriving one instance went.
enum Derived {
    Done,
    /// The API did not answer a confirmation; derive it again.
    Retry,
    /// The database did not answer; derive it and the rest again.
    DatabaseDown,
}

/// A watch error in words (the certificate or the status code, not "client error (Connect)").
fn describe_watch_error(e: &watcher::Error) -> String {
    match e {
        watcher::Error::InitialListFailed(k)
        | watcher::Error::WatchStartFailed(k)
        | watcher::Error::WatchFailed(k) => super::reach::describe(k),
        other => other.to_string(),
    }
}

/// The instances an event is about (through the Deployment, pod or ReplicaSet it names).
fn event_instances(
    e: &Event,
    ns: &str,
    d_store: &Store<Deployment>,
    p_store: &Store<Pod>,
) -> Vec<Uuid> {
    let obj = &e.involved_object;
    let name = obj.name.as_deref().unwrap_or("");
    let deployment = |n: &str| {
        d_store
            .get(&ObjectRef::new(n).within(ns))
            .and_then(|d| instance_of(d.metadata.labels.as_ref()))
    };
    let id = match obj.kind.as_deref() {
        Some("Deployment") => deployment(name),
        Some("Pod") => p_store
            .get(&ObjectRef::new(name).within(ns))
            .and_then(|p| instance_of(p.metadata.labels.as_ref()))
            .or_else(|| {
                // A pod already gone: <deployment>-<hash>-<suffix>.
                let mut parts = name.rsplitn(3, '-');
                let _ = (parts.next(), parts.next());
                parts.next().and_then(deployment)
            }),
        Some("ReplicaSet") => name.rsplit_once('-').and_then(|(d, _)| deployment(d)),
        _ => None,
    };
    id.into_iter().collect()
}

/// Derives instance `id` from the stores and records it.
/// Re-derives every dirty instance from the stores; what could not be derived stays dirty.
async fn derive_dirty(
    ctx: (&ClusterManager, &Clients, Uuid, &str),
    dirty: &mut HashSet<Uuid>,
    (d_store, p_store, e_store): (&Store<Deployment>, &Store<Pod>, &Store<Event>),
) {
    let ids: Vec<Uuid> = dirty.drain().collect();
    for (i, id) in ids.iter().enumerate() {
        match refresh(ctx, *id, d_store, p_store, e_store).await {
            Derived::Done => {}
            // The API did not confirm an absence: this one again next tick.
            Derived::Retry => {
                dirty.insert(*id);
            }
            // The database did not answer: all of these again next tick.
            Derived::DatabaseDown => {
                dirty.extend(ids[i..].iter().copied());
                break;
            }
        }
    }
}

async fn refresh(
    (mgr, clients, cluster, ns): (&ClusterManager, &Clients, Uuid, &str),
    id: Uuid,
    d_store: &Store<Deployment>,
    p_store: &Store<Pod>,
    e_store: &Store<Event>,
) -> Derived {
    let pool = &mgr.inner().pool;
    let inst = match store::instance(pool, id).await {
        Ok(Some(inst)) => inst,
        Ok(None) => return Derived::Done,
        Err(_) => return Derived::DatabaseDown,
    };
    if inst.cluster_id != cluster || inst.namespace != ns {
        return Derived::Done;
    }
    if spec_of(&inst).is_some_and(|s| s.is_operator()) {
        // The operator's workloads carry its labels, not the gateway's: read the resource.
        if let Ok(o) = ClusterManager::observe_live(clients, &inst).await {
            mgr.inner()
                .status_cache
                .insert(id, Arc::new(o.clone()))
                .await;
            if !mgr.record(id, &o, false, inst.deployed_at.is_some()).await {
                return Derived::DatabaseDown;
            }
            mgr.wake(id);
        }
        return Derived::Done;
    }
    let deploy = d_store
        .get(&ObjectRef::new(&inst.name).within(ns))
        .filter(|d| instance_of(d.metadata.labels.as_ref()) == Some(id));
    // The store may lag behind the Deployment's creation: confirm an absence before it can
    // terminate the instance.
    if deploy.is_none() && inst.deployed_at.is_some() {
        match Api::<Deployment>::namespaced(clients.api.clone(), ns)
            .get_opt(&inst.name)
            .await
        {
            Ok(None) => {}
            Ok(Some(_)) => return Derived::Done,
            Err(e) => {
                tracing::debug!(%id, error = %super::reach::describe(&e), "absence unconfirmed");
                return Derived::Retry;
            }
        }
    }
    let pods: Vec<Pod> = p_store
        .state()
        .iter()
        .filter(|p| instance_of(p.metadata.labels.as_ref()) == Some(id))
        .map(|p| (**p).clone())
        .collect();
    let pod_names: Vec<String> = pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let events = e_store.state();
    let mine: Vec<&Event> = events
        .iter()
        .map(|e| e.as_ref())
        .filter(|e| health::event_concerns(e, &inst.name, &pod_names))
        .collect();
    let observed = health::derive(deploy.as_deref(), &pods, &mine);
    tracing::debug!(
        %id, found = deploy.is_some(), deployments = d_store.state().len(), pods = pods.len(),
        events = mine.len(), status = ?observed.status, phase = ?observed.phase,
        "instance re-derived from the watch"
    );
    let scaling = match store::open_op_of(pool, id).await {
        Ok(op) => {
            op.is_some_and(|op| op.operation == dataloaders::enums::DeploymentOperation::Scale)
        }
        Err(_) => return Derived::DatabaseDown,
    };
    mgr.inner()
        .status_cache
        .insert(id, Arc::new(observed.clone()))
        .await;
    // `inst` was read before the stores and the API were: a Deployment marked applied by then
    // existed before we looked.
    let written = mgr
        .record(id, &observed, scaling, inst.deployed_at.is_some())
        .await;
    mgr.wake(id);
    if written {
        Derived::Done
    } else {
        Derived::DatabaseDown
    }
}

fn spec_of(inst: &InstanceRow) -> Option<super::manifests::InstanceSpec> {
    serde_json::from_value(inst.configuration.clone()).ok()
}

impl ClusterManager {
    /// Reads an instance's state straight from the API: its custom resource and the pods
    /// behind it for the operator backend, else its Deployment, pods and events.
    pub(crate) async fn observe_live(
        clients: &Clients,
        inst: &InstanceRow,
    ) -> Result<Observed, kube::Error> {
        if let Some(spec) = spec_of(inst).filter(|s| s.is_operator()) {
            let kind = super::operator::Kind::of(&spec);
            return super::operator::observe(&clients.api, &inst.namespace, &inst.name, kind).await;
        }
        let d = Api::<Deployment>::namespaced(clients.api.clone(), &inst.namespace)
            .get_opt(&inst.name)
            .await?;
        let pods = Api::<Pod>::namespaced(clients.api.clone(), &inst.namespace)
            .list(&ListParams::default().labels(&manifests::selector(inst.id)))
            .await?
            .items;
        let pod_names: Vec<String> = pods
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(
            clients.api.clone(),
            &inst.namespace,
        )
        .list(&ListParams::default().limit(500))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
        let mine: Vec<&k8s_openapi::api::core::v1::Event> = events
            .iter()
            .filter(|e| health::event_concerns(e, &inst.name, &pod_names))
            .collect();
        Ok(health::derive(d.as_ref(), &pods, &mine))
    }
}
