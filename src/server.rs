//! Running the gateway: build the services, serve HTTP, shut down gracefully.

use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Config, ShutdownConfig};
use crate::http::AppState;
use crate::secrets::Keyring;
use crate::state::Services;
use crate::sync::SyncService;

/// Builds the application state for `config`.
pub fn build_state(config: Config, keys: Keyring) -> anyhow::Result<AppState> {
    let pool = crate::db::pool(&config.database)?;
    let keys = Arc::new(keys);
    // Read caches, invalidated by writes in this process and by the database's change
    // notifications from every process.
    // The pubsub hub's listener applies every process's change notifications to them.
    let caches = crate::cache::Caches::from_env();
    let sync = SyncService::new(
        pool.clone(),
        keys.clone(),
        config.database.url(),
        config.serve.sync.clone(),
        &config.serve.registries,
        caches.clone(),
    )?;
    let auth = match config.serve.auth {
        crate::config::AuthMode::None => crate::auth::Authenticator::Off,
        crate::config::AuthMode::Jwt => crate::auth::Authenticator::jwt(
            crate::auth::JwtSettings::from_config(&config.serve.jwt),
        )?,
    };
    let k8s = crate::k8s::ClusterManager::new(
        pool.clone(),
        config.serve.k8s.clone(),
        keys.clone(),
        &caches,
    )?;
    let pubsub = crate::pubsub::PubSub::new(
        pool.clone(),
        config.database.url().to_string(),
        caches.clone(),
    );
    let cluster_manager = k8s.clone();
    pubsub.on_cluster_change(move |id| cluster_manager.cluster_changed(id));
    pubsub.start();
    let monitor = crate::monitoring::Monitor::new(
        pool.clone(),
        k8s.clone(),
        config.serve.monitoring.clone(),
        Arc::new(crate::clock::SystemClock),
    );
    let services = Services {
        monitor,
        caches,
        pubsub,
        k8s,
        auth,
        sync,
        pool,
        config: Arc::new(config),
        keys,
    };
    Ok(AppState::new(services))
}

/// Serves until SIGINT or SIGTERM, then shuts down gracefully: `/readyz` turns unready at once,
/// connections are still accepted for `HIVEGRAPH_DRAIN_DELAY_MS`, then in-flight requests get
/// `HIVEGRAPH_SHUTDOWN_GRACE_MS` to finish while websockets are closed with 1012, and finally
/// syncs, operation leases and metric claims are handed back for other processes to take.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    if config.serve.auth == crate::config::AuthMode::None {
        tracing::warn!(listen = %config.serve.listen, "authentication is off (HIVEGRAPH_AUTH=none): loopback only");
    }
    let applied = crate::db::run_migrations(config.database.url()).await?;
    if !applied.is_empty() {
        tracing::info!(?applied, "applied migrations");
    }
    let keys = Keyring::load(config.serve.mode)?;
    let listen = config.serve.listen;
    let run_scheduler = config.serve.sync.scheduler;
    let shutdown = config.serve.shutdown.clone();
    let state = build_state(config, keys)?;
    let services = state.services.clone();
    // Cluster checks, watchers, and pick-up of operations left by a previous process.
    services.k8s.start_background();
    // Retention of deployment logs and the audit log (one replica at a time).
    let retention =
        crate::retention::spawn(services.pool.clone(), Arc::new(crate::clock::SystemClock));
    // Metrics collection and the rollup/retention job.
    services.monitor.start();
    let sockets = state.sockets.clone();
    let draining = state.draining.clone();
    let app = crate::http::router(state);
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    // The registry sync scheduler: periodic syncs, retries with backoff, crash recovery.
    let scheduler = run_scheduler.then(|| services.sync.spawn_scheduler());
    tracing::info!(%addr, "hivegraph listening; GraphiQL at http://{addr}/graphql");
    serve_draining(
        listener,
        app,
        &sockets,
        draining,
        &shutdown,
        shutdown_signal(),
    )
    .await?;
    sockets.drained(Duration::from_secs(5)).await;
    hand_over(&services).await;
    if let Some(s) = scheduler {
        let _ = s.await;
    }
    retention.abort();
    tracing::info!("shut down");
    Ok(())
}

/// Serves `app` until `signal`, then drains: `draining` is set at once (`/readyz` answers 503),
/// connections are still accepted for the drain delay, then websockets are told to reconnect
/// (1012), new connections are refused, and in-flight requests get the shutdown grace to finish.
pub async fn serve_draining(
    listener: TcpListener,
    app: axum::Router,
    sockets: &crate::http::ws::Sockets,
    draining: crate::http::Draining,
    cfg: &ShutdownConfig,
    signal: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop, stopped) = watch::channel(false);
    let drain_delay = Duration::from_millis(cfg.drain_delay_ms);
    let closing = sockets.clone();
    let serving = axum::serve(listener, app).with_graceful_shutdown(async move {
        signal.await;
        draining.begin();
        stop.send_replace(true);
        // Load balancers learn from /readyz that this process is going; until they do, it
        // keeps serving new connections.
        tokio::time::sleep(drain_delay).await;
        tracing::info!("drain delay over: refusing new connections");
        // Websockets are not part of axum's drain: tell every client to reconnect (1012).
        closing.shutdown();
    });
    let grace = drain_delay + Duration::from_millis(cfg.shutdown_grace_ms);
    serve_until_drained(serving.into_future(), stopped, grace).await
}

/// Runs the server; once shutdown has begun, it gets at most `grace` to finish in-flight
/// requests, after which they are cut.
async fn serve_until_drained(
    serving: impl Future<Output = std::io::Result<()>>,
    mut stopped: watch::Receiver<bool>,
    grace: Duration,
) -> anyhow::Result<()> {
    tokio::pin!(serving);
    tokio::select! {
        r = &mut serving => return Ok(r?),
        _ = stopped.wait_for(|s| *s) => {}
    }
    match tokio::time::timeout(grace, serving).await {
        Ok(r) => Ok(r?),
        Err(_) => {
            tracing::warn!(
                ?grace,
                "requests still in flight after the shutdown grace: cut"
            );
            Ok(())
        }
    }
}

/// Stops the background work and gives back what other processes wait for: interrupted syncs
/// end in ERROR and are due again at once, drivers release their operation leases, and the
/// metric collection claims of unfinished rounds are dropped.
async fn hand_over(services: &Services) {
    services.monitor.shutdown();
    tokio::join!(
        services.sync.shutdown(Duration::from_secs(10)),
        services.k8s.shutdown(),
        services.monitor.release_claims(),
    );
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown requested; draining");
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One HTTP/1.1 GET on a new connection: the response text, or an error when refused.
    async fn fetch(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out)
    }

    /// A server with a fast and a slow (`ms`) route, stopped by the returned sender.
    async fn server(
        ms: u64,
        cfg: ShutdownConfig,
    ) -> (
        std::net::SocketAddr,
        crate::http::Draining,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    ) {
        let slow = move || async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            "done"
        };
        let app = axum::Router::new()
            .route("/slow", get(slow))
            .route("/fast", get(|| async { "ok" }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let draining = crate::http::Draining::default();
        let d = draining.clone();
        let task = tokio::spawn(async move {
            let sockets = crate::http::ws::Sockets::default();
            let signal = async move {
                let _ = rx.await;
            };
            serve_draining(listener, app, &sockets, d, &cfg, signal).await
        });
        (addr, draining, tx, task)
    }

    #[tokio::test]
    async fn in_flight_requests_finish_and_connections_are_accepted_during_the_drain_delay() {
        let cfg = ShutdownConfig {
            drain_delay_ms: 400,
            shutdown_grace_ms: 5_000,
        };
        let (addr, draining, stop, task) = server(1_000, cfg).await;
        let slow = tokio::spawn(fetch(addr, "/slow"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!draining.is_draining());
        stop.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(draining.is_draining(), "unready at once");
        let fresh = fetch(addr, "/fast")
            .await
            .expect("served during the drain delay");
        assert!(
            fresh.starts_with("HTTP/1.1 200") && fresh.ends_with("ok"),
            "{fresh}"
        );
        let slow = slow.await.unwrap().expect("the in-flight request finishes");
        assert!(
            slow.starts_with("HTTP/1.1 200") && slow.ends_with("done"),
            "{slow}"
        );
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the server ends")
            .unwrap()
            .unwrap();
        assert!(
            fetch(addr, "/fast").await.is_err(),
            "refused after the drain"
        );
    }

    #[tokio::test]
    async fn requests_longer_than_the_grace_are_cut() {
        let cfg = ShutdownConfig {
            drain_delay_ms: 0,
            shutdown_grace_ms: 200,
        };
        let (addr, _, stop, task) = server(60_000, cfg).await;
        let _slow = tokio::spawn(fetch(addr, "/slow"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t = std::time::Instant::now();
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the server ends after the grace")
            .unwrap()
            .unwrap();
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
}
