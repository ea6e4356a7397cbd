//! Automatic persisted queries (Apollo's APQ protocol), when no allow-list of persisted
//! operations is configured: a client first sends only `extensions.persistedQuery.sha256Hash`;
//! an unknown hash gets `PERSISTED_QUERY_NOT_FOUND` ("PersistedQueryNotFound"), and the client
//! sends the document with its hash once, which registers it. Documents are content-addressed
//! (the hash is checked), so one store serves every caller; it is bounded by total size.

use crate::error::{Code, graphql_error};
use std::sync::Arc;

use async_graphql::{Request, ServerError, Value};

use crate::persisted::sha256_hex;

/// Total bytes of documents kept.
const CAPACITY_BYTES: u64 = 16 * 1024 * 1024;

/// The store of registered documents, by sha256 hex digest.
#[derive(Clone)]
pub struct PersistedQueries {
    docs: moka::sync::Cache<String, Arc<str>>,
}

impl Default for PersistedQueries {
    fn default() -> Self {
        PersistedQueries {
            docs: moka::sync::Cache::builder()
                .max_capacity(CAPACITY_BYTES)
                .weigher(|k: &String, v: &Arc<str>| {
                    (k.len() + v.len()).min(u32::MAX as usize) as u32
                })
                .build(),
        }
    }
}

/// The `sha256Hash` a request names, if it uses the protocol.
pub fn sent_hash(req: &Request) -> Option<Result<String, ServerError>> {
    let Value::Object(pq) = req.extensions.get("persistedQuery")? else {
        return Some(Err(bad("extensions.persistedQuery must be an object")));
    };
    if let Some(v) = pq.get("version")
        && *v != Value::from(1)
    {
        return Some(Err(bad("only version 1 of persisted queries is supported")));
    }
    Some(match pq.get("sha256Hash") {
        Some(Value::String(h)) if h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()) => {
            Ok(h.to_ascii_lowercase())
        }
        _ => Err(bad(
            "extensions.persistedQuery.sha256Hash must be the sha256 of the document, in hex",
        )),
    })
}

fn bad(message: &str) -> ServerError {
    graphql_error(
        Code::BadUserInput,
        message,
        Some("extensions.persistedQuery.sha256Hash"),
    )
}

impl PersistedQueries {
    /// Fills in the document of a hash-only request, or registers the document sent with its
    /// hash. Requests without `extensions.persistedQuery` pass unchanged.
    pub fn resolve(&self, req: &mut Request) -> Result<(), ServerError> {
        let Some(hash) = sent_hash(req) else {
            return Ok(());
        };
        let hash = hash?;
        if req.query.trim().is_empty() {
            let doc = self.docs.get(&hash).ok_or_else(|| {
                graphql_error(Code::PersistedQueryNotFound, "PersistedQueryNotFound", None)
            })?;
            req.query = doc.to_string();
            return Ok(());
        }
        if sha256_hex(&req.query) != hash {
            return Err(bad(
                "extensions.persistedQuery.sha256Hash does not match the sha256 of the query",
            ));
        }
        self.docs.insert(hash, Arc::from(req.query.as_str()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_hash(query: &str, hash: &str) -> Request {
        let mut r = Request::new(query);
        r.extensions.insert(
            "persistedQuery".into(),
            Value::from_json(serde_json::json!({ "version": 1, "sha256Hash": hash })).unwrap(),
        );
        r
    }

    fn code(e: &ServerError) -> String {
        e.extensions
            .as_ref()
            .unwrap()
            .get("code")
            .unwrap()
            .to_string()
    }

    #[test]
    fn hash_only_then_register_then_hash_only() {
        let store = PersistedQueries::default();
        let doc = "{ viewer { subject } }";
        let hash = sha256_hex(doc);
        let err = store.resolve(&mut with_hash("", &hash)).unwrap_err();
        assert_eq!(code(&err), "\"PERSISTED_QUERY_NOT_FOUND\"");
        assert_eq!(err.message, "PersistedQueryNotFound");
        store.resolve(&mut with_hash(doc, &hash)).unwrap();
        let mut r = with_hash("", &hash.to_ascii_uppercase());
        store.resolve(&mut r).unwrap();
        assert_eq!(r.query, doc);
        let err = store
            .resolve(&mut with_hash("{ other }", &hash))
            .unwrap_err();
        assert_eq!(code(&err), "\"BAD_USER_INPUT\"");
        assert!(store.resolve(&mut with_hash("", "nothex")).is_err());
        let mut plain = Request::new(doc);
        store.resolve(&mut plain).unwrap();
    }
}
