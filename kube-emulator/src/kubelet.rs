//! The simulated node: KWOK-style pod lifecycle stages, container logs, resource usage
//! (metrics.k8s.io) and the pod/service proxy with a simulated MCP server behind it.

use crate::resources::{self, ResourceDef};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::server::{Req, Resp, json_resp};
use crate::status::ApiError;
use crate::store::{meta_str, now_ts, parse_ts};
use crate::{Shared, server};
use axum::body::Body;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use hyper::{Method, Response, header};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

pub const SCENARIO_ANNOTATION: &str = "emulator.hivegraph.dev/scenario";
pub const STARTUP_ANNOTATION: &str = "emulator.hivegraph.dev/startup-seconds";
pub const CRASH_AFTER_ANNOTATION: &str = "emulator.hivegraph.dev/crash-after-seconds";
pub const EXIT_CODE_ANNOTATION: &str = "emulator.hivegraph.dev/exit-code";
pub const REPLICA_FAILURE_ANNOTATION: &str = "emulator.hivegraph.dev/replica-failure";

/// The simulated lifecycle of a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Ready,
    SlowStart,
    ImagePullFailure,
    CrashLoop,
    ReadinessFailure,
    Unschedulable,
}

impl Scenario {
    pub fn parse(s: &str) -> Option<Scenario> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "ready" | "healthy" => Scenario::Ready,
            "slow-start" | "slowstart" | "slow" => Scenario::SlowStart,
            "image-pull-failure" | "imagepull" | "image-pull" | "errimagepull"
            | "imagepullbackoff" => Scenario::ImagePullFailure,
            "crash-loop" | "crashloop" | "crashloopbackoff" => Scenario::CrashLoop,
            "readiness-failure" | "not-ready" | "notready" | "unready" => {
                Scenario::ReadinessFailure
            }
            "unschedulable" | "pending" => Scenario::Unschedulable,
            _ => return None,
        })
    }

    /// Annotation first, then image-name conventions.
    pub fn for_pod(pod: &Value) -> Scenario {
        if let Some(s) = pod
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(SCENARIO_ANNOTATION))
            .and_then(Value::as_str)
            && let Some(sc) = Scenario::parse(s)
        {
            return sc;
        }
        let images: Vec<String> = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c["image"].as_str().map(str::to_ascii_lowercase))
                    .collect()
            })
            .unwrap_or_default();
        let has = |pats: &[&str]| images.iter().any(|i| pats.iter().any(|p| i.contains(p)));
        if has(&["unschedulable"]) {
            Scenario::Unschedulable
        } else if has(&[
            "imagepullfail",
            "image-pull-fail",
            "does-not-exist",
            "nonexistent",
            "no-such-image",
            "invalid-image",
        ]) {
            Scenario::ImagePullFailure
        } else if has(&["crashloop", "crash-loop"]) {
            Scenario::CrashLoop
        } else if has(&["notready", "not-ready", "readiness-fail"]) {
            Scenario::ReadinessFailure
        } else if has(&["slow-start", "slowstart"]) {
            Scenario::SlowStart
        } else {
            Scenario::Ready
        }
    }
}

// ---------------------------------------------------------------------------------------------
// log buffers
// ---------------------------------------------------------------------------------------------

type Line = (DateTime<Utc>, String);

struct ContainerLog {
    current: Vec<Line>,
    previous: Option<Vec<Line>>,
    tx: broadcast::Sender<Option<Line>>,
}

impl Default for ContainerLog {
    fn default() -> Self {
        ContainerLog {
            current: Vec::new(),
            previous: None,
            tx: broadcast::channel(1024).0,
        }
    }
}

/// Per-container log buffers and per-pod request counters.
#[derive(Default)]
pub struct Logs {
    inner: Mutex<HashMap<(String, String, String), ContainerLog>>,
    requests: Mutex<HashMap<String, u64>>,
}

impl Logs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String, String), ContainerLog>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub fn append(&self, ns: &str, pod: &str, c: &str, line: impl Into<String>) {
        let mut g = self.lock();
        let e = g.entry((ns.into(), pod.into(), c.into())).or_default();
        let l = (Utc::now(), line.into());
        e.current.push(l.clone());
        if e.current.len() > 5000 {
            e.current.drain(..1000);
        }
        let _ = e.tx.send(Some(l));
    }
    /// A new container instance starts: the current log becomes `previous`.
    pub fn restart(&self, ns: &str, pod: &str, c: &str) {
        let mut g = self.lock();
        let e = g.entry((ns.into(), pod.into(), c.into())).or_default();
        let _ = e.tx.send(None);
        e.previous = Some(std::mem::take(&mut e.current));
        e.tx = broadcast::channel(1024).0;
    }
    /// The container instance terminated: end follow streams.
    pub fn end(&self, ns: &str, pod: &str, c: &str) {
        if let Some(e) = self.lock().get(&(ns.into(), pod.into(), c.into())) {
            let _ = e.tx.send(None);
        }
    }
    pub fn remove_pod(&self, ns: &str, pod: &str) {
        let mut g = self.lock();
        g.retain(|(n, p, _), e| {
            let keep = !(n == ns && p == pod);
            if !keep {
                let _ = e.tx.send(None);
            }
            keep
        });
    }
    fn has_started(&self, ns: &str, pod: &str, c: &str) -> bool {
        self.lock()
            .get(&(ns.into(), pod.into(), c.into()))
            .is_some_and(|e| !e.current.is_empty())
    }
    fn count_request(&self, uid: &str) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(uid.to_string())
            .or_default() += 1;
    }
    fn requests(&self, uid: &str) -> u64 {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(uid)
            .copied()
            .unwrap_or(0)
    }
}

// ---------------------------------------------------------------------------------------------
// node
// ---------------------------------------------------------------------------------------------

pub fn node_object(name: &str) -> Value {
    let now = now_ts();
    json!({
        "metadata": {
            "name": name,
            "labels": {
                "beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                "kubernetes.io/role": "agent", "node-role.kubernetes.io/agent": "", "type": "kwok"
            },
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"}
        },
        "spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]},
        "status": {
            "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "1Ti"},
            "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "1Ti"},
            "conditions": [
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory", "message": "kubelet has sufficient memory available", "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure", "message": "kubelet has no disk pressure", "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID", "message": "kubelet has sufficient PID available", "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now}
            ],
            "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": name}],
            "nodeInfo": {
                "architecture": "amd64", "operatingSystem": "linux", "osImage": "kwok", "kernelVersion": "kwok",
                "kubeletVersion": "kwok-v0.7.0", "kubeProxyVersion": "kwok-v0.7.0", "containerRuntimeVersion": "kwok-v0.7.0",
                "machineID": "", "systemUUID": "", "bootID": ""
            },
            "phase": "Running",
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}
        }
    })
}

// ---------------------------------------------------------------------------------------------
// pod lifecycle
// ---------------------------------------------------------------------------------------------

type PodKey = (String, String, String);

/// Watches pods and runs one lifecycle task per pod.
pub async fn run(shared: Arc<Shared>) {
    let mut rx = shared.store.subscribe();
    let mut tasks: HashMap<PodKey, (tokio::task::JoinHandle<()>, watch::Sender<bool>)> =
        HashMap::new();
    loop {
        let (pods, _) = shared.store.list("pods", None);
        let mut seen = std::collections::HashSet::new();
        for p in &pods {
            let key = (
                meta_str(p, "namespace").to_string(),
                meta_str(p, "name").to_string(),
                meta_str(p, "uid").to_string(),
            );
            seen.insert(key.clone());
            let deleting = p.pointer("/metadata/deletionTimestamp").is_some();
            match tasks.get(&key) {
                Some((_, stop)) => {
                    if deleting && !*stop.borrow() {
                        stop.send_replace(true);
                    }
                }
                None => {
                    let (stop_tx, stop_rx) = watch::channel(deleting);
                    let h = tokio::spawn(pod_task(
                        shared.clone(),
                        key.0.clone(),
                        key.1.clone(),
                        stop_rx,
                    ));
                    tasks.insert(key, (h, stop_tx));
                }
            }
        }
        tasks.retain(|k, (h, _)| {
            let keep = seen.contains(k);
            if !keep {
                h.abort();
                shared.logs.remove_pod(&k.0, &k.1);
            }
            keep
        });
        if rx.changed().await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

struct Stop;

struct PodCtx {
    shared: Arc<Shared>,
    ns: String,
    name: String,
    stop: watch::Receiver<bool>,
}

fn cond(t: &str, status: bool, reason: Option<&str>, message: Option<&str>) -> Value {
    let mut c = json!({"type": t, "status": if status { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": now_ts()});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    if let Some(m) = message {
        c["message"] = json!(m);
    }
    c
}

fn set_cond(pod: &mut Value, t: &str, status: bool, reason: Option<&str>, message: Option<&str>) {
    if !pod["status"]["conditions"].is_array() {
        pod["status"]["conditions"] = json!([]);
    }
    let conds = pod["status"]["conditions"].as_array_mut().unwrap();
    let s = if status { "True" } else { "False" };
    match conds.iter_mut().find(|c| c["type"] == json!(t)) {
        Some(c) => {
            if c["status"] != json!(s) {
                *c = cond(t, status, reason, message);
            } else {
                match reason {
                    Some(r) => c["reason"] = json!(r),
                    None => {
                        c.as_object_mut().unwrap().remove("reason");
                    }
                }
                match message {
                    Some(m) => c["message"] = json!(m),
                    None => {
                        c.as_object_mut().unwrap().remove("message");
                    }
                }
            }
        }
        None => conds.push(cond(t, status, reason, message)),
    }
}

impl PodCtx {
    fn pod(&self) -> Option<Value> {
        self.shared.store.get("pods", &self.ns, &self.name)
    }

    async fn pause(&mut self, sim_secs: f64) -> Result<(), Stop> {
        if *self.stop.borrow() {
            return Err(Stop);
        }
        let d = self.shared.clock.real_secs(sim_secs);
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            _ = self.stop.wait_for(|v| *v) => Err(Stop),
        }
    }

    fn status(&self, f: impl FnOnce(&mut Value)) {
        self.shared
            .store
            .update_with("pods", &self.ns, &self.name, Some("status"), f);
    }

    fn event(
        &self,
        etype: &str,
        reason: &str,
        msg: &str,
        container: Option<&str>,
        component: &str,
    ) {
        if let Some(p) = self.pod() {
            let fp = container.map(|c| format!("spec.containers{{{c}}}"));
            self.shared
                .store
                .record_event(&p, etype, reason, msg, component, fp.as_deref());
        }
    }

    fn log(&self, c: &str, line: impl Into<String>) {
        self.shared.logs.append(&self.ns, &self.name, c, line);
    }

    /// Update one container's status entry.
    fn container_status(&self, c: &str, f: impl FnOnce(&mut Value)) {
        let c = c.to_string();
        self.status(move |p| {
            if let Some(cs) = p["status"]["containerStatuses"].as_array_mut()
                && let Some(s) = cs.iter_mut().find(|s| s["name"] == json!(c))
            {
                f(s);
            }
            recompute_pod_conditions(p);
        });
    }
}

fn recompute_pod_conditions(p: &mut Value) {
    let cs = p["status"]["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if cs.is_empty() {
        return;
    }
    let all_ready = cs.iter().all(|c| c["ready"] == json!(true));
    let not_ready: Vec<String> = cs
        .iter()
        .filter(|c| c["ready"] != json!(true))
        .map(|c| c["name"].as_str().unwrap_or_default().to_string())
        .collect();
    let msg = format!("containers with unready status: [{}]", not_ready.join(" "));
    if all_ready {
        set_cond(p, "ContainersReady", true, None, None);
        set_cond(p, "Ready", true, None, None);
    } else {
        set_cond(
            p,
            "ContainersReady",
            false,
            Some("ContainersNotReady"),
            Some(&msg),
        );
        set_cond(p, "Ready", false, Some("ContainersNotReady"), Some(&msg));
    }
    let any_running = cs.iter().any(|c| {
        c.pointer("/state/running").is_some() || c.pointer("/lastState/terminated").is_some()
    });
    if any_running {
        p["status"]["phase"] = json!("Running");
    }
}

fn ann_f64(pod: &Value, key: &str) -> Option<f64> {
    pod.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

fn pod_ip(name: &str) -> String {
    let h = name
        .bytes()
        .fold(7u32, |a, b| a.wrapping_mul(31).wrapping_add(b as u32));
    format!("10.244.{}.{}", (h >> 8) % 250, h % 250 + 2)
}

async fn pod_task(shared: Arc<Shared>, ns: String, name: String, stop: watch::Receiver<bool>) {
    let mut ctx = PodCtx {
        shared,
        ns,
        name,
        stop,
    };
    let _ = lifecycle(&mut ctx).await;
    terminate(&mut ctx).await;
}

async fn terminate(ctx: &mut PodCtx) {
    // wait until deletion is requested
    let _ = ctx.stop.wait_for(|v| *v).await;
    let Some(pod) = ctx.pod() else { return };
    let containers: Vec<String> = container_names(&pod);
    let running = pod.pointer("/status/phase") == Some(&json!("Running"));
    for c in &containers {
        if running {
            ctx.event(
                "Normal",
                "Killing",
                &format!("Stopping container {c}"),
                Some(c),
                "kubelet",
            );
            ctx.log(c, "received SIGTERM, shutting down gracefully");
        }
        ctx.shared.logs.end(&ctx.ns, &ctx.name, c);
    }
    let grace = pod
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(0) as f64;
    ctx.shared.clock.sleep(grace.min(1.0)).await;
    ctx.shared.store.finalize_pod(&ctx.ns, &ctx.name);
}

fn container_names(pod: &Value) -> Vec<String> {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn image_of(pod: &Value, c: &str) -> String {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|x| x["name"] == json!(c)))
        .and_then(|x| x["image"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn image_ref(image: &str) -> String {
    let full = if image.contains('/')
        && image
            .split('/')
            .next()
            .is_some_and(|h| h.contains('.') || h.contains(':'))
    {
        image.to_string()
    } else if image.contains('/') {
        format!("docker.io/{image}")
    } else {
        format!("docker.io/library/{image}")
    };
    let last = full.rsplit('/').next().unwrap_or_default();
    if last.contains(':') || full.contains('@') {
        full
    } else {
        format!("{full}:latest")
    }
}

fn fake_digest(image: &str) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(image.as_bytes());
    h.iter().map(|b| format!("{b:02x}")).collect()
}

fn backoff(n: u32) -> f64 {
    (10.0 * 2f64.powi(n as i32)).min(300.0)
}

async fn lifecycle(ctx: &mut PodCtx) -> Result<(), Stop> {
    let Some(pod) = ctx.pod() else {
        return Err(Stop);
    };
    if *ctx.stop.borrow() {
        return Err(Stop);
    }
    let scenario = Scenario::for_pod(&pod);
    let node = ctx.shared.config.node_name.clone();
    let containers = container_names(&pod);
    let uid = meta_str(&pod, "uid").to_string();

    // --- scheduling
    if pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        if scenario == Scenario::Unschedulable {
            let msg = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.";
            ctx.status(|p| {
                p["status"]["phase"] = json!("Pending");
                set_cond(p, "PodScheduled", false, Some("Unschedulable"), Some(msg));
            });
            loop {
                ctx.event(
                    "Warning",
                    "FailedScheduling",
                    msg,
                    None,
                    "default-scheduler",
                );
                ctx.pause(60.0).await?;
            }
        }
        ctx.pause(0.05).await?;
        let node2 = node.clone();
        ctx.shared
            .store
            .update_with("pods", &ctx.ns, &ctx.name, None, |p| {
                p["spec"]["nodeName"] = json!(node2);
            });
        ctx.status(|p| set_cond(p, "PodScheduled", true, None, None));
        ctx.event(
            "Normal",
            "Scheduled",
            &format!("Successfully assigned {}/{} to {node}", ctx.ns, ctx.name),
            None,
            "default-scheduler",
        );
    }
    // --- pod sandbox / initial status
    ctx.pause(0.1).await?;
    let ip = pod_ip(&format!("{}/{}", ctx.ns, ctx.name));
    let statuses: Vec<Value> = containers
        .iter()
        .map(|c| {
            json!({"name": c, "state": {"waiting": {"reason": "ContainerCreating"}}, "lastState": {}, "ready": false,
                   "restartCount": 0, "image": image_of(&pod, c), "imageID": "", "started": false})
        })
        .collect();
    ctx.status(|p| {
        p["status"]["phase"] = json!("Pending");
        p["status"]["hostIP"] = json!("10.0.0.1");
        p["status"]["hostIPs"] = json!([{"ip": "10.0.0.1"}]);
        p["status"]["podIP"] = json!(ip);
        p["status"]["podIPs"] = json!([{"ip": ip}]);
        p["status"]["startTime"] = json!(now_ts());
        set_cond(p, "PodReadyToStartContainers", true, None, None);
        set_cond(p, "Initialized", true, None, None);
        p["status"]["containerStatuses"] = json!(statuses);
        recompute_pod_conditions(p);
        set_cond(p, "PodScheduled", true, None, None);
    });
    let startup = ann_f64(&pod, STARTUP_ANNOTATION).unwrap_or(match scenario {
        Scenario::SlowStart => 30.0,
        _ => 2.0,
    });
    let pull_secs = match scenario {
        Scenario::SlowStart => startup * 0.5,
        _ => 1.0,
    };
    // --- image pulls (sequential, like the kubelet)
    let main = containers.first().cloned().unwrap_or_default();
    if scenario == Scenario::ImagePullFailure {
        let image = image_of(&pod, &main);
        let mut n = 0u32;
        loop {
            ctx.event(
                "Normal",
                "Pulling",
                &format!("Pulling image \"{image}\""),
                Some(&main),
                "kubelet",
            );
            ctx.pause(pull_secs).await?;
            let err = format!(
                "failed to pull and unpack image \"{r}\": failed to resolve reference \"{r}\": {r}: not found",
                r = image_ref(&image)
            );
            let msg = format!("rpc error: code = NotFound desc = {err}");
            ctx.event(
                "Warning",
                "Failed",
                &format!("Failed to pull image \"{image}\": {msg}"),
                Some(&main),
                "kubelet",
            );
            ctx.event(
                "Warning",
                "Failed",
                "Error: ErrImagePull",
                Some(&main),
                "kubelet",
            );
            let m2 = msg.clone();
            ctx.container_status(&main, move |s| {
                s["state"] = json!({"waiting": {"reason": "ErrImagePull", "message": m2}});
            });
            ctx.pause(1.0).await?;
            let bo = format!("Back-off pulling image \"{image}\"");
            let bo2 = format!("{bo}: ErrImagePull: {err}");
            ctx.container_status(&main, move |s| {
                s["state"] = json!({"waiting": {"reason": "ImagePullBackOff", "message": bo2}});
            });
            ctx.event("Normal", "BackOff", &bo, Some(&main), "kubelet");
            ctx.event(
                "Warning",
                "Failed",
                "Error: ImagePullBackOff",
                Some(&main),
                "kubelet",
            );
            ctx.pause(backoff(n)).await?;
            n += 1;
        }
    }
    for c in &containers {
        let image = image_of(&pod, c);
        ctx.event(
            "Normal",
            "Pulling",
            &format!("Pulling image \"{image}\""),
            Some(c),
            "kubelet",
        );
        ctx.pause(pull_secs).await?;
        ctx.event(
            "Normal",
            "Pulled",
            &format!(
                "Successfully pulled image \"{image}\" in {pull_secs:.3}s ({pull_secs:.3}s including waiting). Image size: 18874368 bytes."
            ),
            Some(c),
            "kubelet",
        );
    }
    // --- start containers
    let mut restarts = 0u32;
    loop {
        for c in &containers {
            let image = image_of(&pod, c);
            if restarts > 0 {
                ctx.event(
                    "Normal",
                    "Pulled",
                    &format!("Container image \"{image}\" already present on machine"),
                    Some(c),
                    "kubelet",
                );
            }
            ctx.event(
                "Normal",
                "Created",
                &format!("Created container: {c}"),
                Some(c),
                "kubelet",
            );
            if restarts > 0 {
                ctx.shared.logs.restart(&ctx.ns, &ctx.name, c);
            }
            ctx.event(
                "Normal",
                "Started",
                &format!("Started container {c}"),
                Some(c),
                "kubelet",
            );
            let started = now_ts();
            let iref = image_ref(&image);
            let digest = fake_digest(&image);
            let rc = restarts;
            let cid = format!(
                "containerd://{}",
                &fake_digest(&format!("{uid}{c}{rc}"))[..64]
            );
            ctx.container_status(c, move |s| {
                s["state"] = json!({"running": {"startedAt": started}});
                s["started"] = json!(true);
                s["ready"] = json!(false);
                s["restartCount"] = json!(rc);
                s["imageID"] = json!(format!(
                    "{}@sha256:{digest}",
                    iref.rsplit_once(':').map(|x| x.0).unwrap_or(&iref)
                ));
                s["containerID"] = json!(cid);
            });
            startup_logs(ctx, c, &image);
        }
        match scenario {
            Scenario::CrashLoop => {
                let crash_after = ann_f64(&pod, CRASH_AFTER_ANNOTATION).unwrap_or(2.0);
                let code = ann_f64(&pod, EXIT_CODE_ANNOTATION).unwrap_or(1.0) as i64;
                ctx.pause(crash_after).await?;
                let c = main.clone();
                ctx.log(
                    &c,
                    "ERROR failed to initialise MCP transport: connection to upstream refused",
                );
                ctx.log(&c, format!("FATAL exiting with code {code}"));
                ctx.shared.logs.end(&ctx.ns, &ctx.name, &c);
                let finished = now_ts();
                let Some(cur) = ctx.pod() else {
                    return Err(Stop);
                };
                let started = cur
                    .pointer("/status/containerStatuses")
                    .and_then(Value::as_array)
                    .and_then(|a| a.iter().find(|s| s["name"] == json!(c)))
                    .and_then(|s| s.pointer("/state/running/startedAt").cloned())
                    .unwrap_or(json!(finished));
                let cid = cur
                    .pointer("/status/containerStatuses")
                    .and_then(Value::as_array)
                    .and_then(|a| a.iter().find(|s| s["name"] == json!(c)))
                    .map(|s| s["containerID"].clone())
                    .unwrap_or(Value::Null);
                let term = json!({"exitCode": code, "reason": "Error", "startedAt": started, "finishedAt": finished, "containerID": cid});
                let t2 = term.clone();
                ctx.container_status(&c, move |s| {
                    s["state"] = json!({"terminated": t2});
                    s["ready"] = json!(false);
                    s["started"] = json!(false);
                });
                ctx.pause(0.5).await?;
                let bo = backoff(restarts);
                let pod_ref = format!("{}_{}({})", ctx.name, ctx.ns, uid);
                let msg = format!(
                    "back-off {}s restarting failed container={c} pod={pod_ref}",
                    bo as u64
                );
                let t3 = term.clone();
                ctx.container_status(&c, move |s| {
                    s["state"] = json!({"waiting": {"reason": "CrashLoopBackOff", "message": msg}});
                    s["lastState"] = json!({"terminated": t3});
                });
                ctx.event(
                    "Warning",
                    "BackOff",
                    &format!("Back-off restarting failed container {c} in pod {pod_ref}"),
                    Some(&c),
                    "kubelet",
                );
                ctx.pause(bo).await?;
                restarts += 1;
                continue;
            }
            Scenario::ReadinessFailure => loop {
                ctx.pause(startup.max(1.0)).await?;
                ctx.event(
                    "Warning",
                    "Unhealthy",
                    "Readiness probe failed: HTTP probe failed with statuscode: 503",
                    Some(&main),
                    "kubelet",
                );
                ctx.log(&main, "WARN readiness check failed: upstream not reachable");
                ctx.pause(9.0).await?;
            },
            _ => {
                ctx.pause(startup).await?;
                for c in &containers {
                    ctx.container_status(c, |s| s["ready"] = json!(true));
                    ctx.log(c, "INFO readiness probe passed, serving");
                }
                let mut tick = 0u64;
                loop {
                    ctx.pause(10.0).await?;
                    tick += 1;
                    for c in &containers {
                        ctx.log(c, format!("INFO heartbeat seq={tick} sessions=0 status=ok"));
                    }
                }
            }
        }
    }
}

fn startup_logs(ctx: &PodCtx, c: &str, image: &str) {
    ctx.log(
        c,
        format!("INFO starting MCP server image={image} container={c}"),
    );
    ctx.log(c, "INFO loading configuration from environment");
    ctx.log(
        c,
        "INFO transport=streamable-http listening on 0.0.0.0:8080",
    );
}

// ---------------------------------------------------------------------------------------------
// logs endpoint
// ---------------------------------------------------------------------------------------------

fn fmt_line(l: &Line, ts: bool) -> String {
    if ts {
        format!(
            "{} {}\n",
            l.0.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            l.1
        )
    } else {
        format!("{}\n", l.1)
    }
}

pub async fn logs(shared: &Arc<Shared>, ns: &str, name: &str, r: &Req) -> Result<Resp, ApiError> {
    let def = resources::by_storage("pods");
    let pod = shared
        .store
        .get("pods", ns, name)
        .ok_or_else(|| ApiError::not_found(def, name))?;
    let names = container_names(&pod);
    let container = match r.q("container") {
        Some(c) => {
            if !names.iter().any(|n| n == c) {
                return Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )));
            }
            c.to_string()
        }
        None if names.len() == 1 => names[0].clone(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                names.join(" ")
            )));
        }
    };
    if pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Ok(Response::builder().status(204).body(Body::empty()).unwrap());
    }
    let previous = matches!(r.q("previous"), Some("true") | Some("1"));
    let follow = matches!(r.q("follow"), Some("true") | Some("1"));
    let timestamps = matches!(r.q("timestamps"), Some("true") | Some("1"));
    let status = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|s| s["name"] == json!(container)))
        .cloned()
        .unwrap_or(json!({}));
    if !previous && !shared.logs.has_started(ns, name, &container) {
        let reason = status
            .pointer("/state/waiting/reason")
            .and_then(Value::as_str)
            .unwrap_or("ContainerCreating");
        let msg = if matches!(reason, "ErrImagePull" | "ImagePullBackOff") {
            format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: trying and failing to pull image"
            )
        } else {
            format!("container \"{container}\" in pod \"{name}\" is waiting to start: {reason}")
        };
        return Err(ApiError::bad_request(msg));
    }
    let since: Option<DateTime<Utc>> =
        if let Some(s) = r.q("sinceSeconds").and_then(|s| s.parse::<i64>().ok()) {
            Some(Utc::now() - chrono::Duration::seconds(s))
        } else {
            r.q("sinceTime").and_then(parse_ts)
        };
    let tail = r.q("tailLines").and_then(|s| s.parse::<usize>().ok());
    let limit_bytes = r.q("limitBytes").and_then(|s| s.parse::<usize>().ok());
    let (lines, rx) = {
        let g = shared.logs.lock();
        let Some(e) = g.get(&(ns.to_string(), name.to_string(), container.clone())) else {
            return Err(ApiError::bad_request(format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
            )));
        };
        if previous {
            match &e.previous {
                Some(p) => (p.clone(), None),
                None => {
                    return Err(ApiError::bad_request(format!(
                        "previous terminated container \"{container}\" in pod \"{name}\" not found"
                    )));
                }
            }
        } else {
            let running = status.pointer("/state/running").is_some();
            (
                e.current.clone(),
                if follow && running {
                    Some(e.tx.subscribe())
                } else {
                    None
                },
            )
        }
    };
    let mut lines: Vec<Line> = lines
        .into_iter()
        .filter(|l| since.is_none_or(|s| l.0 >= s))
        .collect();
    if let Some(t) = tail {
        let n = lines.len();
        if t < n {
            lines.drain(..n - t);
        }
    }
    let mut text: String = lines.iter().map(|l| fmt_line(l, timestamps)).collect();
    if let Some(lb) = limit_bytes
        && text.len() > lb
    {
        let mut cut = lb;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    let builder = Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "text/plain");
    match rx {
        None => Ok(builder.body(Body::from(text)).unwrap()),
        Some(mut rx) => {
            let (tx, out) =
                tokio::sync::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(64);
            tokio::spawn(async move {
                if !text.is_empty() && tx.send(Ok(Bytes::from(text))).await.is_err() {
                    return;
                }
                loop {
                    tokio::select! {
                        m = rx.recv() => match m {
                            Ok(Some(l)) => {
                                if tx.send(Ok(Bytes::from(fmt_line(&l, timestamps)))).await.is_err() { return; }
                            }
                            Ok(None) | Err(broadcast::error::RecvError::Closed) => return,
                            Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        },
                        _ = tx.closed() => return,
                    }
                }
            });
            Ok(builder
                .body(Body::from_stream(
                    tokio_stream::wrappers::ReceiverStream::new(out),
                ))
                .unwrap())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// metrics.k8s.io
// ---------------------------------------------------------------------------------------------

fn seed(s: &str) -> f64 {
    let h = s
        .bytes()
        .fold(2166136261u32, |a, b| (a ^ b as u32).wrapping_mul(16777619));
    (h % 1000) as f64 / 1000.0
}

/// Simulated (cpu nanocores, memory bytes) of a running container.
pub fn usage(pod: &Value, container: &str, shared: &Shared) -> Option<(u64, u64)> {
    let cs = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)?;
    let st = cs.iter().find(|s| s["name"] == json!(container))?;
    let started = parse_ts(st.pointer("/state/running/startedAt")?.as_str()?)?;
    let elapsed_sim = shared
        .clock
        .sim_secs((Utc::now() - started).to_std().unwrap_or_default());
    if elapsed_sim < 1.0 {
        return None;
    }
    let uid = meta_str(pod, "uid");
    let s = seed(&format!("{uid}/{container}"));
    let base_cpu = 2_000_000.0 + s * 18_000_000.0; // 2m..20m
    let wave = 1.0 + 0.3 * (elapsed_sim / 30.0 + s * std::f64::consts::TAU).sin();
    let reqs = shared.logs.requests(uid) as f64;
    let cpu = (base_cpu * wave + reqs * 50_000.0) as u64;
    let base_mem = 24.0 * 1024.0 * 1024.0 + s * 40.0 * 1024.0 * 1024.0;
    let growth = (elapsed_sim / 60.0).min(30.0) * 256.0 * 1024.0;
    Some((cpu, (base_mem + growth) as u64))
}

fn pod_metrics(pod: &Value, shared: &Shared) -> Option<Value> {
    let mut containers = Vec::new();
    for c in container_names(pod) {
        let (cpu, mem) = usage(pod, &c, shared)?;
        containers.push(json!({"name": c, "usage": {"cpu": format!("{cpu}n"), "memory": format!("{}Ki", mem / 1024)}}));
    }
    let now = now_ts();
    let mut meta = json!({"name": meta_str(pod, "name"), "namespace": meta_str(pod, "namespace"), "creationTimestamp": now});
    if let Some(l) = pod.pointer("/metadata/labels") {
        meta["labels"] = l.clone();
    }
    Some(
        json!({"kind": "PodMetrics", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": meta, "timestamp": now, "window": "15.0s", "containers": containers}),
    )
}

pub fn metrics(
    shared: &Arc<Shared>,
    def: &ResourceDef,
    ns: Option<&str>,
    name: Option<&str>,
    r: &Req,
) -> Result<Resp, ApiError> {
    let ls = LabelSelector::parse(r.q("labelSelector").unwrap_or_default())?;
    let fs = FieldSelector::parse(r.q("fieldSelector").unwrap_or_default(), def)?;
    if def.kind == "NodeMetrics" {
        let node = &shared.config.node_name;
        let (pods, _) = shared.store.list("pods", None);
        let (mut cpu, mut mem) = (50_000_000u64, 512 * 1024 * 1024u64);
        for p in &pods {
            for c in container_names(p) {
                if let Some((a, b)) = usage(p, &c, shared) {
                    cpu += a;
                    mem += b;
                }
            }
        }
        let now = now_ts();
        let item = json!({"kind": "NodeMetrics", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {"name": node, "creationTimestamp": now, "labels": {"kubernetes.io/hostname": node, "type": "kwok"}}, "timestamp": now, "window": "20.0s", "usage": {"cpu": format!("{cpu}n"), "memory": format!("{}Ki", mem / 1024)}});
        return match name {
            Some(n) if n == node => Ok(json_resp(200, &item)),
            Some(n) => Err(ApiError::status(
                404,
                "NotFound",
                format!("nodemetrics.metrics.k8s.io \"{n}\" not found"),
                Some(json!({"name": n, "group": "metrics.k8s.io", "kind": "nodes"})),
            )),
            None => {
                let mut it = item.clone();
                it.as_object_mut().unwrap().remove("kind");
                it.as_object_mut().unwrap().remove("apiVersion");
                Ok(json_resp(
                    200,
                    &json!({"kind": "NodeMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": [it]}),
                ))
            }
        };
    }
    match name {
        Some(n) => {
            let ns = ns.unwrap_or_default();
            let not_found = || {
                ApiError::status(
                    404,
                    "NotFound",
                    format!("podmetrics.metrics.k8s.io \"{ns}/{n}\" not found"),
                    Some(json!({"name": n, "group": "metrics.k8s.io", "kind": "pods"})),
                )
            };
            let pod = shared.store.get("pods", ns, n).ok_or_else(not_found)?;
            let m = pod_metrics(&pod, shared).ok_or_else(not_found)?;
            Ok(json_resp(200, &m))
        }
        None => {
            let (pods, _) = shared.store.list("pods", ns);
            let items: Vec<Value> = pods
                .iter()
                .filter(|p| ls.matches(p) && fs.matches(p))
                .filter_map(|p| pod_metrics(p, shared))
                .map(|mut m| {
                    m.as_object_mut().unwrap().remove("kind");
                    m.as_object_mut().unwrap().remove("apiVersion");
                    m
                })
                .collect();
            Ok(json_resp(
                200,
                &json!({"kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": items}),
            ))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// proxy (simulated MCP server + Prometheus metrics)
// ---------------------------------------------------------------------------------------------

fn pod_ready(p: &Value) -> bool {
    p.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|a| {
            a.iter()
                .any(|c| c["type"] == json!("Ready") && c["status"] == json!("True"))
        })
        && p.pointer("/metadata/deletionTimestamp").is_none()
}

pub fn proxy(
    shared: &Arc<Shared>,
    def: &ResourceDef,
    ns: &str,
    name_port: &str,
    path: &str,
    r: &Req,
) -> Result<Resp, ApiError> {
    let name = name_port.split(':').next().unwrap_or_default();
    let name = name
        .strip_prefix("https:")
        .or_else(|| name.strip_prefix("http:"))
        .unwrap_or(name);
    let obj = shared
        .store
        .get(def.storage, ns, name)
        .ok_or_else(|| ApiError::not_found(def, name))?;
    let pod = if def.storage == "services" {
        let sel = obj.pointer("/spec/selector").cloned().unwrap_or(json!({}));
        let ls = LabelSelector::from_object(&json!({"matchLabels": sel}));
        let (pods, _) = shared.store.list("pods", Some(ns));
        let ready: Vec<Value> = pods
            .into_iter()
            .filter(|p| !ls.is_empty() && ls.matches(p) && pod_ready(p))
            .collect();
        if ready.is_empty() {
            return Err(ApiError::status(
                503,
                "ServiceUnavailable",
                format!("no endpoints available for service \"{name}\""),
                None,
            ));
        }
        let i = (shared.logs.requests(&format!("svc/{ns}/{name}")) as usize) % ready.len();
        shared.logs.count_request(&format!("svc/{ns}/{name}"));
        ready[i].clone()
    } else {
        if !pod_ready(&obj) && obj.pointer("/status/phase") != Some(&json!("Running")) {
            return Err(ApiError::status(
                503,
                "ServiceUnavailable",
                format!(
                    "error trying to reach service: dial tcp {}:8080: connect: connection refused",
                    obj.pointer("/status/podIP")
                        .and_then(Value::as_str)
                        .unwrap_or("<nil>")
                ),
                None,
            ));
        }
        obj
    };
    let uid = meta_str(&pod, "uid").to_string();
    shared.logs.count_request(&uid);
    let pname = meta_str(&pod, "name").to_string();
    let pns = meta_str(&pod, "namespace").to_string();
    let main = container_names(&pod).first().cloned().unwrap_or_default();
    let image = image_of(&pod, &main);
    let path = path.trim_start_matches('/');
    let text = |code: u16, ct: &str, body: String| -> Resp {
        Response::builder()
            .status(code)
            .header(header::CONTENT_TYPE, ct)
            .body(Body::from(body))
            .unwrap()
    };
    if r.method == Method::GET && path == "metrics" {
        let reqs = shared.logs.requests(&uid);
        let (cpu, mem) = usage(&pod, &main, shared).unwrap_or((0, 0));
        let started = pod
            .pointer("/status/startTime")
            .and_then(Value::as_str)
            .and_then(parse_ts)
            .map(|t| t.timestamp())
            .unwrap_or(0);
        let errors = reqs / 50;
        let body = format!(
            "# HELP mcp_requests_total Total MCP requests handled.\n# TYPE mcp_requests_total counter\nmcp_requests_total{{server=\"{pname}\"}} {reqs}\n\
# HELP mcp_request_errors_total Total MCP requests that failed.\n# TYPE mcp_request_errors_total counter\nmcp_request_errors_total{{server=\"{pname}\"}} {errors}\n\
# HELP mcp_request_duration_seconds MCP request latency.\n# TYPE mcp_request_duration_seconds histogram\n\
mcp_request_duration_seconds_bucket{{le=\"0.005\"}} {b1}\nmcp_request_duration_seconds_bucket{{le=\"0.01\"}} {b2}\nmcp_request_duration_seconds_bucket{{le=\"0.05\"}} {reqs}\nmcp_request_duration_seconds_bucket{{le=\"+Inf\"}} {reqs}\n\
mcp_request_duration_seconds_sum {sum:.6}\nmcp_request_duration_seconds_count {reqs}\n\
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {cpus:.3}\n\
# HELP process_resident_memory_bytes Resident memory size in bytes.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {mem}\n\
# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {started}\n\
# HELP network_receive_bytes_total Bytes received.\n# TYPE network_receive_bytes_total counter\nnetwork_receive_bytes_total {rx}\n\
# HELP network_transmit_bytes_total Bytes sent.\n# TYPE network_transmit_bytes_total counter\nnetwork_transmit_bytes_total {tx}\n",
            b1 = reqs * 6 / 10,
            b2 = reqs * 9 / 10,
            sum = reqs as f64 * 0.004,
            cpus = cpu as f64 / 1e9 * 60.0,
            rx = reqs * 512,
            tx = reqs * 1024,
        );
        return Ok(text(200, "text/plain; version=0.0.4; charset=utf-8", body));
    }
    if r.method == Method::GET && matches!(path, "" | "health" | "healthz" | "readyz" | "livez") {
        return Ok(text(200, "text/plain; charset=utf-8", "ok".into()));
    }
    if r.method == Method::POST {
        let Ok(msg) = serde_json::from_slice::<Value>(&r.body) else {
            return Ok(json_resp(
                400,
                &json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "Parse error"}}),
            ));
        };
        shared.logs.append(
            &pns,
            &pname,
            &main,
            format!(
                "INFO mcp request method={}",
                msg["method"].as_str().unwrap_or("?")
            ),
        );
        let respond = |m: &Value| -> Option<Value> {
            let id = m.get("id").cloned()?;
            let method = m["method"].as_str().unwrap_or_default();
            Some(match method {
                "initialize" => {
                    let pv = m
                        .pointer("/params/protocolVersion")
                        .and_then(Value::as_str)
                        .unwrap_or("2025-03-26");
                    json!({"jsonrpc": "2.0", "id": id, "result": {
                        "protocolVersion": pv,
                        "capabilities": {"tools": {"listChanged": false}, "logging": {}},
                        "serverInfo": {"name": image.rsplit('/').next().unwrap_or(&image).split(':').next().unwrap_or_default(), "version": "1.0.0"},
                        "instructions": "Simulated MCP server (kube-emulator)."
                    }})
                }
                "ping" => json!({"jsonrpc": "2.0", "id": id, "result": {}}),
                "tools/list" => json!({"jsonrpc": "2.0", "id": id, "result": {"tools": [
                    {"name": "echo", "description": "Echo the input", "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}}
                ]}}),
                "tools/call" => {
                    json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": m.pointer("/params/arguments/text").and_then(Value::as_str).unwrap_or_default()}], "isError": false}})
                }
                _ => {
                    json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": format!("Method not found: {method}")}})
                }
            })
        };
        let out = match &msg {
            Value::Array(batch) => {
                let rs: Vec<Value> = batch.iter().filter_map(respond).collect();
                if rs.is_empty() {
                    None
                } else {
                    Some(Value::Array(rs))
                }
            }
            m => respond(m),
        };
        return Ok(match out {
            Some(v) => {
                let mut resp = server::json_resp(200, &v);
                resp.headers_mut().insert(
                    "Mcp-Session-Id",
                    hyper::header::HeaderValue::from_str(&format!(
                        "sim-{}",
                        &uid[..8.min(uid.len())]
                    ))
                    .unwrap(),
                );
                resp
            }
            None => Response::builder().status(202).body(Body::empty()).unwrap(),
        });
    }
    Ok(text(
        404,
        "text/plain; charset=utf-8",
        "404 page not found\n".into(),
    ))
}
