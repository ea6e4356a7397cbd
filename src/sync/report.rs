//! The sync report: what one sync attempt did. Stored in `registries.last_sync_report` and
//! readable through GraphQL as `Registry.lastSyncReport`.

use async_graphql::{Enum, SimpleObject};
use chrono::{DateTime, Utc};
use dataloaders::enums::RegistryFormat;
use serde::{Deserialize, Serialize};

/// Most skipped entries listed in a report; `skippedCount` always has the full number.
pub const MAX_SKIPPED_LISTED: usize = 200;

/// Whether a sync read the whole registry or only what changed since the previous sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SyncMode {
    /// The whole registry was read; servers missing from it vanished upstream.
    #[default]
    Full,
    /// Only entries changed since the previous sync were read (MCP Registry `updated_since`).
    Incremental,
}

/// A registry entry that a sync skipped because it is malformed.
#[derive(Debug, Clone, PartialEq, SimpleObject, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SkippedEntry {
    /// The entry's name as the registry spells it.
    pub name: String,
    /// Why the entry was skipped.
    pub reason: String,
}

/// What the last sync attempt of a registry did.
#[derive(Debug, Clone, PartialEq, SimpleObject, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SyncReport {
    /// Whether the sync committed. When false, `error` says why and the servers of the last good
    /// sync were kept unchanged.
    pub succeeded: bool,
    /// Why the sync failed.
    pub error: Option<String>,
    /// Whether the whole registry or only its changes were read.
    pub mode: SyncMode,
    /// The format the registry was read as (detected when the registry's format is AUTO).
    pub format: Option<RegistryFormat>,
    /// When the sync started.
    pub started_at: Option<DateTime<Utc>>,
    /// When the sync ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// How long the sync took, in milliseconds.
    pub duration_ms: i64,
    /// Documents or API pages fetched.
    pub pages: i32,
    /// Bytes fetched.
    pub bytes: i64,
    /// Entries read from the registry, all versions and deleted entries included.
    pub entries: i32,
    /// Servers stored for the first time.
    pub added: i32,
    /// Servers whose definition changed.
    pub updated: i32,
    /// Servers whose definition did not change.
    pub unchanged: i32,
    /// Servers deleted because they vanished upstream and no instance uses them.
    pub removed: i32,
    /// Servers that vanished upstream but are kept (marked `removedUpstreamAt`) because
    /// instances of them exist.
    pub marked_removed: i32,
    /// Servers of the registry after the sync that run as containers.
    pub container_servers: i32,
    /// Servers of the registry after the sync that are remote endpoints.
    pub remote_servers: i32,
    /// Number of malformed entries skipped.
    pub skipped_count: i32,
    /// Skipped entries with the reasons (at most 200 listed).
    pub skipped: Vec<SkippedEntry>,
}

impl SyncReport {
    /// The servers added, updated, removed and skipped, for `/metrics`.
    pub fn counts(&self) -> crate::metrics::SyncCounts {
        let n = |v: i32| v.max(0) as u64;
        crate::metrics::SyncCounts {
            added: n(self.added),
            updated: n(self.updated),
            removed: n(self.removed + self.marked_removed),
            skipped: n(self.skipped_count),
        }
    }

    /// Reads a stored report.
    pub fn from_json(v: &serde_json::Value) -> Option<SyncReport> {
        serde_json::from_value(v.clone()).ok()
    }

    /// The stored form.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("serialisable")
    }
}
