//! One operation of a websocket: its task, which starts it and sends its first response, and
//! the stream of its messages that the socket polls (from the task, then, for a subscription,
//! from its shared feed: see [`crate::http::feeds`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_graphql::Response;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::json;
use tokio::sync::mpsc;

use crate::http::feeds::{Member, Payload};

/// Counts a socket or a subscription while it lives.
pub(super) struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    pub(super) fn counting(counter: Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        OpenGuard(counter)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What an operation hands to its socket.
pub(super) enum Out {
    Next(Box<Response>),
    /// The operation failed before producing anything (the first response holds only errors).
    Failed(Box<Response>),
    Complete,
    /// From here on the subscription follows a shared feed (never rendered).
    Join(Box<Member>),
    /// A feed's payload, and how many this subscriber skipped because it fell behind.
    Shared(Arc<Payload>, u64),
}

/// While a subscription lives: it counts in `Sockets::subscriptions` and in the gauge of its
/// root field.
pub(super) struct Life {
    _count: OpenGuard,
    _gauge: crate::metrics::Held,
}

impl Life {
    pub(super) fn new(count: Arc<AtomicUsize>, field: &str) -> Self {
        Life {
            _count: OpenGuard::counting(count),
            _gauge: crate::metrics::subscription(field),
        }
    }
}

/// A subscription's responses as its subscriber sees them: a response equal to the previous
/// one (the same selected data and errors: nothing the subscriber asked for changed) is not
/// sent again, and the rate-limit report rides on the first response only.
pub(super) fn changes_only(stream: BoxStream<'static, Response>) -> BoxStream<'static, Response> {
    let mut previous: Option<u64> = None;
    stream
        .filter_map(move |mut resp| {
            if previous.is_some() {
                resp.extensions
                    .remove(crate::graphql::abuse::RATE_LIMIT_EXTENSION);
            }
            let digest = crate::http::feeds::digest(&resp);
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
pub(super) fn messages(
    rx: mpsc::Receiver<Out>,
    life: Life,
) -> impl futures_util::Stream<Item = Out> {
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
pub(super) async fn pump(
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
    use crate::http::feeds::Feeds;
    use std::time::Duration;

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
        let life = Life::new(Arc::new(AtomicUsize::new(0)), "test");
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
}
