//! Shared harness: a scenario target is a kubeconfig + kube::Client + a time scale, so the
//! same scenarios can run against the emulator or, unchanged, against a real apiserver
//! (set `KUBE_SCENARIO_KUBECONFIG`; the `real_cluster` tests then use it).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use kube_emulator::Emulator;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::process::Command;

pub struct Target {
    pub client: Client,
    pub kubeconfig: PathBuf,
    /// Simulated seconds per real second (1.0 for a real cluster).
    pub speed: f64,
    pub emulator: Option<Emulator>,
    _dir: tempfile::TempDir,
}

impl Target {
    /// A fresh emulator on 127.0.0.1:0 with its own kubeconfig.
    pub async fn emulator(speed: f64) -> Target {
        Self::from_emulator(
            Emulator::builder()
                .speed(speed)
                .start()
                .await
                .expect("start emulator"),
        )
        .await
    }

    pub async fn from_emulator(emu: Emulator) -> Target {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        emu.write_kubeconfig(&path).unwrap();
        let client = client_for(&path).await;
        let speed = emu.speed();
        Target {
            client,
            kubeconfig: path,
            speed,
            emulator: Some(emu),
            _dir: dir,
        }
    }

    /// A real cluster named by `KUBE_SCENARIO_KUBECONFIG`, if set.
    #[expect(
        clippy::disallowed_methods,
        reason = "the test harness's own setting, not the emulator's"
    )]
    pub async fn real() -> Option<Target> {
        let p = std::env::var("KUBE_SCENARIO_KUBECONFIG").ok()?;
        let path = PathBuf::from(p);
        let client = client_for(&path).await;
        Some(Target {
            client,
            kubeconfig: path,
            speed: 1.0,
            emulator: None,
            _dir: tempfile::tempdir().unwrap(),
        })
    }

    /// Real time budget for something that takes `sim_secs` simulated seconds (plus slack).
    pub fn budget(&self, sim_secs: f64) -> Duration {
        Duration::from_secs_f64(sim_secs / self.speed + 10.0)
    }

    /// Create a uniquely named namespace for one scenario.
    pub async fn namespace(&self, prefix: &str) -> String {
        let name = format!(
            "{prefix}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..6]
        );
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        api.create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        name
    }

    pub async fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .output()
            .await
            .expect("run kubectl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub async fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> (bool, String, String) {
        use tokio::io::AsyncWriteExt;
        let mut child = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run kubectl");
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).await.unwrap();
        drop(input);
        let out = child.wait_with_output().await.unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

pub async fn client_for(path: &std::path::Path) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = Kubeconfig::read_from(path).expect("read kubeconfig");
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    Client::try_from(cfg).expect("client")
}

/// A Deployment for the scenarios. `scenario` selects the emulator lifecycle; the image and
/// command are chosen so that a real cluster behaves the same way.
pub fn deployment(name: &str, replicas: i32, scenario: &str, progress_deadline: i32) -> Value {
    let (image, command): (&str, Value) = match scenario {
        "image-pull-failure" => ("registry.invalid/hivegraph/does-not-exist:1.0", json!(null)),
        "crash-loop" => (
            "busybox:1.36",
            json!(["sh", "-c", "echo starting; sleep 1; echo fatal; exit 1"]),
        ),
        _ => (
            "busybox:1.36",
            json!([
                "sh",
                "-c",
                "echo starting MCP server; while true; do echo heartbeat; sleep 5; done"
            ]),
        ),
    };
    let mut c = json!({"name": "mcp", "image": image, "ports": [{"containerPort": 8080}]});
    if !command.is_null() {
        c["command"] = command;
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "progressDeadlineSeconds": progress_deadline,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": {"emulator.hivegraph.dev/scenario": scenario}},
                "spec": {"containers": [c], "terminationGracePeriodSeconds": 1}
            }
        }
    })
}

pub async fn wait_for<F, Fut>(what: &str, budget: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if f().await {
            return;
        }
        if start.elapsed() > budget {
            panic!("timed out after {budget:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn wait_deployment_ready(t: &Target, ns: &str, name: &str, replicas: i32) {
    let api: Api<Deployment> = Api::namespaced(t.client.clone(), ns);
    wait_for(&format!("deployment {name} ready"), t.budget(30.0), || {
        let api = api.clone();
        async move {
            api.get(name)
                .await
                .ok()
                .and_then(|d| d.status)
                .is_some_and(|s| {
                    s.available_replicas == Some(replicas) && s.updated_replicas == Some(replicas)
                })
        }
    })
    .await;
}

pub async fn pods_of(t: &Target, ns: &str, app: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(t.client.clone(), ns);
    api.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
}
