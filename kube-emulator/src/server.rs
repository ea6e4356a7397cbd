//! HTTP(S) serving, routing and the generic REST handlers.

use crate::crd;
use crate::discovery;
use crate::patch;
use crate::protobuf;
use crate::resources::ResourceDef;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::{self, ApiError};
use crate::store::{DeleteOutcome, EventType, meta_str};
use crate::{Shared, defaults, kubelet, tables};
use axum::body::Body;
use base64::Engine;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{Method, Request, Response, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

pub type Resp = Response<Body>;

/// Accept loop with outage simulation (listener closed while down, re-bound afterwards).
pub async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let mut listener = Some(listener);
    let mut down = shared.outage.subscribe();
    loop {
        if *down.borrow_and_update() {
            listener = None;
            if down.changed().await.is_err() {
                return;
            }
            continue;
        }
        if listener.is_none() {
            let addr = *shared.addr.read().unwrap();
            match TcpListener::bind(addr).await {
                Ok(l) => listener = Some(l),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let l = listener.as_ref().unwrap();
        tokio::select! {
            r = l.accept() => {
                if let Ok((stream, _)) = r {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(connection(shared.clone(), stream, tls.clone(), shared.outage.subscribe()));
                }
            }
            r = down.changed() => { if r.is_err() { return; } }
        }
    }
}

async fn wait_down(mut down: watch::Receiver<bool>) {
    loop {
        if *down.borrow_and_update() {
            return;
        }
        if down.changed().await.is_err() {
            return;
        }
    }
}

async fn connection(
    shared: Arc<Shared>,
    stream: tokio::net::TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    down: watch::Receiver<bool>,
) {
    let svc = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(shared, req).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    match tls {
        Some(cfg) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
            let Ok(s) = acceptor.accept(stream).await else {
                return;
            };
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(s), svc);
            tokio::select! { _ = conn => {}, _ = wait_down(down) => {} }
        }
        None => {
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
            tokio::select! { _ = conn => {}, _ = wait_down(down) => {} }
        }
    }
}

pub fn json_resp(code: u16, v: &Value) -> Resp {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .header("Cache-Control", "no-cache, private")
        .body(Body::from(serde_json::to_vec(v).unwrap_or_default()))
        .unwrap()
}

pub fn err_resp(e: ApiError) -> Resp {
    if let Some(text) = e.plain {
        return Response::builder()
            .status(e.code)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .header("X-Content-Type-Options", "nosniff")
            .body(Body::from(text))
            .unwrap();
    }
    json_resp(e.code, &e.body)
}

/// Parsed request.
pub struct Req {
    pub method: Method,
    pub query: HashMap<String, String>,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Req {
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query
            .get(k)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
    fn qbool(&self, k: &str) -> bool {
        matches!(self.q(k), Some("true") | Some("1"))
    }
    fn accept(&self) -> &str {
        self.headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
    fn wants_table(&self) -> bool {
        let a = self.accept();
        a.split(',')
            .next()
            .is_some_and(|first| first.contains("as=Table"))
    }
    fn content_type(&self) -> String {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string()
    }
    fn field_manager(&self) -> String {
        if let Some(m) = self.q("fieldManager") {
            return m.to_string();
        }
        self.headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .and_then(|ua| ua.split('/').next())
            .filter(|s| !s.is_empty())
            .unwrap_or("unknown")
            .to_string()
    }
    fn dry_run(&self) -> bool {
        self.q("dryRun") == Some("All")
    }
    /// The object of a create/replace: JSON, or protobuf for the kinds kubectl sends that way.
    fn object_body(&self, def: &ResourceDef) -> Result<Value, ApiError> {
        let ct = self.content_type();
        if ct != protobuf::CONTENT_TYPE {
            return self.json_body();
        }
        protobuf::decode(&self.body, def.kind).map_err(|e| {
            if e.contains("not supported") {
                ApiError::unsupported_media_type(&ct)
            } else {
                ApiError::bad_request(format!("unable to decode the protobuf body: {e}"))
            }
        })
    }
    fn json_body(&self) -> Result<Value, ApiError> {
        let ct = self.content_type();
        if ct.contains("protobuf") || ct.contains("cbor") {
            return Err(ApiError::unsupported_media_type(&ct));
        }
        if self.body.is_empty() {
            return Err(ApiError::bad_request("the body of the request was empty"));
        }
        serde_json::from_slice(&self.body).map_err(|e| {
            ApiError::bad_request(format!(
                "the object provided is unrecognized (must be of type JSON): {e}"
            ))
        })
    }
}

async fn handle(shared: Arc<Shared>, req: Request<hyper::body::Incoming>) -> Resp {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let path = parts.uri.path().to_string();
    let query: HashMap<String, String> =
        form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
            .filter(|(k, _)| !k.is_empty())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    let r = Req {
        method: parts.method,
        query,
        headers: parts.headers,
        body,
    };
    tracing::debug!(method = %r.method, %path, "request");
    match route(&shared, &path, r).await {
        Ok(resp) => resp,
        Err(e) => err_resp(e),
    }
}

fn public_path(p: &str) -> bool {
    matches!(
        p,
        "/healthz" | "/livez" | "/readyz" | "/version" | "/version/"
    )
}

async fn route(shared: &Arc<Shared>, path: &str, r: Req) -> Result<Resp, ApiError> {
    if shared.reject_auth.load(Ordering::SeqCst) {
        return Err(ApiError::unauthorized());
    }
    if let Some(token) = &shared.config.token
        && !public_path(path)
    {
        let auth = r
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if auth != format!("Bearer {token}") {
            return Err(ApiError::unauthorized());
        }
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let segs: Vec<&str> = if segs.last() == Some(&"") {
        segs[..segs.len() - 1].to_vec()
    } else {
        segs
    };
    let addr = shared.addr.read().unwrap().to_string();
    let defs = shared.store.all_defs();
    match segs.as_slice() {
        ["healthz"] | ["livez"] | ["readyz"] => {
            return Ok(Response::builder()
                .status(200)
                .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(Body::from("ok"))
                .unwrap());
        }
        ["version"] => return Ok(json_resp(200, &discovery::version(shared.config.version))),
        ["api"] => return Ok(json_resp(200, &discovery::api_versions(&addr))),
        ["apis"] => return Ok(json_resp(200, &discovery::api_group_list(&defs))),
        ["openapi", "v3"] => return Ok(json_resp(200, &discovery::openapi_v3_root(&defs))),
        ["openapi", "v3", "api", v] => {
            return discovery::openapi_v3_gv(&defs, "", v)
                .map(|d| json_resp(200, &d))
                .ok_or_else(ApiError::page_not_found);
        }
        ["openapi", "v3", "apis", g, v] => {
            return discovery::openapi_v3_gv(&defs, g, v)
                .map(|d| json_resp(200, &d))
                .ok_or_else(ApiError::page_not_found);
        }
        ["apis", g] => {
            return discovery::api_group(&defs, g)
                .map(|d| json_resp(200, &d))
                .ok_or_else(ApiError::page_not_found);
        }
        ["api", "v1"] => {
            return Ok(json_resp(
                200,
                &discovery::resource_list(&defs, "", "v1").unwrap(),
            ));
        }
        ["apis", g, v] => {
            return discovery::resource_list(&defs, g, v)
                .map(|d| json_resp(200, &d))
                .ok_or_else(ApiError::page_not_found);
        }
        _ => {}
    }
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", g, v, rest @ ..] => (g, v, rest),
        _ => return Err(ApiError::page_not_found()),
    };
    if !defs
        .iter()
        .any(|d| d.group == group && d.version == version)
    {
        return Err(ApiError::page_not_found());
    }
    let not_found_res = || {
        ApiError::status(
            404,
            "NotFound",
            "the server could not find the requested resource",
            Some(json!({})),
        )
    };
    let (def, ns, name, sub, remainder): (
        &'static ResourceDef,
        Option<String>,
        Option<String>,
        Option<String>,
        String,
    ) = if rest.len() >= 3
        && rest[0] == "namespaces"
        && shared
            .store
            .find_def(group, version, rest[2])
            .is_some_and(|d| d.namespaced)
    {
        let d = shared.store.find_def(group, version, rest[2]).unwrap();
        (
            d,
            Some(rest[1].to_string()),
            rest.get(3).map(|s| s.to_string()),
            rest.get(4).map(|s| s.to_string()),
            rest.get(5..).map(|x| x.join("/")).unwrap_or_default(),
        )
    } else if !rest.is_empty() {
        let d = shared
            .store
            .find_def(group, version, rest[0])
            .ok_or_else(not_found_res)?;
        (
            d,
            None,
            rest.get(1).map(|s| s.to_string()),
            rest.get(2).map(|s| s.to_string()),
            rest.get(3..).map(|x| x.join("/")).unwrap_or_default(),
        )
    } else {
        return Err(not_found_res());
    };
    if !def.namespaced && ns.is_some() {
        return Err(not_found_res());
    }
    if def.namespaced && ns.is_none() && name.is_some() {
        return Err(not_found_res());
    }
    if let Some(s) = &sub
        && !def.subresources.contains(&s.as_str())
        && !(def.storage == "namespaces" && s == "finalize")
    {
        return Err(not_found_res());
    }
    // authorization
    let verb = match (&r.method, name.is_some()) {
        (&Method::GET, false) if r.qbool("watch") => "watch",
        (&Method::GET, false) => "list",
        (&Method::GET, true) if sub.as_deref() == Some("proxy") => "get",
        (&Method::GET, true) => "get",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, false) => "deletecollection",
        (&Method::DELETE, true) => "delete",
        _ => "get",
    };
    let res_name = match &sub {
        Some(s) => format!("{}/{}", def.plural, s),
        None => def.plural.to_string(),
    };
    let policy = shared.policy();
    let allowed = policy.allows(verb, def.group, &res_name, ns.as_deref());
    shared
        .access_log
        .record(verb, def.group, &res_name, allowed);
    if !allowed {
        return Err(ApiError::forbidden(
            &shared.config.user,
            verb,
            def,
            ns.as_deref(),
            name.as_deref(),
        ));
    }
    let ns_str = ns.clone().unwrap_or_default();
    // special endpoints
    match def.storage {
        "selfsubjectaccessreviews" | "selfsubjectrulesreviews" => {
            if r.method != Method::POST || name.is_some() {
                return Err(ApiError::method_not_allowed());
            }
            return access_review(shared, def, &r);
        }
        "podmetrics" | "nodemetrics" => {
            if r.method != Method::GET {
                return Err(ApiError::method_not_allowed());
            }
            if r.qbool("watch") {
                return Err(ApiError::method_not_allowed());
            }
            return kubelet::metrics(shared, def, ns.as_deref(), name.as_deref(), &r);
        }
        _ => {}
    }
    match (sub.as_deref(), def.storage) {
        (Some("log"), "pods") => {
            return kubelet::logs(shared, &ns_str, name.as_deref().unwrap_or_default(), &r).await;
        }
        (Some("proxy"), "pods" | "services") => {
            return kubelet::proxy(
                shared,
                def,
                &ns_str,
                name.as_deref().unwrap_or_default(),
                &remainder,
                &r,
            );
        }
        (Some("scale"), _) => {
            return scale(
                shared,
                def,
                &ns_str,
                name.as_deref().unwrap_or_default(),
                &r,
            );
        }
        _ => {}
    }
    let name_s = name.clone().unwrap_or_default();
    match (r.method.clone(), name.is_some()) {
        (Method::GET, false) if r.qbool("watch") => watch(shared, def, ns.as_deref(), &r),
        (Method::GET, false) => list(shared, def, ns.as_deref(), &r),
        (Method::GET, true) => get(shared, def, &ns_str, &name_s, &r),
        (Method::POST, false) => create(shared, def, &ns_str, &r),
        (Method::PUT, true) => replace(shared, def, &ns_str, &name_s, sub.as_deref(), &r),
        (Method::PATCH, true) => patch_handler(shared, def, &ns_str, &name_s, sub.as_deref(), &r),
        (Method::DELETE, true) => delete(shared, def, &ns_str, &name_s, &r),
        (Method::DELETE, false) => delete_collection(shared, def, ns.as_deref(), &r),
        _ => Err(ApiError::method_not_allowed()),
    }
}

// ------------------------------------------------------------------------------------------
// representation conversion (core/v1 Event <-> events.k8s.io/v1 Event)
// ------------------------------------------------------------------------------------------

fn core_to_events_v1(o: &Value) -> Value {
    let mut e = json!({
        "metadata": o["metadata"],
        "regarding": o["involvedObject"],
        "reason": o["reason"],
        "note": o["message"],
        "type": o["type"],
        "reportingController": o["reportingComponent"].as_str().filter(|s| !s.is_empty()).map(Value::from).unwrap_or_else(|| o.pointer("/source/component").cloned().unwrap_or(Value::Null)),
        "reportingInstance": o["reportingInstance"].as_str().filter(|s| !s.is_empty()).map(Value::from).unwrap_or_else(|| o.pointer("/source/host").cloned().unwrap_or(Value::Null)),
        "eventTime": o["eventTime"],
        "action": o["action"],
        "related": o["related"],
        "series": o["series"],
        "deprecatedSource": o["source"],
        "deprecatedFirstTimestamp": o["firstTimestamp"],
        "deprecatedLastTimestamp": o["lastTimestamp"],
        "deprecatedCount": o["count"],
    });
    if e["eventTime"].is_null() {
        let t = o["firstTimestamp"]
            .as_str()
            .unwrap_or_default()
            .replace('Z', ".000000Z");
        e["eventTime"] = json!(t);
    }
    strip_nulls(&mut e);
    e
}

fn events_v1_to_core(o: &Value) -> Value {
    let mut e = json!({
        "metadata": o["metadata"],
        "involvedObject": o["regarding"],
        "reason": o["reason"],
        "message": o["note"],
        "type": o["type"],
        "reportingComponent": o["reportingController"],
        "reportingInstance": o["reportingInstance"],
        "eventTime": o["eventTime"],
        "action": o["action"],
        "related": o["related"],
        "series": o["series"],
        "source": o["deprecatedSource"],
        "firstTimestamp": o["deprecatedFirstTimestamp"],
        "lastTimestamp": o["deprecatedLastTimestamp"],
        "count": o["deprecatedCount"],
    });
    strip_nulls(&mut e);
    e
}

fn strip_nulls(v: &mut Value) {
    if let Some(m) = v.as_object_mut() {
        m.retain(|k, v| !v.is_null() || k == "eventTime");
    }
}

/// Stored shape -> wire shape for `def` (with kind/apiVersion).
pub fn external(def: &ResourceDef, o: &Value) -> Value {
    let mut out = if def.group == "events.k8s.io" {
        core_to_events_v1(o)
    } else {
        o.clone()
    };
    if let Some(m) = out.as_object_mut() {
        m.insert("apiVersion".into(), json!(def.api_version()));
        m.insert("kind".into(), json!(def.kind));
    }
    out
}

fn internal(def: &ResourceDef, o: Value) -> Value {
    if def.group == "events.k8s.io" {
        events_v1_to_core(&o)
    } else {
        o
    }
}

/// A Table of `items`: the CRD's printer columns for custom resources, else the built-in ones.
fn to_table(
    def: &ResourceDef,
    ver: Option<&crd::Version>,
    items: &[Value],
    meta: Value,
    include_object: &str,
) -> Value {
    let ext = |o: &Value| external(def, o);
    match ver {
        Some(v) => tables::render(
            crd::table_columns(v),
            |o| crd::table_cells(v, o),
            items,
            meta,
            include_object,
            ext,
        ),
        None => tables::table(def, items, meta, include_object, ext),
    }
}

/// Defaults and validation of a write: CR schemas, CRD establishment, built-in rules.
fn admit(
    shared: &Shared,
    def: &ResourceDef,
    mut obj: Value,
    r: &Req,
    sub: Option<&str>,
) -> Result<Value, ApiError> {
    if let Some(v) = shared.store.crds.version_of(def) {
        crd::admit(&v, &mut obj, r.q("fieldValidation") == Some("Strict"))?;
        return Ok(obj);
    }
    if sub.is_some() {
        return Ok(obj);
    }
    let mut obj = defaults::apply(def.storage, obj);
    if def.storage == crd::CRD_STORAGE {
        crd::validate_crd(def, &obj)?;
        obj = crd::establish_status(obj);
    }
    defaults::validate(def, &obj)?;
    Ok(obj)
}

fn check_kind(def: &ResourceDef, o: &Value) -> Result<(), ApiError> {
    if let Some(k) = o.get("kind").and_then(Value::as_str)
        && !k.is_empty()
        && k != def.kind
    {
        return Err(ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {}): couldn't get version/kind; json parse error",
            def.kind
        )));
    }
    if let Some(av) = o.get("apiVersion").and_then(Value::as_str)
        && !av.is_empty()
        && av != def.api_version()
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            def.api_version()
        )));
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// list / get / watch
// ------------------------------------------------------------------------------------------

fn selectors(def: &ResourceDef, r: &Req) -> Result<(LabelSelector, FieldSelector), ApiError> {
    Ok((
        LabelSelector::parse(r.q("labelSelector").unwrap_or_default())?,
        FieldSelector::parse(r.q("fieldSelector").unwrap_or_default(), def)?,
    ))
}

fn encode_continue(rv: u64, key: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(json!({"v": "meta.k8s.io/v1", "rv": rv, "start": key}).to_string())
}

fn decode_continue(tok: &str) -> Result<(u64, String), ApiError> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {tok}"));
    let raw = base64::engine::general_purpose::STANDARD
        .decode(tok)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    Ok((
        v["rv"].as_u64().ok_or_else(bad)?,
        v["start"].as_str().ok_or_else(bad)?.to_string(),
    ))
}

fn obj_key(o: &Value) -> String {
    format!("{}/{}", meta_str(o, "namespace"), meta_str(o, "name"))
}

fn list(
    shared: &Arc<Shared>,
    def: &'static ResourceDef,
    ns: Option<&str>,
    r: &Req,
) -> Result<Resp, ApiError> {
    let (ls, fs) = selectors(def, r)?;
    let store = &shared.store;
    if r.q("resourceVersionMatch") == Some("Exact")
        && let Some(rv) = r.q("resourceVersion").and_then(|s| s.parse::<u64>().ok())
        && rv < store.compacted_rv()
    {
        return Err(ApiError::gone(format!(
            "too old resource version: {rv} ({})",
            store.compacted_rv() + 1
        )));
    }
    let (items, cur_rv) = store.list(def.storage, ns);
    let mut items: Vec<Value> = items
        .into_iter()
        .filter(|o| ls.matches(o) && fs.matches(o))
        .collect();
    items.sort_by_key(obj_key);
    let mut list_rv = cur_rv;
    if let Some(tok) = r.q("continue") {
        let (rv, start) = decode_continue(tok)?;
        list_rv = rv;
        items.retain(|o| obj_key(o) > start);
    }
    let mut meta = json!({"resourceVersion": list_rv.to_string()});
    if let Some(limit) = r.q("limit").and_then(|s| s.parse::<usize>().ok())
        && limit > 0
        && items.len() > limit
    {
        let remaining = items.len() - limit;
        items.truncate(limit);
        meta["continue"] = json!(encode_continue(list_rv, &obj_key(items.last().unwrap())));
        meta["remainingItemCount"] = json!(remaining);
    }
    if r.wants_table() {
        let inc = r.q("includeObject").unwrap_or("Metadata");
        let ver = shared.store.crds.version_of(def);
        return Ok(json_resp(
            200,
            &to_table(def, ver.as_ref(), &items, meta, inc),
        ));
    }
    let items: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut e = external(def, o);
            if let Some(m) = e.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            e
        })
        .collect();
    Ok(json_resp(
        200,
        &json!({"kind": def.list_kind(), "apiVersion": def.api_version(), "metadata": meta, "items": items}),
    ))
}

fn get(
    shared: &Arc<Shared>,
    def: &'static ResourceDef,
    ns: &str,
    name: &str,
    r: &Req,
) -> Result<Resp, ApiError> {
    let o = shared
        .store
        .get(def.storage, ns, name)
        .ok_or_else(|| ApiError::not_found(def, name))?;
    if r.wants_table() {
        let inc = r.q("includeObject").unwrap_or("Metadata");
        let meta = json!({"resourceVersion": meta_str(&o, "resourceVersion")});
        let ver = shared.store.crds.version_of(def);
        return Ok(json_resp(
            200,
            &to_table(def, ver.as_ref(), std::slice::from_ref(&o), meta, inc),
        ));
    }
    Ok(json_resp(200, &external(def, &o)))
}

fn watch(
    shared: &Arc<Shared>,
    def: &'static ResourceDef,
    ns: Option<&str>,
    r: &Req,
) -> Result<Resp, ApiError> {
    let (ls, fs) = selectors(def, r)?;
    let store = shared.store.clone();
    let rv_param = r.q("resourceVersion").map(String::from);
    let start_rv: Option<u64> = match &rv_param {
        None => None,
        Some(s) if s == "0" => None,
        Some(s) => Some(s.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "resourceVersion: Invalid value: \"{s}\": must be a valid integer"
            ))
        })?),
    };
    let send_initial = r.qbool("sendInitialEvents") || start_rv.is_none();
    let initial_end_bookmark = r.qbool("sendInitialEvents");
    let bookmarks = r.qbool("allowWatchBookmarks");
    let timeout = r
        .q("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let table = r.wants_table();
    let ns = ns.map(String::from);
    let bookmark_every = shared.config.bookmark_interval;
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(256);
    let mut rv_rx = store.subscribe();
    let ver = shared.store.crds.version_of(def);
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        let render = |etype: &str, o: &Value| -> Bytes {
            let obj = if table {
                to_table(
                    def,
                    ver.as_ref(),
                    std::slice::from_ref(o),
                    json!({"resourceVersion": meta_str(o, "resourceVersion")}),
                    "Object",
                )
            } else {
                external(def, o)
            };
            let mut line =
                serde_json::to_vec(&json!({"type": etype, "object": obj})).unwrap_or_default();
            line.push(b'\n');
            Bytes::from(line)
        };
        let bookmark = |rv: u64, initial_end: bool| -> Bytes {
            let mut meta = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
            if initial_end {
                meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            let mut line = serde_json::to_vec(&json!({"type": "BOOKMARK", "object": {"kind": def.kind, "apiVersion": def.api_version(), "metadata": meta}})).unwrap_or_default();
            line.push(b'\n');
            Bytes::from(line)
        };
        let matches = |o: &Value| {
            ns.as_deref().is_none_or(|n| meta_str(o, "namespace") == n)
                && ls.matches(o)
                && fs.matches(o)
        };
        let mut last = start_rv.unwrap_or_default();
        if send_initial {
            let (mut items, cur) = store.list(def.storage, ns.as_deref());
            items.sort_by_key(obj_key);
            let min = start_rv.unwrap_or(0);
            for o in items.iter().filter(|o| matches(o)) {
                let orv: u64 = meta_str(o, "resourceVersion").parse().unwrap_or(0);
                if orv > min && tx.send(Ok(render("ADDED", o))).await.is_err() {
                    return;
                }
            }
            last = cur.max(last);
            if initial_end_bookmark && bookmarks && tx.send(Ok(bookmark(last, true))).await.is_err()
            {
                return;
            }
        }
        let mut next_bookmark = tokio::time::Instant::now() + bookmark_every;
        let mut sent_final = false;
        loop {
            match store.changes_since(last) {
                Err(oldest) => {
                    let st =
                        ApiError::gone(format!("too old resource version: {last} ({oldest})")).body;
                    let mut line = serde_json::to_vec(&json!({"type": "ERROR", "object": st}))
                        .unwrap_or_default();
                    line.push(b'\n');
                    let _ = tx.send(Ok(Bytes::from(line))).await;
                    return;
                }
                Ok((changes, cur)) => {
                    for c in changes {
                        if c.storage != def.storage {
                            continue;
                        }
                        let now_m = matches(&c.object);
                        let was_m = c.old.as_ref().is_some_and(&matches);
                        let etype = match c.etype {
                            EventType::Added if now_m => "ADDED",
                            EventType::Deleted if was_m || now_m => "DELETED",
                            EventType::Modified if now_m && was_m => "MODIFIED",
                            EventType::Modified if now_m => "ADDED",
                            EventType::Modified if was_m => "DELETED",
                            _ => continue,
                        };
                        if tx.send(Ok(render(etype, &c.object))).await.is_err() {
                            return;
                        }
                    }
                    last = last.max(cur);
                }
            }
            let now = tokio::time::Instant::now();
            let near_deadline = deadline
                .checked_sub(Duration::from_secs(2))
                .unwrap_or(deadline)
                .max(now);
            let final_due = !sent_final && near_deadline < next_bookmark;
            let bm_at = if final_due {
                near_deadline
            } else {
                next_bookmark
            };
            tokio::select! {
                r = rv_rx.changed() => { if r.is_err() { return; } }
                _ = tokio::time::sleep_until(deadline) => { return; }
                _ = tokio::time::sleep_until(bm_at), if bookmarks => {
                    if tx.send(Ok(bookmark(last, false))).await.is_err() { return; }
                    if final_due {
                        sent_final = true;
                    }
                    next_bookmark = tokio::time::Instant::now() + bookmark_every;
                }
                _ = tx.closed() => { return; }
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Ok(Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json")
        .header("Cache-Control", "no-cache, private")
        .body(Body::from_stream(stream))
        .unwrap())
}

// ------------------------------------------------------------------------------------------
// writes
// ------------------------------------------------------------------------------------------

fn create(
    shared: &Arc<Shared>,
    def: &'static ResourceDef,
    ns: &str,
    r: &Req,
) -> Result<Resp, ApiError> {
    let body = r.object_body(def)?;
    check_kind(def, &body)?;
    let mut obj = admit(shared, def, internal(def, body), r, None)?;
    patch::track_update(None, &mut obj, &r.field_manager(), "", &def.api_version());
    if r.dry_run() {
        if def.namespaced && !shared.store.namespace_exists(ns) {
            return Err(ApiError::namespace_not_found(ns));
        }
        obj["metadata"]["namespace"] = json!(ns);
        obj["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
        obj["metadata"]["creationTimestamp"] = json!(crate::store::now_ts());
        return Ok(json_resp(201, &external(def, &obj)));
    }
    let created = shared.store.create(def, ns, obj)?;
    Ok(json_resp(201, &external(def, &created)))
}

fn replace(
    shared: &Arc<Shared>,
    def: &'static ResourceDef,
    ns: &str,
    name: &str,
    sub: Option<&str>,
    r: &Req,
) -> Result<Resp, ApiError> {
    let body = r.object_body(def)?;
    check_kind(def, &body)?;
    let current = shared
        .store
        .get(def.storage, ns, name)
        .ok_or_else(|| ApiError::not_found(def, name))?;
    let mut obj = admit(shared, def, internal(def, body), r, sub)?;
    patch::track_update(
        Some(&current),
        &mut obj,
        &r.field_manager(),
        sub.unwrap_or_default(),
        &def.api_version(),
    );
    if r.dry_run() {
        return Ok(json_resp(200, &external(def, &obj)));
    }
    let out = shared.store.replace(def, ns, name, obj, sub)?;
    Ok(json_resp(200, &external(def, &out)))
}

fn apply_conflict(def: &ResourceDef, name: &str, conflicts: &[(String, String)]) -> ApiError {
    let n = conflicts.len();
    let message = if n == 1 {
        format!(
            "Apply failed with 1 conflict: conflict with \"{}\": {}",
            conflicts[0].0, conflicts[0].1
        )
    } else {
        let mut by: Vec<(String, Vec<String>)> = Vec::new();
        for (m, f) in conflicts {
            match by.iter_mut().find(|(x, _)| x == m) {
                Some((_, v)) => v.push(f.clone()),
                None => by.push((m.clone(), vec![f.clone()])),
            }
        }
        let parts: Vec<String> = by
            .iter()
            .map(|(m, fs)| {
                let lines: Vec<String> = fs.iter().map(|f| format!("- {f}")).collect();
                format!("conflicts with \"{m}\":\n{}", lines.join("\n"))
            })
            .collect();
        format!("Apply failed with {n} conflicts: {}", parts.join("\n"))
    };
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(m, f)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\""), "field": f}))
        .collect();
    let mut d = json!({"name": name, "kind": def.plural, "causes": causes});
    if !def.group.is_empty() {
        d["group"] = json!(def.group);
    }
    ApiError::status(409, "Conflict", message, Some(d))
}

/// Server-side apply: returns the merged object.
fn server_side_apply(
    def: &ResourceDef,
    current: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    sub: &str,
) -> Result<Value, ApiError> {
    let include_status = sub == "status";
    let name = meta_str(applied, "name").to_string();
    let mut managers = current.map(patch::read_managers).unwrap_or_default();
    let mut times = current.map(patch::manager_times).unwrap_or_default();
    let new_set: std::collections::BTreeSet<patch::FieldPath> =
        patch::field_set(applied, include_status)
            .into_iter()
            .filter(|p| include_status == p.first().is_some_and(|f| f == "f:status"))
            .collect();
    let my_key = (manager.to_string(), "Apply".to_string(), sub.to_string());
    let mut conflicts = Vec::new();
    if let Some(cur) = current {
        for (key, set) in managers.iter() {
            if key.0 == manager && key.1 == "Apply" {
                continue;
            }
            for p in set.iter().filter(|p| new_set.contains(*p)) {
                if p.last().is_some_and(|l| l == ".") {
                    continue;
                }
                if patch::value_at(cur, p) != patch::value_at(applied, p) {
                    conflicts.push((key.0.clone(), patch::display_path(p)));
                }
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(apply_conflict(def, &name, &conflicts));
    }
    if force {
        for (key, set) in managers.iter_mut() {
            if *key != my_key {
                let cur = current.cloned().unwrap_or(Value::Null);
                set.retain(|p| {
                    !new_set.contains(p) || patch::value_at(&cur, p) == patch::value_at(applied, p)
                });
            }
        }
    }
    let old_set = managers.get(&my_key).cloned().unwrap_or_default();
    let mut merged = current.cloned().unwrap_or_else(|| json!({}));
    let mut clean = applied.clone();
    if let Some(m) = clean.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    if def.is_custom() {
        // custom resources have no strategic merge keys: their lists are atomic
        patch::merge_patch(&mut merged, &clean);
    } else {
        patch::strategic_merge(&mut merged, &clean);
    }
    for p in old_set.difference(&new_set) {
        let owned_by_other = managers.iter().any(|(k, s)| *k != my_key && s.contains(p));
        if !owned_by_other {
            patch::remove_at(&mut merged, p);
        }
    }
    managers.insert(my_key, new_set);
    times.insert(manager.to_string(), crate::store::now_ts());
    patch::write_managers(&mut merged, &managers, &def.api_version(), &times);
    Ok(merged)
}

fn patch_handler(
    shared: &Arc<Shared>,
    def: &'static ResourceDef,
    ns: &str,
    name: &str,
    sub: Option<&str>,
    r: &Req,
) -> Result<Resp, ApiError> {
    let ct = r.content_type();
    let is_apply = ct == "application/apply-patch+yaml" || ct == "application/apply-patch+cbor";
    if !matches!(
        ct.as_str(),
        "application/json-patch+json"
            | "application/merge-patch+json"
            | "application/strategic-merge-patch+json"
    ) && !is_apply
    {
        return Err(ApiError::unsupported_media_type(&ct));
    }
    if ct == "application/strategic-merge-patch+json" && shared.store.crds.version_of(def).is_some()
    {
        return Err(ApiError::unsupported_media_type(&ct));
    }
    let p: Value = if is_apply {
        serde_json::from_slice(&r.body).map_err(|e| {
            ApiError::bad_request(format!(
                "error decoding YAML: the emulator accepts JSON apply bodies only: {e}"
            ))
        })?
    } else {
        r.json_body()?
    };
    let manager = if is_apply {
        match r.q("fieldManager") {
            Some(m) => m.to_string(),
            None => {
                return Err(ApiError::status(
                    422,
                    "Invalid",
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                    Some(
                        json!({"group": "meta.k8s.io", "kind": "PatchOptions", "causes": [{"reason": "FieldValueRequired", "message": "Required value: is required for apply patch", "field": "fieldManager"}]}),
                    ),
                ));
            }
        }
    } else {
        r.field_manager()
    };
    if is_apply {
        check_kind(def, &p)?;
        if p.get("apiVersion").is_none() || p.get("kind").is_none() {
            return Err(ApiError::bad_request(
                "invalid object type: apply patches must set apiVersion and kind",
            ));
        }
        let pname = meta_str(&p, "name");
        if pname != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({pname}) does not match the name on the URL ({name})"
            )));
        }
    }
    let explicit_rv = p.pointer("/metadata/resourceVersion").is_some();
    let force = r.qbool("force");
    let subs = sub.unwrap_or_default();
    for _attempt in 0..10 {
        let current = shared.store.get(def.storage, ns, name);
        let Some(cur) = current else {
            if !is_apply || sub.is_some() {
                return Err(ApiError::not_found(def, name));
            }
            let merged = server_side_apply(def, None, &p, &manager, force, "")?;
            let mut obj = admit(shared, def, internal(def, merged), r, None)?;
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
            if r.dry_run() {
                return Ok(json_resp(201, &external(def, &obj)));
            }
            match shared.store.create(def, ns, obj) {
                Ok(created) => return Ok(json_resp(201, &external(def, &created))),
                Err(e) if e.code == 409 => continue,
                Err(e) => return Err(e),
            }
        };
        let mut work = external(def, &cur);
        match ct.as_str() {
            "application/json-patch+json" => {
                patch::json_patch(&mut work, &p).map_err(|e| {
                    ApiError::status(
                        422,
                        "Invalid",
                        format!(
                            "the server rejected our request due to an error in our request: {e}"
                        ),
                        None,
                    )
                })?;
            }
            "application/merge-patch+json" => patch::merge_patch(&mut work, &p),
            "application/strategic-merge-patch+json" => patch::strategic_merge(&mut work, &p),
            _ => work = server_side_apply(def, Some(&work), &p, &manager, force, subs)?,
        }
        check_kind(def, &work)?;
        let mut obj = internal(def, work);
        if !explicit_rv {
            obj["metadata"]["resourceVersion"] = json!(meta_str(&cur, "resourceVersion"));
        }
        obj = admit(shared, def, obj, r, sub)?;
        if !is_apply {
            patch::track_update(Some(&cur), &mut obj, &manager, subs, &def.api_version());
        }
        if r.dry_run() {
            return Ok(json_resp(200, &external(def, &obj)));
        }
        match shared.store.replace(def, ns, name, obj, sub) {
            Ok(out) => return Ok(json_resp(200, &external(def, &out))),
            Err(e) if e.code == 409 && !explicit_rv => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(def, name))
}

fn delete_options(r: &Req) -> Result<Value, ApiError> {
    let mut opts = if r.body.is_empty() {
        json!({})
    } else {
        r.json_body()?
    };
    if !opts.is_object() {
        opts = json!({});
    }
    if let Some(g) = r
        .q("gracePeriodSeconds")
        .and_then(|s| s.parse::<i64>().ok())
    {
        opts["gracePeriodSeconds"] = json!(g);
    }
    if let Some(p) = r.q("propagationPolicy") {
        opts["propagationPolicy"] = json!(p);
    }
    Ok(opts)
}

fn delete(
    shared: &Arc<Shared>,
    def: &'static ResourceDef,
    ns: &str,
    name: &str,
    r: &Req,
) -> Result<Resp, ApiError> {
    let opts = delete_options(r)?;
    if let Some(p) = opts.get("propagationPolicy").and_then(Value::as_str)
        && !matches!(p, "Orphan" | "Background" | "Foreground")
    {
        return Err(ApiError::invalid(
            def,
            name,
            &[(
                "propagationPolicy".into(),
                format!(
                    "Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
                ),
            )],
        ));
    }
    let dry = r.dry_run()
        || opts
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.contains(&json!("All")));
    if dry {
        let o = shared
            .store
            .get(def.storage, ns, name)
            .ok_or_else(|| ApiError::not_found(def, name))?;
        return Ok(json_resp(200, &external(def, &o)));
    }
    match shared.store.delete(def, ns, name, &opts)? {
        DeleteOutcome::Removed(o) => {
            if def.storage == "pods" {
                Ok(json_resp(200, &external(def, &o)))
            } else {
                Ok(json_resp(
                    200,
                    &status::success(def, name, meta_str(&o, "uid")),
                ))
            }
        }
        DeleteOutcome::Pending(o) => Ok(json_resp(200, &external(def, &o))),
    }
}

fn delete_collection(
    shared: &Arc<Shared>,
    def: &'static ResourceDef,
    ns: Option<&str>,
    r: &Req,
) -> Result<Resp, ApiError> {
    let (ls, fs) = selectors(def, r)?;
    let opts = delete_options(r)?;
    let (items, _) = shared.store.list(def.storage, ns);
    let mut out = Vec::new();
    for o in items.iter().filter(|o| ls.matches(o) && fs.matches(o)) {
        if let Ok(res) =
            shared
                .store
                .delete(def, meta_str(o, "namespace"), meta_str(o, "name"), &opts)
        {
            let v = match res {
                DeleteOutcome::Removed(v) | DeleteOutcome::Pending(v) => v,
            };
            let mut e = external(def, &v);
            if let Some(m) = e.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            out.push(e);
        }
    }
    let rv = shared.store.current_rv();
    Ok(json_resp(
        200,
        &json!({"kind": def.list_kind(), "apiVersion": def.api_version(), "metadata": {"resourceVersion": rv.to_string()}, "items": out}),
    ))
}

// ------------------------------------------------------------------------------------------
// scale subresource
// ------------------------------------------------------------------------------------------

fn selector_string(sel: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            parts.push(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
    }
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let k = e["key"].as_str().unwrap_or_default();
            let vals: Vec<&str> = e["values"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match e["operator"].as_str().unwrap_or_default() {
                "In" => parts.push(format!("{k} in ({})", vals.join(","))),
                "NotIn" => parts.push(format!("{k} notin ({})", vals.join(","))),
                "Exists" => parts.push(k.to_string()),
                "DoesNotExist" => parts.push(format!("!{k}")),
                _ => {}
            }
        }
    }
    parts.join(",")
}

fn scale_of(o: &Value) -> Value {
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": o["metadata"]["name"],
            "namespace": o["metadata"]["namespace"],
            "uid": o["metadata"]["uid"],
            "resourceVersion": o["metadata"]["resourceVersion"],
            "creationTimestamp": o["metadata"]["creationTimestamp"],
        },
        "spec": {"replicas": o["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {"replicas": o["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector_string(&o["spec"]["selector"])},
    })
}

fn scale(
    shared: &Arc<Shared>,
    def: &'static ResourceDef,
    ns: &str,
    name: &str,
    r: &Req,
) -> Result<Resp, ApiError> {
    let cur = shared
        .store
        .get(def.storage, ns, name)
        .ok_or_else(|| ApiError::not_found(def, name))?;
    let current_scale = scale_of(&cur);
    let new_scale = match r.method {
        Method::GET => return Ok(json_resp(200, &current_scale)),
        Method::PUT => r.json_body()?,
        Method::PATCH => {
            let p = r.json_body()?;
            let mut w = current_scale.clone();
            match r.content_type().as_str() {
                "application/json-patch+json" => patch::json_patch(&mut w, &p)
                    .map_err(|e| ApiError::status(422, "Invalid", e, None))?,
                "application/merge-patch+json"
                | "application/strategic-merge-patch+json"
                | "application/apply-patch+yaml" => patch::merge_patch(&mut w, &p),
                other => return Err(ApiError::unsupported_media_type(other)),
            }
            w
        }
        _ => return Err(ApiError::method_not_allowed()),
    };
    let sent_rv = new_scale
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if r.method == Method::PUT
        && !sent_rv.is_empty()
        && sent_rv != meta_str(&cur, "resourceVersion")
    {
        return Err(ApiError::conflict(def, name));
    }
    let replicas = new_scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if replicas < 0 {
        return Err(ApiError::invalid(
            def,
            name,
            &[(
                "spec.replicas".into(),
                format!("Invalid value: {replicas}: must be greater than or equal to 0"),
            )],
        ));
    }
    let explicit_rv = r.method == Method::PUT && !sent_rv.is_empty();
    let mut cur = cur;
    for _attempt in 0..10 {
        let mut obj = cur.clone();
        obj["spec"]["replicas"] = json!(replicas);
        patch::track_update(
            Some(&cur),
            &mut obj,
            &r.field_manager(),
            "scale",
            &def.api_version(),
        );
        match shared.store.replace(def, ns, name, obj, None) {
            Ok(out) => return Ok(json_resp(200, &scale_of(&out))),
            Err(e) if e.code == 409 && !explicit_rv => {
                cur = shared
                    .store
                    .get(def.storage, ns, name)
                    .ok_or_else(|| ApiError::not_found(def, name))?;
            }
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(def, name))
}

// ------------------------------------------------------------------------------------------
// access reviews
// ------------------------------------------------------------------------------------------

fn access_review(shared: &Arc<Shared>, def: &ResourceDef, r: &Req) -> Result<Resp, ApiError> {
    let mut body = r.object_body(def)?;
    check_kind(def, &body)?;
    let policy = shared.policy();
    let status = if def.storage == "selfsubjectaccessreviews" {
        if let Some(ra) = body.pointer("/spec/resourceAttributes") {
            let verb = ra["verb"].as_str().unwrap_or_default();
            let group = ra["group"].as_str().unwrap_or_default();
            let mut res = ra["resource"].as_str().unwrap_or_default().to_string();
            if let Some(s) = ra["subresource"].as_str().filter(|s| !s.is_empty()) {
                res = format!("{res}/{s}");
            }
            let ns = ra["namespace"].as_str().filter(|s| !s.is_empty());
            let allowed = policy.allows(verb, group, &res, ns);
            if allowed {
                json!({"allowed": true, "reason": "allowed by emulator access policy"})
            } else {
                json!({"allowed": false})
            }
        } else if let Some(nra) = body.pointer("/spec/nonResourceAttributes") {
            let path = nra["path"].as_str().unwrap_or_default();
            let verb = nra["verb"].as_str().unwrap_or_default();
            let allowed = matches!(policy, crate::AccessPolicy::Admin)
                || (verb == "get"
                    && (path.starts_with("/api")
                        || public_path(path)
                        || path.starts_with("/openapi")));
            json!({"allowed": allowed})
        } else {
            return Err(ApiError::invalid(def, "", &[("spec.resourceAttributes".into(), "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified".into())]));
        }
    } else {
        let ns = body
            .pointer("/spec/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        policy.rules_review_status(ns)
    };
    body["status"] = status;
    body["apiVersion"] = json!(def.api_version());
    body["kind"] = json!(def.kind);
    if body.get("metadata").is_none() {
        body["metadata"] = json!({});
    }
    body["metadata"]["creationTimestamp"] = Value::Null;
    Ok(json_resp(201, &body))
}
