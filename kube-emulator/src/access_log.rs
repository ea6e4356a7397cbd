//! Every authorization decision the emulator made: which verb on which resource of which API
//! group, and whether the policy allowed it. Tests compare the calls a client really makes with
//! the permissions it is given (hivegraph's ClusterRole test).

use std::collections::BTreeSet;
use std::sync::Mutex;

/// One authorization decision (namespaces are left out: RBAC rules of a ClusterRole are the same
/// in every namespace).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Access {
    pub verb: String,
    /// `""` for the core group.
    pub group: String,
    /// As in RBAC: `pods`, `pods/log`, `services/proxy`.
    pub resource: String,
    pub allowed: bool,
}

/// The set of distinct decisions so far.
#[derive(Debug, Default)]
pub struct AccessLog(Mutex<BTreeSet<Access>>);

impl AccessLog {
    pub fn record(&self, verb: &str, group: &str, resource: &str, allowed: bool) {
        let access = Access {
            verb: verb.to_string(),
            group: group.to_string(),
            resource: resource.to_string(),
            allowed,
        };
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(access);
    }

    pub fn snapshot(&self) -> BTreeSet<Access> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
