//! `Instance.logs`: the newest pod's log, read through the API and cached for 2 minutes.

use super::*;

impl ClusterManager {
    /// `Instance.logs`: the newest (ready, else any) pod's log, cached for 2 minutes.
    pub async fn logs(
        &self,
        inst: &InstanceRow,
        cluster: &ClusterRow,
        tail_lines: Option<i32>,
        since_seconds: Option<i32>,
        container: Option<String>,
    ) -> PodLogs {
        let key = (inst.id, tail_lines, since_seconds, container.clone());
        if let Some(hit) = self.inner.logs_cache.get(&key).await {
            return (*hit).clone();
        }
        let out = self
            .read_logs(inst, cluster, tail_lines, since_seconds, container)
            .await;
        self.inner
            .logs_cache
            .insert(key, Arc::new(out.clone()))
            .await;
        out
    }

    pub(super) async fn read_logs(
        &self,
        inst: &InstanceRow,
        cluster: &ClusterRow,
        tail_lines: Option<i32>,
        since_seconds: Option<i32>,
        container: Option<String>,
    ) -> PodLogs {
        let unavailable =
            |reason: String, pod: Option<String>, container: Option<String>| PodLogs {
                available: false,
                reason: Some(reason),
                pod,
                container,
                lines: vec![],
            };
        if inst.status == InstanceStatus::Terminated {
            return unavailable("the instance is terminated".into(), None, container);
        }
        let clients = match self.clients(cluster).await {
            Ok(c) => c,
            Err(e) => return unavailable(e.public_message(), None, container),
        };
        let api: Api<Pod> = Api::namespaced(clients.api.clone(), &inst.namespace);
        let pods = match api
            .list(&ListParams::default().labels(&manifests::selector(inst.id)))
            .await
        {
            Ok(p) => p.items,
            Err(e) => {
                return unavailable(
                    format!("the pods cannot be listed: {}", kube_reason(&e).1),
                    None,
                    container,
                );
            }
        };
        let ready = |p: &Pod| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        };
        let pod = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .max_by_key(|p| {
                (
                    ready(p),
                    p.metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0.as_second()),
                )
            });
        let Some(pod) = pod else {
            return unavailable("the instance has no pods".into(), None, container);
        };
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let container = container.unwrap_or_else(|| manifests::CONTAINER.to_string());
        let lp = LogParams {
            container: Some(container.clone()),
            tail_lines: tail_lines.map(i64::from),
            since_seconds: since_seconds.map(i64::from),
            limit_bytes: Some(MAX_LOG_BYTES),
            ..Default::default()
        };
        match api.logs(&pod_name, &lp).await {
            Ok(text) => PodLogs {
                available: true,
                reason: None,
                pod: Some(pod_name),
                container: Some(container),
                lines: text.lines().map(str::to_string).collect(),
            },
            Err(e) => unavailable(kube_reason(&e).1, Some(pod_name), Some(container)),
        }
    }
}
