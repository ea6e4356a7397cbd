//! GraphQL over websockets: `graphql-transport-ws` and the legacy `graphql-ws`
//! (subscriptions-transport-ws) protocol.
//!
//! async-graphql-axum's `GraphQLWebSocket` gets the happy path right but not the rest of the
//! protocol: it has no init timeout, replaces a subscription whose id is reused, answers a
//! subscribe before `connection_init` with 1011, rejects a failed init with 1002, never sends
//! `ka`, polls every stream of a socket inline (one slow socket has no per-subscription buffer
//! and no gap notice) and knows nothing about token expiry or a planned shutdown. So this module
//! drives the connection itself and reuses only async-graphql's message types and executor.
//!
//! Close codes: 4400 bad message, 4401 subscribe before init, 4403 forbidden (bad credentials at
//! init, or the token expired), 4408 init timeout, 4409 duplicate subscription id, 4429 repeated
//! init, 1012 planned shutdown (clients reconnect). Close reasons are cut to 123 bytes, so that
//! the close frame (code + reason) fits the 125 bytes of a control frame.
//!
//! Backpressure: each operation starts in its own task and hands its messages to the socket
//! through a bounded channel. When the channel is full, the newest message waits in a one-slot
//! mailbox and replaces any older one waiting there; when it is finally sent it carries
//! `extensions.gap = { missed: n }`, the number of messages replaced. A subscription, once its
//! first answer is sent, follows the shared feed of its operation and scope instead (see
//! [`super::feeds`]): one execution and one encoded payload per change for all its subscribers,
//! and the same bound and gap notice per subscriber. So memory per subscription is bounded, the
//! shared fan-out never waits for a socket, and a socket whose writes stall past the write
//! timeout is dropped. Messages ready together are written with one flush.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_graphql::Data;
use async_graphql::http::{ClientMessage, WebSocketProtocols as Protocols};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{AbortHandle, BoxStream, SelectAll};
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::AppState;
use super::feeds::Feeds;
use crate::authz::NamespaceAccess;
use crate::config::WsConfig;
use crate::error::Code;
use crate::graphql::context::RequestCtx;

mod operation;
use operation::{Life, OpenGuard, Out, changes_only, messages, pump};

/// An operation's output, tagged with the id and the generation of the id's use.
type Tagged = (String, u64, Out);

/// Close code: the client sent something that is not a message of the protocol.
pub const BAD_REQUEST: u16 = 4400;
/// Close code: subscribe before `connection_init` was acknowledged.
pub const UNAUTHORIZED: u16 = 4401;
/// Close code: the credentials were refused, or the token expired.
pub const FORBIDDEN: u16 = 4403;
/// Close code: a message larger than `HIVEGRAPH_MAX_BODY_BYTES` (RFC 6455 "message too big").
const MESSAGE_TOO_BIG: u16 = 1009;
/// Close code: no `connection_init` within the init timeout.
pub const INIT_TIMEOUT: u16 = 4408;
/// Close code: a subscription id that is already in use.
pub const DUPLICATE_ID: u16 = 4409;
/// Close code: a second `connection_init`.
pub const TOO_MANY_INITS: u16 = 4429;
/// Close code: the gateway is restarting; reconnect.
pub const SERVICE_RESTART: u16 = 1012;
/// The read buffer of a socket. tungstenite's default (128 KiB) is zero-filled on every read,
/// so each idle socket held about 115 KB of resident memory; messages larger than this still
/// arrive whole (the buffer grows to a frame's announced length, up to the message limit).
pub const READ_BUFFER_BYTES: usize = 4 * 1024;
/// Longest close reason sent, in bytes (a control frame holds 125 bytes, 2 are the code).
pub const MAX_REASON_BYTES: usize = 123;

/// The websocket side of the gateway: a shutdown switch and a count of open sockets.
#[derive(Clone)]
pub struct Sockets {
    shutdown: watch::Sender<bool>,
    open: Arc<AtomicUsize>,
    subscriptions: Arc<AtomicUsize>,
    /// Subscriptions starting at once (each reads its current state from the database): a
    /// burst of subscribes queues here instead of exhausting the connection pool.
    starting: Arc<tokio::sync::Semaphore>,
    /// The shared executions of subscriptions, by operation and scope.
    feeds: Feeds,
}

impl Default for Sockets {
    fn default() -> Self {
        Self::new(8)
    }
}

impl Sockets {
    /// No sockets yet; at most `concurrent_starts` subscriptions read their first state at once.
    pub fn new(concurrent_starts: usize) -> Self {
        Sockets {
            shutdown: watch::channel(false).0,
            open: Arc::new(AtomicUsize::new(0)),
            subscriptions: Arc::new(AtomicUsize::new(0)),
            starting: Arc::new(tokio::sync::Semaphore::new(concurrent_starts.max(1))),
            feeds: Feeds::default(),
        }
    }

    /// Planned shutdown: every socket gets close code 1012 and new ones are refused the same way.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Sockets open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Subscriptions running now, over all sockets.
    pub fn subscriptions(&self) -> usize {
        self.subscriptions.load(Ordering::Relaxed)
    }

    /// Shared subscription executions running now (subscribers of one operation from one
    /// authorization scope share one).
    pub fn feeds(&self) -> usize {
        self.feeds.count()
    }

    /// Waits until every socket is closed, at most `limit`.
    pub async fn drained(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.open() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `reason` cut at a character boundary to at most [`MAX_REASON_BYTES`].
pub fn close_reason(reason: &str) -> String {
    if reason.len() <= MAX_REASON_BYTES {
        return reason.to_string();
    }
    let mut end = MAX_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

/// Why the connection loop ended.
enum End {
    Close(u16, String),
    /// The peer is gone or stalled: drop the connection without a close handshake.
    Drop,
}

struct Conn {
    protocol: Protocols,
    settings: WsConfig,
    state: AppState,
    ctx: Option<Arc<RequestCtx>>,
    init_seen: bool,
    /// Running operations, by client id: the generation of the id's use and what stops it.
    running: HashMap<String, (u64, AbortHandle)>,
    generation: u64,
}

/// Serves one upgraded socket until it closes.
pub async fn serve(socket: WebSocket, protocol: Protocols, state: AppState) {
    let sockets = state.sockets.clone();
    let _open = OpenGuard::counting(sockets.open.clone());
    let _gauge = crate::metrics::websocket(protocol.sec_websocket_protocol());
    let settings = state.services.config.serve.ws.clone();
    let mut shutdown = sockets.shutdown.subscribe();
    let (mut sink, mut source) = socket.split();
    let mut conn = Conn {
        protocol,
        settings: settings.clone(),
        state,
        ctx: None,
        init_seen: false,
        running: HashMap::new(),
        generation: 0,
    };
    let mut outgoing: SelectAll<BoxStream<'static, Tagged>> = SelectAll::new();
    let write_timeout = Duration::from_millis(settings.ws_write_timeout_ms.max(1));
    let keepalive = Duration::from_millis(settings.ws_keepalive_ms.max(10));
    let init_deadline = Instant::now() + Duration::from_millis(settings.ws_init_timeout_ms);
    let mut ticker = tokio::time::interval_at(Instant::now() + keepalive, keepalive);
    let mut last_heard = Instant::now();
    let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    // Grant changes, watched once the caller's rights depend on grants (not an admin's).
    let mut grants: Option<watch::Receiver<u64>> = None;

    macro_rules! send {
        ($msg:expr) => {
            match tokio::time::timeout(write_timeout, sink.send($msg)).await {
                Ok(Ok(())) => true,
                _ => false,
            }
        };
    }

    let end = loop {
        if *shutdown.borrow() {
            break End::Close(SERVICE_RESTART, "the gateway is restarting".into());
        }
        let expiry = conn.token_expiry().unwrap_or(far);
        let init_by = if conn.init_seen { far } else { init_deadline };
        tokio::select! {
            _ = shutdown.changed() => {}
            changed = async { grants.as_mut().expect("guarded").changed().await }, if grants.is_some() => {
                if changed.is_err() {
                    grants = None;
                    continue;
                }
                let replies = conn.reload_access().await;
                if !send_all(&mut sink, replies, write_timeout).await {
                    break End::Drop;
                }
            }
            _ = tokio::time::sleep_until(init_by) => {
                break End::Close(INIT_TIMEOUT, "Connection initialisation timeout".into());
            }
            _ = tokio::time::sleep_until(expiry) => {
                break End::Close(FORBIDDEN, "Forbidden: the token expired".into());
            }
            _ = ticker.tick() => {
                if last_heard.elapsed() > keepalive * 3 {
                    break End::Drop;
                }
                if !send!(Message::Ping(Default::default())) {
                    break End::Drop;
                }
                if conn.protocol == Protocols::SubscriptionsTransportWS
                    && conn.ctx.is_some()
                    && !send!(text(json!({ "type": "ka" })))
                {
                    break End::Drop;
                }
            }
            Some(first) = outgoing.next(), if !outgoing.is_empty() => {
                let messages = conn.ready_messages(first, &mut outgoing);
                if !send_batch(&mut sink, messages, write_timeout).await {
                    break End::Drop;
                }
            }
            frame = source.next() => {
                last_heard = Instant::now();
                let max = conn.state.services.config.serve.limits.max_body_bytes;
                let message = match read_frame(frame, max) {
                    Frame::Skip => continue,
                    Frame::End(end) => break end,
                    Frame::Message(m) => *m,
                };
                let step = conn.handle(message, &mut outgoing).await;
                if grants.is_none() {
                    grants = conn.grant_watch();
                }
                let (replies, end) = match step {
                    Step::Continue => (Vec::new(), None),
                    Step::Reply(values) => (values, None),
                    Step::End(replies, end) => (replies, Some(end)),
                };
                if !send_all(&mut sink, replies, write_timeout).await {
                    break End::Drop;
                }
                if let Some(end) = end {
                    break end;
                }
            }
        }
    };
    for (_, (_, running)) in conn.running.drain() {
        running.abort();
    }
    if let End::Close(code, reason) = end {
        let frame = Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(close_reason(&reason)),
        }));
        let _ = tokio::time::timeout(write_timeout, sink.send(frame)).await;
        let _ = tokio::time::timeout(write_timeout, sink.close()).await;
    }
}

/// The socket's sending half.
type Sink = futures_util::stream::SplitSink<WebSocket, Message>;

/// Most messages written with one flush.
const MAX_BATCH: usize = 64;

/// Sends messages in order, each within the write timeout; false when one could not be sent.
async fn send_all(sink: &mut Sink, values: Vec<Value>, write_timeout: Duration) -> bool {
    send_batch(sink, values.into_iter().map(text).collect(), write_timeout).await
}

/// Writes messages in order and flushes them once, within the write timeout; false when they
/// could not be sent.
async fn send_batch(sink: &mut Sink, messages: Vec<Message>, write_timeout: Duration) -> bool {
    if messages.is_empty() {
        return true;
    }
    let write = async {
        for m in messages {
            sink.feed(m).await?;
        }
        sink.flush().await
    };
    matches!(tokio::time::timeout(write_timeout, write).await, Ok(Ok(())))
}

/// What a frame from the client amounts to.
enum Frame {
    /// Nothing to answer (ping, pong).
    Skip,
    Message(Box<ClientMessage>),
    End(End),
}

/// Reads a frame: the closing handshake echoes the client's code (RFC 6455 §5.5.1); a message is
/// held to the same size limit as HTTP bodies (the upgrade also caps frames).
fn read_frame(frame: Option<Result<Message, axum::Error>>, max_bytes: usize) -> Frame {
    let bytes = match frame {
        None | Some(Err(_)) => return Frame::End(End::Drop),
        Some(Ok(Message::Close(frame))) => {
            return Frame::End(End::Close(frame.map_or(1000, |f| f.code), String::new()));
        }
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => return Frame::Skip,
        Some(Ok(Message::Text(t))) => t.as_bytes().to_vec(),
        Some(Ok(Message::Binary(b))) => b.to_vec(),
    };
    if bytes.len() > max_bytes {
        return Frame::End(End::Close(MESSAGE_TOO_BIG, "Message too big".into()));
    }
    match ClientMessage::from_bytes(&bytes) {
        Ok(m) => Frame::Message(Box::new(m)),
        Err(e) => Frame::End(End::Close(
            BAD_REQUEST,
            format!("Invalid message received: {e}"),
        )),
    }
}

/// The first root field of the operation a websocket `subscribe` runs (a metrics label).
fn root_field(req: &async_graphql::Request) -> String {
    use async_graphql::parser::types::Selection;
    let Ok(doc) = async_graphql::parser::parse_query(&req.query) else {
        return String::new();
    };
    let wanted = req.operation_name.as_deref();
    let op = doc
        .operations
        .iter()
        .find(|(n, _)| wanted.is_none() || n.map(|n| n.as_str()) == wanted);
    op.and_then(|(_, op)| {
        op.node
            .selection_set
            .node
            .items
            .iter()
            .find_map(|s| match &s.node {
                Selection::Field(f) => Some(f.node.name.node.to_string()),
                _ => None,
            })
    })
    .unwrap_or_default()
}

/// Whether the operation a websocket `subscribe` runs is a subscription (unparsable documents
/// count as one: the schema answers them with their parse error).
fn is_subscription(req: &async_graphql::Request) -> bool {
    use async_graphql::parser::types::OperationType;
    let Ok(doc) = async_graphql::parser::parse_query(&req.query) else {
        return true;
    };
    let wanted = req.operation_name.as_deref();
    doc.operations
        .iter()
        .find(|(n, _)| wanted.is_none() || n.map(|n| n.as_str()) == wanted)
        .is_none_or(|(_, op)| op.node.ty == OperationType::Subscription)
}

/// The one answer of a query or mutation, or a `TIMEOUT` error past `limit`.
fn with_timeout(
    mut stream: BoxStream<'static, async_graphql::Response>,
    limit: Duration,
) -> BoxStream<'static, async_graphql::Response> {
    futures_util::stream::once(async move {
        match tokio::time::timeout(limit, stream.next()).await {
            Ok(Some(r)) => r,
            Ok(None) => async_graphql::Response::default(),
            Err(_) => {
                let mut e = async_graphql::ServerError::new(
                    format!(
                        "the operation did not finish within {} ms",
                        limit.as_millis()
                    ),
                    None,
                );
                e.extensions
                    .get_or_insert_with(Default::default)
                    .set("code", Code::Timeout.as_str());
                async_graphql::Response::from_errors(vec![e])
            }
        }
    })
    .boxed()
}

fn text(v: Value) -> Message {
    Message::Text(Utf8Bytes::from(v.to_string()))
}

enum Step {
    Continue,
    Reply(Vec<Value>),
    /// Send these, then end the connection.
    End(Vec<Value>, End),
}

fn close(code: u16, reason: &str) -> Step {
    Step::End(Vec::new(), End::Close(code, reason.to_string()))
}

impl Conn {
    /// `connection_init`: authenticates the caller and reads their namespace grants once.
    async fn init(&mut self, payload: Option<Value>) -> Step {
        if self.init_seen {
            return close(TOO_MANY_INITS, "Too many initialisation requests");
        }
        self.init_seen = true;
        let payload = payload.unwrap_or_default();
        let header = ["authorization", "Authorization"]
            .iter()
            .find_map(|k| payload.get(*k).and_then(|v| v.as_str()).map(str::to_string))
            .or_else(|| {
                payload
                    .get("token")
                    .and_then(|v| v.as_str())
                    .map(|t| format!("Bearer {t}"))
            });
        let services = &self.state.services;
        match services.auth.authenticate(header.as_deref()).await {
            Ok(principal) if principal.authenticated => {
                if principal
                    .expires_at
                    .is_some_and(|at| at <= chrono::Utc::now())
                {
                    return self.refuse("Forbidden: the token expired".into());
                }
                // The caller's namespace grants are read once, here.
                match RequestCtx::authorized(
                    services.pool.clone(),
                    uuid::Uuid::new_v4().to_string(),
                    principal,
                )
                .await
                {
                    Ok(rc) => self.ctx = Some(Arc::new(rc)),
                    Err(e) => {
                        return self.refuse(format!("Forbidden: {}", e.public_message()));
                    }
                }
                let mut replies = vec![json!({ "type": "connection_ack" })];
                if self.protocol == Protocols::SubscriptionsTransportWS {
                    replies.push(json!({ "type": "ka" }));
                }
                Step::Reply(replies)
            }
            Ok(_) => self.refuse("Forbidden: credentials are required".into()),
            Err(e) => self.refuse(format!("Forbidden: {e}")),
        }
    }

    /// `subscribe`/`start`: runs the operation, its messages pumped into `outgoing`.
    fn start(
        &mut self,
        id: String,
        payload: async_graphql::Request,
        outgoing: &mut SelectAll<BoxStream<'static, Tagged>>,
    ) -> Step {
        let Some(ctx) = self.ctx.clone() else {
            return close(UNAUTHORIZED, "Unauthorized");
        };
        if self.running.contains_key(&id) {
            return close(DUPLICATE_ID, &format!("Subscriber for {id} already exists"));
        }
        if self.running.len() >= self.settings.ws_max_subscriptions {
            let error = json!([{
                "message": format!(
                    "a socket may hold at most {} subscriptions; complete one, or open another socket",
                    self.settings.ws_max_subscriptions
                ),
                "extensions": {
                    "code": Code::TooManySubscriptions,
                    "limit": self.settings.ws_max_subscriptions
                }
            }]);
            return Step::Reply(self.error_messages(&id, error));
        }
        let single = !is_subscription(&payload);
        let field = root_field(&payload);
        // Subscribers of the same operation from the same scope share its later payloads.
        let member = (!single).then(|| {
            let key = crate::cache::responses::ResponseCache::key(&ctx.scope, &payload);
            self.state.sockets.feeds.join(key, self.settings.ws_buffer)
        });
        let mut data = Data::default();
        data.insert(ctx);
        let schema = self.state.schema.clone();
        // Queries and mutations get the request timeout of HTTP; subscriptions live on.
        let limit = single.then(|| self.state.services.config.serve.limits.request_timeout());
        let run = move || {
            let stream = schema.execute_stream_with_session_data(payload, Arc::new(data));
            changes_only(match limit {
                Some(limit) => with_timeout(stream, limit),
                None => stream,
            })
        };
        let (tx, rx) = mpsc::channel(self.settings.ws_buffer.max(1));
        tokio::spawn(pump(run, member, tx, self.state.sockets.starting.clone()));
        let life = Life::new(self.state.sockets.subscriptions.clone(), &field);
        let (messages, stop) = futures_util::stream::abortable(messages(rx, life));
        self.generation += 1;
        let generation = self.generation;
        self.running.insert(id.clone(), (generation, stop));
        outgoing.push(
            messages
                .map(move |out| (id.clone(), generation, out))
                .boxed(),
        );
        Step::Continue
    }

    async fn handle(
        &mut self,
        message: ClientMessage,
        outgoing: &mut SelectAll<BoxStream<'static, Tagged>>,
    ) -> Step {
        match message {
            ClientMessage::ConnectionInit { payload } => self.init(payload).await,
            ClientMessage::Start { id, payload } => self.start(id, payload, outgoing),
            ClientMessage::Stop { id } => {
                if let Some((_, running)) = self.running.remove(&id) {
                    running.abort();
                    if self.protocol == Protocols::SubscriptionsTransportWS {
                        return Step::Reply(vec![json!({ "type": "complete", "id": id })]);
                    }
                }
                Step::Continue
            }
            ClientMessage::ConnectionTerminate => close(1000, "connection terminated"),
            ClientMessage::Ping { payload } => {
                let mut pong = json!({ "type": "pong" });
                if let Some(p) = payload {
                    pong["payload"] = p;
                }
                Step::Reply(vec![pong])
            }
            ClientMessage::Pong { .. } => Step::Continue,
        }
    }

    /// When the caller's token expires, if it does.
    fn token_expiry(&self) -> Option<Instant> {
        let at = self.ctx.as_ref()?.principal.expires_at?;
        Some(Instant::now() + (at - chrono::Utc::now()).to_std().unwrap_or_default())
    }

    /// Grant changes to follow once the caller's rights depend on grants (not an admin's).
    /// Marked changed: a grant may have changed between the rights being read at
    /// `connection_init` and the first subscription, so they are read once more.
    fn grant_watch(&self) -> Option<watch::Receiver<u64>> {
        let ctx = self.ctx.as_ref()?;
        if ctx.principal.has(crate::auth::Role::Admin) {
            return None;
        }
        let mut changes = self.state.services.pubsub.grant_changes();
        changes.mark_changed();
        Some(changes)
    }

    /// Re-reads the caller's namespace grants after a change. Later operations run with the new
    /// rights; when a namespace was lost, running subscriptions end with a `FORBIDDEN` error
    /// (they are not told apart by namespace: a client resubscribes to what it may still see),
    /// each with an audit record.
    async fn reload_access(&mut self) -> Vec<Value> {
        let Some(ctx) = self.ctx.clone() else {
            return Vec::new();
        };
        let pool = self.state.services.pool.clone();
        let access = match NamespaceAccess::load(&pool, &ctx.principal).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e.public_message(), "could not re-read grants of a socket");
                return Vec::new();
            }
        };
        if access == ctx.access {
            return Vec::new();
        }
        let lost = match (&ctx.access, &access) {
            (_, NamespaceAccess::All) => false,
            (NamespaceAccess::All, _) => true,
            (NamespaceAccess::Only(old), NamespaceAccess::Only(new)) => !old.is_subset(new),
        };
        let principal = ctx.principal.clone();
        let request_id = ctx.request_id.clone();
        self.ctx = Some(Arc::new(RequestCtx::with_access(
            pool.clone(),
            request_id.clone(),
            principal,
            access,
        )));
        if !lost {
            return Vec::new();
        }
        let mut out = Vec::new();
        let ids: Vec<String> = self.running.keys().cloned().collect();
        for id in ids {
            if let Some((_, running)) = self.running.remove(&id) {
                running.abort();
            }
            let error = json!([{
                "message": "your namespace grants changed: this subscription ended; subscribe again",
                "extensions": { "code": Code::Forbidden }
            }]);
            out.extend(self.error_messages(&id, error));
            let actor = crate::audit::Actor {
                name: ctx.actor.clone(),
                request_id: request_id.clone(),
            };
            let entry = crate::audit::AuditEntry::raw(
                &actor,
                "subscriptionRevoked",
                "subscription",
                Some(id),
                "denied",
            );
            crate::audit::record_standalone(&pool, entry).await;
        }
        out
    }

    /// Refuses a `connection_init`: 4403 (the legacy protocol first gets `connection_error`).
    fn refuse(&self, reason: String) -> Step {
        let mut replies = Vec::new();
        if self.protocol == Protocols::SubscriptionsTransportWS {
            replies.push(json!({ "type": "connection_error", "payload": { "message": reason } }));
        }
        Step::End(replies, End::Close(FORBIDDEN, reason))
    }

    fn error_messages(&self, id: &str, errors: Value) -> Vec<Value> {
        match self.protocol {
            Protocols::GraphQLWS => vec![json!({ "type": "error", "id": id, "payload": errors })],
            Protocols::SubscriptionsTransportWS => vec![
                json!({ "type": "data", "id": id, "payload": { "data": null, "errors": errors } }),
                json!({ "type": "complete", "id": id }),
            ],
        }
    }

    /// The messages of `first` and of the other outputs ready now, to go out in one flush.
    fn ready_messages(
        &mut self,
        (id, generation, out): Tagged,
        outgoing: &mut SelectAll<BoxStream<'static, Tagged>>,
    ) -> Vec<Message> {
        let mut messages = self.render(&id, generation, out);
        while messages.len() < MAX_BATCH
            && let Some(Some((id, generation, out))) = outgoing.next().now_or_never()
        {
            messages.extend(self.render(&id, generation, out));
        }
        messages
    }

    /// The protocol messages for an operation's output (none for a stopped operation).
    fn render(&mut self, id: &str, generation: u64, out: Out) -> Vec<Message> {
        if self.running.get(id).map(|(g, _)| *g) != Some(generation) {
            return Vec::new();
        }
        match out {
            Out::Complete => {
                self.running.remove(id);
                vec![text(json!({ "type": "complete", "id": id }))]
            }
            Out::Failed(resp) => {
                self.running.remove(id);
                let errors = serde_json::to_value(&resp.errors).unwrap_or_default();
                self.error_messages(id, errors)
                    .into_iter()
                    .map(text)
                    .collect()
            }
            Out::Next(resp) => {
                let payload = serde_json::to_string(&resp).unwrap_or_default();
                vec![self.next_message(id, &payload)]
            }
            Out::Shared(payload, 0) => {
                crate::metrics::delivered(false);
                vec![self.next_message(id, &payload.body)]
            }
            Out::Shared(payload, missed) => {
                crate::metrics::delivered(true);
                let mut resp: Value = serde_json::from_str(&payload.body).unwrap_or_default();
                resp["extensions"]["gap"] = json!({ "missed": missed });
                vec![self.next_message(id, &resp.to_string())]
            }
            Out::Join(_) => Vec::new(),
        }
    }

    /// A `next` (legacy: `data`) message: the serialized `payload` with the id spliced in.
    fn next_message(&self, id: &str, payload: &str) -> Message {
        let ty = match self.protocol {
            Protocols::GraphQLWS => "next",
            Protocols::SubscriptionsTransportWS => "data",
        };
        let id = serde_json::to_string(id).unwrap_or_default();
        Message::Text(Utf8Bytes::from(format!(
            r#"{{"type":"{ty}","id":{id},"payload":{payload}}}"#
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_are_cut_at_a_character_boundary() {
        let long = "é".repeat(100);
        let cut = close_reason(&long);
        assert!(cut.len() <= MAX_REASON_BYTES && cut.len() >= MAX_REASON_BYTES - 1);
        assert_eq!(close_reason("short"), "short");
    }
}
