//! What a sync writes, decided from the normalised entries and the servers already stored, with
//! no database access (so every rule is unit-tested here); [`super::store`] writes it.
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
    /// Vanished servers no instance uses.
    pub delete: Vec<Uuid>,
    /// Vanished servers that instances use.
    pub mark_removed: Vec<Uuid>,
    /// Original names of the known servers the plan rewrites.
    pub rewritten: Vec<String>,
    /// Valid server entries seen (written or not).
    pub server_entries: usize,
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
        self.rewritten.iter().map(String::as_str).collect()
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
                self.rewritten.push(server.original_name.clone());
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

/// A new server's final name differs from the provisional one it was written under.
#[derive(Debug, Clone, PartialEq)]
pub struct Renamed {
    pub original_name: String,
    pub name: String,
}

/// A new server as naming sees it.
struct Fresh {
    original_name: String,
    hint: String,
    name: String,
}

/// Plans a sync whose entries arrive in chunks, so that each chunk's writes can be stored while
/// later entries are still being read. Each chunk's new servers get a provisional name, unique
/// against every stored name and every earlier provisional one. The final names are those a
/// plan of every entry at once gives, which depend on every entry (new servers are named in
/// order of original name, and names of deleted servers are free again): [`Planner::finish`] computes them and lists the
/// few new servers whose provisional name differs, to be renamed before the commit.
pub struct Planner<'a> {
    stored: &'a StoredServers,
    mode: SyncMode,
    plan: SyncPlan,
    present: HashSet<String>,
    gone: HashSet<String>,
    /// Stored names and provisional names given so far.
    taken: HashSet<String>,
    fresh: Vec<Fresh>,
}

impl<'a> Planner<'a> {
    /// A planner over the registry's stored servers.
    pub fn new(stored: &'a StoredServers, mode: SyncMode) -> Self {
        Planner {
            stored,
            mode,
            plan: SyncPlan::default(),
            present: HashSet::new(),
            gone: HashSet::new(),
            taken: stored.values().map(|s| s.name.clone()).collect(),
            fresh: Vec::new(),
        }
    }

    /// Counts a chunk of entries; returns its writes, sorted by original name, new servers under
    /// their provisional names.
    pub fn add(&mut self, entries: Vec<Entry>) -> Vec<Write> {
        let mut writes = Vec::new();
        for e in entries {
            match e {
                Entry::Server { server, latest } => {
                    self.plan.server_entries += 1;
                    self.present.insert(server.original_name.clone());
                    if let Some(w) = self.plan.classify(*server, latest, self.stored) {
                        writes.push(w);
                    }
                }
                Entry::Deleted { original_name } => {
                    self.gone.insert(original_name);
                }
                Entry::Skipped { name, reason } => {
                    // A malformed new version keeps the last good one.
                    self.present.insert(name.clone());
                    self.plan.skipped_count += 1;
                    if self.plan.skipped.len() < MAX_SKIPPED_LISTED {
                        self.plan.skipped.push(SkippedEntry { name, reason });
                    }
                }
            }
        }
        writes.sort_by(|a, b| a.server.original_name.cmp(&b.server.original_name));
        let mut fresh: Vec<Fresh> = writes
            .iter()
            .filter(|w| w.is_new)
            .map(|w| Fresh {
                original_name: w.server.original_name.clone(),
                hint: w.server.name_hint.clone(),
                name: String::new(),
            })
            .collect();
        assign_names(&mut fresh, &mut self.taken);
        for (w, f) in writes.iter_mut().filter(|w| w.is_new).zip(&fresh) {
            w.name = f.name.clone();
        }
        self.fresh.extend(fresh);
        writes
    }

    /// The rest of the plan once every entry was added: vanished servers, counts, and the new
    /// servers whose final name differs from their provisional one.
    pub fn finish(mut self) -> (SyncPlan, Vec<Renamed>) {
        let mut p = std::mem::take(&mut self.plan);
        self.vanished(&mut p);
        let renamed = self.final_names(&p.delete);
        (p, renamed)
    }

    /// Stored servers no longer listed (full sync) or marked deleted (incremental).
    fn vanished(&self, p: &mut SyncPlan) {
        for (orig, s) in self.stored {
            let missing = match self.mode {
                SyncMode::Full => !self.present.contains(orig),
                SyncMode::Incremental => self.gone.contains(orig) && !self.present.contains(orig),
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
    }

    /// Names the new servers as a plan of every entry at once does (in order of original name;
    /// names of deleted servers are free again); returns those that differ from the provisional.
    fn final_names(mut self, deleted: &[Uuid]) -> Vec<Renamed> {
        let deleted: HashSet<&Uuid> = deleted.iter().collect();
        let mut taken: HashSet<String> = self
            .stored
            .values()
            .filter(|s| !deleted.contains(&s.id))
            .map(|s| s.name.clone())
            .collect();
        self.fresh
            .sort_by(|a, b| a.original_name.cmp(&b.original_name));
        let mut finals: Vec<Fresh> = self
            .fresh
            .iter()
            .map(|f| Fresh {
                original_name: f.original_name.clone(),
                hint: f.hint.clone(),
                name: String::new(),
            })
            .collect();
        assign_names(&mut finals, &mut taken);
        self.fresh
            .iter()
            .zip(finals)
            .filter(|(provisional, f)| provisional.name != f.name)
            .map(|(_, f)| Renamed {
                original_name: f.original_name,
                name: f.name,
            })
            .collect()
    }
}

/// Gives each new server, in the order given (by original name), a unique DNS-label name not in
/// `taken`, and takes it.
fn assign_names(fresh: &mut [Fresh], taken: &mut HashSet<String>) {
    for f in fresh {
        // The hint comes from `normalize::dns_label`; a hint that is not a label anyway would
        // never disambiguate into one, so it is cleaned first.
        let base = normalize::dns_label(&f.hint).unwrap_or_else(|| "server".into());
        let mut candidate = base.clone();
        let mut n = 0;
        while taken.contains(&candidate) || !crate::validate::is_dns_label(&candidate) {
            candidate = normalize::disambiguated_label(&base, &f.original_name, n);
            n += 1;
        }
        taken.insert(candidate.clone());
        f.name = candidate;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plan of every entry at once, and its writes under their final names: the rules as a
    /// sync applies them, for the tests (a sync itself streams them through [`Planner`]).
    struct Whole {
        plan: SyncPlan,
        writes: Vec<Write>,
    }

    impl std::ops::Deref for Whole {
        type Target = SyncPlan;
        fn deref(&self) -> &SyncPlan {
            &self.plan
        }
    }

    fn plan(entries: Vec<Entry>, stored: &StoredServers, mode: SyncMode) -> Whole {
        let mut planner = Planner::new(stored, mode);
        let mut writes = planner.add(entries);
        let (plan, renamed) = planner.finish();
        for r in renamed {
            if let Some(w) = writes
                .iter_mut()
                .find(|w| w.server.original_name == r.original_name)
            {
                w.name = r.name;
            }
        }
        Whole { plan, writes }
    }

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

    #[test]
    fn chunked_planning_names_new_servers_as_planning_everything_at_once() {
        let gone = server("old/fetch", "fetch", "x");
        let stored: StoredServers =
            [("old/fetch".to_string(), stored_as(&gone, "fetch", false))].into();
        // Later chunks bring smaller original names with the same hint, and the deleted
        // server's name is only known to be free at the end.
        let chunks = [
            vec![
                entry(server("d/fetch", "fetch", "d")),
                entry(server("z/git", "git", "z")),
            ],
            vec![
                entry(server("c/fetch", "fetch", "c")),
                entry(server("a/git", "git", "a")),
            ],
            vec![entry(server("b/fetch", "fetch", "b"))],
        ];
        let all: Vec<Entry> = chunks.iter().flatten().cloned().collect();
        let whole = plan(all, &stored, SyncMode::Full);
        let mut planner = Planner::new(&stored, SyncMode::Full);
        let mut provisional = std::collections::BTreeMap::new();
        for c in chunks {
            for w in planner.add(c) {
                assert!(crate::validate::is_dns_label(&w.name), "{}", w.name);
                assert!(
                    provisional
                        .insert(w.name.clone(), w.server.original_name.clone())
                        .is_none()
                );
            }
        }
        assert!(
            !provisional.contains_key("fetch"),
            "the stored name is not free while streaming"
        );
        let (p, renamed) = planner.finish();
        assert_eq!(p.delete, whole.delete);
        assert_eq!((p.added, p.updated, p.server_entries), (5, 0, 5));
        let mut finals: std::collections::BTreeMap<String, String> =
            provisional.into_iter().map(|(n, o)| (o, n)).collect();
        for r in &renamed {
            finals.insert(r.original_name.clone(), r.name.clone());
        }
        let expected: std::collections::BTreeMap<String, String> = whole
            .writes
            .iter()
            .map(|w| (w.server.original_name.clone(), w.name.clone()))
            .collect();
        assert_eq!(finals, expected);
        assert_eq!(expected["b/fetch"], "fetch");
        assert_eq!(expected["a/git"], "git");
        assert!(
            renamed.iter().any(|r| r.original_name == "b/fetch"),
            "{renamed:?}"
        );
    }
}
