//! The allow-list of persisted operations (`HIVEGRAPH_PERSISTED_OPERATIONS`): the manifest's
//! format and loading. The configuration checks the file at start; `graphql::abuse` enforces it.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// The allow-list of persisted operations: sha256 hex digest → document.
#[derive(Debug, Default)]
pub struct PersistedOperations {
    by_hash: HashMap<String, String>,
}

/// The sha256 hex digest of a document.
pub fn sha256_hex(doc: &str) -> String {
    hex::encode(Sha256::digest(doc.as_bytes()))
}

impl PersistedOperations {
    /// Parses a manifest: an object `{ "<sha256>": "<document>" }` (each digest checked) or an
    /// array of documents.
    pub fn parse(json: &str) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
        let mut by_hash = HashMap::new();
        match v {
            serde_json::Value::Object(m) => {
                for (hash, doc) in m {
                    let doc = doc
                        .as_str()
                        .ok_or_else(|| format!("{hash}: the document must be a string"))?;
                    if sha256_hex(doc) != hash.to_ascii_lowercase() {
                        return Err(format!("{hash}: the digest does not match its document"));
                    }
                    by_hash.insert(hash.to_ascii_lowercase(), doc.to_string());
                }
            }
            serde_json::Value::Array(docs) => {
                for doc in docs {
                    let doc = doc
                        .as_str()
                        .ok_or("every entry must be a document string")?;
                    by_hash.insert(sha256_hex(doc), doc.to_string());
                }
            }
            _ => return Err("expected an object of digest → document, or an array".into()),
        }
        Ok(PersistedOperations { by_hash })
    }

    /// Reads a manifest file.
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The document listed under a digest.
    pub fn get(&self, hash: &str) -> Option<&String> {
        self.by_hash.get(hash)
    }

    /// Whether a digest is listed.
    pub fn contains(&self, hash: &str) -> bool {
        self.by_hash.contains_key(hash)
    }

    /// The number of listed operations.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether nothing is listed (then nothing runs).
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}
