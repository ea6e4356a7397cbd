//! What a cluster's clients are built from, and noticing when that changes.
//!
//! Clients are cached per cluster under a *source*: the stored credentials' fingerprint, or for
//! clusters reached through the gateway's kubeconfig, the context name plus a fingerprint of the
//! kubeconfig file's content. Rewriting the file (a new token, a new CA) changes the source, so
//! the next request for the clients rebuilds them, and watches built on the old ones hand over
//! (see `watch.rs` and `ClusterManager::reconcile_watches`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{ClusterManager, store};

/// The source of clients built from the gateway's kubeconfig (`kubeconfig`: its path, or
/// kube's default) or from the in-cluster identity (whose token kube-rs itself re-reads).
pub(super) fn source_of_config(
    context: Option<&str>,
    in_cluster: bool,
    kubeconfig: Option<&Path>,
) -> String {
    match (in_cluster, context) {
        (true, _) => "in-cluster".into(),
        (false, Some(c)) => format!("context:{c}@{}", kubeconfig_fingerprint(kubeconfig)),
        (false, None) => format!("context@{}", kubeconfig_fingerprint(kubeconfig)),
    }
}

/// The file kube reads when no kubeconfig is configured.
#[expect(
    clippy::disallowed_methods,
    reason = "mirrors kube-rs's own lookup of its default kubeconfig, which kube reads from the environment itself"
)]
fn default_kubeconfig() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KUBECONFIG") {
        return std::env::split_paths(&p).next();
    }
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".kube").join("config"))
}

/// A short hash of the kubeconfig's content (`-` when it cannot be read). The content is read
/// again only when the file's size or modification time changed.
pub(super) fn kubeconfig_fingerprint(kubeconfig: Option<&Path>) -> String {
    type Seen = HashMap<PathBuf, (u64, Option<SystemTime>, String)>;
    static SEEN: Mutex<Option<Seen>> = Mutex::new(None);
    let Some(path) = kubeconfig
        .map(Path::to_path_buf)
        .or_else(default_kubeconfig)
    else {
        return "-".into();
    };
    let Ok(meta) = std::fs::metadata(&path) else {
        return "-".into();
    };
    let stamp = (meta.len(), meta.modified().ok());
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    let seen = seen.get_or_insert_with(HashMap::new);
    if let Some((len, modified, hash)) = seen.get(&path)
        && (*len, *modified) == stamp
    {
        return hash.clone();
    }
    let Ok(content) = std::fs::read(&path) else {
        return "-".into();
    };
    let hash = hex::encode(&Sha256::digest(&content)[..8]);
    seen.insert(path, (stamp.0, stamp.1, hash.clone()));
    hash
}

impl ClusterManager {
    /// Whether `cluster`'s clients would now be built from something other than `source`
    /// (its kubeconfig or credentials changed, or it was removed). False when the database
    /// cannot tell.
    pub(crate) async fn source_changed(&self, cluster: Uuid, source: &str) -> bool {
        match store::cluster(&self.inner().pool, cluster).await {
            Ok(Some(row)) => self.access_of(&row).is_ok_and(|(now, _)| now != source),
            Ok(None) => true,
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewriting_the_kubeconfig_changes_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, "token: one\n").unwrap();
        let first = source_of_config(Some("emu"), false, Some(&path));
        assert_eq!(first, source_of_config(Some("emu"), false, Some(&path)));
        std::fs::write(&path, "token: two, and longer\n").unwrap();
        let second = source_of_config(Some("emu"), false, Some(&path));
        assert_ne!(first, second);
        assert!(second.starts_with("context:emu@"));
        assert_eq!(source_of_config(None, true, Some(&path)), "in-cluster");
        let missing = dir.path().join("absent");
        assert_eq!(kubeconfig_fingerprint(Some(&missing)), "-");
    }
}
