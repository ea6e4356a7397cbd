//! Running the gateway: build the services, serve HTTP, shut down gracefully.

use std::sync::Arc;

use secrecy::SecretString;
use tokio::net::TcpListener;

use crate::config::{Config, Mode};
use crate::secrets::Keyring;
use crate::state::{AppState, Services};
use crate::sync::SyncService;

/// Loads the key-encryption key: `HIVEGRAPH_SECRET_KEY` (plus optional
/// `HIVEGRAPH_SECRET_KEY_PREVIOUS`, comma-separated, during a rotation). In dev mode a missing key
/// gives an ephemeral one, with a warning.
pub fn load_keyring(mode: Mode) -> anyhow::Result<Keyring> {
    match std::env::var("HIVEGRAPH_SECRET_KEY") {
        Ok(k) if !k.trim().is_empty() => {
            let previous: Vec<SecretString> = std::env::var("HIVEGRAPH_SECRET_KEY_PREVIOUS")
                .unwrap_or_default()
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| SecretString::from(s.trim().to_string()))
                .collect();
            Ok(Keyring::new(&SecretString::from(k), &previous)?)
        }
        _ if mode == Mode::Dev => {
            tracing::warn!(
                "HIVEGRAPH_SECRET_KEY is not set: using an ephemeral key; registry credentials stored now \
                 cannot be opened after a restart"
            );
            Ok(Keyring::ephemeral())
        }
        _ => anyhow::bail!(
            "HIVEGRAPH_SECRET_KEY is required in production mode (base64 of 32 random bytes)"
        ),
    }
}

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
        crate::config::AuthMode::Jwt => {
            crate::auth::Authenticator::jwt(config.serve.jwt.settings())?
        }
    };
    let k8s = crate::k8s::ClusterManager::new(pool.clone(), config.serve.k8s.clone())?;
    let pubsub = crate::pubsub::PubSub::new(
        pool.clone(),
        config.database.url().to_string(),
        caches.clone(),
    );
    pubsub.start();
    let monitor = crate::monitoring::Monitor::new(
        pool.clone(),
        k8s.clone(),
        config.serve.monitoring.clone(),
        Arc::new(crate::monitoring::SystemClock),
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

/// Serves until SIGINT or SIGTERM, then drains in-flight requests.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    if config.serve.auth == crate::config::AuthMode::None {
        tracing::warn!(listen = %config.serve.listen, "authentication is off (HIVEGRAPH_AUTH=none): loopback only");
    }
    let applied = crate::db::run_migrations(config.database.url()).await?;
    if !applied.is_empty() {
        tracing::info!(?applied, "applied migrations");
    }
    let keys = load_keyring(config.serve.mode)?;
    let listen = config.serve.listen;
    let run_scheduler = config.serve.sync.scheduler;
    let state = build_state(config, keys)?;
    let sync = state.services.sync.clone();
    let k8s = state.services.k8s.clone();
    // Cluster checks, watchers, and pick-up of operations left by a previous process.
    k8s.start_background();
    // Retention of deployment logs and the audit log (one replica at a time).
    let retention = crate::retention::spawn(
        state.services.pool.clone(),
        Arc::new(crate::retention::SystemClock),
    );
    // Metrics collection and the rollup/retention job.
    state.services.monitor.start();
    let sockets = state.sockets.clone();
    let state_monitor = state.services.monitor.clone();
    let app = crate::http::router(state);
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    // The registry sync scheduler: periodic syncs, retries with backoff, crash recovery.
    let scheduler = run_scheduler.then(|| sync.spawn_scheduler());
    tracing::info!(%addr, "hivegraph listening; GraphiQL at http://{addr}/graphql");
    let closing = sockets.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            // Websockets are not part of axum's drain: tell every client to reconnect (1012).
            closing.shutdown();
        })
        .await?;
    sockets.drained(std::time::Duration::from_secs(5)).await;
    // Interrupted syncs end in ERROR and are due again at once.
    sync.shutdown(std::time::Duration::from_secs(10)).await;
    // Drivers give their leases back so that another gateway process takes over at once.
    k8s.shutdown().await;
    state_monitor.shutdown();
    if let Some(s) = scheduler {
        let _ = s.await;
    }
    retention.abort();
    tracing::info!("shut down");
    Ok(())
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
