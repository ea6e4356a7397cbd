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

use async_graphql::http::{ClientMessage, WebSocketProtocols as Protocols};
use async_graphql::{Data, Response};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{AbortHandle, BoxStream, SelectAll};
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::AppState;
use super::feeds::{Feeds, Member, Payload};
use crate::authz::NamespaceAccess;
use crate::config::WsConfig;
use crate::error::Code;
use crate::graphql::context::RequestCtx;

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

/// Counts a socket or a subscription while it lives.
struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    fn counting(counter: Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        OpenGuard(counter)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
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

/// What an operation hands to its socket.
enum Out {
    Next(Box<Response>),
    /// The operation failed before producing anything (the first response holds only errors).
    Failed(Box<Response>),
    Complete,
    /// From here on the subscription follows a shared feed (never rendered).
    Join(Box<Member>),
    /// A feed's payload, and how many this subscriber skipped because it fell behind.
    Shared(Arc<Payload>, u64),
}

/// An operation's output, tagged with the id and the generation of the id's use.
type Tagged = (String, u64, Out);

/// While a subscription lives: it counts in [`Sockets::subscriptions`] and in the gauge of its
/// root field.
struct Life {
    _count: OpenGuard,
    _gauge: crate::metrics::Held,
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
    sockets.open.fetch_add(1, Ordering::Relaxed);
    let _open = OpenGuard(sockets.open.clone());
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
            Some((id, generation, out)) = outgoing.next(), if !outgoing.is_empty() => {
                // Whatever else is ready goes out with it, in one flush.
                let mut messages = conn.render(&id, generation, out);
                while messages.len() < MAX_BATCH
                    && let Some(Some((id, generation, out))) = outgoing.next().now_or_never()
                {
                    messages.extend(conn.render(&id, generation, out));
                }
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
        let life = Life {
            _count: OpenGuard::counting(self.state.sockets.subscriptions.clone()),
            _gauge: crate::metrics::subscription(&field),
        };
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

/// A subscription's responses as its subscriber sees them: a response equal to the previous
/// one (the same selected data and errors: nothing the subscriber asked for changed) is not
/// sent again, and the rate-limit report rides on the first response only.
fn changes_only(stream: BoxStream<'static, Response>) -> BoxStream<'static, Response> {
    let mut previous: Option<u64> = None;
    stream
        .filter_map(move |mut resp| {
            if previous.is_some() {
                resp.extensions
                    .remove(crate::graphql::abuse::RATE_LIMIT_EXTENSION);
            }
            let digest = super::feeds::digest(&resp);
            let fresh = previous != Some(digest);
            previous = Some(digest);
            futures_util::future::ready(fresh.then_some(resp))
        })
        .boxed()
}

/// Where an operation's messages come from: its own task, then, for a subscription, its feed.
enum Source {
    Task(mpsc::Receiver<Out>),
    Feed(Box<Member>),
}

/// The messages of one operation, for its socket. Lives as long as the operation (`life`).
fn messages(rx: mpsc::Receiver<Out>, life: Life) -> impl futures_util::Stream<Item = Out> {
    futures_util::stream::unfold(
        (Some(Source::Task(rx)), life),
        |(source, life)| async move {
            let mut source = source?;
            loop {
                let out = match &mut source {
                    Source::Task(rx) => match rx.recv().await {
                        Some(Out::Join(member)) => {
                            source = Source::Feed(member);
                            continue;
                        }
                        Some(out) => out,
                        None => return None,
                    },
                    Source::Feed(member) => match member.next().await {
                        Some((payload, missed)) => Out::Shared(payload, missed),
                        None => return Some((Out::Complete, (None, life))),
                    },
                };
                return Some((out, (Some(source), life)));
            }
        },
    )
}

/// Runs one operation until it ends or its socket lets go of it (the receiver is dropped).
async fn pump(
    run: impl FnOnce() -> BoxStream<'static, Response>,
    member: Option<Member>,
    tx: mpsc::Sender<Out>,
    starting: Arc<tokio::sync::Semaphore>,
) {
    let watch = tx.clone();
    tokio::select! {
        _ = watch.closed() => {}
        _ = relay(run, member, tx, starting) => {}
    }
}

/// Starts the operation (`run`) once a start slot is free and sends its first response; a
/// subscription that has a feed (`member`) then follows it, anything else is forwarded.
async fn relay(
    run: impl FnOnce() -> BoxStream<'static, Response>,
    mut member: Option<Member>,
    tx: mpsc::Sender<Out>,
    starting: Arc<tokio::sync::Semaphore>,
) {
    // The first response is the current state, read from the database.
    let permit = starting.acquire_owned().await.ok();
    if let Some(member) = member.as_mut() {
        member.skip_past();
    }
    let mut stream = run();
    let first = stream.next().await;
    drop(permit);
    let first = match first {
        None => {
            let _ = tx.send(Out::Complete).await;
            return;
        }
        // An operation that fails before producing anything (validation, a refused argument)
        // is reported as an error, not as data.
        Some(resp) if !resp.errors.is_empty() && resp.data == async_graphql::Value::Null => {
            let _ = tx.send(Out::Failed(Box::new(resp))).await;
            return;
        }
        Some(resp) => resp,
    };
    let Some(mut member) = member else {
        if tx.send(Out::Next(Box::new(first))).await.is_ok() {
            forward(stream, tx).await;
        }
        return;
    };
    member.follow(&first, stream);
    if tx.send(Out::Next(Box::new(first))).await.is_ok() {
        let _ = tx.send(Out::Join(Box::new(member))).await;
    }
}

/// Moves an operation's later responses into the bounded channel, and when the channel is full
/// keeps only the newest unsent response (counting the ones it replaced).
async fn forward(mut stream: BoxStream<'static, Response>, tx: mpsc::Sender<Out>) {
    let mut ended = false;
    let mut waiting: Option<Response> = None;
    let mut missed: u64 = 0;
    loop {
        match waiting.take() {
            None if ended => break,
            None => match stream.next().await {
                None => ended = true,
                Some(resp) => match tx.try_send(Out::Next(Box::new(resp))) {
                    Ok(()) => crate::metrics::delivered(false),
                    Err(mpsc::error::TrySendError::Full(Out::Next(resp))) => {
                        waiting = Some(*resp);
                    }
                    Err(_) => return,
                },
            },
            Some(mut resp) => {
                tokio::select! {
                    biased;
                    permit = tx.reserve() => {
                        let Ok(permit) = permit else { return };
                        if missed > 0 {
                            resp.extensions.insert(
                                "gap".into(),
                                async_graphql::Value::from_json(json!({ "missed": missed }))
                                    .unwrap_or_default(),
                            );
                            missed = 0;
                        }
                        crate::metrics::delivered(resp.extensions.contains_key("gap"));
                        permit.send(Out::Next(Box::new(resp)));
                    }
                    next = stream.next(), if !ended => match next {
                        Some(newer) => {
                            missed += 1;
                            waiting = Some(newer);
                        }
                        None => {
                            ended = true;
                            waiting = Some(resp);
                        }
                    },
                }
            }
        }
    }
    let _ = tx.send(Out::Complete).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(n: i32) -> Response {
        Response::new(async_graphql::Value::from(n))
    }

    /// A stream fed by hand, and its feeding end.
    fn fed() -> (
        mpsc::UnboundedSender<Response>,
        BoxStream<'static, Response>,
    ) {
        let (feed, source) = mpsc::unbounded_channel::<Response>();
        let stream =
            futures_util::stream::unfold(
                source,
                |mut s| async move { s.recv().await.map(|r| (r, s)) },
            )
            .boxed();
        (feed, stream)
    }

    fn one_start() -> Arc<tokio::sync::Semaphore> {
        Arc::new(tokio::sync::Semaphore::new(1))
    }

    #[tokio::test]
    async fn a_full_buffer_keeps_the_newest_response_and_announces_the_gap() {
        let (tx, mut rx) = mpsc::channel(2);
        let (feed, stream) = fed();
        let task = tokio::spawn(pump(move || stream, None, tx, one_start()));
        for n in 0..100 {
            feed.send(response(n)).unwrap();
        }
        // Let the pump drain its input while nobody reads: it must not buffer 100 responses.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!task.is_finished());
        let mut got = Vec::new();
        drop(feed);
        while let Some(out) = rx.recv().await {
            match out {
                Out::Next(r) => got.push(serde_json::to_value(&*r).unwrap()),
                Out::Complete => break,
                _ => panic!("neither a failure nor a feed"),
            }
        }
        task.await.unwrap();
        // Two buffered, then the newest one, carrying the count of the replaced ones.
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0]["data"], 0);
        assert_eq!(got[1]["data"], 1);
        assert_eq!(got[2]["data"], 99);
        assert_eq!(got[2]["extensions"]["gap"]["missed"], 97);
    }

    #[tokio::test]
    async fn an_operation_stops_when_its_socket_lets_go() {
        let (tx, mut rx) = mpsc::channel(2);
        let (feed, stream) = fed();
        let task = tokio::spawn(pump(move || stream, None, tx, one_start()));
        feed.send(response(1)).unwrap();
        assert!(matches!(rx.recv().await, Some(Out::Next(_))));
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the pump ends while its stream is still open")
            .unwrap();
        assert!(feed.send(response(2)).is_err(), "the stream was dropped");
    }

    /// A subscription of `key` as its socket sees it, started on `stream`.
    fn subscribe(
        feeds: &Feeds,
        stream: BoxStream<'static, Response>,
    ) -> std::pin::Pin<Box<dyn futures_util::Stream<Item = Out> + Send>> {
        let (tx, rx) = mpsc::channel(2);
        let member = feeds.join("key".into(), 4);
        tokio::spawn(pump(move || stream, Some(member), tx, one_start()));
        let life = Life {
            _count: OpenGuard::counting(Arc::new(AtomicUsize::new(0))),
            _gauge: crate::metrics::subscription("test"),
        };
        Box::pin(messages(rx, life))
    }

    #[tokio::test]
    async fn subscribers_of_one_operation_share_one_execution_after_their_own_first_answer() {
        let feeds = Feeds::default();
        let (a_feed, a_stream) = fed();
        let (b_feed, b_stream) = fed();
        let mut a = subscribe(&feeds, a_stream);
        a_feed.send(response(0)).unwrap();
        assert!(
            matches!(a.next().await, Some(Out::Next(r)) if r.data == async_graphql::Value::from(0))
        );
        let mut b = subscribe(&feeds, b_stream);
        b_feed.send(response(0)).unwrap();
        assert!(matches!(b.next().await, Some(Out::Next(_))));
        assert_eq!(feeds.count(), 1);
        // B's own execution is dropped once it follows the feed; A's feeds both.
        eventually_true(|| b_feed.send(response(9)).is_err()).await;
        a_feed.send(response(1)).unwrap();
        let (Some(Out::Shared(pa, 0)), Some(Out::Shared(pb, 0))) = (a.next().await, b.next().await)
        else {
            panic!("both get the feed's payload");
        };
        assert!(Arc::ptr_eq(&pa, &pb), "encoded once");
        assert_eq!(&*pa.body, r#"{"data":1}"#);
        // The operation ends: every subscriber completes, and the feed is gone.
        drop(a_feed);
        assert!(matches!(a.next().await, Some(Out::Complete)));
        assert!(matches!(b.next().await, Some(Out::Complete)));
        assert_eq!(feeds.count(), 0);
    }

    async fn eventually_true(mut check: impl FnMut() -> bool) {
        for _ in 0..100 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the condition never held");
    }

    #[test]
    fn close_reasons_are_cut_at_a_character_boundary() {
        let long = "é".repeat(100);
        let cut = close_reason(&long);
        assert!(cut.len() <= MAX_REASON_BYTES && cut.len() >= MAX_REASON_BYTES - 1);
        assert_eq!(close_reason("short"), "short");
    }
}
