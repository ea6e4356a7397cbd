//! Progress of one sync, for the command line's progress bar (the GraphQL side follows the
//! registry row instead).

/// A step of a sync.
#[derive(Debug, Clone, PartialEq)]
pub enum ProgressEvent {
    /// The sync is contacting the registry's host.
    Connecting { host: String },
    /// A document or API page arrived: pages so far, entries so far, bytes so far.
    Page {
        page: u32,
        entries: usize,
        bytes: u64,
    },
    /// Every entry was read.
    Read { entries: usize },
    /// The entries are being stored.
    Storing { entries: usize },
    /// The sync ended.
    Done,
}

/// Receives progress events.
pub trait SyncProgress: Send + Sync {
    /// Called at each step.
    fn event(&self, event: ProgressEvent);
}

/// Ignores progress.
pub struct NoProgress;

impl SyncProgress for NoProgress {
    fn event(&self, _: ProgressEvent) {}
}
