//! Registry document formats: detection from the content, and reading documents and API pages
//! into [`Entry`] values.
//!
//! - Legacy ToolHive `registry.json`: `{servers: {name: server}, remote_servers: {...}, groups?}`.
//! - ToolHive upstream: `{data: {servers: [server.json]}}`; a bare JSON array of server.json
//!   entries is read the same way.
//! - MCP Registry API and ToolHive Registry Server API pages: `{servers: [{server, _meta}],
//!   metadata: {nextCursor, count}}` (also the 2025 `/v0` shapes: bare server.json items and
//!   `next_cursor`).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use dataloaders::enums::RegistryFormat;
use serde_json::Value;

use super::duplicate_keys::{self, RepeatedName};
use super::normalize::{self, Entry, OfficialMeta};

/// Why a document could not be read at all (the sync fails; earlier data stays).
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentError(pub String);

/// Whether the body is an HTML page rather than JSON.
pub fn looks_like_html(body: &[u8], content_type: Option<&str>) -> bool {
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace() && *b != 0xEF && *b != 0xBB && *b != 0xBF)
        .map(|i| &body[i..])
        .unwrap_or_default();
    content_type.is_some_and(|c| c.to_ascii_lowercase().contains("text/html"))
        || start.first() == Some(&b'<')
}

/// Parses a response body as JSON, with messages that say what went wrong.
pub fn parse_json(body: &[u8], content_type: Option<&str>) -> Result<Value, DocumentError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(DocumentError(
            "the registry returned an empty response".into(),
        ));
    }
    if looks_like_html(body, content_type) {
        return Err(DocumentError(
            "the registry returned an HTML page instead of a JSON registry document (check the URL)".into(),
        ));
    }
    serde_json::from_slice(body).map_err(not_json)
}

fn not_json(e: serde_json::Error) -> DocumentError {
    DocumentError(format!("the registry's response is not valid JSON: {e}"))
}

/// A parsed registry document, with the names its legacy name maps repeat.
#[derive(Debug)]
pub struct Document {
    /// The document; a repeated name keeps its first definition.
    pub value: Value,
    /// The later definitions of repeated names, dropped while parsing.
    pub repeated: Vec<RepeatedName>,
}

/// Parses a whole registry document like [`parse_json`], keeping track of repeated names in the
/// legacy `servers`/`remote_servers` objects (which a plain JSON map would silently collapse).
pub fn parse_document(body: &[u8], content_type: Option<&str>) -> Result<Document, DocumentError> {
    if body.iter().all(u8::is_ascii_whitespace) || looks_like_html(body, content_type) {
        return parse_json(body, content_type).map(|value| Document {
            value,
            repeated: Vec::new(),
        });
    }
    let (value, repeated) = duplicate_keys::parse(body).map_err(not_json)?;
    Ok(Document { value, repeated })
}

/// The format a parsed document is in, if it is one the gateway reads.
pub fn detect(doc: &Value) -> Option<RegistryFormat> {
    match doc {
        Value::Array(_) => Some(RegistryFormat::ToolhiveUpstream),
        Value::Object(o) => {
            if o.get("data")
                .and_then(|d| d.get("servers"))
                .is_some_and(Value::is_array)
            {
                return Some(RegistryFormat::ToolhiveUpstream);
            }
            match o.get("servers") {
                Some(Value::Array(_)) => Some(RegistryFormat::McpRegistry),
                Some(Value::Object(_)) => Some(RegistryFormat::Toolhive),
                _ if o.get("remote_servers").is_some_and(Value::is_object) => {
                    Some(RegistryFormat::Toolhive)
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// A human name of a format, for messages.
pub fn format_name(f: RegistryFormat) -> &'static str {
    match f {
        RegistryFormat::Auto => "auto-detected",
        RegistryFormat::Toolhive => "legacy ToolHive registry.json",
        RegistryFormat::ToolhiveUpstream => "ToolHive upstream registry",
        RegistryFormat::McpRegistry => "MCP Registry API",
        RegistryFormat::ToolhiveRegistryServer => "ToolHive Registry Server API",
    }
}

fn unrecognised() -> DocumentError {
    DocumentError(
        "the document is not a registry format the gateway reads: expected a ToolHive registry.json \
         (`servers`/`remote_servers`), a ToolHive upstream registry (`data.servers`), or an MCP Registry \
         API server list"
            .into(),
    )
}

/// Reads a whole registry document (legacy or upstream format) into entries, marking duplicate
/// names as skipped, those repeated within one legacy object included.
pub fn read_document(doc: Document, format: RegistryFormat) -> Result<Vec<Entry>, DocumentError> {
    let mut entries = Vec::new();
    DocumentEntries::new(doc, format)?.stream(usize::MAX, |chunk| {
        entries.extend(chunk);
        true
    });
    Ok(entries)
}

/// A sync's entries: normalised already, or a document normalised while it is stored.
pub enum Entries {
    /// Read and normalised (API pages).
    Read(Vec<Entry>),
    /// A legacy or upstream document whose entries are normalised chunk by chunk.
    Document(DocumentEntries),
}

impl Entries {
    /// How many entries there are.
    pub fn len(&self) -> usize {
        match self {
            Entries::Read(e) => e.len(),
            Entries::Document(d) => d.len,
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hands the entries to `send` in order, in chunks of up to `chunk`; stops when `send`
    /// returns false.
    pub fn stream(self, chunk: usize, mut send: impl FnMut(Vec<Entry>) -> bool) {
        match self {
            Entries::Read(mut entries) => {
                while !entries.is_empty() {
                    let rest = entries.split_off(chunk.min(entries.len()));
                    if !send(std::mem::replace(&mut entries, rest)) {
                        return;
                    }
                }
            }
            Entries::Document(d) => d.stream(chunk, send),
        }
    }
}

/// A legacy or upstream registry document taken apart, its shape checked (so reading it cannot
/// fail any more): its entries are normalised on demand, in document order.
pub struct DocumentEntries {
    /// Name maps (legacy), or server.json entries (upstream).
    maps: Vec<NameMap>,
    list: Vec<Value>,
    repeated: Vec<RepeatedName>,
    len: usize,
}

impl DocumentEntries {
    /// Checks the document's shape and takes it apart.
    pub fn new(doc: Document, format: RegistryFormat) -> Result<Self, DocumentError> {
        let (maps, list) = match format {
            RegistryFormat::Toolhive => (legacy_maps(doc.value)?, Vec::new()),
            RegistryFormat::ToolhiveUpstream => (Vec::new(), upstream_list(doc.value)?),
            _ => return Err(unrecognised()),
        };
        let len =
            maps.iter().map(|(m, _)| m.len()).sum::<usize>() + list.len() + doc.repeated.len();
        Ok(DocumentEntries {
            maps,
            list,
            repeated: doc.repeated,
            len,
        })
    }

    /// Normalises the entries in order and hands them to `send` in chunks of up to `chunk`,
    /// marking later definitions of a name as skipped duplicates; stops when `send` returns false.
    pub fn stream(self, chunk: usize, send: impl FnMut(Vec<Entry>) -> bool) {
        let mut sink = Sink {
            seen: HashSet::new(),
            buf: Vec::new(),
            chunk: chunk.max(1),
            send,
        };
        let legacy = self.maps.into_iter().flat_map(|(map, remote)| {
            map.into_iter()
                .map(move |(k, v)| normalize::legacy_entry(&k, v, remote))
        });
        let upstream = self
            .list
            .into_iter()
            .map(|v| normalize::server_json_entry(v, None));
        let repeated = self.repeated.into_iter().map(|r| Entry::Skipped {
            reason: format!(
                "duplicate entry: `{}` defines the name more than once; the first definition is kept",
                r.map
            ),
            name: r.name,
        });
        for e in legacy.chain(upstream).chain(repeated) {
            if !sink.push(e) {
                return;
            }
        }
        sink.flush();
    }
}

/// Collects entries into chunks; a later entry of a name already listed by a valid entry becomes
/// a skipped duplicate.
struct Sink<F> {
    seen: HashSet<String>,
    buf: Vec<Entry>,
    chunk: usize,
    send: F,
}

impl<F: FnMut(Vec<Entry>) -> bool> Sink<F> {
    fn push(&mut self, mut e: Entry) -> bool {
        if !matches!(e, Entry::Skipped { .. })
            && let Some(name) = entry_name(&e)
            && !self.seen.insert(name.to_string())
        {
            e = Entry::Skipped {
                name: name.to_string(),
                reason: "duplicate entry: the name appears more than once".into(),
            };
        }
        self.buf.push(e);
        self.buf.len() < self.chunk || self.flush()
    }

    fn flush(&mut self) -> bool {
        self.buf.is_empty() || (self.send)(std::mem::take(&mut self.buf))
    }
}

/// A legacy name→server map; `true` for remote servers.
type NameMap = (serde_json::Map<String, Value>, bool);

/// The name maps of a legacy document in reading order: `servers`, `remote_servers`, then each
/// group's, a group member only when no earlier map lists its name.
fn legacy_maps(doc: Value) -> Result<Vec<NameMap>, DocumentError> {
    let Value::Object(mut top) = doc else {
        return Err(unrecognised());
    };
    let mut maps = Vec::new();
    take_map(top.remove("servers"), false, "servers", &mut maps)?;
    take_map(
        top.remove("remote_servers"),
        true,
        "remote_servers",
        &mut maps,
    )?;
    // Groups are legacy: their members are listed like top-level servers when not already there.
    let Some(Value::Array(groups)) = top.remove("groups") else {
        return Ok(maps);
    };
    let mut group_maps = Vec::new();
    for g in groups {
        let Value::Object(mut g) = g else { continue };
        take_map(
            g.remove("servers"),
            false,
            "groups[].servers",
            &mut group_maps,
        )?;
        take_map(
            g.remove("remote_servers"),
            true,
            "groups[].remote_servers",
            &mut group_maps,
        )?;
    }
    let mut listed: HashSet<String> = maps.iter().flat_map(|(m, _)| m.keys().cloned()).collect();
    for (mut map, remote) in group_maps {
        map.retain(|name, _| listed.insert(name.clone()));
        maps.push((map, remote));
    }
    Ok(maps)
}

fn take_map(
    v: Option<Value>,
    remote: bool,
    what: &str,
    out: &mut Vec<NameMap>,
) -> Result<(), DocumentError> {
    match v {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(map)) => {
            out.push((map, remote));
            Ok(())
        }
        Some(_) => Err(DocumentError(format!(
            "`{what}` must be an object mapping names to servers"
        ))),
    }
}

fn upstream_list(doc: Value) -> Result<Vec<Value>, DocumentError> {
    match doc {
        Value::Array(items) => Ok(items),
        Value::Object(mut o) => match o
            .remove("data")
            .and_then(|mut d| d.get_mut("servers").map(Value::take))
        {
            Some(Value::Array(items)) => Ok(items),
            _ => Err(unrecognised()),
        },
        _ => Err(unrecognised()),
    }
}

fn entry_name(e: &Entry) -> Option<&str> {
    match e {
        Entry::Server { server, .. } => Some(&server.original_name),
        Entry::Deleted { original_name } => Some(original_name),
        Entry::Skipped { name, .. } => Some(name),
    }
}

/// One page of a registry API.
pub struct ApiPage {
    /// The entries, each with the official metadata the API gave it.
    pub items: Vec<(Value, Option<OfficialMeta>)>,
    /// The cursor of the next page, if any.
    pub next_cursor: Option<String>,
}

/// Reads one API page.
pub fn read_api_page(doc: Value) -> Result<ApiPage, DocumentError> {
    let Value::Object(mut o) = doc else {
        return Err(DocumentError(
            "the API response is not a server list (expected an object with `servers`)".into(),
        ));
    };
    let Some(Value::Array(servers)) = o.remove("servers") else {
        return Err(DocumentError(
            "the API response is not a server list (no `servers` array)".into(),
        ));
    };
    let next_cursor = o
        .get("metadata")
        .and_then(|m| m.get("nextCursor").or_else(|| m.get("next_cursor")))
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .map(str::to_string);
    let items = servers
        .into_iter()
        .map(|item| match item {
            Value::Object(mut wrapped) if wrapped.contains_key("server") => {
                let meta = OfficialMeta::from_meta(wrapped.get("_meta"));
                (wrapped.remove("server").unwrap_or(Value::Null), meta)
            }
            // The 2025 `/v0` shape: server.json items with the official metadata inside `_meta`.
            other => {
                let meta = OfficialMeta::from_meta(other.get("_meta"));
                (other, meta)
            }
        })
        .collect();
    Ok(ApiPage { items, next_cursor })
}

/// Collects API entries across pages and keeps one per server name: the latest version.
#[derive(Default)]
pub struct ApiCollector {
    by_name: HashMap<String, Vec<(Value, Option<OfficialMeta>)>>,
    order: Vec<String>,
    unnamed: Vec<Entry>,
    /// The newest `updatedAt` seen, for the next incremental sync.
    pub watermark: Option<DateTime<Utc>>,
    /// Entries received (all versions, deleted ones included).
    pub received: usize,
}

impl ApiCollector {
    /// Adds one page's items.
    pub fn add(&mut self, items: Vec<(Value, Option<OfficialMeta>)>) {
        for (server, meta) in items {
            self.received += 1;
            if let Some(t) = meta.as_ref().and_then(|m| m.updated_at) {
                self.watermark = Some(self.watermark.map_or(t, |w| w.max(t)));
            }
            match server
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .map(str::to_string)
            {
                Some(name) => {
                    let list = self.by_name.entry(name.clone()).or_default();
                    if list.is_empty() {
                        self.order.push(name);
                    }
                    list.push((server, meta));
                }
                None => self.unnamed.push(Entry::Skipped {
                    name: "(unnamed entry)".into(),
                    reason: "the entry has no name".into(),
                }),
            }
        }
    }

    /// One entry per name: the version marked latest, else the newest one; a name whose every
    /// version is deleted becomes [`Entry::Deleted`].
    pub fn finish(mut self) -> Vec<Entry> {
        let mut out = std::mem::take(&mut self.unnamed);
        for name in self.order {
            let mut versions = self.by_name.remove(&name).unwrap_or_default();
            let live: Vec<usize> = (0..versions.len())
                .filter(|&i| !versions[i].1.as_ref().is_some_and(OfficialMeta::is_deleted))
                .collect();
            if live.is_empty() {
                out.push(Entry::Deleted {
                    original_name: name,
                });
                continue;
            }
            let pick = live
                .iter()
                .copied()
                .find(|&i| versions[i].1.as_ref().and_then(|m| m.is_latest) == Some(true))
                .unwrap_or_else(|| {
                    *live
                        .iter()
                        .max_by_key(|&&i| {
                            let m = versions[i].1.as_ref();
                            let version = versions[i]
                                .0
                                .get("version")
                                .and_then(Value::as_str)
                                .and_then(|v| {
                                    semver::Version::parse(v.trim_start_matches('v')).ok()
                                });
                            (m.and_then(|m| m.published_at), version)
                        })
                        .expect("live is not empty")
                });
            let (server, meta) = versions.swap_remove(pick);
            out.push(normalize::server_json_entry(server, meta.as_ref()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn detection() {
        assert_eq!(
            detect(&json!({"servers": {}, "version": "1.0.0"})),
            Some(RegistryFormat::Toolhive)
        );
        assert_eq!(
            detect(&json!({"remote_servers": {}})),
            Some(RegistryFormat::Toolhive)
        );
        assert_eq!(
            detect(&json!({"data": {"servers": []}})),
            Some(RegistryFormat::ToolhiveUpstream)
        );
        assert_eq!(detect(&json!([])), Some(RegistryFormat::ToolhiveUpstream));
        assert_eq!(
            detect(&json!({"servers": [], "metadata": {}})),
            Some(RegistryFormat::McpRegistry)
        );
        assert_eq!(detect(&json!({"hello": 1})), None);
        assert_eq!(detect(&json!("x")), None);
    }

    #[test]
    fn html_garbage_and_empty_bodies() {
        let html = parse_json(b"  <!DOCTYPE html><html></html>", None).unwrap_err();
        assert!(html.0.contains("HTML page"), "{}", html.0);
        assert!(
            parse_json(b"{}", Some("text/html; charset=utf-8"))
                .unwrap_err()
                .0
                .contains("HTML")
        );
        let garbage = parse_json(b"{\"servers\": [oops", Some("application/json")).unwrap_err();
        assert!(garbage.0.contains("not valid JSON"), "{}", garbage.0);
        assert!(parse_json(b" \n", None).unwrap_err().0.contains("empty"));
    }

    #[test]
    fn legacy_document_with_groups_and_duplicates() {
        let doc = json!({
            "servers": {"a": {"description": "d", "image": "x/a:1"}, "bad": {"image": "x/b:1"}},
            "remote_servers": {"a": {"description": "d", "url": "https://a.example"}},
            "groups": [{"name": "g", "servers": {"g1": {"description": "d", "image": "x/g:1"},
                                                  "a": {"description": "d", "image": "x/a:2"}}}]
        });
        let doc = Document {
            value: doc,
            repeated: Vec::new(),
        };
        let entries = read_document(doc, RegistryFormat::Toolhive).unwrap();
        let servers: Vec<_> = entries
            .iter()
            .filter_map(|e| match e {
                Entry::Server { server, .. } => Some(server.original_name.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(servers, vec!["a", "g1"]);
        let skipped: Vec<_> = entries
            .iter()
            .filter_map(|e| match e {
                Entry::Skipped { name, reason } => Some((name.as_str(), reason.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(
            skipped
                .iter()
                .any(|(n, r)| *n == "a" && r.contains("duplicate"))
        );
        assert!(skipped.iter().any(|(n, _)| *n == "bad"));
    }

    #[test]
    fn documents_stream_in_chunks_as_they_read_whole() {
        let body = br#"{"servers": {"a": {"description": "d", "image": "x/a:1"}, "bad": {"image": "x/b:1"},
            "b": {"description": "d", "image": "x/b:1"}, "a": {"description": "again", "image": "x/a:3"}},
            "remote_servers": {"a": {"description": "d", "url": "https://a.example"},
                               "bad": {"description": "d", "url": "https://bad.example"}},
            "groups": [{"name": "g", "servers": {"g1": {"description": "d", "image": "x/g:1"},
                                                  "a": {"description": "d", "image": "x/a:2"}}},
                       {"name": "h", "remote_servers": {"g1": {"description": "d", "url": "https://g.example"},
                                                         "h1": {"description": "d", "url": "https://h.example"}}}]}"#;
        let doc = || parse_document(body, None).unwrap();
        let whole = read_document(doc(), RegistryFormat::Toolhive).unwrap();
        assert_eq!(whole.len(), 8, "{whole:?}");
        let entries =
            Entries::Document(DocumentEntries::new(doc(), RegistryFormat::Toolhive).unwrap());
        assert_eq!(entries.len(), whole.len());
        let mut chunks = Vec::new();
        entries.stream(3, |c| {
            chunks.push(c);
            true
        });
        assert_eq!(
            chunks.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![3, 3, 2]
        );
        assert_eq!(chunks.concat(), whole);
        // The receiver going away stops the stream.
        let mut calls = 0;
        Entries::Read(whole.clone()).stream(2, |_| {
            calls += 1;
            false
        });
        assert_eq!(calls, 1);
        let bad = parse_document(br#"{"servers": {}, "remote_servers": []}"#, None).unwrap();
        let err = DocumentEntries::new(bad, RegistryFormat::Toolhive)
            .err()
            .unwrap();
        assert!(
            err.0.contains("`remote_servers` must be an object"),
            "{}",
            err.0
        );
    }

    #[test]
    fn a_name_repeated_in_a_legacy_object_is_a_skipped_duplicate() {
        let mut body = String::from("{\"servers\": {");
        for i in 0..1000 {
            if i > 0 {
                body.push(',');
            }
            body.push_str(&format!(
                "\"same\": {{\"description\": \"d{i}\", \"image\": \"x/s:{i}\"}}"
            ));
        }
        body.push_str("}}");
        let doc = parse_document(body.as_bytes(), Some("application/json")).unwrap();
        assert_eq!(detect(&doc.value), Some(RegistryFormat::Toolhive));
        let entries = read_document(doc, RegistryFormat::Toolhive).unwrap();
        assert_eq!(entries.len(), 1000, "one entry per definition");
        let Entry::Server { server, .. } = &entries[0] else {
            panic!("the first definition is kept: {:?}", entries[0]);
        };
        assert_eq!(server.description, "d0");
        assert!(entries[1..].iter().all(|e| matches!(e,
            Entry::Skipped { name, reason } if name == "same" && reason.contains("duplicate"))));
        assert!(
            parse_document(b"{\"servers\": {\"a\": }", None)
                .unwrap_err()
                .0
                .contains("not valid JSON")
        );
    }

    #[test]
    fn api_pages_keep_the_latest_version() {
        let page = json!({
            "servers": [
                {"server": {"name": "a.b/x", "description": "d", "version": "1.0.0",
                            "remotes": [{"type": "sse", "url": "https://x.example/1"}]},
                 "_meta": {"io.modelcontextprotocol.registry/official": {"status": "active", "isLatest": false,
                            "updatedAt": "2025-01-01T00:00:00Z"}}},
                {"server": {"name": "a.b/x", "description": "d", "version": "2.0.0",
                            "remotes": [{"type": "sse", "url": "https://x.example/2"}]},
                 "_meta": {"io.modelcontextprotocol.registry/official": {"status": "active", "isLatest": true,
                            "updatedAt": "2025-02-01T00:00:00Z"}}},
                {"server": {"name": "a.b/gone", "description": "d", "version": "1.0.0"},
                 "_meta": {"io.modelcontextprotocol.registry/official": {"status": "deleted",
                            "updatedAt": "2025-03-01T00:00:00Z"}}}
            ],
            "metadata": {"nextCursor": "abc", "count": 3}
        });
        let p = read_api_page(page).unwrap();
        assert_eq!(p.next_cursor.as_deref(), Some("abc"));
        let mut c = ApiCollector::default();
        c.add(p.items);
        assert_eq!(c.received, 3);
        assert_eq!(c.watermark, Some("2025-03-01T00:00:00Z".parse().unwrap()));
        let entries = c.finish();
        assert_eq!(entries.len(), 2);
        match &entries[0] {
            Entry::Server { server, latest } => {
                assert!(*latest);
                assert_eq!(server.version.as_deref(), Some("2.0.0"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            entries[1],
            Entry::Deleted {
                original_name: "a.b/gone".into()
            }
        );
        // The 2025 v0 shape: bare items and snake_case cursor.
        let old = read_api_page(
            json!({"servers": [{"name": "a.b/y"}], "metadata": {"next_cursor": "n"}}),
        )
        .unwrap();
        assert_eq!(old.next_cursor.as_deref(), Some("n"));
        assert_eq!(old.items.len(), 1);
        assert!(read_api_page(json!({"servers": {}})).is_err());
    }
}
