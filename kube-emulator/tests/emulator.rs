//! The scenario suite against an in-process emulator (one per test, on 127.0.0.1:0), plus
//! emulator-only checks (410 relist, outage, credentials, access policy, proxy, metrics).

#[expect(
    dead_code,
    reason = "the harness serves three test binaries; each uses a part"
)]
mod common;
mod scenarios;

use common::{Target, deployment, wait_deployment_ready, wait_for};
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{SelfSubjectAccessReview, SelfSubjectRulesReview};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use kube_emulator::{AccessPolicy, Emulator};
use serde_json::{Value, json};
use std::time::Duration;

const SPEED: f64 = 20.0;

async fn target() -> Target {
    Target::emulator(SPEED).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_status_codes() {
    scenarios::crud_status_codes(&target().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply() {
    scenarios::server_side_apply(&target().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_lifecycle_and_gc() {
    scenarios::deployment_lifecycle_and_gc(&target().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_reflector() {
    scenarios::watcher_reflector(&target().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_and_selectors() {
    scenarios::paging_and_selectors(&target().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_logs() {
    scenarios::pod_logs(&target().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pull_failure() {
    scenarios::image_pull_failure(&target().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop() {
    scenarios::crash_loop(&target().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_healthy() {
    scenarios::kubectl_healthy(&target().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_progress_deadline() {
    scenarios::kubectl_progress_deadline(&target().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_crash_loop() {
    scenarios::kubectl_crash_loop(&target().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_discovery() {
    scenarios::kubectl_discovery(&target().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_install() {
    scenarios::crd_install(&target().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cr_crud_watch_ssa() {
    scenarios::cr_crud_watch_ssa(&target().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_crs_validate() {
    scenarios::gateway_crs_validate(&target().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cr_schema_refusal() {
    scenarios::cr_schema_refusal(&target().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cr_status_subresource() {
    scenarios::cr_status_subresource(&target().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_protobuf() {
    scenarios::kubectl_create_protobuf(&target().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_basics() {
    scenarios::statefulset_basics(&target().await).await;
}

// ------------------------------------------------------------------------------------------
// emulator-only
// ------------------------------------------------------------------------------------------

async fn raw(
    client: &kube::Client,
    method: &str,
    path: &str,
    ct: &str,
    body: Value,
) -> Result<Value, kube::Error> {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", ct)
        .body(if body.is_null() {
            vec![]
        } else {
            serde_json::to_vec(&body).unwrap()
        })
        .unwrap();
    client.request::<Value>(req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_too_old_resource_version_is_in_stream_410() {
    let t = target().await;
    let emu = t.emulator.as_ref().unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(t.client.clone(), "default");
    for i in 0..3 {
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": format!("w{i}")}})).unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    emu.compact();
    let mut s = cms
        .watch(&WatchParams::default().timeout(5), "1")
        .await
        .unwrap()
        .boxed();
    match s.try_next().await.unwrap() {
        Some(WatchEvent::Error(e)) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
            assert!(
                e.message.starts_with("too old resource version: 1 ("),
                "{}",
                e.message
            );
        }
        other => panic!("expected ERROR 410, got {other:?}"),
    }
    // a list with resourceVersionMatch=Exact on a compacted RV is an HTTP 410
    let err = raw(
        &t.client,
        "GET",
        "/api/v1/namespaces/default/configmaps?resourceVersion=1&resourceVersionMatch=Exact",
        "application/json",
        Value::Null,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 410));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_and_timeout_close() {
    let emu = Emulator::builder()
        .speed(SPEED)
        .bookmark_interval(Duration::from_millis(300))
        .start()
        .await
        .unwrap();
    let t = Target::from_emulator(emu).await;
    let cms: Api<ConfigMap> = Api::namespaced(t.client.clone(), "default");
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let wp = WatchParams::default().timeout(2);
    let started = std::time::Instant::now();
    let events: Vec<_> = cms.watch(&wp, &rv).await.unwrap().collect().await;
    assert!(
        started.elapsed() >= Duration::from_millis(1900)
            && started.elapsed() < Duration::from_secs(5)
    );
    let bookmarks = events
        .iter()
        .filter(|e| matches!(e, Ok(WatchEvent::Bookmark(_))))
        .count();
    assert!(bookmarks >= 2, "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_relists_after_410() {
    let t = target().await;
    let emu = t.emulator.as_ref().unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(t.client.clone(), "default");
    let cfg = watcher::Config::default().timeout(1);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let w = tokio::spawn({
        let cms = cms.clone();
        async move {
            let mut s = std::pin::pin!(watcher(cms, cfg));
            while let Some(ev) = s.next().await {
                if tx.send(ev.map_err(|e| e.to_string())).is_err() {
                    return;
                }
            }
        }
    });
    let next_init = async |rx: &mut tokio::sync::mpsc::UnboundedReceiver<
        Result<watcher::Event<ConfigMap>, String>,
    >| loop {
        match tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("watcher event")
            .unwrap()
        {
            Ok(watcher::Event::InitDone) => return,
            _ => continue,
        }
    };
    next_init(&mut rx).await;
    // take the server away, change state behind the watcher's back and drop the history:
    // the re-watch from its last resourceVersion gets an in-stream 410 and it must relist
    emu.set_outage(true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let def = kube_emulator::resources::find("", "v1", "configmaps").unwrap();
    emu.store()
        .create(
            def,
            "default",
            json!({"metadata": {"name": "behind-the-back"}}),
        )
        .unwrap();
    emu.compact();
    emu.set_outage(false);
    next_init(&mut rx).await;
    let got = cms.get("behind-the-back").await.unwrap();
    assert!(got.metadata.resource_version.is_some());
    w.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_and_revoked_credentials() {
    let t = target().await;
    let emu = t.emulator.as_ref().unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(t.client.clone(), "default");
    cms.list(&ListParams::default()).await.unwrap();
    emu.set_reject_credentials(true);
    let err = cms.list(&ListParams::default()).await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 401),
        "{err:?}"
    );
    emu.set_reject_credentials(false);
    emu.set_outage(true);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        std::net::TcpStream::connect(emu.addr()).is_err(),
        "listener must be closed during an outage"
    );
    let client2 = common::client_for(&t.kubeconfig).await;
    let api2: Api<ConfigMap> = Api::namespaced(client2, "default");
    let err = api2.list(&ListParams::default()).await.unwrap_err();
    assert!(
        !matches!(err, kube::Error::Api(_)),
        "expected a transport error, got {err:?}"
    );
    emu.set_outage(false);
    wait_for("recovery", Duration::from_secs(10), || {
        let api2 = api2.clone();
        async move { api2.list(&ListParams::default()).await.is_ok() }
    })
    .await;
    // wrong token
    let bad = emu
        .kubeconfig_yaml()
        .replace(emu.token().unwrap(), "wrong-token");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kc"), bad).unwrap();
    let api3: Api<ConfigMap> =
        Api::namespaced(common::client_for(&dir.path().join("kc")).await, "default");
    assert!(
        matches!(api3.list(&ListParams::default()).await.unwrap_err(), kube::Error::Api(s) if s.code == 401)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_policy_reviews_and_enforcement() {
    let emu = Emulator::builder()
        .speed(SPEED)
        .namespaces(["team"])
        .policy(AccessPolicy::DeployOnly(vec!["team".into()]))
        .start()
        .await
        .unwrap();
    let t = Target::from_emulator(emu).await;
    let ssar: Api<SelfSubjectAccessReview> = Api::all(t.client.clone());
    let review = |ns: &str, verb: &str, group: &str, res: &str| {
        serde_json::from_value::<SelfSubjectAccessReview>(json!({"spec": {"resourceAttributes": {"namespace": ns, "verb": verb, "group": group, "resource": res}}})).unwrap()
    };
    let allowed = |r: SelfSubjectAccessReview| r.status.map(|s| s.allowed).unwrap_or(false);
    assert!(allowed(
        ssar.create(
            &PostParams::default(),
            &review("team", "create", "apps", "deployments")
        )
        .await
        .unwrap()
    ));
    assert!(!allowed(
        ssar.create(
            &PostParams::default(),
            &review("default", "create", "apps", "deployments")
        )
        .await
        .unwrap()
    ));
    assert!(!allowed(
        ssar.create(
            &PostParams::default(),
            &review("team", "delete", "", "nodes")
        )
        .await
        .unwrap()
    ));
    let ssrr: Api<SelfSubjectRulesReview> = Api::all(t.client.clone());
    let rr: SelfSubjectRulesReview =
        serde_json::from_value(json!({"spec": {"namespace": "team"}})).unwrap();
    let st = ssrr
        .create(&PostParams::default(), &rr)
        .await
        .unwrap()
        .status
        .unwrap();
    assert!(st.resource_rules.iter().any(|r| {
        r.resources
            .as_ref()
            .is_some_and(|x| x.contains(&"deployments".to_string()))
    }));
    // enforcement
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), "default");
    let err = pods.list(&ListParams::default()).await.unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden"));
            assert!(
                s.message.contains(
                    "cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
                ),
                "{}",
                s.message
            );
        }
        e => panic!("{e:?}"),
    }
    let deps: Api<Deployment> = Api::namespaced(t.client.clone(), "team");
    deps.create(
        &PostParams::default(),
        &serde_json::from_value(deployment("ok", 1, "ready", 600)).unwrap(),
    )
    .await
    .unwrap();
    t.emulator
        .as_ref()
        .unwrap()
        .set_policy(AccessPolicy::ReadOnly);
    assert!(deps.list(&ListParams::default()).await.is_ok());
    assert!(deps.delete("ok", &Default::default()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_proxy_and_discovery() {
    let t = target().await;
    let c = &t.client;
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
    deps.create(
        &PostParams::default(),
        &serde_json::from_value(deployment("mcp", 2, "ready", 600)).unwrap(),
    )
    .await
    .unwrap();
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "mcp"}, "spec": {"selector": {"app": "mcp"}, "ports": [{"port": 8080}]}});
    let created = raw(
        c,
        "POST",
        "/api/v1/namespaces/default/services?",
        "application/json",
        svc,
    )
    .await
    .unwrap();
    assert!(created["spec"]["clusterIP"].as_str().is_some());
    wait_deployment_ready(&t, "default", "mcp", 2).await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}});
    let r = raw(
        c,
        "POST",
        "/api/v1/namespaces/default/services/mcp:8080/proxy/mcp",
        "application/json",
        init,
    )
    .await
    .unwrap();
    assert_eq!(r["result"]["protocolVersion"], "2025-03-26");
    let r = raw(
        c,
        "POST",
        "/api/v1/namespaces/default/services/mcp:8080/proxy/mcp",
        "application/json",
        json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}),
    )
    .await
    .unwrap();
    assert_eq!(r["result"], json!({}));
    let req = http::Request::get("/api/v1/namespaces/default/services/mcp:8080/proxy/metrics")
        .body(vec![])
        .unwrap();
    let text = c.request_text(req).await.unwrap();
    assert!(text.contains("mcp_requests_total"), "{text}");
    // metrics.k8s.io
    wait_for("pod metrics", Duration::from_secs(10), || async {
        raw(
            c,
            "GET",
            "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods?labelSelector=app%3Dmcp",
            "application/json",
            Value::Null,
        )
        .await
        .is_ok_and(|l| l["items"].as_array().is_some_and(|a| a.len() == 2))
    })
    .await;
    let l = raw(
        c,
        "GET",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods",
        "application/json",
        Value::Null,
    )
    .await
    .unwrap();
    let cpu = l["items"][0]["containers"][0]["usage"]["cpu"]
        .as_str()
        .unwrap();
    assert!(cpu.ends_with('n'));
    let err = raw(
        c,
        "GET",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/nope",
        "application/json",
        Value::Null,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 404));
    // discovery and version
    let v = c.apiserver_version().await.unwrap();
    assert_eq!(v.major, "1");
    let d = kube::Discovery::new(c.clone()).run().await.unwrap();
    assert!(d.has_group("apps") && d.has_group("metrics.k8s.io"));
    // unknown group: plain-text 404
    let err = raw(
        c,
        "GET",
        "/apis/toolhive.stacklok.dev/v1beta1/namespaces/default/mcpservers",
        "application/json",
        Value::Null,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 404));
    // JSON patch and scale subresource
    let p = raw(
        c,
        "PATCH",
        "/apis/apps/v1/namespaces/default/deployments/mcp",
        "application/json-patch+json",
        json!([{"op": "replace", "path": "/spec/replicas", "value": 3}]),
    )
    .await
    .unwrap();
    assert_eq!(p["spec"]["replicas"], 3);
    let s = raw(
        c,
        "PATCH",
        "/apis/apps/v1/namespaces/default/deployments/mcp/scale",
        "application/merge-patch+json",
        json!({"spec": {"replicas": 1}}),
    )
    .await
    .unwrap();
    assert_eq!(
        (s["kind"].as_str(), s["spec"]["replicas"].as_i64()),
        (Some("Scale"), Some(1))
    );
    let err = raw(
        c,
        "PATCH",
        "/apis/apps/v1/namespaces/default/deployments/mcp",
        "application/xml",
        json!({}),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(s) if s.code == 415 && s.reason == "UnsupportedMediaType")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unschedulable_and_readiness_failure() {
    let t = target().await;
    let deps: Api<Deployment> = Api::namespaced(t.client.clone(), "default");
    deps.create(
        &PostParams::default(),
        &serde_json::from_value(deployment("uns", 1, "unschedulable", 600)).unwrap(),
    )
    .await
    .unwrap();
    deps.create(
        &PostParams::default(),
        &serde_json::from_value(deployment("nr", 1, "readiness-failure", 600)).unwrap(),
    )
    .await
    .unwrap();
    let core: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(t.client.clone(), "default");
    wait_for(
        "FailedScheduling and Unhealthy events",
        Duration::from_secs(15),
        || {
            let core = core.clone();
            async move {
                let evs = core.list(&ListParams::default()).await.unwrap().items;
                let has = |r: &str| {
                    evs.iter().any(|e| {
                        e.reason.as_deref() == Some(r) && e.type_.as_deref() == Some("Warning")
                    })
                };
                has("FailedScheduling") && has("Unhealthy")
            }
        },
    )
    .await;
    let pods = common::pods_of(&t, "default", "nr").await;
    let st = pods[0].status.clone().unwrap();
    assert_eq!(st.phase.as_deref(), Some("Running"));
    assert!(!st.container_statuses.unwrap()[0].ready);
    let pods = common::pods_of(&t, "default", "uns").await;
    let conds = pods[0].status.clone().unwrap().conditions.unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "PodScheduled" && c.reason.as_deref() == Some("Unschedulable"))
    );
}

/// Custom resources, what only the emulator can show: unknown fields pruned or refused
/// (`fieldValidation=Strict`, which v1.20 lacks), in-stream 410 and bookmarks on a CR watch,
/// strategic merge refused with 415, `kubectl get crds` columns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_resources_emulator_only() {
    let t = target().await;
    scenarios::install_toolhive_crds(&t).await;
    let path = "/apis/toolhive.stacklok.dev/v1beta1/namespaces/default/mcpservers";
    let body = json!({"apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPServer",
        "metadata": {"name": "p"}, "spec": {"image": "x", "bogus": 1}});
    let err = raw(
        &t.client,
        "POST",
        &format!("{path}?fieldValidation=Strict"),
        "application/json",
        body.clone(),
    )
    .await
    .unwrap_err();
    let kube::Error::Api(s) = err else {
        panic!("{err:?}")
    };
    assert_eq!((s.code, s.reason.as_str()), (400, "BadRequest"));
    assert!(
        s.message
            .ends_with("strict decoding error: unknown field \"spec.bogus\""),
        "{}",
        s.message
    );
    let created = raw(&t.client, "POST", path, "application/json", body)
        .await
        .unwrap();
    assert!(created["spec"].get("bogus").is_none(), "pruned: {created}");
    let err = raw(
        &t.client,
        "PATCH",
        &format!("{path}/p"),
        "application/strategic-merge-patch+json",
        json!({"spec": {"image": "y"}}),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 415),
        "{err:?}"
    );

    let api = scenarios::mcpservers(&t, "default");
    let emu = t.emulator.as_ref().unwrap();
    emu.compact();
    let mut s = api
        .watch(&WatchParams::default().timeout(5), "1")
        .await
        .unwrap()
        .boxed();
    match s.try_next().await.unwrap() {
        Some(WatchEvent::Error(e)) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected ERROR 410, got {other:?}"),
    }
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut s = api
        .watch(&WatchParams::default().timeout(3), &rv)
        .await
        .unwrap()
        .boxed();
    let mut bookmark = false;
    while let Some(ev) = s.try_next().await.unwrap() {
        bookmark |= matches!(ev, WatchEvent::Bookmark(_));
    }
    assert!(bookmark, "a bookmark before the deadline");
    let (ok, out, _) = t.kubectl(&["get", "crds"]).await;
    assert!(
        ok && out.starts_with("NAME") && out.contains("CREATED AT"),
        "{out}"
    );
}
