//! Test harness: each test gets its own PostgreSQL database, cloned from a migrated template, and
//! drives the gateway's router in-process (no socket needed).
//!
//! `HIVEGRAPH_TEST_DATABASE_URL` names the server and a role that may create databases
//! (default `postgres://hivegraph:hivegraph@127.0.0.1:5432/postgres`).

use std::path::Path;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tower::ServiceExt;

use hivegraph::AppState;
use hivegraph::config::Config;
use hivegraph::secrets::Keyring;

mod cleanup;
pub mod proxy;
pub mod registry_server;

/// Installs rustls's process-wide crypto provider (ring), once for the whole test binary: the
/// gateway's and the emulator's TLS clients need one, and tests share the process.
pub fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Another crate's code may have installed one first; either is fine for tests.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Polls `check` every 25 ms until it holds; panics naming `what` if it still does not after
/// `deadline`. For conditions reached in the background (a log line written, a socket counted, a
/// lock released); a fixed sleep before an assert is either slow or flaky.
pub async fn eventually<F, Fut>(deadline: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return;
        }
        if start.elapsed() >= deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The PostgreSQL server tests use (`HIVEGRAPH_TEST_DATABASE_URL`).
#[expect(
    clippy::disallowed_methods,
    reason = "the test harness's own setting, not the gateway's"
)]
pub fn admin_url() -> String {
    std::env::var("HIVEGRAPH_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://hivegraph:hivegraph@127.0.0.1:5432/postgres".into())
}

pub fn url_for(db: &str) -> String {
    let admin = admin_url();
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    format!("{base}/{db}")
}

/// A hash of every migration file, so the template is rebuilt when migrations change.
fn migrations_hash() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut entries: Vec<_> = walk(&dir);
    entries.sort();
    let mut h = Sha256::new();
    for p in entries {
        h.update(p.to_string_lossy().as_bytes());
        h.update(std::fs::read(&p).expect("readable migration"));
    }
    hex::encode(&h.finalize()[..6])
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("migrations dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A database of one's own, migrated; dropped when the last handle on it goes (`clone` gives
/// another handle, e.g. for a second gateway process on the same database).
#[derive(Clone)]
pub struct TestDb {
    pub name: String,
    pub url: String,
    _drop: Arc<cleanup::DropGuard>,
}

impl TestDb {
    /// Clones a fresh database from the migrated template (building the template first if
    /// needed; concurrent test processes coordinate through an advisory lock).
    pub async fn new() -> TestDb {
        let template = format!("hg_tpl_{}", migrations_hash());
        let mut admin = AsyncPgConnection::establish(&admin_url())
            .await
            .expect("connect to PostgreSQL (is it running? see scripts/test)");
        admin
            .batch_execute("SELECT pg_advisory_lock(4851)")
            .await
            .unwrap();
        let exists = exists_db(&mut admin, &template).await;
        if !exists {
            admin
                .batch_execute(&format!("CREATE DATABASE \"{template}\""))
                .await
                .expect("create template database");
            hivegraph::db::run_migrations(&url_for(&template))
                .await
                .expect("migrate template");
        }
        admin
            .batch_execute("SELECT pg_advisory_unlock(4851)")
            .await
            .unwrap();
        static SWEPT: Once = Once::new();
        if !SWEPT.is_completed() {
            SWEPT.call_once(|| {});
            cleanup::drop_stale(&mut admin).await;
        }
        let name = cleanup::fresh_name();
        let mut attempts = 0;
        loop {
            match admin
                .batch_execute(&format!(
                    "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""
                ))
                .await
            {
                Ok(()) => break,
                Err(e) if attempts < 20 => {
                    attempts += 1;
                    let _ = e;
                    tokio::time::sleep(std::time::Duration::from_millis(100 * attempts)).await;
                }
                Err(e) => panic!("clone template: {e}"),
            }
        }
        TestDb {
            url: url_for(&name),
            _drop: Arc::new(cleanup::DropGuard(name.clone())),
            name,
        }
    }

    /// A connection to the server's maintenance database (for ALTER DATABASE and the like).
    pub async fn admin_conn(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&admin_url())
            .await
            .expect("connect to the maintenance database")
    }

    /// A direct connection for arranging and inspecting data.
    pub async fn conn(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&self.url)
            .await
            .expect("connect to test database")
    }

    /// Runs SQL and returns the first column of the first row as text (or None).
    pub async fn scalar(&self, sql: &str) -> Option<String> {
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        #[derive(QueryableByName)]
        struct One {
            #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
            v: Option<String>,
        }
        let mut c = self.conn().await;
        diesel::sql_query(format!("SELECT ({sql})::text AS v"))
            .get_result::<One>(&mut c)
            .await
            .expect("scalar query")
            .v
    }

    /// Counts rows of a table.
    pub async fn count(&self, table: &str) -> i64 {
        self.scalar(&format!("SELECT count(*) FROM {table}"))
            .await
            .unwrap()
            .parse()
            .unwrap()
    }
}

async fn exists_db(conn: &mut AsyncPgConnection, name: &str) -> bool {
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query("SELECT count(*) AS n FROM pg_database WHERE datname = $1")
        .bind::<diesel::sql_types::Text, _>(name)
        .get_result::<N>(conn)
        .await
        .map(|r| r.n > 0)
        .unwrap_or(false)
}

/// The gateway, in-process, on its own database.
pub struct TestApp {
    pub db: TestDb,
    pub state: AppState,
    pub router: axum::Router,
}

/// A response: status, headers and body (parsed as JSON when it is JSON).
pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub text: String,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

impl TestApp {
    /// A gateway with the default test configuration.
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// A gateway whose configuration `tweak` may change first.
    pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
        install_crypto();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
        let db = TestDb::new().await;
        let mut config = Config::for_tests(&db.url);
        tweak(&mut config);
        let state = hivegraph::server::build_state(config, Keyring::ephemeral()).expect("state");
        let router = hivegraph::router(state.clone());
        TestApp { db, state, router }
    }

    /// Sends a raw request.
    pub async fn send(&self, req: Request<Body>) -> Reply {
        let resp = self
            .router
            .clone()
            .oneshot(req)
            .await
            .expect("router answers");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        Reply {
            status,
            headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// POSTs a GraphQL operation as JSON and returns the response body.
    pub async fn graphql(&self, query: &str, variables: Value) -> Value {
        self.graphql_with_headers(query, variables, &[])
            .await
            .json()
    }

    /// POSTs a GraphQL operation with extra headers.
    pub async fn graphql_with_headers(
        &self,
        query: &str,
        variables: Value,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = Request::post("/graphql").header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = json!({ "query": query, "variables": variables }).to_string();
        self.send(req.body(Body::from(body)).unwrap()).await
    }

    /// GETs a path.
    pub async fn get(&self, path: &str) -> Reply {
        self.send(Request::get(path).body(Body::empty()).unwrap())
            .await
    }
}

/// The `extensions.code` of the first error, if any.
pub fn error_code(resp: &Value) -> Option<String> {
    resp["errors"][0]["extensions"]["code"]
        .as_str()
        .map(str::to_string)
}

/// The `extensions.field` of the first error, if any.
pub fn error_field(resp: &Value) -> Option<String> {
    resp["errors"][0]["extensions"]["field"]
        .as_str()
        .map(str::to_string)
}

/// Panics with the response when it carries errors.
pub fn assert_ok(resp: &Value) {
    assert!(resp.get("errors").is_none(), "unexpected errors: {resp:#}");
}
