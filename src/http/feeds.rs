//! Shared subscription feeds: the subscribers of one operation from one authorization scope
//! share one execution, and one encoded payload per change.
//!
//! A websocket subscription is keyed like a cached answer ([`ResponseCache::key`]): the caller's
//! [`AuthScope`] (authenticated or not, roles, readable namespaces), the operation name, the
//! document, the variables and the request's extensions. Callers whose scopes differ in anything
//! never share a feed.
//!
//! Every subscriber still runs its own operation for its first answer, so that validation, the
//! authorization check (and the audit record of a refusal) and the rate limit apply to each as
//! before. Then it drops its own execution and follows the feed of its key: one execution (the
//! first subscriber's) resolves and serializes each later change once, and each socket splices
//! only its subscription id into the message.
//!
//! A feed buffers `HIVEGRAPH_WS_BUFFER` payloads for all its members together. A member that falls
//! further behind (its socket is slow) skips to the newest payload, which then carries how many it
//! skipped. A feed ends when its operation completes (every member then completes) or when its
//! last member leaves.
//!
//! [`ResponseCache::key`]: crate::cache::responses::ResponseCache::key
//! [`AuthScope`]: crate::cache::AuthScope

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use async_graphql::Response;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

/// One response of a feed, serialized once for every member.
#[derive(Debug)]
pub struct Payload {
    /// What the subscriber selected (data and errors), hashed: equal digests are not sent twice.
    pub digest: u64,
    /// The serialized response (the `payload` of a `next` message).
    pub body: Box<str>,
}

impl Payload {
    fn of(resp: &Response) -> Arc<Payload> {
        let body = serde_json::to_string(resp).unwrap_or_default();
        Arc::new(Payload {
            digest: digest(resp),
            body: body.into_boxed_str(),
        })
    }
}

/// The digest of what a response tells its subscriber: its data and errors.
pub fn digest(resp: &Response) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(&(&resp.data, &resp.errors))
        .unwrap_or_default()
        .hash(&mut h);
    h.finish()
}

struct Feed {
    /// Tells a feed from a later one of the same key.
    id: u64,
    tx: broadcast::Sender<Arc<Payload>>,
    /// The execution that feeds the members, once one of them has handed over its own.
    source: Option<tokio::task::AbortHandle>,
}

#[derive(Default)]
struct Table {
    feeds: HashMap<Arc<str>, Feed>,
    next_id: u64,
}

type Shared = Arc<Mutex<Table>>;

/// The feeds of one process, by key.
#[derive(Clone, Default)]
pub struct Feeds {
    table: Shared,
}

impl Feeds {
    /// Feeds running now.
    pub fn count(&self) -> usize {
        self.table.lock().expect("feeds lock").feeds.len()
    }

    /// Joins the feed of `key` (a new one buffering `capacity` payloads when there is none).
    pub fn join(&self, key: Arc<str>, capacity: usize) -> Member {
        let mut table = self.table.lock().expect("feeds lock");
        let Table { feeds, next_id } = &mut *table;
        let feed = feeds.entry(key.clone()).or_insert_with(|| {
            *next_id += 1;
            Feed {
                id: *next_id,
                tx: broadcast::channel(capacity.max(1)).0,
                source: None,
            }
        });
        Member {
            rx: Some(feed.tx.subscribe()),
            feed: feed.id,
            table: self.table.clone(),
            key,
            last: None,
        }
    }
}

/// A subscriber's place in a feed. Dropping the last member stops the feed.
pub struct Member {
    rx: Option<broadcast::Receiver<Arc<Payload>>>,
    feed: u64,
    table: Shared,
    key: Arc<str>,
    /// The digest of the last response this member's subscriber got.
    last: Option<u64>,
}

impl Member {
    /// Forgets what the feed sent so far: call it just before the subscriber's own first answer
    /// is read (that answer is at least as new).
    pub fn skip_past(&mut self) {
        if let Some(rx) = self.rx.as_mut() {
            *rx = rx.resubscribe();
        }
    }

    /// The subscriber got `first`, its own first answer; `rest` is the rest of its own execution.
    /// When the feed has no execution yet, `rest` becomes it, and `first` is sent to the members
    /// too (one that read its first answer earlier may have missed the change `first` shows);
    /// otherwise `rest` is dropped.
    pub fn follow(&mut self, first: &Response, rest: BoxStream<'static, Response>) {
        self.last = Some(digest(first));
        let mut table = self.table.lock().expect("feeds lock");
        let Some(feed) = table.feeds.get_mut(&self.key) else {
            return;
        };
        if feed.id != self.feed || feed.source.is_some() {
            return;
        }
        // The first answer without what is the caller's own (the rate limit report).
        let mut shared = Response::new(first.data.clone());
        shared.errors = first.errors.clone();
        let task = tokio::spawn(run(
            self.table.clone(),
            (self.key.clone(), self.feed),
            feed.tx.clone(),
            Payload::of(&shared),
            rest,
        ));
        feed.source = Some(task.abort_handle());
    }

    /// The next payload that differs from the last one sent, with how many this member skipped
    /// because it fell behind; `None` when the feed has ended.
    pub async fn next(&mut self) -> Option<(Arc<Payload>, u64)> {
        let rx = self.rx.as_mut()?;
        loop {
            let (payload, missed) = match rx.recv().await {
                Ok(p) => (p, 0),
                Err(RecvError::Lagged(n)) => match newest(rx) {
                    Some((p, more)) => (p, n + more),
                    None => continue,
                },
                Err(RecvError::Closed) => return None,
            };
            if self.last == Some(payload.digest) {
                continue;
            }
            self.last = Some(payload.digest);
            return Some((payload, missed));
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        drop(self.rx.take());
        let mut table = self.table.lock().expect("feeds lock");
        let unused = table
            .feeds
            .get(&self.key)
            .is_some_and(|f| f.id == self.feed && f.tx.receiver_count() == 0);
        if unused
            && let Some(Feed {
                source: Some(source),
                ..
            }) = table.feeds.remove(&self.key)
        {
            source.abort();
        }
    }
}

/// After a lag: the newest buffered payload and how many older ones it replaces.
fn newest(rx: &mut broadcast::Receiver<Arc<Payload>>) -> Option<(Arc<Payload>, u64)> {
    let mut newest = None;
    let mut skipped = 0;
    loop {
        match rx.try_recv() {
            Ok(p) => {
                if newest.replace(p).is_some() {
                    skipped += 1;
                }
            }
            Err(TryRecvError::Lagged(n)) => skipped += n,
            Err(TryRecvError::Empty | TryRecvError::Closed) => break,
        }
    }
    newest.map(|p| (p, skipped))
}

/// A feed's execution: sends `first`, then each response of `rest`, to every member. When it
/// ends, the feed is closed (its members complete).
async fn run(
    table: Shared,
    (key, id): (Arc<str>, u64),
    tx: broadcast::Sender<Arc<Payload>>,
    first: Arc<Payload>,
    mut rest: BoxStream<'static, Response>,
) {
    let _ = tx.send(first);
    while let Some(resp) = rest.next().await {
        if tx.send(Payload::of(&resp)).is_err() {
            // No member left: the last one's departure removes the feed.
            return;
        }
    }
    let mut table = table.lock().expect("feeds lock");
    if table.feeds.get(&key).is_some_and(|f| f.id == id) {
        table.feeds.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(n: i32) -> Response {
        Response::new(async_graphql::Value::from(n))
    }

    /// A member whose subscriber got `first`, of a feed whose execution `rest` now is (when it
    /// has none yet).
    fn following(feeds: &Feeds, key: &str, rest: BoxStream<'static, Response>) -> Member {
        let mut m = feeds.join(key.into(), 2);
        m.skip_past();
        m.follow(&response(0), rest);
        m
    }

    fn pending() -> BoxStream<'static, Response> {
        futures_util::stream::pending().boxed()
    }

    #[tokio::test]
    async fn a_member_that_falls_behind_skips_to_the_newest_payload_and_counts_the_rest() {
        let feeds = Feeds::default();
        let responses = futures_util::stream::iter((1..=6).map(response)).chain(pending());
        let mut m = following(&feeds, "k", responses.boxed());
        // The feed sends 0..=6 with room for 2: this member lags behind.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let (p, missed) = m.next().await.expect("a payload");
        assert_eq!(&*p.body, r#"{"data":6}"#);
        // 0 to 5 were skipped (skipped payloads are counted, not compared: 0 was equal to this
        // member's first answer).
        assert_eq!(missed, 6);
    }

    #[tokio::test]
    async fn feeds_are_per_key_and_the_last_member_to_leave_stops_one() {
        let feeds = Feeds::default();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Response>();
        let rest =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|r| (r, rx)) },
            );
        let a = following(&feeds, "k", rest.boxed());
        let b = following(&feeds, "k", pending());
        let other = following(&feeds, "other scope", pending());
        assert_eq!(feeds.count(), 2);
        drop(a);
        assert_eq!(feeds.count(), 2, "b still follows k");
        drop(b);
        assert_eq!(feeds.count(), 1);
        // k's execution was stopped: its stream is dropped.
        for _ in 0..100 {
            if tx.send(response(1)).is_err() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(tx.is_closed(), "k's execution still runs");
        drop(other);
        assert_eq!(feeds.count(), 0);
    }
}
