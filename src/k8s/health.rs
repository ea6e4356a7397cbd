//! Deriving an instance's state from its Deployment, pods and events
//! (shared/docs/kubernetes.md §5: the kubectl `rollout status` and Argo CD health rules).
//!
//! Everything here is pure, so the rules are unit-tested without a cluster.

use chrono::{DateTime, Utc};
use dataloaders::enums::{HealthStatus, InstancePhase, InstanceStatus};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition};
use k8s_openapi::api::core::v1::{Event, Pod};
use serde_json::{Value, json};

/// How many events an instance keeps (newest last).
pub const MAX_EVENTS: usize = 20;

/// Waiting reasons that mean a pod cannot start without a change (§5.3, §5.4 rule 3).
const UNRECOVERABLE_WAITING: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "CrashLoopBackOff",
];

/// What the operation driving an instance should conclude.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The rollout is still moving.
    Progressing,
    /// The rollout finished (or, for a deletion, everything is gone).
    Done,
    /// The rollout cannot finish without a change; `reason` is the Kubernetes reason.
    Failed { reason: String, message: String },
}

/// An instance's state as the cluster shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// The Deployment does not exist.
    pub missing: bool,
    /// Highest `resourceVersion` among the Deployment and pods the observation comes from (0 when
    /// unknown): a later observation of the same objects never has a lower one.
    pub rv: u64,
    /// Pods of the instance that still exist.
    pub pods: usize,
    /// `metadata.generation` of the Deployment.
    pub generation: i64,
    /// `status.observedGeneration` of the Deployment.
    pub observed_generation: i64,
    /// `deployment.kubernetes.io/revision` of the Deployment.
    pub revision: Option<i64>,
    pub status: InstanceStatus,
    pub phase: InstancePhase,
    pub desired: i32,
    pub current: i32,
    pub ready: i32,
    pub health: HealthStatus,
    pub reason: String,
    /// The latest Warning event, as an `InstanceEvent` object.
    pub last_warning: Option<Value>,
    /// Recent events, as `InstanceEvent` objects, newest last.
    pub events: Vec<Value>,
    pub verdict: Verdict,
    /// The in-cluster URL the ToolHive operator reports (`status.url`); native instances'
    /// endpoints follow from their configuration.
    pub endpoint: Option<String>,
}

impl Observed {
    /// The state of an instance whose Deployment is gone.
    pub(crate) fn gone(pods: usize, events: Vec<Value>, last_warning: Option<Value>) -> Self {
        Observed {
            missing: true,
            rv: 0,
            pods,
            generation: 0,
            observed_generation: 0,
            revision: None,
            status: InstanceStatus::Terminated,
            // Nothing is in progress once the last pod is gone.
            phase: if pods > 0 {
                InstancePhase::Terminating
            } else {
                InstancePhase::Ready
            },
            desired: 0,
            current: pods as i32,
            ready: 0,
            health: HealthStatus::Unknown,
            reason: if pods > 0 {
                format!("the Deployment is gone; {pods} pod(s) still terminating")
            } else {
                "the Deployment no longer exists in the cluster".into()
            },
            last_warning,
            events,
            verdict: if pods == 0 {
                Verdict::Done
            } else {
                Verdict::Progressing
            },
            endpoint: None,
        }
    }
}

/// Whether an event is about the instance whose Deployment is `name` (the Deployment, its
/// ReplicaSets `<name>-<hash>`, or its pods `<name>-<hash>-<suffix>`), given its pods' names.
pub fn event_concerns(ev: &Event, name: &str, pod_names: &[String]) -> bool {
    let obj = &ev.involved_object;
    let kind = obj.kind.as_deref().unwrap_or("");
    let oname = obj.name.as_deref().unwrap_or("");
    match kind {
        "Deployment" => oname == name,
        "ReplicaSet" => oname
            .strip_prefix(name)
            .and_then(|r| r.strip_prefix('-'))
            .is_some_and(|hash| !hash.is_empty() && !hash.contains('-')),
        "Pod" => {
            pod_names.iter().any(|p| p == oname)
                || oname
                    .strip_prefix(name)
                    .and_then(|r| r.strip_prefix('-'))
                    .is_some_and(|rest| rest.split('-').count() == 2)
        }
        _ => false,
    }
}

/// A Kubernetes timestamp as chrono.
pub fn chrono_of(t: &k8s_openapi::jiff::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond().max(0) as u32)
}

fn event_time(ev: &Event) -> Option<DateTime<Utc>> {
    ev.last_timestamp
        .as_ref()
        .and_then(|t| chrono_of(&t.0))
        .or_else(|| ev.event_time.as_ref().and_then(|t| chrono_of(&t.0)))
        .or_else(|| ev.first_timestamp.as_ref().and_then(|t| chrono_of(&t.0)))
        .or_else(|| {
            ev.metadata
                .creation_timestamp
                .as_ref()
                .and_then(|t| chrono_of(&t.0))
        })
}

/// An event in the `InstanceEvent` shape (camelCase JSON).
pub fn event_json(ev: &Event) -> Value {
    let last = event_time(ev);
    let first = ev
        .first_timestamp
        .as_ref()
        .and_then(|t| chrono_of(&t.0))
        .or(last);
    json!({
        "type": ev.type_.clone().unwrap_or_else(|| "Normal".into()),
        "reason": ev.reason.clone().unwrap_or_default(),
        "message": ev.message.clone().unwrap_or_default(),
        "count": ev.count.or_else(|| ev.series.as_ref().and_then(|s| s.count)).unwrap_or(1),
        "firstSeen": first,
        "lastSeen": last,
        "objectKind": ev.involved_object.kind.clone().unwrap_or_default(),
        "objectName": ev.involved_object.name.clone().unwrap_or_default(),
    })
}

/// The newest `MAX_EVENTS` events (oldest first) and the latest Warning among all of them.
pub fn summarize_events(mut events: Vec<&Event>) -> (Vec<Value>, Option<Value>) {
    events.sort_by_key(|e| event_time(e));
    let last_warning = events
        .iter()
        .rev()
        .find(|e| e.type_.as_deref() == Some("Warning"))
        .map(|e| event_json(e));
    let skip = events.len().saturating_sub(MAX_EVENTS);
    (
        events.iter().skip(skip).map(|e| event_json(e)).collect(),
        last_warning,
    )
}

/// The worst problem of one pod, if it has one: (reason, message, unrecoverable).
fn pod_problem(pod: &Pod) -> Option<(String, String, bool)> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() == Some("Failed") {
        let msg = status
            .message
            .clone()
            .unwrap_or_else(|| "the pod failed".into());
        return Some((
            status.reason.clone().unwrap_or_else(|| "Failed".into()),
            msg,
            true,
        ));
    }
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    let mut found: Option<(String, String, bool)> = None;
    for c in containers {
        if let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            let reason = w.reason.clone().unwrap_or_default();
            let bad = UNRECOVERABLE_WAITING.contains(&reason.as_str())
                || reason.starts_with("Err")
                || reason.ends_with("Error")
                || reason.ends_with("BackOff");
            if bad {
                let msg = w
                    .message
                    .clone()
                    .unwrap_or_else(|| format!("container {} is waiting: {reason}", c.name));
                return Some((reason, msg, true));
            }
        }
        if found.is_none()
            && !c.ready
            && let Some(t) = c.last_state.as_ref().and_then(|s| s.terminated.as_ref())
        {
            found = Some((
                t.reason.clone().unwrap_or_else(|| "Error".into()),
                format!(
                    "container {} restarted {} time(s); last exit code {}",
                    c.name, c.restart_count, t.exit_code
                ),
                false,
            ));
        }
    }
    found
}

fn pod_is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_unschedulable(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())?
        .iter()
        .find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        })
        .map(|c| {
            c.message
                .clone()
                .unwrap_or_else(|| "pod is unschedulable".into())
        })
}

/// What a Deployment's spec and status say, in numbers.
struct Rollout {
    spec_replicas: i32,
    replicas: i32,
    updated: i32,
    ready: i32,
    available: i32,
    paused: bool,
    /// The controller has seen the current spec.
    observed: bool,
    conditions: Vec<DeploymentCondition>,
}

impl Rollout {
    fn of(d: &Deployment) -> Self {
        let st = d.status.clone().unwrap_or_default();
        Rollout {
            spec_replicas: d.spec.replicas.unwrap_or(1),
            replicas: st.replicas.unwrap_or(0),
            updated: st.updated_replicas.unwrap_or(0),
            ready: st.ready_replicas.unwrap_or(0),
            available: st.available_replicas.unwrap_or(0),
            paused: d.spec.paused.unwrap_or(false),
            observed: d.metadata.generation.unwrap_or(0) <= st.observed_generation.unwrap_or(0),
            conditions: st.conditions.unwrap_or_default(),
        }
    }

    fn cond(&self, t: &str) -> Option<&DeploymentCondition> {
        self.conditions
            .iter()
            .find(|c| c.type_.as_deref() == Some(t))
    }

    /// Every replica runs the current template and is available.
    fn done(&self) -> bool {
        self.observed
            && self.updated >= self.spec_replicas
            && self.replicas <= self.updated
            && self.available >= self.updated
    }

    /// RUNNING once a replica is ready, else PENDING.
    fn running_status(&self) -> InstanceStatus {
        if self.ready > 0 {
            InstanceStatus::Running
        } else {
            InstanceStatus::Pending
        }
    }
}

/// A problem of a pod: (reason, message, whether it cannot recover by waiting).
type PodProblem = (String, String, bool);

/// Derives the instance state. `pods` are the instance's pods (label-selected); `events` those
/// concerning the instance (see [`event_concerns`]). The rules, in order: deleting, stopped,
/// failed, paused, rolled out (healthy or degraded), progressing.
pub fn derive(deploy: Option<&Deployment>, pods: &[Pod], events: &[&Event]) -> Observed {
    let live_pods: Vec<&Pod> = pods
        .iter()
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded")
            )
        })
        .collect();
    let (events, last_warning) = summarize_events(events.to_vec());
    let Some(d) = deploy else {
        return Observed::gone(live_pods.len(), events, last_warning);
    };
    let r = Rollout::of(d);
    let mut o = observation(d, pods, &r, live_pods.len(), events, last_warning);
    if d.metadata.deletion_timestamp.is_some() {
        o.status = r.running_status();
        o.phase = InstancePhase::Terminating;
        o.reason = "Pending deletion".into();
        return o;
    }
    // Pod-level failures of the current pods.
    let current: Vec<&Pod> = live_pods
        .iter()
        .copied()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let problems: Vec<PodProblem> = current.iter().filter_map(|p| pod_problem(p)).collect();
    if r.spec_replicas == 0 && r.replicas == 0 && r.observed {
        stopped(&r, &mut o);
    } else if let Some((reason, message)) = failure(d, &r, &current, &problems) {
        o.status = InstanceStatus::Failed;
        o.phase = InstancePhase::Deploying;
        o.health = HealthStatus::Unhealthy;
        o.reason = format!("{reason}: {message}");
        o.verdict = Verdict::Failed { reason, message };
    } else if r.paused {
        paused(&r, &mut o);
    } else if r.done() {
        rolled_out(d, &r, &problems, &mut o);
    } else {
        progressing(&r, &live_pods, &problems, &mut o);
    }
    o
}

/// The observation before the rules: counts, revision, events; PENDING and DEPLOYING.
fn observation(
    d: &Deployment,
    pods: &[Pod],
    r: &Rollout,
    live_pods: usize,
    events: Vec<Value>,
    last_warning: Option<Value>,
) -> Observed {
    let st = d.status.clone().unwrap_or_default();
    let revision = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("deployment.kubernetes.io/revision"))
        .and_then(|r| r.parse().ok());
    let rv = std::iter::once(&d.metadata)
        .chain(pods.iter().map(|p| &p.metadata))
        .filter_map(|m| m.resource_version.as_deref()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    Observed {
        missing: false,
        rv,
        pods: live_pods,
        generation: d.metadata.generation.unwrap_or(0),
        observed_generation: st.observed_generation.unwrap_or(0),
        revision,
        status: InstanceStatus::Pending,
        phase: InstancePhase::Deploying,
        desired: r.spec_replicas.max(0),
        current: r.replicas.max(0),
        ready: r.ready.max(0),
        health: HealthStatus::Unknown,
        reason: String::new(),
        last_warning,
        events,
        verdict: Verdict::Progressing,
        endpoint: None,
    }
}

/// Zero replicas, observed: STOPPED.
fn stopped(r: &Rollout, o: &mut Observed) {
    o.status = InstanceStatus::Stopped;
    o.phase = InstancePhase::Ready;
    o.reason = if r.paused {
        "stopped: 0 replicas (Deployment is paused)".into()
    } else {
        "stopped: 0 replicas".into()
    };
    o.verdict = Verdict::Done;
}

/// Why the rollout failed, if it did: its progress deadline passed, pods cannot be created,
/// or every pod that is not ready (in practice, the new ReplicaSet's) is stuck for good.
fn failure(
    d: &Deployment,
    r: &Rollout,
    current: &[&Pod],
    problems: &[PodProblem],
) -> Option<(String, String)> {
    let deadline = r.cond("Progressing").filter(|c| {
        c.status.as_deref() == Some("False")
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if let Some(c) = deadline {
        return Some((
            "ProgressDeadlineExceeded".into(),
            c.message.clone().unwrap_or_else(|| {
                format!(
                    "deployment {:?} exceeded its progress deadline",
                    d.metadata.name.as_deref().unwrap_or("")
                )
            }),
        ));
    }
    if let Some(c) = r
        .cond("ReplicaFailure")
        .filter(|c| c.status.as_deref() == Some("True"))
    {
        return Some((
            c.reason.clone().unwrap_or_else(|| "FailedCreate".into()),
            c.message
                .clone()
                .unwrap_or_else(|| "pods cannot be created".into()),
        ));
    }
    let not_ready: Vec<&&Pod> = current.iter().filter(|p| !pod_is_ready(p)).collect();
    let all_new_pods_stuck = !r.done()
        && !not_ready.is_empty()
        && not_ready
            .iter()
            .all(|p| pod_problem(p).is_some_and(|x| x.2));
    if !all_new_pods_stuck {
        return None;
    }
    problems
        .iter()
        .find(|p| p.2)
        .map(|p| (p.0.clone(), p.1.clone()))
}

/// A paused Deployment (a cancelled rollout): readiness as it is; nothing progresses.
fn paused(r: &Rollout, o: &mut Observed) {
    o.status = r.running_status();
    o.phase = if r.done() {
        InstancePhase::Ready
    } else {
        InstancePhase::Deploying
    };
    o.health = if r.ready >= r.spec_replicas && r.ready > 0 {
        HealthStatus::Healthy
    } else {
        HealthStatus::Unknown
    };
    o.reason = "Deployment is paused".into();
    o.verdict = if r.done() {
        Verdict::Done
    } else {
        Verdict::Progressing
    };
}

/// Rolled out: RUNNING and READY, healthy unless pods have problems or readiness fell behind.
fn rolled_out(d: &Deployment, r: &Rollout, problems: &[PodProblem], o: &mut Observed) {
    o.status = InstanceStatus::Running;
    o.phase = InstancePhase::Ready;
    if let Some(p) = problems.first() {
        o.health = HealthStatus::Unhealthy;
        o.reason = format!("{}: {}", p.0, p.1);
    } else if r.ready < r.spec_replicas {
        o.health = HealthStatus::Unhealthy;
        o.reason = format!("{} of {} replicas are ready", r.ready, r.spec_replicas);
    } else {
        o.health = HealthStatus::Healthy;
        o.reason = format!(
            "deployment {:?} successfully rolled out",
            d.metadata.name.as_deref().unwrap_or("")
        );
    }
    o.verdict = Verdict::Done;
}

/// Still rolling out (or scaling): what it waits for, and the pods' problems.
fn progressing(r: &Rollout, live_pods: &[&Pod], problems: &[PodProblem], o: &mut Observed) {
    o.status = r.running_status();
    // All existing pods run the newest template and only the count differs: a scale. (The
    // driver of a scale operation also reports SCALING while its new pods start.)
    let template_settled = r.observed && r.updated == r.replicas && r.replicas > 0;
    o.phase = if template_settled && r.replicas != r.spec_replicas {
        InstancePhase::Scaling
    } else {
        InstancePhase::Deploying
    };
    o.reason = if !r.observed {
        "waiting for the deployment spec update to be observed".into()
    } else if r.updated < r.spec_replicas {
        format!(
            "{} out of {} new replicas have been updated",
            r.updated, r.spec_replicas
        )
    } else if r.replicas > r.updated {
        format!(
            "{} old replicas are pending termination",
            r.replicas - r.updated
        )
    } else {
        format!(
            "{} of {} updated replicas are available",
            r.available, r.updated
        )
    };
    if let Some(msg) = live_pods.iter().find_map(|p| pod_unschedulable(p)) {
        o.reason = format!("{}; Unschedulable: {msg}", o.reason);
    } else if let Some(p) = problems.first() {
        o.reason = format!("{}; {}: {}", o.reason, p.0, p.1);
    }
    let available_true = r
        .cond("Available")
        .is_some_and(|c| c.status.as_deref() == Some("True"));
    o.health = if available_true && r.ready >= r.spec_replicas.min(1) && r.ready > 0 {
        HealthStatus::Healthy
    } else if !problems.is_empty() {
        HealthStatus::Unhealthy
    } else {
        HealthStatus::Unknown
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(v: Value) -> Deployment {
        serde_json::from_value(v).unwrap()
    }
    fn pod(v: Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn dep(gen_: i64, obs: i64, spec: i32, st: Value) -> Deployment {
        let mut status = st;
        status["observedGeneration"] = json!(obs);
        deploy(json!({
            "metadata": {"name": "web", "generation": gen_,
                         "annotations": {"deployment.kubernetes.io/revision": "1"}},
            "spec": {"replicas": spec, "selector": {}, "template": {}},
            "status": status,
        }))
    }

    #[test]
    fn healthy_rollout_is_ready() {
        let d = dep(
            1,
            1,
            1,
            json!({"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
                   "conditions": [{"type": "Available", "status": "True"}]}),
        );
        let o = derive(Some(&d), &[], &[]);
        assert_eq!(o.status, InstanceStatus::Running);
        assert_eq!(o.phase, InstancePhase::Ready);
        assert_eq!(o.health, HealthStatus::Healthy);
        assert_eq!((o.desired, o.current, o.ready), (1, 1, 1));
        assert_eq!(o.verdict, Verdict::Done);
        assert!(o.reason.contains("successfully rolled out"));
    }

    #[test]
    fn unobserved_generation_is_progressing() {
        let d = dep(
            2,
            1,
            1,
            json!({"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}),
        );
        let o = derive(Some(&d), &[], &[]);
        assert_eq!(o.verdict, Verdict::Progressing);
        assert_eq!(o.phase, InstancePhase::Deploying);
    }

    #[test]
    fn scaling_up_is_scaling() {
        let d = dep(
            2,
            2,
            3,
            json!({"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
                   "conditions": [{"type": "Available", "status": "True"}]}),
        );
        let o = derive(Some(&d), &[], &[]);
        assert_eq!(o.phase, InstancePhase::Scaling);
        assert_eq!(o.status, InstanceStatus::Running);
        assert_eq!(o.verdict, Verdict::Progressing);
    }

    #[test]
    fn crash_loop_fails() {
        let d = dep(
            1,
            1,
            1,
            json!({"replicas": 1, "updatedReplicas": 1, "readyReplicas": 0, "availableReplicas": 0}),
        );
        let p = pod(json!({
            "metadata": {"name": "web-abc12-xyz34"},
            "status": {"phase": "Running", "containerStatuses": [{
                "name": "mcp", "ready": false, "restartCount": 3, "image": "x", "imageID": "",
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}
            }]}
        }));
        let o = derive(Some(&d), &[p], &[]);
        assert_eq!(o.status, InstanceStatus::Failed);
        assert_eq!(o.health, HealthStatus::Unhealthy);
        assert!(
            matches!(&o.verdict, Verdict::Failed { reason, .. } if reason == "CrashLoopBackOff")
        );
    }

    #[test]
    fn progress_deadline_fails() {
        let d = dep(
            1,
            1,
            1,
            json!({"replicas": 1, "updatedReplicas": 1,
                   "conditions": [{"type": "Progressing", "status": "False",
                                   "reason": "ProgressDeadlineExceeded", "message": "timed out"}]}),
        );
        let o = derive(Some(&d), &[], &[]);
        assert!(
            matches!(&o.verdict, Verdict::Failed { reason, .. } if reason == "ProgressDeadlineExceeded")
        );
    }

    #[test]
    fn stopped_and_missing() {
        let d = dep(3, 3, 0, json!({"replicas": 0}));
        let o = derive(Some(&d), &[], &[]);
        assert_eq!(o.verdict, Verdict::Done);
        assert_eq!((o.desired, o.current, o.ready), (0, 0, 0));
        assert_eq!(
            o.status,
            InstanceStatus::Stopped,
            "zero replicas is not PENDING"
        );
        let gone = derive(None, &[], &[]);
        assert!(gone.missing);
        assert_eq!(gone.status, InstanceStatus::Terminated);
        assert_eq!(gone.phase, InstancePhase::Ready, "TERMINATING ends");
        assert_eq!(gone.verdict, Verdict::Done);
    }

    #[test]
    fn events_are_matched_and_bounded() {
        let ev = |kind: &str, name: &str, ty: &str, reason: &str, n: i64| -> Event {
            serde_json::from_value(json!({
                "metadata": {"name": format!("e{n}")},
                "involvedObject": {"kind": kind, "name": name},
                "type": ty, "reason": reason, "message": "m", "count": 1,
                "lastTimestamp": format!("2026-01-01T00:00:{:02}Z", n % 60),
            }))
            .unwrap()
        };
        assert!(event_concerns(
            &ev("Deployment", "web", "Normal", "x", 1),
            "web",
            &[]
        ));
        assert!(event_concerns(
            &ev("ReplicaSet", "web-abc12", "Normal", "x", 1),
            "web",
            &[]
        ));
        assert!(!event_concerns(
            &ev("ReplicaSet", "web-api-abc12", "Normal", "x", 1),
            "web",
            &[]
        ));
        assert!(event_concerns(
            &ev("Pod", "web-abc12-xyz34", "Normal", "x", 1),
            "web",
            &[]
        ));
        assert!(!event_concerns(
            &ev("Pod", "web-api-abc12-xyz34", "Normal", "x", 1),
            "web",
            &[]
        ));
        let evs: Vec<Event> = (0..30)
            .map(|i| {
                ev(
                    "Pod",
                    "p",
                    if i == 7 { "Warning" } else { "Normal" },
                    "r",
                    i,
                )
            })
            .collect();
        let (list, warn) = summarize_events(evs.iter().collect());
        assert_eq!(list.len(), MAX_EVENTS);
        assert_eq!(warn.unwrap()["lastSeen"], json!("2026-01-01T00:00:07Z"));
    }
}
