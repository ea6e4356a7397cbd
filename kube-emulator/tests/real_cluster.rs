//! The same scenarios against a real cluster: set `KUBE_SCENARIO_KUBECONFIG` to a kubeconfig and
//! run `cargo test -p kube-emulator --test real_cluster -- --ignored`.
//!
//! * `fake_kubelet::*` need only an apiserver, kube-controller-manager and a kubelet that marks
//!   pods Running/Ready: `tools/real-k8s.sh` (v1.20.2 from Debian's source, a fake kubelet)
//!   satisfies them, and `scripts/test` runs them there (the CRD scenarios install the ToolHive
//!   CRDs themselves, made loadable by 1.20).
//! * `full_cluster::*` need a real kubelet and scheduler (their events `Scheduled`, `Pulling`,
//!   `Started`…, image pulls, container logs, metrics, crash loops, `kubectl top`): a fake
//!   kubelet pulls no image, runs no process and writes no event, so they stay emulator-only in
//!   CI. Run them against a kind/minikube cluster able to pull busybox.
//! * The simulated ToolHive operator (`tests/operator.rs`) is emulator-only: a real cluster
//!   needs the real operator for that.

#[expect(
    dead_code,
    reason = "the harness serves three test binaries; each uses a part"
)]
mod common;
mod scenarios;

macro_rules! real {
    ($($name:ident),*) => {$(
        #[tokio::test]
        #[ignore = "needs KUBE_SCENARIO_KUBECONFIG pointing at a real cluster"]
        async fn $name() {
            let Some(t) = crate::common::Target::real().await else {
                eprintln!("KUBE_SCENARIO_KUBECONFIG not set; skipping");
                return;
            };
            crate::scenarios::$name(&t).await;
        }
    )*};
}

mod fake_kubelet {
    real!(
        crud_status_codes,
        server_side_apply,
        watcher_reflector,
        paging_and_selectors,
        kubectl_discovery,
        crd_install,
        cr_crud_watch_ssa,
        gateway_crs_validate,
        cr_schema_refusal,
        cr_status_subresource,
        statefulset_basics,
        kubectl_create_protobuf
    );
}

mod full_cluster {
    real!(
        deployment_lifecycle_and_gc,
        pod_logs,
        image_pull_failure,
        crash_loop,
        kubectl_healthy,
        kubectl_progress_deadline,
        kubectl_crash_loop
    );
}
