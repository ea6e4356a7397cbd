//! The same scenarios against a real cluster: set `KUBE_SCENARIO_KUBECONFIG` to a kubeconfig
//! (with controller-manager, scheduler and a kubelet able to pull busybox) and run
//! `cargo test -p kube-emulator --test real_cluster -- --ignored`.

mod common;
mod scenarios;

macro_rules! real {
    ($($name:ident),*) => {$(
        #[tokio::test]
        #[ignore = "needs KUBE_SCENARIO_KUBECONFIG pointing at a real cluster"]
        async fn $name() {
            let Some(t) = common::Target::real().await else {
                eprintln!("KUBE_SCENARIO_KUBECONFIG not set; skipping");
                return;
            };
            scenarios::$name(&t).await;
        }
    )*};
}

real!(
    crud_status_codes,
    server_side_apply,
    deployment_lifecycle_and_gc,
    watcher_reflector,
    paging_and_selectors,
    pod_logs,
    image_pull_failure,
    crash_loop,
    kubectl_healthy,
    kubectl_progress_deadline,
    kubectl_crash_loop,
    kubectl_discovery,
    crd_install,
    cr_crud_watch_ssa,
    cr_schema_refusal,
    cr_status_subresource,
    statefulset_basics
);
