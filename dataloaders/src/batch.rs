//! Deterministic batches for the request's `DataLoader`: a batch is loaded only once the request
//! has nothing left to do but wait.
//!
//! async-graphql's `DataLoader` collects keys for a fixed delay (1 ms) after the first key of a
//! batch arrives, then loads them on a spawned task. The resolvers of one GraphQL level register
//! their keys while the request's task polls them, and that can take several polls: `futures`'
//! `FuturesUnordered` (which resolves lists of more than 30 items) yields after polling each of
//! its futures once, and on a busy machine one level can take longer than the delay. The spawned
//! task would then take the keys registered so far and leave the rest to further statements: the
//! number of statements would grow with the number of rows.
//!
//! A [`PollGate`] closes that gap. The request's execution future is wrapped in
//! [`PollGate::holding`], which watches it: while it is being polled, or has been woken and waits
//! for its next poll, it is *busy*; when a poll ends without a wake-up it is *idle*: every
//! resolver now waits on a loader or the database. Loader tasks are wrapped in
//! [`PollGate::waiting`] and poll only while the request is idle (and never at the same time as
//! the request), so a batch holds every key that the request could register before waiting.
//! Nobody blocks a thread: whoever finds the other polling asks to be woken when it is done.
//!
//! Without a `holding` wrapper (websocket subscriptions) the gate is always idle and loaders
//! behave as async-graphql's do.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::task::{Context, Poll, Wake, Waker};

/// The gate of one request. Cheap to clone; clones share the gate.
#[derive(Clone, Default)]
pub struct PollGate {
    inner: Arc<GateInner>,
}

#[derive(Default)]
struct GateInner {
    /// Held by whoever is polling: the request, or one of its loader tasks.
    exclusive: Mutex<()>,
    state: Mutex<GateState>,
}

#[derive(Default)]
struct GateState {
    /// The request is being polled.
    polling: bool,
    /// The request was woken since its last poll began: another poll is coming.
    woken: bool,
    /// Loader tasks waiting for the request to become idle.
    waiters: Vec<Waker>,
    /// The request, when it found a loader task polling: woken when that poll ends.
    holder: Option<Waker>,
}

impl GateState {
    fn idle(&self) -> bool {
        !self.polling && !self.woken
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The request's waker, wrapped to notice that the request was woken.
struct FlagWaker {
    gate: Arc<GateInner>,
    inner: Waker,
}

impl Wake for FlagWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        lock(&self.gate.state).woken = true;
        self.inner.wake_by_ref();
    }
}

impl PollGate {
    /// A new gate, idle.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wraps the request's execution, so that loaders know when it is idle.
    pub fn holding<F: Future>(&self, fut: F) -> Holding<F> {
        Holding {
            gate: self.inner.clone(),
            fut: Box::pin(fut),
        }
    }

    /// Wraps a loader task: it is polled only while the request is idle.
    pub fn waiting<F: Future>(&self, fut: F) -> Waiting<F> {
        Waiting {
            gate: self.inner.clone(),
            fut: Box::pin(fut),
        }
    }
}

/// The request's execution future. See [`PollGate::holding`].
pub struct Holding<F> {
    gate: Arc<GateInner>,
    fut: Pin<Box<F>>,
}

impl<F: Future> Future for Holding<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let gate = self.gate.clone();
        for _attempt in 0..2 {
            let exclusive = match gate.exclusive.try_lock() {
                Ok(g) => g,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => {
                    // A loader task is polling (for example decoding its rows). Never block the
                    // thread: ask to be woken when it is done, and keep other loaders out until
                    // then, since a poll of the request is due.
                    let mut st = lock(&gate.state);
                    st.holder = Some(cx.waker().clone());
                    st.woken = true;
                    continue;
                }
            };
            {
                let mut st = lock(&gate.state);
                st.polling = true;
                st.woken = false;
            }
            let waker = Waker::from(Arc::new(FlagWaker {
                gate: gate.clone(),
                inner: cx.waker().clone(),
            }));
            let out = self.fut.as_mut().poll(&mut Context::from_waker(&waker));
            drop(exclusive);
            {
                let mut st = lock(&gate.state);
                st.polling = false;
                if out.is_ready() {
                    st.woken = false;
                }
            }
            gate.wake_waiters_if_idle();
            return out;
        }
        Poll::Pending
    }
}

impl<F> Drop for Holding<F> {
    /// A request dropped before it finished (a timeout, a closed connection) no longer holds
    /// its loaders back.
    fn drop(&mut self) {
        {
            let mut st = lock(&self.gate.state);
            st.polling = false;
            st.woken = false;
        }
        self.gate.wake_waiters_if_idle();
    }
}

/// A loader task that is polled only while the request is idle. See [`PollGate::waiting`].
pub struct Waiting<F> {
    gate: Arc<GateInner>,
    fut: Pin<Box<F>>,
}

impl<F: Future> Future for Waiting<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let gate = self.gate.clone();
        for _attempt in 0..2 {
            let exclusive = match gate.exclusive.try_lock() {
                Ok(g) => Some(g),
                Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(TryLockError::WouldBlock) => None,
            };
            let mut st = lock(&gate.state);
            if exclusive.is_some() && st.idle() {
                drop(st);
                let out = self.fut.as_mut().poll(cx);
                gate.release(exclusive);
                return out;
            }
            // Registered under the state lock, so the next idle moment wakes us: the request's,
            // or the end of another loader's poll.
            st.waiters.push(cx.waker().clone());
            let idle = st.idle();
            drop(st);
            // The request may have found us holding `exclusive` while we looked: it waits for
            // this release to be woken.
            gate.release(exclusive);
            if !idle {
                return Poll::Pending;
            }
            // Idle, but another loader task is polling; it may have finished before we
            // registered, so try once more.
        }
        Poll::Pending
    }
}

impl GateInner {
    /// Gives `exclusive` back (if held), then wakes the request if it found the gate taken, and
    /// the waiting loader tasks if the request is idle.
    fn release(&self, exclusive: Option<MutexGuard<'_, ()>>) {
        let Some(guard) = exclusive else {
            return;
        };
        drop(guard);
        let holder = lock(&self.state).holder.take();
        if let Some(h) = holder {
            h.wake();
        }
        self.wake_waiters_if_idle();
    }

    /// Wakes the waiting loader tasks if the request is idle. Call after releasing `exclusive`.
    fn wake_waiters_if_idle(&self) {
        let waiters = {
            let mut st = lock(&self.state);
            if st.idle() {
                std::mem::take(&mut st.waiters)
            } else {
                Vec::new()
            }
        };
        for w in waiters {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts polls and is always ready.
    struct Probe(Arc<AtomicUsize>);

    impl Future for Probe {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Poll::Ready(())
        }
    }

    /// Pending on its first poll, waking itself the way `FuturesUnordered` yields; then pending
    /// without a wake-up (waiting on a loader).
    struct Yielding(usize);

    impl Future for Yielding {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.0 += 1;
            if self.0 == 1 {
                cx.waker().wake_by_ref();
            }
            Poll::Pending
        }
    }

    type Loader = Waiting<Probe>;

    /// A request that yielded (woke itself), so it is busy, and a loader that had to wait.
    fn busy_request() -> (Holding<Yielding>, Loader, Arc<AtomicUsize>) {
        let gate = PollGate::new();
        let polls = Arc::new(AtomicUsize::new(0));
        let mut loader = gate.waiting(Probe(polls.clone()));
        let mut request = gate.holding(Yielding(0));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut request).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut loader).poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 0);
        (request, loader, polls)
    }

    #[test]
    fn loaders_wait_while_the_request_yields_and_run_once_it_waits() {
        let (mut request, mut loader, polls) = busy_request();
        let mut cx = Context::from_waker(Waker::noop());
        // Its next poll ends without a wake-up: idle, the loader runs.
        assert!(Pin::new(&mut request).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut loader).poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn the_request_waits_without_blocking_while_a_loader_polls() {
        let gate = PollGate::new();
        let mut request = gate.holding(async { 1 });
        let mut cx = Context::from_waker(Waker::noop());
        {
            let _loader_polling = gate.inner.exclusive.lock().unwrap();
            assert!(Pin::new(&mut request).poll(&mut cx).is_pending());
            let st = lock(&gate.inner.state);
            assert!(st.holder.is_some());
            assert!(
                !st.idle(),
                "other loaders keep out until the request has polled"
            );
        }
        assert_eq!(Pin::new(&mut request).poll(&mut cx), Poll::Ready(1));
    }

    #[test]
    fn a_loader_never_runs_during_a_poll_of_the_request() {
        let gate = PollGate::new();
        let polls = Arc::new(AtomicUsize::new(0));
        let mut loader = gate.waiting(Probe(polls.clone()));
        let mut cx = Context::from_waker(Waker::noop());
        {
            let _polling = gate.inner.exclusive.lock().unwrap();
            assert!(Pin::new(&mut loader).poll(&mut cx).is_pending());
        }
        assert!(!lock(&gate.inner.state).waiters.is_empty());
        assert!(Pin::new(&mut loader).poll(&mut cx).is_ready());
    }

    /// Counts its wake-ups.
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_loader_that_only_looked_at_the_gate_wakes_the_request_it_kept_out() {
        // The request was woken and tried to poll while a loader task held `exclusive` just to
        // look at the state; it asked to be woken and returned. The loader finds the request
        // busy and leaves: it must wake the request, or nothing ever will.
        let gate = PollGate::new();
        let polls = Arc::new(AtomicUsize::new(0));
        let mut loader = gate.waiting(Probe(polls.clone()));
        let request = Arc::new(CountingWaker(AtomicUsize::new(0)));
        {
            let mut st = lock(&gate.inner.state);
            st.woken = true;
            st.holder = Some(Waker::from(request.clone()));
        }
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut loader).poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 0);
        assert_eq!(request.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_dropped_request_lets_its_loaders_run() {
        let (request, mut loader, polls) = busy_request();
        let mut cx = Context::from_waker(Waker::noop());
        drop(request);
        assert!(Pin::new(&mut loader).poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn without_a_holder_the_gate_is_open() {
        let gate = PollGate::new();
        let polls = Arc::new(AtomicUsize::new(0));
        let mut loader = gate.waiting(Probe(polls.clone()));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut loader).poll(&mut cx).is_ready());
        let mut holding = gate.holding(async { 7 });
        assert_eq!(Pin::new(&mut holding).poll(&mut cx), Poll::Ready(7));
        assert!(lock(&gate.inner.state).idle());
    }
}
