//! Configuration, parsed once at start-up into typed structs.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// How clients authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// No authentication; allowed only on a loopback listen address.
    None,
    /// Bearer JWTs (HS256 shared secret or an OIDC issuer's JWKS).
    Jwt,
}

/// Production or development behaviour of the GraphQL endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Introspection, field suggestions and GraphiQL on.
    Dev,
    /// Introspection, field suggestions and GraphiQL off.
    Production,
}

/// Whether read-only documents the executor answered once are then answered by the compiled
/// read path (`crate::graphql::compiled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompiledReads {
    /// Planned documents take the compiled path.
    On,
    /// Every document goes through the executor.
    Off,
    /// Both answer every planned document and the request fails when they differ (tests).
    Check,
}

/// Database settings.
#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    /// PostgreSQL URL.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://hivegraph:hivegraph@127.0.0.1:5432/hivegraph",
        hide_env_values = true,
        value_parser = secret
    )]
    pub database_url: secrecy::SecretString,
    /// Maximum pooled connections.
    #[arg(long, env = "HIVEGRAPH_DB_POOL_SIZE", default_value_t = 16)]
    pub pool_size: usize,
    /// How long a request waits for a pooled connection before failing fast, in milliseconds.
    #[arg(long, env = "HIVEGRAPH_DB_WAIT_MS", default_value_t = 1000)]
    pub wait_ms: u64,
    /// PostgreSQL `statement_timeout` for gateway connections, in milliseconds.
    #[arg(
        long,
        env = "HIVEGRAPH_DB_STATEMENT_TIMEOUT_MS",
        default_value_t = 5000
    )]
    pub statement_timeout_ms: u64,
}

impl DatabaseConfig {
    /// The PostgreSQL URL (it may hold a password: never log it).
    pub fn url(&self) -> &str {
        use secrecy::ExposeSecret;
        self.database_url.expose_secret()
    }
}

/// Which `Host` and `Origin` headers the gateway answers (DNS rebinding and cross-site
/// websocket hijacking of a local gateway).
#[derive(Debug, Clone, Default, Args)]
pub struct OriginPolicy {
    /// Host names (without port) requests may be addressed to, comma-separated. Empty: with
    /// `HIVEGRAPH_AUTH=none`, the listen address plus `localhost`, `127.0.0.1` and `[::1]`; with
    /// `jwt`, any.
    #[arg(
        id = "http_allowed_hosts",
        long = "http-allowed-hosts",
        env = "HIVEGRAPH_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,
    /// Origins (`scheme://host[:port]`) allowed to open websockets, comma-separated; `*` allows
    /// any. Empty: same origin only (the `Origin` matches the `Host`).
    #[arg(long, env = "HIVEGRAPH_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
}

/// Parses a secret setting (kept out of `Debug` output).
fn secret(s: &str) -> Result<secrecy::SecretString, String> {
    Ok(s.into())
}

/// Settings of the `serve` command.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to listen on.
    #[arg(long, env = "HIVEGRAPH_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Authentication mode.
    #[arg(long, env = "HIVEGRAPH_AUTH", value_enum, default_value = "none")]
    pub auth: AuthMode,
    /// Development or production behaviour.
    #[arg(long, env = "HIVEGRAPH_MODE", value_enum, default_value = "dev")]
    pub mode: Mode,
    #[command(flatten)]
    pub jwt: JwtConfig,
    #[command(flatten)]
    pub limits: Limits,
    #[command(flatten)]
    pub registries: RegistryPolicy,
    #[command(flatten)]
    pub sync: SyncConfig,
    #[command(flatten)]
    pub k8s: K8sConfig,
    #[command(flatten)]
    pub ws: WsConfig,
    #[command(flatten)]
    pub origins: OriginPolicy,
    /// A bearer token `GET /metrics` must present; unset, `/metrics` is open.
    #[arg(long, env = "HIVEGRAPH_METRICS_TOKEN", hide_env_values = true, value_parser = secret)]
    pub metrics_token: Option<secrecy::SecretString>,
    #[command(flatten)]
    pub monitoring: MonitoringConfig,
    #[command(flatten)]
    pub shutdown: ShutdownConfig,
    /// The read caches: `off` (or `false`, `0`) sends every read to the database (for
    /// benchmarks and debugging); anything else keeps them on.
    #[arg(
        long,
        env = "HIVEGRAPH_READ_CACHES",
        default_value = "on",
        value_parser = switch,
        action = clap::ArgAction::Set
    )]
    pub read_caches: bool,
    /// The compiled read path: `on`, `off`, or `check` (both paths, compared).
    #[arg(
        long,
        env = "HIVEGRAPH_COMPILED_READS",
        value_enum,
        default_value = "on"
    )]
    pub compiled_reads: CompiledReads,
    #[command(flatten)]
    pub secret_keys: SecretKeyConfig,
}

/// Parses an on/off setting: `off`, `false` and `0` are off, anything else is on.
fn switch(s: &str) -> Result<bool, String> {
    Ok(!matches!(s, "off" | "false" | "0"))
}

/// The keys that encrypt secrets at rest (see `crate::secrets::Keyring::from_config`).
#[derive(Debug, Clone, Default, Args)]
pub struct SecretKeyConfig {
    /// The key-encryption key (base64 of 32 random bytes). Required in production mode; in dev
    /// mode a missing key gives an ephemeral one, with a warning.
    #[arg(long, env = "HIVEGRAPH_SECRET_KEY", hide_env_values = true, value_parser = secret)]
    pub secret_key: Option<secrecy::SecretString>,
    /// Earlier keys, comma-separated, still accepted for opening secrets until `hivegraph keys
    /// rotate` has run.
    #[arg(
        long,
        env = "HIVEGRAPH_SECRET_KEY_PREVIOUS",
        hide_env_values = true,
        value_parser = secret
    )]
    pub secret_key_previous: Option<secrecy::SecretString>,
}

/// Graceful shutdown on SIGTERM (see `crate::server::serve`).
#[derive(Debug, Clone, Args)]
pub struct ShutdownConfig {
    /// How long the process keeps accepting connections after SIGTERM while `/readyz` already
    /// answers 503, in milliseconds: time for load balancers (Kubernetes endpoints) to stop
    /// sending new requests here.
    #[arg(long, env = "HIVEGRAPH_DRAIN_DELAY_MS", default_value_t = 0)]
    pub drain_delay_ms: u64,
    /// How long in-flight HTTP requests may take to finish once new connections are refused, in
    /// milliseconds; then they are cut.
    #[arg(long, env = "HIVEGRAPH_SHUTDOWN_GRACE_MS", default_value_t = 15_000)]
    pub shutdown_grace_ms: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain_delay_ms: 0,
            shutdown_grace_ms: 15_000,
        }
    }
}

/// Websocket subscriptions: handshake timeout, keep-alives and backpressure (see `crate::http::ws`).
#[derive(Debug, Clone, Args)]
pub struct WsConfig {
    /// How long a client may take to send `connection_init`, in milliseconds (then close 4408).
    #[arg(long, env = "HIVEGRAPH_WS_INIT_TIMEOUT_MS", default_value_t = 10_000)]
    pub ws_init_timeout_ms: u64,
    /// Interval of server keep-alives (websocket pings; `ka` on the legacy protocol), in
    /// milliseconds. A client silent for three intervals is dropped.
    #[arg(long, env = "HIVEGRAPH_WS_KEEPALIVE_MS", default_value_t = 15_000)]
    pub ws_keepalive_ms: u64,
    /// Messages buffered per subscription before newer states replace unsent ones (the client
    /// then gets a gap notice in `extensions.gap`).
    #[arg(long, env = "HIVEGRAPH_WS_BUFFER", default_value_t = 16)]
    pub ws_buffer: usize,
    /// Longest a single write to a client may take, in milliseconds; a slower client is
    /// disconnected.
    #[arg(long, env = "HIVEGRAPH_WS_WRITE_TIMEOUT_MS", default_value_t = 10_000)]
    pub ws_write_timeout_ms: u64,
    /// Most subscriptions one socket may hold at a time.
    #[arg(long, env = "HIVEGRAPH_WS_MAX_SUBSCRIPTIONS", default_value_t = 100)]
    pub ws_max_subscriptions: usize,
    /// Most websockets open at once in this process; past it, upgrades get 503.
    #[arg(long, env = "HIVEGRAPH_WS_MAX_SOCKETS", default_value_t = 10_000)]
    pub ws_max_sockets: usize,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            ws_init_timeout_ms: 10_000,
            ws_keepalive_ms: 15_000,
            ws_buffer: 16,
            ws_write_timeout_ms: 10_000,
            ws_max_subscriptions: 100,
            ws_max_sockets: 10_000,
        }
    }
}

/// Metrics collection and retention (see `crate::monitoring`).
#[derive(Debug, Clone, Args)]
pub struct MonitoringConfig {
    /// Collect metrics of running instances (PodMetrics, Prometheus endpoint, MCP health check).
    #[arg(
        long = "monitoring",
        env = "HIVEGRAPH_MONITORING",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub enabled: bool,
    /// Collection interval, in milliseconds.
    #[arg(long, env = "HIVEGRAPH_METRICS_INTERVAL_MS", default_value_t = 15_000)]
    pub metrics_interval_ms: u64,
    /// How often the rollup and retention job runs, in seconds.
    #[arg(long, env = "HIVEGRAPH_METRICS_ROLLUP_SECONDS", default_value_t = 300)]
    pub rollup_seconds: u64,
    /// Days of detailed samples kept.
    #[arg(long, env = "HIVEGRAPH_METRICS_RAW_DAYS", default_value_t = 7)]
    pub raw_days: i64,
    /// Days of hourly aggregates kept.
    #[arg(long, env = "HIVEGRAPH_METRICS_HOURLY_DAYS", default_value_t = 90)]
    pub hourly_days: i64,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig {
            enabled: true,
            metrics_interval_ms: 15_000,
            rollup_seconds: 300,
            raw_days: 7,
            hourly_days: 90,
        }
    }
}

/// Bearer-token validation, with `HIVEGRAPH_AUTH=jwt`.
#[derive(Debug, Clone, Default, Args)]
pub struct JwtConfig {
    /// HS256 shared secret (at least 32 bytes).
    #[arg(long, env = "HIVEGRAPH_JWT_SECRET", hide_env_values = true, value_parser = secret)]
    pub jwt_secret: Option<secrecy::SecretString>,
    /// OIDC issuer; its JWKS is found through discovery.
    #[arg(long, env = "HIVEGRAPH_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// Expected `iss` claim; checked when set.
    #[arg(long, env = "HIVEGRAPH_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Expected `aud` claim; checked when set.
    #[arg(long, env = "HIVEGRAPH_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Token claim holding the roles (`viewer`, `deployer`, `admin`).
    #[arg(long, env = "HIVEGRAPH_ROLES_CLAIM", default_value = "roles")]
    pub roles_claim: String,
}

/// Request limits of the GraphQL endpoint (see shared/docs/hardening.md).
#[derive(Debug, Clone, Args)]
pub struct Limits {
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "HIVEGRAPH_MAX_BODY_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Deepest accepted selection nesting.
    #[arg(long, env = "HIVEGRAPH_MAX_DEPTH", default_value_t = 12)]
    pub max_depth: usize,
    /// Most fields one operation may select with every fragment spread expanded (counted
    /// before anything else walks the document, like Apollo Router's `max_recursive_selections`).
    #[arg(long, env = "HIVEGRAPH_MAX_SELECTIONS", default_value_t = 10_000)]
    pub max_selections: usize,
    /// Whether introspection (`__schema`, `__type`) and `/schema.graphql` are served; default:
    /// on in dev mode, off in production.
    #[arg(long, env = "HIVEGRAPH_INTROSPECTION")]
    pub introspection: Option<bool>,
    /// Highest accepted query complexity.
    #[arg(long, env = "HIVEGRAPH_MAX_COMPLEXITY", default_value_t = 20_000)]
    pub max_complexity: usize,
    /// Most aliases accepted in one operation.
    #[arg(long, env = "HIVEGRAPH_MAX_ALIASES", default_value_t = 15)]
    pub max_aliases: usize,
    /// Most root fields accepted in one operation.
    #[arg(long, env = "HIVEGRAPH_MAX_ROOT_FIELDS", default_value_t = 20)]
    pub max_root_fields: usize,
    /// Most operations accepted in one batched (JSON array) request; 1 turns batching off.
    #[arg(long, env = "HIVEGRAPH_MAX_BATCH", default_value_t = 5)]
    pub max_batch: usize,
    /// Per-request timeout, in milliseconds.
    #[arg(long, env = "HIVEGRAPH_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,
    /// Query-cost points each user may spend per hour (GitHub's model); 0 turns it off.
    #[arg(long, env = "HIVEGRAPH_RATE_LIMIT_PER_HOUR", default_value_t = 5_000)]
    pub rate_limit_per_hour: u64,
    /// Query-cost points each user may spend per minute (burst); 0 turns it off.
    #[arg(long, env = "HIVEGRAPH_RATE_LIMIT_PER_MINUTE", default_value_t = 2_000)]
    pub rate_limit_per_minute: u64,
    /// A JSON file of persisted operations (digest → document, or a list of documents); when
    /// set, only those operations run.
    #[arg(long, env = "HIVEGRAPH_PERSISTED_OPERATIONS")]
    pub persisted_operations: Option<std::path::PathBuf>,
}

impl Limits {
    /// Whether introspection is served in `mode`: as configured, else only in dev mode.
    pub fn introspection(&self, mode: Mode) -> bool {
        self.introspection.unwrap_or(mode == Mode::Dev)
    }

    /// The per-request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 2 * 1024 * 1024,
            max_depth: 12,
            max_selections: 10_000,
            introspection: None,
            max_complexity: 20_000,
            max_aliases: 15,
            max_root_fields: 20,
            max_batch: 5,
            request_timeout_ms: 10_000,
            rate_limit_per_hour: 5_000,
            rate_limit_per_minute: 2_000,
            persisted_operations: None,
        }
    }
}

/// Which registry sources are allowed.
#[derive(Debug, Clone, Default, Args)]
pub struct RegistryPolicy {
    /// Allow `file://` registry URLs (local files on the gateway's host).
    #[arg(long, env = "HIVEGRAPH_ALLOW_FILE_REGISTRIES", default_value_t = false)]
    pub allow_file_urls: bool,
    /// Allow registries on loopback, private and link-local addresses (off by default: a registry
    /// URL or redirect could otherwise reach the gateway's own network, e.g. cloud metadata).
    #[arg(
        long,
        env = "HIVEGRAPH_ALLOW_PRIVATE_REGISTRIES",
        default_value_t = false
    )]
    pub allow_private_networks: bool,
    /// Host names registries may live at, comma-separated; `*.example.com` matches subdomains.
    /// Empty allows any host.
    #[arg(long, env = "HIVEGRAPH_REGISTRY_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
}

/// Registry sync: the upstream HTTP client's limits and the scheduler (see `crate::sync`).
#[derive(Debug, Clone, Args)]
pub struct SyncConfig {
    /// Timeout for connecting to a registry, in milliseconds.
    #[arg(
        id = "sync_connect_timeout_ms",
        long = "sync-connect-timeout-ms",
        env = "HIVEGRAPH_SYNC_CONNECT_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub connect_timeout_ms: u64,
    /// Total timeout of one registry request (headers and body), in milliseconds.
    #[arg(
        id = "sync_timeout_ms",
        long = "sync-timeout-ms",
        env = "HIVEGRAPH_SYNC_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub timeout_ms: u64,
    /// Largest accepted registry response (one document or one API page), in bytes.
    #[arg(id = "sync_max_body_bytes", long = "sync-max-body-bytes", env = "HIVEGRAPH_SYNC_MAX_BODY_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_body_bytes: u64,
    /// Most redirects followed per request (https to http is never followed).
    #[arg(
        id = "sync_max_redirects",
        long = "sync-max-redirects",
        env = "HIVEGRAPH_SYNC_MAX_REDIRECTS",
        default_value_t = 5
    )]
    pub max_redirects: usize,
    /// Retries of a request that timed out, could not connect, or got HTTP 5xx or 429.
    #[arg(
        id = "sync_retries",
        long = "sync-retries",
        env = "HIVEGRAPH_SYNC_RETRIES",
        default_value_t = 2
    )]
    pub retries: u32,
    /// First retry delay in milliseconds; doubled per retry, with jitter.
    #[arg(
        id = "sync_retry_base_ms",
        long = "sync-retry-base-ms",
        env = "HIVEGRAPH_SYNC_RETRY_BASE_MS",
        default_value_t = 500
    )]
    pub retry_base_ms: u64,
    /// Most pages read from a paginated registry API in one sync.
    #[arg(
        id = "sync_max_pages",
        long = "sync-max-pages",
        env = "HIVEGRAPH_SYNC_MAX_PAGES",
        default_value_t = 2_000
    )]
    pub max_pages: u32,
    /// PostgreSQL `statement_timeout` of the sync's own connection, in milliseconds.
    #[arg(
        id = "sync_statement_timeout_ms",
        long = "sync-statement-timeout-ms",
        env = "HIVEGRAPH_SYNC_STATEMENT_TIMEOUT_MS",
        default_value_t = 120_000
    )]
    pub statement_timeout_ms: u64,
    /// Run the periodic sync scheduler in `serve`.
    #[arg(id = "sync_scheduler", long = "sync-scheduler", env = "HIVEGRAPH_SYNC_SCHEDULER", default_value_t = true, action = clap::ArgAction::Set)]
    pub scheduler: bool,
    /// How often the scheduler looks for due registries, in seconds.
    #[arg(
        id = "sync_tick_seconds",
        long = "sync-tick-seconds",
        env = "HIVEGRAPH_SYNC_TICK_SECONDS",
        default_value_t = 15
    )]
    pub tick_seconds: u64,
    /// Most syncs the scheduler runs at once in this process.
    #[arg(
        id = "sync_concurrency",
        long = "sync-concurrency",
        env = "HIVEGRAPH_SYNC_CONCURRENCY",
        default_value_t = 2
    )]
    pub concurrency: usize,
    /// First retry delay after a failed sync, in seconds; doubled per consecutive failure and
    /// capped at the registry's interval.
    #[arg(
        id = "sync_error_backoff_seconds",
        long = "sync-error-backoff-seconds",
        env = "HIVEGRAPH_SYNC_ERROR_BACKOFF_SECONDS",
        default_value_t = 30
    )]
    pub error_backoff_seconds: u64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            connect_timeout_ms: 5_000,
            timeout_ms: 30_000,
            max_body_bytes: 10 * 1024 * 1024,
            max_redirects: 5,
            retries: 2,
            retry_base_ms: 500,
            max_pages: 2_000,
            statement_timeout_ms: 120_000,
            scheduler: true,
            tick_seconds: 15,
            concurrency: 2,
            error_backoff_seconds: 30,
        }
    }
}

impl SyncConfig {
    /// Short timeouts for tests, so that a bad upstream fails within about a second.
    pub fn for_tests() -> Self {
        SyncConfig {
            connect_timeout_ms: 1_000,
            timeout_ms: 2_000,
            retries: 1,
            retry_base_ms: 50,
            tick_seconds: 1,
            ..SyncConfig::default()
        }
    }
}

/// Kubernetes: how clusters are reached and how deployments are driven (see `crate::k8s`).
#[derive(Debug, Clone, Args)]
pub struct K8sConfig {
    /// The gateway's kubeconfig; `registerCluster` names one of its contexts. Absent: kube's
    /// defaults (`~/.kube/config`).
    #[arg(id = "k8s_kubeconfig", long = "kubeconfig", env = "KUBECONFIG")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// This process's host name, in the owner of the operation leases it takes
    /// (`host/pid/random`); in Kubernetes, `HOSTNAME` is the pod's name.
    #[arg(
        id = "k8s_hostname",
        long = "lease-hostname",
        env = "HOSTNAME",
        default_value = "gateway"
    )]
    pub hostname: String,
    /// Oldest Kubernetes version (`major.minor`) a cluster may run; older clusters are refused at
    /// registration. 1.24 is the oldest release whose APIs the gateway uses unchanged
    /// (apps/v1, networking.k8s.io/v1, authorization.k8s.io/v1, events.k8s.io/v1).
    #[arg(
        id = "k8s_min_version",
        long = "k8s-min-version",
        env = "HIVEGRAPH_K8S_MIN_VERSION",
        default_value = "1.24"
    )]
    pub min_version: String,
    /// How often registered clusters are checked again, in seconds.
    #[arg(
        id = "k8s_check_seconds",
        long = "k8s-check-seconds",
        env = "HIVEGRAPH_K8S_CHECK_SECONDS",
        default_value_t = 30
    )]
    pub check_seconds: u64,
    /// Timeout of one Kubernetes API request (watches excepted), in milliseconds.
    #[arg(
        id = "k8s_timeout_ms",
        long = "k8s-timeout-ms",
        env = "HIVEGRAPH_K8S_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub timeout_ms: u64,
    /// How long a gateway process holds the lease of an operation it drives, in seconds; another
    /// process takes the operation over when the lease expires.
    #[arg(
        id = "k8s_lease_seconds",
        long = "k8s-lease-seconds",
        env = "HIVEGRAPH_K8S_LEASE_SECONDS",
        default_value_t = 30
    )]
    pub lease_seconds: u64,
    /// `progressDeadlineSeconds` of the Deployments the gateway creates.
    #[arg(
        id = "k8s_progress_deadline_seconds",
        long = "k8s-progress-deadline-seconds",
        env = "HIVEGRAPH_K8S_PROGRESS_DEADLINE_SECONDS",
        default_value_t = 600
    )]
    pub progress_deadline_seconds: i32,
    /// Longest an operation may stay IN_PROGRESS before it is failed, in seconds.
    #[arg(
        id = "k8s_operation_timeout_seconds",
        long = "k8s-operation-timeout-seconds",
        env = "HIVEGRAPH_K8S_OPERATION_TIMEOUT_SECONDS",
        default_value_t = 1800
    )]
    pub operation_timeout_seconds: u64,
    /// How often a driver looks at its operation's rollout, in milliseconds (watch events wake it
    /// earlier).
    #[arg(
        id = "k8s_poll_ms",
        long = "k8s-poll-ms",
        env = "HIVEGRAPH_K8S_POLL_MS",
        default_value_t = 2_000
    )]
    pub poll_ms: u64,
    /// CPU limit given to the containers the gateway deploys when `resources` sets none, so that
    /// `cpuUsage` (the share of the limit) means something; empty for no default.
    #[arg(
        id = "k8s_default_cpu_limit",
        long = "k8s-default-cpu-limit",
        env = "HIVEGRAPH_K8S_DEFAULT_CPU_LIMIT",
        default_value = "500m"
    )]
    pub default_cpu_limit: String,
}

impl Default for K8sConfig {
    fn default() -> Self {
        K8sConfig {
            kubeconfig: None,
            hostname: "gateway".into(),
            min_version: "1.24".into(),
            check_seconds: 30,
            timeout_ms: 5_000,
            lease_seconds: 30,
            progress_deadline_seconds: 600,
            operation_timeout_seconds: 1800,
            poll_ms: 2_000,
            default_cpu_limit: "500m".into(),
        }
    }
}

impl K8sConfig {
    /// Short intervals for tests. The kubeconfig is set by each test (the emulator's).
    pub fn for_tests() -> Self {
        K8sConfig {
            check_seconds: 1,
            timeout_ms: 2_000,
            lease_seconds: 3,
            operation_timeout_seconds: 120,
            poll_ms: 300,
            ..K8sConfig::default()
        }
    }
}

/// Everything a running gateway needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    pub database: DatabaseConfig,
    pub serve: ServeConfig,
}

impl Config {
    /// A configuration for tests: development mode on loopback with default limits.
    pub fn for_tests(database_url: &str) -> Self {
        Config {
            database: DatabaseConfig {
                database_url: database_url.into(),
                pool_size: 8,
                // Generous: a loaded CI machine can take seconds to hand out a fresh connection.
                wait_ms: 10_000,
                statement_timeout_ms: 5000,
            },
            serve: ServeConfig {
                listen: "127.0.0.1:0".parse().expect("valid address"),
                auth: AuthMode::None,
                mode: Mode::Dev,
                jwt: JwtConfig {
                    roles_claim: "roles".into(),
                    ..JwtConfig::default()
                },
                // Suites send many heavy queries as one user; tests of the limit turn it on.
                limits: Limits {
                    rate_limit_per_hour: 0,
                    rate_limit_per_minute: 0,
                    ..Limits::default()
                },
                // Tests serve registries from loopback.
                registries: RegistryPolicy {
                    allow_file_urls: false,
                    allow_private_networks: true,
                    allowed_hosts: Vec::new(),
                },
                sync: SyncConfig::for_tests(),
                origins: OriginPolicy::default(),
                metrics_token: None,
                k8s: K8sConfig::for_tests(),
                ws: WsConfig::default(),
                monitoring: MonitoringConfig {
                    metrics_interval_ms: 500,
                    ..MonitoringConfig::default()
                },
                shutdown: ShutdownConfig::default(),
                read_caches: true,
                // Every query of the integration tests is answered by both paths and compared.
                compiled_reads: CompiledReads::Check,
                secret_keys: SecretKeyConfig::default(),
            },
        }
    }

    /// Production needs real authentication, and tokens meant for this gateway only.
    fn validate_production(&self) -> Result<(), String> {
        if self.serve.auth == AuthMode::None {
            return Err(
                "HIVEGRAPH_AUTH=none is refused in production mode; set HIVEGRAPH_AUTH=jwt".into(),
            );
        }
        let jwt = &self.serve.jwt;
        if jwt.jwt_audience.as_deref().is_none_or(str::is_empty) {
            return Err("production mode with jwt needs HIVEGRAPH_JWT_AUDIENCE (tokens for other applications must not be accepted)".into());
        }
        if jwt.jwt_issuer.is_none() && jwt.oidc_issuer.is_none() {
            return Err(
                "production mode with jwt needs HIVEGRAPH_JWT_ISSUER or HIVEGRAPH_OIDC_ISSUER"
                    .into(),
            );
        }
        Ok(())
    }

    /// Refuses configurations that would be unsafe to run.
    pub fn validate(&self) -> Result<(), String> {
        if self.serve.auth == AuthMode::None && !self.serve.listen.ip().is_loopback() {
            return Err(format!(
                "HIVEGRAPH_AUTH=none is only allowed on a loopback listen address, not {}; \
                 set HIVEGRAPH_AUTH=jwt or listen on 127.0.0.1",
                self.serve.listen
            ));
        }
        if self.serve.auth == AuthMode::Jwt
            && self.serve.jwt.jwt_secret.is_none()
            && self.serve.jwt.oidc_issuer.is_none()
        {
            return Err(
                "HIVEGRAPH_AUTH=jwt needs HIVEGRAPH_JWT_SECRET or HIVEGRAPH_OIDC_ISSUER".into(),
            );
        }
        if self.serve.mode == Mode::Production {
            self.validate_production()?;
        }
        if let Some(path) = &self.serve.limits.persisted_operations {
            crate::persisted::PersistedOperations::load(path)?;
        }
        if self.serve.limits.max_batch == 0 {
            return Err("HIVEGRAPH_MAX_BATCH must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod secret_tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    fn serve(args: &[&str]) -> crate::config::ServeConfig {
        let cli = Cli::try_parse_from([&["hivegraph", "serve"], args].concat()).expect("parses");
        match cli.command {
            Command::Serve { serve, .. } => *serve,
            other => panic!("not serve: {other:?}"),
        }
    }

    #[test]
    fn read_caches_turn_off_with_off_false_or_0() {
        assert!(serve(&[]).read_caches);
        for off in ["off", "false", "0"] {
            assert!(!serve(&["--read-caches", off]).read_caches, "{off}");
        }
        assert!(serve(&["--read-caches", "on"]).read_caches);
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        crate::cli::Cli::command().debug_assert();
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let mut c = super::Config::for_tests("postgres://u:hunter2@db/x");
        c.serve.jwt.jwt_secret = Some("jwt-secret-0123456789abcdef0123456789".into());
        c.serve.metrics_token = Some("scrape-token".into());
        c.serve.secret_keys.secret_key = Some("kek-current-0123456789".into());
        c.serve.secret_keys.secret_key_previous = Some("kek-old-0123456789".into());
        let text = format!("{c:?}");
        for secret in [
            "hunter2",
            "jwt-secret-0123",
            "scrape-token",
            "kek-current",
            "kek-old",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(c.database.url(), "postgres://u:hunter2@db/x");
    }
}
