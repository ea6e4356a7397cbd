//! A local registry server for sync tests, on 127.0.0.1 with a random port:
//!
//! - `/files/{name}` serves a file of `../shared/data/` (read in place, never copied);
//! - `/mcp/v0/servers` and `/mcp/v0.1/servers`: a paginated fake of the official MCP Registry API
//!   (shared/data/mcp-registry-openapi.yaml): `cursor`, `limit` (default 30, 1..=100), `search`,
//!   `updated_since` (forces `include_deleted`), `version`, `include_deleted`, `deleted` entries,
//!   `{servers: [{server, _meta}], metadata: {nextCursor, count}}`; tests change its data;
//! - `/trs/registry/{name}/v0.1/servers`: a fake of the ToolHive Registry Server API (page size up
//!   to 1000) over `toolhive-upstream-registry.json`;
//! - `/custom/{key}`: a document a test set;
//! - `/private/{name}`: a data file behind the credentials a test set;
//! - `/slow/{ms}/{name}`: a data file after a delay;
//! - misbehaving endpoints under `/bad/`: `garbage`, `html`, `huge` (50 MB chunked), `huge-declared`
//!   (50 MB with Content-Length), `hang`, `401`, `500`, `loop-a` (redirect loop), `to-metadata` (redirect to the cloud metadata address), `flaky` (503
//!   twice, then a registry).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// The shared data directory, relative to the crate.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data")
}

/// Reads a shared data file as JSON.
pub fn data_json(name: &str) -> Value {
    let raw = std::fs::read(data_dir().join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"));
    serde_json::from_slice(&raw).expect("valid JSON")
}

/// One version of a server in the fake MCP registry.
#[derive(Clone, Debug)]
pub struct FakeEntry {
    pub server: Value,
    pub status: String,
    pub published_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub is_latest: bool,
}

impl FakeEntry {
    fn name(&self) -> &str {
        self.server["name"].as_str().unwrap_or("")
    }
    fn version(&self) -> &str {
        self.server["version"].as_str().unwrap_or("")
    }
    fn response(&self) -> Value {
        json!({
            "server": self.server,
            "_meta": { "io.modelcontextprotocol.registry/official": {
                "status": self.status,
                "publishedAt": self.published_at,
                "updatedAt": self.updated_at,
                "statusChangedAt": self.updated_at,
                "isLatest": self.is_latest,
            }}
        })
    }
}

/// The fake MCP registry's data.
#[derive(Default)]
pub struct FakeMcp {
    pub entries: Vec<FakeEntry>,
    clock: Option<DateTime<Utc>>,
}

impl FakeMcp {
    /// Loads server.json entries, published one second apart.
    pub fn load(list: Vec<Value>) -> Self {
        let base: DateTime<Utc> = "2025-09-29T00:00:00Z".parse().unwrap();
        let entries: Vec<FakeEntry> = list
            .into_iter()
            .enumerate()
            .map(|(i, server)| {
                let t = base + chrono::Duration::seconds(i as i64);
                FakeEntry {
                    server,
                    status: "active".into(),
                    published_at: t,
                    updated_at: t,
                    is_latest: true,
                }
            })
            .collect();
        let clock = entries.iter().map(|e| e.updated_at).max();
        let mut fake = FakeMcp { entries, clock };
        fake.fix_latest();
        fake
    }

    fn tick(&mut self) -> DateTime<Utc> {
        let next = self
            .clock
            .map_or_else(Utc::now, |c| c + chrono::Duration::seconds(1));
        self.clock = Some(next);
        next
    }

    /// Marks, per name, the most recently published live version as the latest.
    fn fix_latest(&mut self) {
        let mut best: HashMap<String, (DateTime<Utc>, usize)> = HashMap::new();
        for (i, e) in self.entries.iter().enumerate() {
            if e.status == "deleted" {
                continue;
            }
            let slot = best
                .entry(e.name().to_string())
                .or_insert((e.published_at, i));
            if e.published_at >= slot.0 {
                *slot = (e.published_at, i);
            }
        }
        for (i, e) in self.entries.iter_mut().enumerate() {
            e.is_latest = best.get(e.name()).is_some_and(|(_, j)| *j == i);
        }
    }

    /// Changes every version of `name`.
    pub fn update(&mut self, name: &str, change: impl Fn(&mut Value)) {
        let t = self.tick();
        let mut found = false;
        for e in self.entries.iter_mut().filter(|e| e.name() == name) {
            change(&mut e.server);
            e.updated_at = t;
            found = true;
        }
        assert!(found, "no entry {name}");
    }

    /// Marks every version of `name` deleted.
    pub fn delete(&mut self, name: &str) {
        let t = self.tick();
        for e in self.entries.iter_mut().filter(|e| e.name() == name) {
            e.status = "deleted".into();
            e.updated_at = t;
        }
        self.fix_latest();
    }

    /// Publishes a new server or version.
    pub fn publish(&mut self, server: Value) {
        let t = self.tick();
        let name = server["name"].as_str().unwrap().to_string();
        for e in self.entries.iter_mut().filter(|e| e.name() == name) {
            e.updated_at = t;
        }
        self.entries.push(FakeEntry {
            server,
            status: "active".into(),
            published_at: t,
            updated_at: t,
            is_latest: true,
        });
        self.fix_latest();
    }

    fn list(&self, q: &HashMap<String, String>, max_limit: usize) -> Response {
        let bad = |msg: &str| {
            (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({ "title": "Bad Request", "detail": msg })),
            )
                .into_response()
        };
        let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
            None => 30,
            Some(Ok(l)) if (1..=max_limit).contains(&l) => l,
            Some(_) => {
                return (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    axum::Json(json!({ "title": "Unprocessable Entity", "detail": format!("limit must be 1..{max_limit}") })),
                )
                    .into_response();
            }
        };
        let since = match q.get("updated_since") {
            None => None,
            Some(s) => match DateTime::parse_from_rfc3339(s) {
                Ok(t) => Some(t.with_timezone(&Utc)),
                Err(_) => return bad("updated_since must be an RFC 3339 timestamp"),
            },
        };
        let include_deleted = match (q.get("include_deleted").map(String::as_str), since) {
            (Some("false"), Some(_)) => {
                return bad("include_deleted cannot be false with updated_since");
            }
            (_, Some(_)) => true,
            (Some("true"), None) => true,
            _ => false,
        };
        let after = match q.get("cursor") {
            None => None,
            Some(c) => match B64.decode(c).ok().and_then(|b| String::from_utf8(b).ok()) {
                Some(k) => Some(k),
                None => return bad("invalid cursor"),
            },
        };
        let mut items: Vec<&FakeEntry> = self
            .entries
            .iter()
            .filter(|e| include_deleted || e.status != "deleted")
            .filter(|e| since.is_none_or(|s| e.updated_at > s))
            .filter(|e| {
                q.get("search")
                    .is_none_or(|s| e.name().contains(s.as_str()))
            })
            .filter(|e| match q.get("version").map(String::as_str) {
                None => true,
                Some("latest") => e.is_latest,
                Some(v) => e.version() == v,
            })
            .collect();
        let key = |e: &FakeEntry| format!("{}\u{0}{}", e.name(), e.version());
        items.sort_by_key(|e| key(e));
        if let Some(a) = &after {
            items.retain(|e| key(e) > *a);
        }
        let more = items.len() > limit;
        items.truncate(limit);
        let mut metadata = json!({ "count": items.len() });
        if more {
            metadata["nextCursor"] = json!(B64.encode(key(items.last().unwrap())));
        }
        axum::Json(json!({ "servers": items.iter().map(|e| e.response()).collect::<Vec<_>>(), "metadata": metadata }))
            .into_response()
    }
}

/// One request the server saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub query: String,
    /// Entries an API page returned.
    pub entries: usize,
}

/// The server's state, shared with the test.
#[derive(Default)]
pub struct FakeState {
    pub mcp: Mutex<FakeMcp>,
    pub trs: Mutex<FakeMcp>,
    pub custom: Mutex<HashMap<String, (String, String)>>,
    /// Header name and exact value `/private/` requires.
    pub private_auth: Mutex<Option<(String, String)>>,
    pub seen: Mutex<Vec<Seen>>,
    pub flaky: AtomicUsize,
}

impl FakeState {
    /// Requests whose path starts with `prefix`.
    pub fn requests(&self, prefix: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Forgets the requests seen so far.
    pub fn clear_requests(&self) {
        self.seen.lock().unwrap().clear();
    }

    /// Serves `body` with `content_type` at `/custom/{key}`.
    pub fn set_custom(&self, key: &str, content_type: &str, body: impl Into<String>) {
        self.custom
            .lock()
            .unwrap()
            .insert(key.to_string(), (content_type.to_string(), body.into()));
    }
}

/// The running server.
pub struct RegistryServer {
    pub addr: SocketAddr,
    pub state: Arc<FakeState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RegistryServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Shared = State<Arc<FakeState>>;

fn record(state: &FakeState, req_path: &str, query: &str, entries: usize) {
    state.seen.lock().unwrap().push(Seen {
        path: req_path.to_string(),
        query: query.to_string(),
        entries,
    });
}

fn file_response(name: &str) -> Response {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !name.starts_with('.');
    if !ok {
        return StatusCode::NOT_FOUND.into_response();
    }
    match std::fs::read(data_dir().join(name)) {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn files(State(s): Shared, Path(name): Path<String>, req: Request) -> Response {
    record(&s, req.uri().path(), req.uri().query().unwrap_or(""), 0);
    file_response(&name)
}

async fn count_entries(resp: Response) -> (Response, usize) {
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let n = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v["servers"].as_array().map(Vec::len))
        .unwrap_or(0);
    (Response::from_parts(parts, Body::from(bytes)), n)
}

async fn mcp(State(s): Shared, Query(q): Query<HashMap<String, String>>, req: Request) -> Response {
    let resp = s.mcp.lock().unwrap().list(&q, 100);
    let (resp, n) = count_entries(resp).await;
    record(&s, req.uri().path(), req.uri().query().unwrap_or(""), n);
    resp
}

async fn trs(
    State(s): Shared,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    req: Request,
) -> Response {
    if name != "main" {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "error": "registry not found" })),
        )
            .into_response();
    }
    let resp = s.trs.lock().unwrap().list(&q, 1000);
    let (resp, n) = count_entries(resp).await;
    record(&s, req.uri().path(), req.uri().query().unwrap_or(""), n);
    resp
}

async fn custom(State(s): Shared, Path(key): Path<String>, req: Request) -> Response {
    record(&s, req.uri().path(), req.uri().query().unwrap_or(""), 0);
    match s.custom.lock().unwrap().get(&key) {
        Some((ct, body)) => ([(header::CONTENT_TYPE, ct.clone())], body.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn private(
    State(s): Shared,
    Path(name): Path<String>,
    headers: HeaderMap,
    req: Request,
) -> Response {
    record(&s, req.uri().path(), req.uri().query().unwrap_or(""), 0);
    let required = s.private_auth.lock().unwrap().clone();
    let ok = required.is_some_and(|(h, v)| {
        headers.get(h.as_str()).and_then(|x| x.to_str().ok()) == Some(v.as_str())
    });
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "{\"error\":\"unauthorized\"}",
        )
            .into_response();
    }
    file_response(&name)
}

async fn slow(State(s): Shared, Path((ms, name)): Path<(u64, String)>, req: Request) -> Response {
    record(&s, req.uri().path(), req.uri().query().unwrap_or(""), 0);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    file_response(&name)
}

const FIFTY_MB: usize = 50 * 1024 * 1024;

fn huge_stream() -> Body {
    let chunk = Bytes::from(vec![b' '; 64 * 1024]);
    let first = Bytes::from_static(b"{\"servers\": {\"padding\": \"");
    let chunks = std::iter::once(first).chain(std::iter::repeat_n(chunk, FIFTY_MB / (64 * 1024)));
    Body::from_stream(futures_util::stream::iter(
        chunks.map(Ok::<_, std::io::Error>),
    ))
}

async fn bad(State(s): Shared, Path(kind): Path<String>, req: Request) -> Response {
    record(&s, req.uri().path(), req.uri().query().unwrap_or(""), 0);
    match kind.as_str() {
        "garbage" => ([(header::CONTENT_TYPE, "application/json")], "{\"servers\": {\"x\": [1, 2,, oops").into_response(),
        "html" => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            "<!DOCTYPE html><html><head><title>Sign in</title></head><body><h1>Please sign in</h1></body></html>",
        )
            .into_response(),
        "huge" => Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(huge_stream())
            .unwrap(),
        "huge-declared" => Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, (FIFTY_MB + 26).to_string())
            .body(huge_stream())
            .unwrap(),
        "hang" => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        "401" => (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "{\"error\":\"unauthorized\"}").into_response(),
        "500" => (StatusCode::INTERNAL_SERVER_ERROR, "{\"error\":\"boom\"}").into_response(),
        "loop-a" => (StatusCode::FOUND, [(header::LOCATION, "/bad/loop-b")]).into_response(),
        "loop-b" => (StatusCode::FOUND, [(header::LOCATION, "/bad/loop-a")]).into_response(),
        "flaky" => {
            if s.flaky.fetch_add(1, Ordering::SeqCst) < 2 {
                (StatusCode::SERVICE_UNAVAILABLE, "{\"error\":\"try later\"}").into_response()
            } else {
                file_response("toolhive-upstream-registry.json")
            }
        }
        "to-metadata" => (StatusCode::FOUND, [(header::LOCATION, "http://169.254.169.254/latest/meta-data/")]).into_response(),
        "redirect-ok" => (StatusCode::FOUND, [(header::LOCATION, "/files/toolhive-upstream-registry.json")]).into_response(),
        "empty-object" => ([(header::CONTENT_TYPE, "application/json")], "{}").into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

impl RegistryServer {
    /// Starts the server with the MCP fake loaded from `mcp-registry-seed.json` and the Registry
    /// Server fake from `toolhive-upstream-registry.json`.
    pub async fn start() -> RegistryServer {
        let seed = data_json("mcp-registry-seed.json")
            .as_array()
            .cloned()
            .expect("the seed is an array");
        let upstream = data_json("toolhive-upstream-registry.json")["data"]["servers"]
            .as_array()
            .cloned()
            .expect("data.servers");
        let state = Arc::new(FakeState {
            mcp: Mutex::new(FakeMcp::load(seed)),
            trs: Mutex::new(FakeMcp::load(upstream)),
            ..FakeState::default()
        });
        let app = Router::new()
            .route("/files/{name}", get(files))
            .route("/mcp/v0/servers", get(mcp))
            .route("/mcp/v0.1/servers", get(mcp))
            // The official registry is published by its bare origin.
            .route("/v0.1/servers", get(mcp))
            .route("/trs/registry/{name}/v0.1/servers", get(trs))
            .route("/custom/{key}", get(custom))
            .route("/private/{name}", get(private))
            .route("/slow/{ms}/{name}", get(slow))
            .route("/bad/{kind}", get(bad))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        RegistryServer { addr, state, task }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

/// GraphQL helpers for sync tests (they need the test file to declare `mod common;`).
pub mod gql {
    use std::time::{Duration, Instant};

    use serde_json::{Value, json};

    use crate::common::{TestApp, assert_ok};

    /// The registry fields sync tests read.
    pub const REGISTRY: &str = "id name url status format serverCount lastSyncAt lastSyncAttemptAt lastError \
        nextSyncAt syncIntervalSeconds updatedAt \
        lastSyncReport { succeeded error mode format pages bytes entries added updated unchanged removed \
                         markedRemoved containerServers remoteServers skippedCount skipped { name reason } durationMs }";

    /// Creates a registry and returns its id.
    pub async fn create(app: &TestApp, name: &str, url: &str, extra: Value) -> String {
        let mut input = json!({ "name": name, "url": url });
        input
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().cloned().unwrap_or_default());
        let r = app
            .graphql(
                "mutation($i: CreateRegistryInput!) { createRegistry(input: $i) { id status } }",
                json!({ "i": input }),
            )
            .await;
        assert_ok(&r);
        assert_eq!(r["data"]["createRegistry"]["status"], "INACTIVE");
        r["data"]["createRegistry"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Reads a registry.
    pub async fn registry(app: &TestApp, id: &str) -> Value {
        let r = app
            .graphql(
                &format!("query($id: ID!) {{ registry(id: $id) {{ {REGISTRY} }} }}"),
                json!({ "id": id }),
            )
            .await;
        assert_ok(&r);
        r["data"]["registry"].clone()
    }

    /// Calls `syncRegistry` and returns the raw response.
    pub async fn trigger(app: &TestApp, id: &str) -> Value {
        app.graphql(
            &format!("mutation($id: ID!) {{ syncRegistry(id: $id) {{ {REGISTRY} }} }}"),
            json!({ "id": id }),
        )
        .await
    }

    /// Waits until the registry leaves SYNCING (at most 30 s).
    pub async fn wait_done(app: &TestApp, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let reg = registry(app, id).await;
            if reg["status"] != "SYNCING" {
                return reg;
            }
            assert!(
                Instant::now() < deadline,
                "the sync did not finish: {reg:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Triggers a sync, checks that the mutation answers with SYNCING, and waits for the end.
    pub async fn sync(app: &TestApp, id: &str) -> Value {
        let r = trigger(app, id).await;
        assert_ok(&r);
        assert_eq!(r["data"]["syncRegistry"]["status"], "SYNCING", "{r:#}");
        wait_done(app, id).await
    }

    /// Changes a registry's URL.
    pub async fn set_url(app: &TestApp, id: &str, url: &str) {
        let r = app
            .graphql(
                "mutation($id: ID!, $u: String!) { updateRegistry(id: $id, input: { url: $u }) { id } }",
                json!({ "id": id, "u": url }),
            )
            .await;
        assert_ok(&r);
    }

    /// A fingerprint of every server row of the database (ids, names and change times), to show
    /// that a failed sync wrote nothing.
    pub async fn servers_fingerprint(app: &TestApp) -> String {
        app.db
            .scalar(
                "SELECT coalesce(md5(string_agg(id::text || name || updated_at::text || coalesce(sync_hash, ''), ',' \
                 ORDER BY id)), '') FROM servers",
            )
            .await
            .unwrap_or_default()
    }
}
