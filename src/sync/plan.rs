//! What a sync writes, decided from the normalised entries and the servers already stored, with
//! no database access (so every rule is unit-tested here); [`super::store::apply`] writes it.
//!
//! Rules:
//! - an unchanged entry (same content hash, not marked removed) is not rewritten;
//! - a non-latest API version never replaces a stored server;
//! - a malformed entry keeps the last good version of its server (it counts as present);
//! - a server no longer listed (full sync) or marked deleted (incremental) is deleted, or only
//!   marked `removedUpstreamAt` when an instance uses it;
//! - a known server keeps its name; a new one gets its DNS-label hint, made unique.

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use super::normalize::{self, Entry, NewServer};
use super::report::{MAX_SKIPPED_LISTED, SkippedEntry, SyncMode, SyncReport};

/// A stored server, as the plan needs it.
#[derive(Debug, Clone)]
pub struct Stored {
    pub id: Uuid,
    pub name: String,
    pub hash: Option<String>,
    /// Marked removed upstream by an earlier sync.
    pub removed: bool,
    /// An instance uses it: when it vanishes it is only marked, never deleted.
    pub referenced: bool,
}

/// Stored servers by original name.
pub type StoredServers = HashMap<String, Stored>;

/// One server to insert or update.
#[derive(Debug)]
pub struct Write {
    pub server: NewServer,
    pub hash: String,
    /// Its DNS-label name: kept for a known server, unique within the registry for a new one.
    pub name: String,
    pub is_new: bool,
}

/// What a sync writes.
#[derive(Debug, Default)]
pub struct SyncPlan {
    /// Servers to insert or update, by original name.
    pub writes: Vec<Write>,
    /// Vanished servers no instance uses.
    pub delete: Vec<Uuid>,
    /// Vanished servers that instances use.
    pub mark_removed: Vec<Uuid>,
    pub added: i32,
    pub updated: i32,
    pub unchanged: i32,
    pub skipped_count: i32,
    /// The first [`MAX_SKIPPED_LISTED`] skipped entries.
    pub skipped: Vec<SkippedEntry>,
}

impl SyncPlan {
    /// Adds the plan's counts to a report (the database adds what it removed).
    pub fn count_into(&self, report: &mut SyncReport) {
        report.added += self.added;
        report.updated += self.updated;
        report.unchanged += self.unchanged;
        report.skipped_count += self.skipped_count;
        let room = MAX_SKIPPED_LISTED.saturating_sub(report.skipped.len());
        report
            .skipped
            .extend(self.skipped.iter().take(room).cloned());
    }

    /// Original names of the known servers the plan rewrites.
    pub fn updated_names(&self) -> Vec<&str> {
        self.writes
            .iter()
            .filter(|w| !w.is_new)
            .map(|w| w.server.original_name.as_str())
            .collect()
    }

    /// Counts one server entry; returns the write it needs, if any.
    fn classify(
        &mut self,
        server: NewServer,
        latest: bool,
        stored: &StoredServers,
    ) -> Option<Write> {
        let known = stored.get(&server.original_name);
        if !latest && known.is_some() {
            // A non-latest version never replaces the stored latest one.
            self.unchanged += 1;
            return None;
        }
        let hash = server.content_hash();
        match known {
            Some(k) if k.hash.as_deref() == Some(hash.as_str()) && !k.removed => {
                self.unchanged += 1;
                None
            }
            Some(k) => {
                self.updated += 1;
                Some(Write {
                    name: k.name.clone(),
                    server,
                    hash,
                    is_new: false,
                })
            }
            None => {
                self.added += 1;
                Some(Write {
                    name: String::new(),
                    server,
                    hash,
                    is_new: true,
                })
            }
        }
    }
}

/// Plans a sync of `entries` over `stored`.
pub fn plan(entries: Vec<Entry>, stored: &StoredServers, mode: SyncMode) -> SyncPlan {
    let mut p = SyncPlan::default();
    let mut present = HashSet::new();
    let mut gone = HashSet::new();
    let mut writes = Vec::new();
    for e in entries {
        match e {
            Entry::Server { server, latest } => {
                present.insert(server.original_name.clone());
                if let Some(w) = p.classify(*server, latest, stored) {
                    writes.push(w);
                }
            }
            Entry::Deleted { original_name } => {
                gone.insert(original_name);
            }
            Entry::Skipped { name, reason } => {
                // A malformed new version keeps the last good one.
                present.insert(name.clone());
                p.skipped_count += 1;
                if p.skipped.len() < MAX_SKIPPED_LISTED {
                    p.skipped.push(SkippedEntry { name, reason });
                }
            }
        }
    }
    for (orig, s) in stored {
        let missing = match mode {
            SyncMode::Full => !present.contains(orig),
            SyncMode::Incremental => gone.contains(orig) && !present.contains(orig),
        };
        if missing && !s.removed {
            if s.referenced {
                p.mark_removed.push(s.id);
            } else {
                p.delete.push(s.id);
            }
        }
    }
    p.delete.sort();
    p.mark_removed.sort();
    p.writes = name(writes, stored, &p.delete);
    p
}

/// Sorts the writes by original name and gives each new server a unique DNS-label name (names of
/// deleted servers are free again).
fn name(mut writes: Vec<Write>, stored: &StoredServers, deleted: &[Uuid]) -> Vec<Write> {
    let deleted: HashSet<&Uuid> = deleted.iter().collect();
    let mut taken: HashSet<String> = stored
        .values()
        .filter(|s| !deleted.contains(&s.id))
        .map(|s| s.name.clone())
        .collect();
    writes.sort_by(|a, b| a.server.original_name.cmp(&b.server.original_name));
    for w in writes.iter_mut().filter(|w| w.is_new) {
        // The hint comes from `normalize::dns_label`; a hint that is not a label anyway would
        // never disambiguate into one, so it is cleaned first.
        let base = normalize::dns_label(&w.server.name_hint).unwrap_or_else(|| "server".into());
        let mut candidate = base.clone();
        let mut n = 0;
        while taken.contains(&candidate) || !crate::validate::is_dns_label(&candidate) {
            candidate = normalize::disambiguated_label(&base, &w.server.original_name, n);
            n += 1;
        }
        taken.insert(candidate.clone());
        w.name = candidate;
    }
    writes
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataloaders::enums::{ServerStatus, ServerTier, Transport};

    fn server(original: &str, hint: &str, description: &str) -> NewServer {
        NewServer {
            original_name: original.into(),
            name_hint: hint.into(),
            description: description.into(),
            version: None,
            image: Some("ghcr.io/x/y:1".into()),
            url: None,
            transport: Transport::Stdio,
            tier: ServerTier::Community,
            status: ServerStatus::Available,
            category: vec![],
            capabilities: vec![],
            repository_url: None,
            network_permissions: serde_json::json!({}),
            pull_count: 0,
            stars: 0,
            last_updated: None,
            deployment_requirements: serde_json::json!({}),
        }
    }

    fn entry(s: NewServer) -> Entry {
        Entry::Server {
            server: Box::new(s),
            latest: true,
        }
    }

    fn stored_as(s: &NewServer, name: &str, referenced: bool) -> Stored {
        Stored {
            id: Uuid::new_v4(),
            name: name.into(),
            hash: Some(s.content_hash()),
            removed: false,
            referenced,
        }
    }

    #[test]
    fn unchanged_entries_are_not_rewritten_and_changed_ones_keep_their_name() {
        let same = server("a/same", "same", "one");
        let old = server("a/changed", "changed", "old");
        let stored: StoredServers = [
            ("a/same".to_string(), stored_as(&same, "same", false)),
            ("a/changed".to_string(), stored_as(&old, "kept-name", false)),
        ]
        .into();
        let p = plan(
            vec![entry(same), entry(server("a/changed", "changed", "new"))],
            &stored,
            SyncMode::Full,
        );
        assert_eq!((p.added, p.updated, p.unchanged), (0, 1, 1));
        assert_eq!(p.writes.len(), 1);
        assert_eq!(p.writes[0].name, "kept-name");
        assert!(!p.writes[0].is_new);
        assert_eq!(p.updated_names(), vec!["a/changed"]);
        assert!(p.delete.is_empty() && p.mark_removed.is_empty());
    }

    #[test]
    fn vanished_servers_are_deleted_unless_an_instance_uses_them() {
        let used = server("a/used", "used", "x");
        let unused = server("a/unused", "unused", "x");
        let stored: StoredServers = [
            ("a/used".to_string(), stored_as(&used, "used", true)),
            ("a/unused".to_string(), stored_as(&unused, "unused", false)),
        ]
        .into();
        let full = plan(vec![], &stored, SyncMode::Full);
        assert_eq!(full.delete, vec![stored["a/unused"].id]);
        assert_eq!(full.mark_removed, vec![stored["a/used"].id]);
        // An incremental sync removes only what the upstream marks deleted.
        let inc = plan(
            vec![Entry::Deleted {
                original_name: "a/unused".into(),
            }],
            &stored,
            SyncMode::Incremental,
        );
        assert_eq!(inc.delete, vec![stored["a/unused"].id]);
        assert!(inc.mark_removed.is_empty());
    }

    #[test]
    fn a_malformed_entry_keeps_the_last_good_version() {
        let good = server("a/x", "x", "good");
        let stored: StoredServers = [("a/x".to_string(), stored_as(&good, "x", false))].into();
        let p = plan(
            vec![Entry::Skipped {
                name: "a/x".into(),
                reason: "bad image".into(),
            }],
            &stored,
            SyncMode::Full,
        );
        assert!(p.delete.is_empty() && p.writes.is_empty());
        assert_eq!(p.skipped_count, 1);
        assert_eq!(p.skipped[0].reason, "bad image");
    }

    #[test]
    fn a_non_latest_version_never_replaces_the_stored_one() {
        let latest = server("a/x", "x", "v2");
        let stored: StoredServers = [("a/x".to_string(), stored_as(&latest, "x", false))].into();
        let older = Entry::Server {
            server: Box::new(server("a/x", "x", "v1")),
            latest: false,
        };
        let p = plan(vec![older], &stored, SyncMode::Full);
        assert!(p.writes.is_empty());
        assert_eq!(p.unchanged, 1);
    }

    #[test]
    fn new_names_are_unique_and_names_of_deleted_servers_are_free_again() {
        let gone = server("old/fetch", "fetch", "x");
        let stored: StoredServers =
            [("old/fetch".to_string(), stored_as(&gone, "fetch", false))].into();
        let p = plan(
            vec![
                entry(server("b/fetch", "fetch", "b")),
                entry(server("c/fetch", "fetch", "c")),
                entry(server("d/fetch", "fetch", "d")),
                entry(server("e/bad", "-", "e")),
            ],
            &stored,
            SyncMode::Full,
        );
        let names: Vec<&str> = p.writes.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names[0], "fetch", "the deleted server's name is free");
        assert_ne!(names[1], "fetch");
        assert!(
            names.iter().all(|n| crate::validate::is_dns_label(n)),
            "{names:?}"
        );
        assert_eq!(p.delete, vec![stored["old/fetch"].id]);
    }

    #[test]
    fn skipped_entries_are_counted_all_and_listed_up_to_the_cap() {
        let entries = (0..MAX_SKIPPED_LISTED + 5)
            .map(|i| Entry::Skipped {
                name: format!("s{i}"),
                reason: "r".into(),
            })
            .collect();
        let p = plan(entries, &StoredServers::new(), SyncMode::Full);
        assert_eq!(p.skipped_count as usize, MAX_SKIPPED_LISTED + 5);
        assert_eq!(p.skipped.len(), MAX_SKIPPED_LISTED);
        let mut report = SyncReport::default();
        p.count_into(&mut report);
        assert_eq!(report.skipped.len(), MAX_SKIPPED_LISTED);
    }
}
