//! A wire-faithful Kubernetes API emulator with KWOK-style simulated pod lifecycles.
//!
//! Start one in-process with [`Emulator::builder`]`().start().await`; it listens on
//! `127.0.0.1:0` by default and can write a kubeconfig usable by kube-rs and kubectl.

pub mod access_log;
pub mod controllers;
pub mod crd;
pub mod defaults;
pub mod discovery;
pub mod kubelet;
pub mod operator;
pub mod patch;
pub mod policy;
pub mod protobuf;
pub mod resources;
pub mod schema_validate;
pub mod selectors;
pub mod server;
pub mod statefulsets;
pub mod status;
pub mod store;
pub mod tables;
pub mod tls;

pub use policy::{AccessPolicy, PolicyRule};

use serde_json::json;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use store::Store;
use tokio::sync::watch;

/// Converts simulated durations into real ones (`speed` = simulated seconds per real second).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub speed: f64,
}

impl Clock {
    /// Real duration for a simulated one.
    pub fn real(&self, sim: Duration) -> Duration {
        Duration::from_secs_f64(sim.as_secs_f64() / self.speed.max(0.001))
    }
    pub fn real_secs(&self, sim_secs: f64) -> Duration {
        self.real(Duration::from_secs_f64(sim_secs.max(0.0)))
    }
    /// Simulated seconds elapsed for a real duration.
    pub fn sim_secs(&self, real: Duration) -> f64 {
        real.as_secs_f64() * self.speed
    }
    pub async fn sleep(&self, sim_secs: f64) {
        tokio::time::sleep(self.real_secs(sim_secs)).await
    }
}

/// Settings of an emulator instance.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub tls: bool,
    /// Bearer token required on every request (None: anything goes).
    pub token: Option<String>,
    /// User name reported in Forbidden messages.
    pub user: String,
    pub speed: f64,
    pub namespaces: Vec<String>,
    pub policy: AccessPolicy,
    /// Watch history length (events); older resourceVersions get 410 Gone.
    pub history_limit: usize,
    /// Real interval between BOOKMARK events on watches that asked for them.
    pub bookmark_interval: Duration,
    /// Reported by /version, e.g. (1, 33).
    pub version: (u32, u32, u32),
    /// Name of the simulated node.
    pub node_name: String,
    /// Install the bundled ToolHive CRDs at start and run the simulated ToolHive operator.
    pub toolhive_operator: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: true,
            token: Some(format!("emulator-{}", uuid::Uuid::new_v4().simple())),
            user: "emulator-user".into(),
            speed: 1.0,
            namespaces: vec![
                "default".into(),
                "kube-system".into(),
                "kube-public".into(),
                "kube-node-lease".into(),
            ],
            policy: AccessPolicy::Admin,
            history_limit: 100_000,
            bookmark_interval: Duration::from_secs(60),
            version: (1, 33, 0),
            node_name: "kwok-node-0".into(),
            toolhive_operator: false,
        }
    }
}

/// State shared by the HTTP server and the controllers.
pub struct Shared {
    pub store: Arc<Store>,
    pub config: Config,
    pub clock: Clock,
    pub policy: RwLock<AccessPolicy>,
    pub reject_auth: AtomicBool,
    pub logs: kubelet::Logs,
    pub addr: RwLock<SocketAddr>,
    pub outage: watch::Sender<bool>,
    pub access_log: access_log::AccessLog,
}

impl Shared {
    pub fn policy(&self) -> AccessPolicy {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Builder for [`Emulator`].
#[derive(Debug, Clone, Default)]
pub struct EmulatorBuilder {
    config: Config,
}

impl EmulatorBuilder {
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.config.listen = addr;
        self
    }
    pub fn tls(mut self, tls: bool) -> Self {
        self.config.tls = tls;
        self
    }
    pub fn token(mut self, token: Option<String>) -> Self {
        self.config.token = token;
        self
    }
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.config.user = user.into();
        self
    }
    /// Simulated seconds per real second (10.0 makes a 10 s back-off take 1 s).
    pub fn speed(mut self, speed: f64) -> Self {
        self.config.speed = speed;
        self
    }
    /// Namespaces created at start (in addition to `default`, `kube-system` & co.).
    pub fn namespaces<I: IntoIterator<Item = S>, S: Into<String>>(mut self, ns: I) -> Self {
        for n in ns {
            let n = n.into();
            if !self.config.namespaces.contains(&n) {
                self.config.namespaces.push(n);
            }
        }
        self
    }
    pub fn policy(mut self, policy: AccessPolicy) -> Self {
        self.config.policy = policy;
        self
    }
    pub fn history_limit(mut self, n: usize) -> Self {
        self.config.history_limit = n;
        self
    }
    pub fn bookmark_interval(mut self, d: Duration) -> Self {
        self.config.bookmark_interval = d;
        self
    }
    pub fn version(mut self, major: u32, minor: u32, patch: u32) -> Self {
        self.config.version = (major, minor, patch);
        self
    }
    /// Install the ToolHive CRDs at start and run the simulated ToolHive operator.
    pub fn toolhive_operator(mut self, on: bool) -> Self {
        self.config.toolhive_operator = on;
        self
    }
    pub async fn start(self) -> anyhow::Result<Emulator> {
        Emulator::start(self.config).await
    }
}

/// A running emulator. Dropping it stops the server and the controllers.
pub struct Emulator {
    shared: Arc<Shared>,
    ca_pem: Option<String>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.shared.outage.send_replace(true);
    }
}

impl Emulator {
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder::default()
    }

    pub async fn start(config: Config) -> anyhow::Result<Emulator> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = Store::new(config.history_limit);
        let (outage, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            store,
            clock: Clock {
                speed: config.speed,
            },
            policy: RwLock::new(config.policy.clone()),
            reject_auth: AtomicBool::new(false),
            logs: kubelet::Logs::default(),
            addr: RwLock::new(config.listen),
            outage,
            access_log: access_log::AccessLog::default(),
            config,
        });
        bootstrap(&shared);
        let listener = tokio::net::TcpListener::bind(shared.config.listen).await?;
        let addr = listener.local_addr()?;
        *shared.addr.write().unwrap() = addr;
        let (tls_config, ca_pem) = if shared.config.tls {
            let (cfg, ca) = tls::server_config()?;
            (Some(Arc::new(cfg)), Some(ca))
        } else {
            (None, None)
        };
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(server::serve(
            shared.clone(),
            listener,
            tls_config,
        )));
        tasks.extend(controllers::spawn(shared.clone()));
        tasks.push(tokio::spawn(kubelet::run(shared.clone())));
        if shared.config.toolhive_operator {
            tasks.push(tokio::spawn(operator::run(shared.clone())));
        }
        Ok(Emulator {
            shared,
            ca_pem,
            tasks,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        *self.shared.addr.read().unwrap()
    }

    /// `https://127.0.0.1:PORT` (or http).
    pub fn url(&self) -> String {
        let scheme = if self.shared.config.tls {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr())
    }

    pub fn token(&self) -> Option<&str> {
        self.shared.config.token.as_deref()
    }

    /// PEM of the CA that signed the serving certificate (TLS mode).
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.shared.store
    }

    /// A kubeconfig document (YAML) for this emulator.
    pub fn kubeconfig_yaml(&self) -> String {
        tls::kubeconfig_yaml(&self.url(), self.ca_pem(), self.token())
    }

    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml())
    }

    /// Replace the access policy (SelfSubjectAccessReview/RulesReview and enforcement).
    pub fn set_policy(&self, policy: AccessPolicy) {
        *self.shared.policy.write().unwrap() = policy;
    }

    /// Every distinct (verb, group, resource, allowed) authorization decision so far.
    pub fn access_log(&self) -> std::collections::BTreeSet<access_log::Access> {
        self.shared.access_log.snapshot()
    }

    /// Make every request fail with 401 Unauthorized (credentials revoked).
    pub fn set_reject_credentials(&self, reject: bool) {
        self.shared.reject_auth.store(reject, Ordering::SeqCst);
    }

    /// Simulate an outage: close the listener and all connections (connection refused)
    /// until called again with `false` (the same port is re-bound).
    pub fn set_outage(&self, down: bool) {
        self.shared.outage.send_replace(down);
    }

    /// Drop the watch history: watches from any older resourceVersion get 410 Gone.
    pub fn compact(&self) {
        self.shared.store.compact();
    }

    pub fn speed(&self) -> f64 {
        self.shared.clock.speed
    }
}

fn bootstrap(shared: &Shared) {
    let store = &shared.store;
    let ns_def = resources::by_storage("namespaces");
    for ns in &shared.config.namespaces {
        let _ = store.create(
            ns_def,
            "",
            defaults::namespace(json!({"metadata": {"name": ns}})),
        );
    }
    let node = kubelet::node_object(&shared.config.node_name);
    let _ = store.create(resources::by_storage("nodes"), "", node);
    for ns in &shared.config.namespaces {
        let _ = store.create(
            resources::by_storage("serviceaccounts"),
            ns,
            json!({"metadata": {"name": "default"}}),
        );
    }
    if shared.config.toolhive_operator {
        let def = resources::by_storage(crd::CRD_STORAGE);
        for c in crd::toolhive_crds() {
            let _ = store.create(def, "", crd::establish_status(c));
        }
    }
    let _ = store.create(
        resources::by_storage("services"),
        "default",
        defaults::service(json!({
            "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}
        })),
    );
}
