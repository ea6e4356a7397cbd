//! Audit records that could not be written (the database was down or refused the statement)
//! wait here, in memory and bounded, and are written in order, with their original time, as soon
//! as the database answers again.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dataloaders::DbPool;

use super::AuditEntry;
use crate::log_gate::LogGate;

/// Most records waiting per process; past it new ones are dropped (and the drop is logged).
pub const CAPACITY: usize = 10_000;

/// Write attempts on a live connection after which a record is given up (it is refused by the
/// database itself, not by an outage).
const MAX_WRITE_FAILURES: u32 = 3;

struct Waiting {
    entry: AuditEntry,
    failures: u32,
}

static QUEUE: Mutex<VecDeque<Waiting>> = Mutex::new(VecDeque::new());
static DRAINING: AtomicBool = AtomicBool::new(false);
static DROPPED_LOG: LogGate = LogGate::new();

fn queue() -> std::sync::MutexGuard<'static, VecDeque<Waiting>> {
    QUEUE.lock().unwrap_or_else(|p| p.into_inner())
}

/// The number of records waiting to be written.
pub fn waiting() -> usize {
    queue().len()
}

/// Keeps `entry` until the database takes it, and makes sure a writer is on it.
pub fn keep(pool: &DbPool, entry: AuditEntry) {
    let action = entry.action;
    {
        let mut q = queue();
        if q.len() >= CAPACITY {
            drop(q);
            if let Some(count) = DROPPED_LOG.admit() {
                tracing::error!(
                    %action, count, capacity = CAPACITY,
                    "audit backlog full: audit records dropped"
                );
            }
            return;
        }
        q.push_back(Waiting { entry, failures: 0 });
    }
    if !DRAINING.swap(true, Ordering::AcqRel) {
        tokio::spawn(drain(pool.clone()));
    }
}

/// Writes the waiting records, oldest first, retrying every 250 ms to 2 s until none is left.
async fn drain(pool: DbPool) {
    let mut pause = Duration::from_millis(250);
    loop {
        if write_waiting(&pool).await {
            DRAINING.store(false, Ordering::Release);
            // A record queued between the last look and the flag being cleared needs a writer.
            if waiting() == 0 || DRAINING.swap(true, Ordering::AcqRel) {
                return;
            }
            continue;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Writes what it can; true when the queue is empty.
async fn write_waiting(pool: &DbPool) -> bool {
    let Ok(mut conn) = crate::db::conn(pool).await else {
        return waiting() == 0;
    };
    loop {
        let Some(mut next) = queue().pop_front() else {
            return true;
        };
        let action = next.entry.action;
        let copy = next.entry.clone();
        match super::record(&mut conn, copy).await {
            Ok(()) => {}
            Err(err) => {
                next.failures += 1;
                if next.failures >= MAX_WRITE_FAILURES {
                    tracing::error!(%action, error = %err, "audit record given up");
                    continue;
                }
                queue().push_front(next);
                return false;
            }
        }
    }
}
