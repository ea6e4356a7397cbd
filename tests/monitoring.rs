//! Metrics collection against the Kubernetes API emulator (PodMetrics, the Prometheus endpoint
//! and MCP JSON-RPC through the service proxy), validation, one collector per interval across
//! processes, and the hourly rollup with retention on an injected clock.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Duration as Days, DurationRound, Utc};
use common::*;
use diesel_async::SimpleAsyncConnection;
use futures_util::StreamExt;
use hivegraph::auth::Principal;
use hivegraph::clock::ManualClock;
use hivegraph::config::MonitoringConfig;
use hivegraph::graphql::context::RequestCtx;
use hivegraph::monitoring::Monitor;
use hivegraph::monitoring::sample::Sample;
use kube_emulator::Emulator;
use serde_json::{Value, json};

/// A registry, server, cluster row and instance row, without a real cluster.
async fn seed_instance(app: &TestApp) -> (uuid::Uuid, String) {
    let mut c = app.db.conn().await;
    c.batch_execute(
        "INSERT INTO registries (name, url) VALUES ('reg-m', 'https://example.com/m');
         INSERT INTO servers (registry_id, name, original_name, image, transport)
           SELECT id, 'metered', 'io.example/metered', 'example/metered:1', 'http' FROM registries;
         INSERT INTO clusters (name, endpoint, status) VALUES ('nowhere', 'https://127.0.0.1:9', 'connected');
         INSERT INTO instances (server_id, cluster_id, name, namespace, status, phase)
           SELECT s.id, c.id, 'metered', 'team', 'running', 'ready' FROM servers s, clusters c;",
    )
    .await
    .unwrap();
    let id: uuid::Uuid = app
        .db
        .scalar("SELECT id FROM instances")
        .await
        .unwrap()
        .parse()
        .unwrap();
    let gid = hivegraph::ids::encode(hivegraph::ids::Kind::Instance, id).to_string();
    (id, gid)
}

fn monitor(app: &TestApp, clock: Arc<ManualClock>, cfg: MonitoringConfig) -> Monitor {
    Monitor::new(
        app.state.services.pool.clone(),
        app.state.services.k8s.clone(),
        cfg,
        clock,
    )
}

fn sample(instance: uuid::Uuid, at: DateTime<Utc>, cpu: f64) -> Sample {
    Sample {
        instance_id: instance,
        timestamp: at,
        cpu_usage: Some(cpu),
        memory_usage: Some(1_000_000),
        network_io: json!({}),
        request_count: Some(10),
        response_time: Some(5.0),
        error_rate: Some(10.0),
        health_checks: json!({ "mcp": { "ok": cpu < 50.0 } }),
    }
}

#[tokio::test]
async fn out_of_range_fields_are_clamped_or_nulled_and_stale_samples_refused() {
    let app = TestApp::spawn().await;
    let (id, _) = seed_instance(&app).await;
    let now = Utc::now();
    let m = monitor(&app, ManualClock::new(now), MonitoringConfig::default());
    assert!(m.store(sample(id, now, 42.0)).await.unwrap());
    // A CPU-hungry pod above its limit: the sample is kept, memory included.
    let busy = Sample {
        cpu_usage: Some(180.0),
        ..sample(id, now - Days::seconds(1), 1.0)
    };
    assert!(m.store(busy).await.unwrap());
    let bad_fields = Sample {
        error_rate: Some(250.0),
        memory_usage: Some(-5),
        ..sample(id, now - Days::seconds(2), 1.0)
    };
    assert!(m.store(bad_fields).await.unwrap());
    let refused = [
        // Older than the collection window.
        sample(id, now - Days::minutes(10), 1.0),
        // In the future.
        sample(id, now + Days::minutes(10), 1.0),
    ];
    for s in refused {
        assert!(!m.store(s.clone()).await.unwrap(), "stored {s:?}");
    }
    assert_eq!(m.rejected(), 2);
    assert_eq!(m.stored(), 3);
    let rows: serde_json::Value = serde_json::from_str(
        &app.db
            .scalar(
                "SELECT json_agg(json_build_array(cpu_usage, memory_usage, error_rate, health_checks) \
                 ORDER BY \"timestamp\" DESC) FROM monitoring_metrics",
            )
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(rows.as_array().map(Vec::len), Some(3));
    let busy = &rows[1];
    assert_eq!(
        (busy[0].as_f64(), busy[1].as_i64()),
        (Some(100.0), Some(1_000_000))
    );
    assert_eq!(busy[3]["adjusted"]["cpuUsage"]["raw"], 180.0);
    let bad = &rows[2];
    assert_eq!(bad[0].as_f64(), Some(1.0));
    assert!(bad[1].is_null(), "impossible memory is dropped: {bad}");
    assert_eq!(
        bad[2].as_f64(),
        Some(100.0),
        "an error rate above 100 is clamped"
    );
    assert_eq!(bad[3]["adjusted"]["errorRate"]["raw"], 250.0);
}

#[tokio::test]
async fn resource_usage_is_the_latest_sample_and_events_come_newest_first() {
    let app = TestApp::spawn().await;
    let (id, gid) = seed_instance(&app).await;
    let q = "query($id: ID!) { instance(id: $id) { serverId server { id } resourceUsage
        events { reason lastSeen cursor } page: events(first: 1) { reason cursor } } }";
    let r = app.graphql(q, json!({ "id": gid })).await;
    assert_ok(&r);
    let inst = &r["data"]["instance"];
    assert!(
        inst["resourceUsage"].is_null(),
        "null before the first sample: {inst}"
    );
    assert_eq!(inst["serverId"], inst["server"]["id"]);
    // Events stored oldest first come out newest first, and page by cursor.
    let mut c = app.db.conn().await;
    c.batch_execute(
        "UPDATE instances SET events = '[
           {\"reason\": \"Pulled\", \"firstSeen\": \"2026-01-01T00:00:01Z\", \"lastSeen\": \"2026-01-01T00:00:01Z\"},
           {\"reason\": \"Created\", \"firstSeen\": \"2026-01-01T00:00:02Z\", \"lastSeen\": \"2026-01-01T00:00:02Z\"},
           {\"reason\": \"Started\", \"firstSeen\": \"2026-01-01T00:00:03Z\", \"lastSeen\": \"2026-01-01T00:00:03Z\"}
         ]'::jsonb",
    )
    .await
    .unwrap();
    let now = Utc::now();
    let m = monitor(&app, ManualClock::new(now), MonitoringConfig::default());
    assert!(
        m.store(sample(id, now - Days::seconds(5), 10.0))
            .await
            .unwrap()
    );
    let latest = Sample {
        memory_usage: Some(7_340_032),
        ..sample(id, now, 33.5)
    };
    assert!(m.store(latest).await.unwrap());
    let r = app.graphql(q, json!({ "id": gid })).await;
    assert_ok(&r);
    let inst = &r["data"]["instance"];
    let usage = &inst["resourceUsage"];
    assert_eq!(usage["cpuPercent"], 33.5, "{usage}");
    assert_eq!(usage["memoryBytes"], 7_340_032, "{usage}");
    let reasons: Vec<&str> = inst["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["Started", "Created", "Pulled"]);
    assert_eq!(inst["page"].as_array().unwrap().len(), 1);
    let after = inst["page"][0]["cursor"].as_str().unwrap();
    let r = app
        .graphql(
            "query($id: ID!, $a: String) { instance(id: $id) { events(first: 5, after: $a) { reason } } }",
            json!({ "id": gid, "a": after }),
        )
        .await;
    assert_ok(&r);
    assert_eq!(
        r["data"]["instance"]["events"],
        json!([{ "reason": "Created" }, { "reason": "Pulled" }])
    );
    let r = app
        .graphql(
            "query($id: ID!) { instance(id: $id) { events(after: \"nope\") { reason } } }",
            json!({ "id": gid }),
        )
        .await;
    assert_eq!(error_code(&r).as_deref(), Some("BAD_USER_INPUT"), "{r}");
}

#[tokio::test]
async fn only_one_process_collects_a_cluster_per_interval() {
    let app = TestApp::spawn().await;
    seed_instance(&app).await;
    let clock = ManualClock::new(Utc::now());
    let a = monitor(&app, clock.clone(), MonitoringConfig::default());
    let b = monitor(&app, clock.clone(), MonitoringConfig::default());
    let (ra, rb) = tokio::join!(a.collect(), b.collect());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.claimed + rb.claimed, 1, "{ra:?} {rb:?}");
    assert_eq!(ra.skipped + rb.skipped, 1, "{ra:?} {rb:?}");
    // The next interval is claimed again.
    clock.set(clock_now(&clock) + Days::seconds(15));
    let r = b.collect().await.unwrap();
    assert_eq!(r.claimed, 1, "{r:?}");
}

fn clock_now(c: &ManualClock) -> DateTime<Utc> {
    use hivegraph::clock::Clock;
    c.now()
}

#[tokio::test]
async fn hourly_rollups_and_retention_follow_the_clock() {
    let app = TestApp::spawn().await;
    let (id, gid) = seed_instance(&app).await;
    let now = Utc::now().duration_trunc(Days::hours(1)).unwrap() + Days::minutes(30);
    let clock = ManualClock::new(now);
    let m = monitor(&app, clock.clone(), MonitoringConfig::default());
    // Samples at several ages: two in one hour 10 days ago, one 3 hours ago, one 100 days ago,
    // one in the current (incomplete) hour. They are written as the collector writes them,
    // each with the clock at its own time.
    let hour_10d = now - Days::days(10) - Days::minutes(30);
    let at = [
        (hour_10d + Days::minutes(5), 20.0),
        (hour_10d + Days::minutes(35), 60.0),
        (now - Days::hours(3), 30.0),
        (now - Days::days(100), 10.0),
        (now - Days::minutes(5), 40.0),
    ];
    for (t, cpu) in at {
        clock.set(t);
        assert!(m.store(sample(id, t, cpu)).await.unwrap());
    }
    clock.set(now);

    let r = m.rollup().await.unwrap();
    assert!(r.ran);
    // Hours within 90 days and complete: the 10-day-old hour and the 3-hour-old one.
    assert_eq!(r.hours, 2, "{r:?}");
    assert_eq!(r.raw_deleted, 3, "older than 7 days: {r:?}");
    assert_eq!(app.db.count("monitoring_metrics").await, 2);
    assert_eq!(app.db.count("monitoring_metrics_hourly").await, 2);

    let q = "query($id: ID!, $r: MetricsResolution!) { instance(id: $id) {
        metrics(resolution: $r, first: 10) { totalCount edges { node {
          timestamp resolution samples cpuUsage cpuUsageMax requestCount errorRate healthyRatio } } } } }";
    let resp = app.graphql(q, json!({ "id": gid, "r": "HOURLY" })).await;
    assert_ok(&resp);
    let conn = &resp["data"]["instance"]["metrics"];
    assert_eq!(conn["totalCount"], 2);
    let old = &conn["edges"][1]["node"];
    assert_eq!(old["resolution"], "HOURLY");
    assert_eq!(old["samples"], 2);
    assert_eq!(old["cpuUsage"], 40.0);
    assert_eq!(old["cpuUsageMax"], 60.0);
    assert_eq!(old["requestCount"], 20);
    assert_eq!(old["errorRate"], 10.0);
    assert_eq!(old["healthyRatio"], 0.5);
    let ts: DateTime<Utc> = old["timestamp"].as_str().unwrap().parse().unwrap();
    assert_eq!(ts, hour_10d);

    let raw = app.graphql(q, json!({ "id": gid, "r": "RAW" })).await;
    assert_ok(&raw);
    assert_eq!(raw["data"]["instance"]["metrics"]["totalCount"], 2);
    assert_eq!(
        raw["data"]["instance"]["metrics"]["edges"][0]["node"]["resolution"],
        "RAW"
    );

    // A time range that selects only the older hour.
    let ranged = app
        .graphql(
            "query($id: ID!, $s: DateTime!, $u: DateTime!) { instance(id: $id) {
               metrics(resolution: HOURLY, since: $s, until: $u) { edges { node { samples } } } } }",
            json!({ "id": gid, "s": (hour_10d + Days::minutes(10)).to_rfc3339(), "u": (now - Days::days(1)).to_rfc3339() }),
        )
        .await;
    assert_ok(&ranged);
    assert_eq!(
        ranged["data"]["instance"]["metrics"]["edges"],
        json!([{ "node": { "samples": 2 } }])
    );
    // A reversed range is a typed input error.
    let bad = app
        .graphql(
            "query($id: ID!, $s: DateTime!) { instance(id: $id) {
               metrics(since: $s, until: $s) { totalCount } } }",
            json!({ "id": gid, "s": now.to_rfc3339() }),
        )
        .await;
    assert_eq!(error_code(&bad).as_deref(), Some("BAD_USER_INPUT"));
    assert_eq!(error_field(&bad).as_deref(), Some("until"));

    // Running again changes nothing; two replicas at once are safe.
    let m2 = monitor(&app, clock.clone(), MonitoringConfig::default());
    let (a, b) = tokio::join!(m.rollup(), m2.rollup());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.hours + b.hours, 0, "{a:?} {b:?}");
    assert_eq!(app.db.count("monitoring_metrics_hourly").await, 2);

    // 85 days later the 10-day-old hour is past 90 days; everything raw is past 7 days.
    clock.set(now + Days::days(85));
    let r = m.rollup().await.unwrap();
    assert!(r.ran);
    assert_eq!(app.db.count("monitoring_metrics").await, 0);
    assert_eq!(
        app.db.count("monitoring_metrics_hourly").await,
        2,
        "the hour of 3 h ago and the then-current hour remain: {r:?}"
    );
    assert_eq!(r.hourly_deleted, 1, "{r:?}");
}

async fn seed_server(app: &TestApp, image: &str, transport: &str) -> String {
    let mut c = app.db.conn().await;
    c.batch_execute(&format!(
        "INSERT INTO registries (name, url) VALUES ('reg-live', 'https://example.com/live');
         INSERT INTO servers (registry_id, name, original_name, image, transport)
         SELECT id, 'live', 'io.example/live', '{image}', '{transport}' FROM registries;"
    ))
    .await
    .unwrap();
    let id: uuid::Uuid = app
        .db
        .scalar("SELECT id FROM servers")
        .await
        .unwrap()
        .parse()
        .unwrap();
    hivegraph::ids::encode(hivegraph::ids::Kind::Server, id).to_string()
}

#[tokio::test]
async fn metrics_of_a_deployed_server_arrive_on_a_fast_interval() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let emu = Emulator::builder()
        .speed(20.0)
        .namespaces(["team"])
        .start()
        .await
        .expect("emulator");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    emu.write_kubeconfig(&kubeconfig).unwrap();
    let app = TestApp::spawn_with(move |c| {
        c.serve.k8s.kubeconfig = Some(kubeconfig);
        c.serve.monitoring.metrics_interval_ms = 300;
        c.database.pool_size = 4;
        c.database.wait_ms = 10_000;
    })
    .await;
    let cluster = app
        .graphql(
            "mutation { registerCluster(input: { name: \"emu\", context: \"kube-emulator\" }) { id } }",
            json!({}),
        )
        .await;
    assert_ok(&cluster);
    let cluster = cluster["data"]["registerCluster"]["id"].clone();
    let server = seed_server(&app, "example/live:1", "http").await;
    let op = app
        .graphql(
            "mutation($i: DeployServerInput!) { deployServer(input: $i) { id instanceId } }",
            json!({ "i": { "serverId": server, "clusterId": cluster, "namespace": "team", "name": "live",
                    "resources": { "limits": { "cpu": "200m", "memory": "128Mi" } } } }),
        )
        .await;
    assert_ok(&op);
    let instance = op["data"]["deployServer"]["instanceId"]
        .as_str()
        .unwrap()
        .to_string();

    // Subscribe before anything is measured: the stream has no first state yet.
    let rc = RequestCtx::new(
        app.state.services.pool.clone(),
        "test".into(),
        Principal::local(),
    );
    let req = async_graphql::Request::new(
        "subscription($id: ID!) { instanceMetrics(instanceId: $id) {
           timestamp cpuUsage memoryUsage requestCount responseTime errorRate networkIO healthChecks } }",
    )
    .variables(async_graphql::Variables::from_json(json!({ "id": instance })))
    .data(Arc::new(rc));
    let mut stream = Box::pin(app.state.schema.execute_stream(req));
    app.state.services.monitor.start();

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut samples: Vec<Value> = Vec::new();
    while samples.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        let resp = tokio::time::timeout(left, stream.next())
            .await
            .expect("three samples within 60 s")
            .expect("the stream is open");
        let v = serde_json::to_value(&resp).unwrap();
        assert!(v.get("errors").is_none(), "{v}");
        samples.push(v["data"]["instanceMetrics"].clone());
    }
    app.state.services.monitor.shutdown();
    let last = samples.last().unwrap();
    let cpu = last["cpuUsage"].as_f64().expect("cpu measured");
    assert!((0.0..=100.0).contains(&cpu), "{last}");
    assert!(last["memoryUsage"].as_f64().unwrap() > 1e6, "{last}");
    assert_eq!(
        last["healthChecks"]["podMetrics"]["cpuBasis"], "limits",
        "{last}"
    );
    // Once the pod is Ready, the Prometheus endpoint and the MCP health check answer.
    let ready = samples
        .iter()
        .find(|s| s["healthChecks"]["mcp"]["ok"] == json!(true))
        .unwrap_or_else(|| panic!("a healthy MCP check: {samples:#?}"));
    assert!(ready["requestCount"].as_i64().unwrap() >= 1, "{ready}");
    assert!(ready["errorRate"].as_f64().is_some(), "{ready}");
    assert_eq!(
        ready["healthChecks"]["mcp"]["protocolVersion"], "2025-03-26",
        "{ready}"
    );
    let t0: DateTime<Utc> = samples[0]["timestamp"].as_str().unwrap().parse().unwrap();
    let t2: DateTime<Utc> = samples[2]["timestamp"].as_str().unwrap().parse().unwrap();
    assert!(t2 > t0);
    let q = app
        .graphql(
            "query($id: ID!) { instance(id: $id) { latestMetrics { cpuUsage } metrics(first: 50) { totalCount } } }",
            json!({ "id": instance }),
        )
        .await;
    assert_ok(&q);
    assert!(
        q["data"]["instance"]["metrics"]["totalCount"]
            .as_i64()
            .unwrap()
            >= 3
    );
    drop(emu);
}

/// A Kubernetes API server that accepts connections and never answers.
async fn tarpit_kubeconfig(dir: &std::path::Path) -> std::path::PathBuf {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: tarpit\n\
             clusters: [{{name: tarpit, cluster: {{server: \"http://{addr}\"}}}}]\n\
             users: [{{name: u, user: {{token: t}}}}]\n\
             contexts: [{{name: tarpit, context: {{cluster: tarpit, user: u}}}}]\n"
        ),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn a_stopped_process_gives_back_the_claim_of_its_unfinished_round() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = tarpit_kubeconfig(dir.path()).await;
    let app = TestApp::spawn_with(move |c| {
        c.serve.k8s.kubeconfig = Some(kubeconfig);
        c.serve.k8s.timeout_ms = 60_000;
    })
    .await;
    seed_instance(&app).await;
    let mut c = app.db.conn().await;
    c.batch_execute("UPDATE clusters SET context = 'tarpit'")
        .await
        .unwrap();
    let clock = ManualClock::new(Utc::now());
    let a = monitor(&app, clock.clone(), MonitoringConfig::default());
    // `a` claims the interval, then hangs on the cluster; it is stopped mid-round.
    a.start();
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.db.count("metrics_claims").await == 0 {
        assert!(Instant::now() < deadline, "no claim");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.shutdown();
    let b = monitor(&app, clock.clone(), MonitoringConfig::default());
    let before = b.collect().await.unwrap();
    assert_eq!((before.claimed, before.skipped), (0, 1), "{before:?}");
    a.release_claims().await;
    assert_eq!(app.db.count("metrics_claims").await, 0);
    // Another process measures the same interval at once.
    let after = tokio::time::timeout(Duration::from_millis(500), b.collect()).await;
    assert!(
        after.is_err(),
        "b claimed the interval and is now measuring the cluster"
    );
    assert_eq!(app.db.count("metrics_claims").await, 1);
}
