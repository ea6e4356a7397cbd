//! Reading a registry from its source: one document, or every page of a registry API, with the
//! incremental `updated_since` read of the MCP Registry API when a previous sync left a watermark.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use dataloaders::enums::RegistryFormat;
use dataloaders::models::RegistryRow;
use serde_json::Value;
use url::Url;

use super::formats::{self, ApiCollector, Entries};
use super::http::{FetchError, RegistryClient, host_of};
use super::progress::{ProgressEvent, SyncProgress};
use super::report::SyncMode;
use super::store::SyncState;
use crate::registries::RegistryAuth;

/// A full read replaces incremental ones at least this often, to correct any drift.
pub const FULL_SYNC_EVERY: chrono::Duration = chrono::Duration::hours(24);
/// Page size asked of the MCP Registry API (its maximum).
const MCP_PAGE_LIMIT: u32 = 100;
/// Page size asked of the ToolHive Registry Server API (its maximum).
const TRS_PAGE_LIMIT: u32 = 1000;

/// What was read from the upstream.
pub struct Fetched {
    pub format: RegistryFormat,
    pub mode: SyncMode,
    pub entries: Entries,
    pub pages: u32,
    pub bytes: u64,
    /// Entries received, before one version per name was kept.
    pub received: usize,
    pub state: SyncState,
}

/// A failed read: the message is safe to show (no URL, no credentials).
#[derive(Debug)]
pub struct FetchFailure {
    pub message: String,
    pub cancelled: bool,
}

impl From<FetchError> for FetchFailure {
    fn from(e: FetchError) -> Self {
        FetchFailure {
            cancelled: e == FetchError::Cancelled,
            message: e.to_string(),
        }
    }
}

impl From<formats::DocumentError> for FetchFailure {
    fn from(e: formats::DocumentError) -> Self {
        FetchFailure {
            message: e.0,
            cancelled: false,
        }
    }
}

fn fail(message: impl Into<String>) -> FetchFailure {
    FetchFailure {
        message: message.into(),
        cancelled: false,
    }
}

fn trimmed_path(url: &Url) -> String {
    url.path().trim_end_matches('/').to_string()
}

fn with_path(url: &Url, path: &str) -> Url {
    let mut u = url.clone();
    u.set_path(path);
    u
}

/// The list endpoint of an MCP Registry API given its base or list URL.
pub fn mcp_list_url(url: &Url) -> Url {
    let p = trimmed_path(url);
    if p.ends_with("/servers") {
        url.clone()
    } else if p.ends_with("/v0") || p.ends_with("/v0.1") {
        with_path(url, &format!("{p}/servers"))
    } else {
        with_path(url, &format!("{p}/v0.1/servers"))
    }
}

/// The list endpoint of one registry of a ToolHive Registry Server.
pub fn trs_list_url(url: &Url) -> Result<Url, FetchFailure> {
    let p = trimmed_path(url);
    if p.ends_with("/servers") {
        return Ok(url.clone());
    }
    if p.ends_with("/v0.1") {
        return Ok(with_path(url, &format!("{p}/servers")));
    }
    let segments: Vec<&str> = p.split('/').collect();
    if segments.len() >= 2
        && segments[segments.len() - 2] == "registry"
        && !segments[segments.len() - 1].is_empty()
    {
        return Ok(with_path(url, &format!("{p}/v0.1/servers")));
    }
    Err(fail(
        "a ToolHive Registry Server URL must name one registry: https://HOST/registry/NAME (or its /v0.1/servers endpoint)",
    ))
}

/// For AUTO: the API a URL's path names, if it names one.
pub fn api_from_path(url: &Url) -> Option<(RegistryFormat, Url)> {
    let p = trimmed_path(url);
    let is_trs = p.contains("/registry/");
    let fmt = if is_trs {
        RegistryFormat::ToolhiveRegistryServer
    } else {
        RegistryFormat::McpRegistry
    };
    let api_like = ["/v0", "/v0.1", "/v0/servers", "/v0.1/servers"]
        .iter()
        .any(|s| p.ends_with(s));
    if api_like {
        return Some((
            fmt,
            if is_trs {
                trs_list_url(url).ok()?
            } else {
                mcp_list_url(url)
            },
        ));
    }
    let segments: Vec<&str> = p.split('/').collect();
    if segments.len() >= 2 && segments[segments.len() - 2] == "registry" {
        return Some((
            RegistryFormat::ToolhiveRegistryServer,
            trs_list_url(url).ok()?,
        ));
    }
    None
}

/// Most bytes read from all the pages of one paginated sync (each page is capped on its own;
/// the pages' entries are all held until the sync stores them).
pub const MAX_TOTAL_BYTES: u64 = 256 * 1024 * 1024;

/// Refuses a paginated read past [`MAX_TOTAL_BYTES`].
fn within_total(bytes: u64) -> Result<(), FetchFailure> {
    if bytes > MAX_TOTAL_BYTES {
        return Err(fail(format!(
            "the registry API sent more than {} MiB in one sync",
            MAX_TOTAL_BYTES / (1024 * 1024)
        )));
    }
    Ok(())
}

/// Reads a registry.
pub struct Reader<'a> {
    pub client: &'a RegistryClient,
    pub auth: Option<&'a RegistryAuth>,
    pub cancel: tokio::sync::watch::Receiver<bool>,
    pub progress: &'a dyn SyncProgress,
    pub max_pages: u32,
}

impl Reader<'_> {
    /// Reads `row`'s registry, incrementally when the previous sync allows it.
    pub async fn read(&mut self, row: &RegistryRow) -> Result<Fetched, FetchFailure> {
        let url = Url::parse(&row.url).map_err(|_| fail("the registry URL is not a valid URL"))?;
        self.progress.event(ProgressEvent::Connecting {
            host: host_of(&url),
        });
        let prev = SyncState::from_row(row);
        let prev = if prev.url.as_deref() == Some(row.url.as_str()) {
            prev
        } else {
            SyncState::default()
        };
        let now = Utc::now();
        let since_for = |fmt: RegistryFormat| -> Option<DateTime<Utc>> {
            let recent_full = prev
                .last_full_sync_at
                .is_some_and(|t| now - t < FULL_SYNC_EVERY);
            (fmt == RegistryFormat::McpRegistry && prev.format == Some(fmt) && recent_full)
                .then_some(prev.watermark)
                .flatten()
        };
        let mut fetched = match row.format {
            RegistryFormat::Toolhive | RegistryFormat::ToolhiveUpstream => {
                self.document(&url, Some(row.format)).await?
            }
            RegistryFormat::McpRegistry => {
                let list = mcp_list_url(&url);
                let since = since_for(RegistryFormat::McpRegistry);
                self.api(list, RegistryFormat::McpRegistry, since, None)
                    .await?
            }
            RegistryFormat::ToolhiveRegistryServer => {
                self.api(
                    trs_list_url(&url)?,
                    RegistryFormat::ToolhiveRegistryServer,
                    None,
                    None,
                )
                .await?
            }
            RegistryFormat::Auto => {
                if let Some((fmt, list)) = api_from_path(&url) {
                    let since = since_for(fmt);
                    self.api(list, fmt, since, None).await?
                } else if let (
                    Some(
                        fmt
                        @ (RegistryFormat::McpRegistry | RegistryFormat::ToolhiveRegistryServer),
                    ),
                    Some(list),
                ) = (
                    prev.format,
                    prev.list_url.as_deref().and_then(|l| Url::parse(l).ok()),
                ) {
                    let since = since_for(fmt);
                    self.api(list, fmt, since, None).await?
                } else {
                    self.document_or_api_root(&url).await?
                }
            }
        };
        fetched.state.url = Some(row.url.clone());
        fetched.state.format = Some(fetched.format);
        match fetched.mode {
            SyncMode::Full => fetched.state.last_full_sync_at = Some(now),
            SyncMode::Incremental => fetched.state.last_full_sync_at = prev.last_full_sync_at,
        }
        if fetched.state.watermark.is_none() && fetched.mode == SyncMode::Incremental {
            fetched.state.watermark = prev.watermark;
        }
        Ok(fetched)
    }

    /// AUTO on a URL: its document; and when the URL is a bare origin (`https://HOST` or
    /// `https://HOST/`) that serves no registry document, the MCP Registry API under it
    /// (`/v0.1/servers`, then `/v0/servers`), which is how that registry is published. The
    /// error of a failed probe lists every URL tried.
    async fn document_or_api_root(&mut self, url: &Url) -> Result<Fetched, FetchFailure> {
        let first = match self.document(url, None).await {
            Err(e) if !e.cancelled && trimmed_path(url).is_empty() => e,
            other => return other,
        };
        let mut tried = vec![format!("{} ({})", url.path(), first.message)];
        for path in ["/v0.1/servers", "/v0/servers"] {
            let list = with_path(url, path);
            match self
                .api(list, RegistryFormat::McpRegistry, None, None)
                .await
            {
                Ok(f) => return Ok(f),
                Err(e) if e.cancelled => return Err(e),
                Err(e) => tried.push(format!("{path} ({})", e.message)),
            }
        }
        Err(fail(format!(
            "no registry found at this origin; tried {}",
            tried.join(", ")
        )))
    }

    async fn document(
        &mut self,
        url: &Url,
        expected: Option<RegistryFormat>,
    ) -> Result<Fetched, FetchFailure> {
        // Normalising needs a compiled pattern: built meanwhile, not before the first entry.
        tokio::task::spawn_blocking(super::normalize::warm_up);
        let body = self.client.fetch(url, self.auth, &mut self.cancel).await?;
        let bytes = body.bytes.len() as u64;
        self.progress.event(ProgressEvent::Page {
            page: 1,
            entries: 0,
            bytes,
        });
        let doc = formats::parse_document(&body.bytes, body.content_type.as_deref())?;
        drop(body);
        let detected = formats::detect(&doc.value).ok_or_else(|| {
            fail(
                "the document is not a registry format the gateway reads: expected a ToolHive registry.json \
                 (`servers`/`remote_servers`), a ToolHive upstream registry (`data.servers`), or an MCP Registry \
                 API server list",
            )
        })?;
        if let Some(exp) = expected
            && exp != detected
        {
            return Err(fail(format!(
                "the registry is configured as {} but the document looks like {}",
                formats::format_name(exp),
                formats::format_name(detected)
            )));
        }
        if detected == RegistryFormat::McpRegistry {
            // AUTO on an API list URL: this is its first page.
            let fmt = if url.path().contains("/registry/") {
                RegistryFormat::ToolhiveRegistryServer
            } else {
                RegistryFormat::McpRegistry
            };
            return self
                .api(url.clone(), fmt, None, Some((doc.value, bytes)))
                .await;
        }
        // Normalised while the first servers are stored (`store::commit`).
        let entries = Entries::Document(formats::DocumentEntries::new(doc, detected)?);
        let received = entries.len();
        self.progress
            .event(ProgressEvent::Read { entries: received });
        Ok(Fetched {
            format: detected,
            mode: SyncMode::Full,
            entries,
            pages: 1,
            bytes,
            received,
            state: SyncState::default(),
        })
    }

    async fn api(
        &mut self,
        list_url: Url,
        format: RegistryFormat,
        since: Option<DateTime<Utc>>,
        first_page: Option<(Value, u64)>,
    ) -> Result<Fetched, FetchFailure> {
        let limit = if format == RegistryFormat::ToolhiveRegistryServer {
            TRS_PAGE_LIMIT
        } else {
            MCP_PAGE_LIMIT
        };
        let mut collector = ApiCollector::default();
        let mut seen_cursors = HashSet::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0u32;
        let mut bytes = 0u64;
        let mut pending_first = first_page;
        loop {
            let (doc, size) = match pending_first.take() {
                Some(first) => first,
                None => {
                    let page_url = page_url(&list_url, limit, cursor.as_deref(), since);
                    let body = self
                        .client
                        .fetch(&page_url, self.auth, &mut self.cancel)
                        .await?;
                    let size = body.bytes.len() as u64;
                    (
                        formats::parse_json(&body.bytes, body.content_type.as_deref())?,
                        size,
                    )
                }
            };
            pages += 1;
            bytes += size;
            within_total(bytes)?;
            let page = formats::read_api_page(doc)?;
            collector.add(page.items);
            self.progress.event(ProgressEvent::Page {
                page: pages,
                entries: collector.received,
                bytes,
            });
            match page.next_cursor {
                None => break,
                Some(next) => {
                    if !seen_cursors.insert(next.clone()) {
                        return Err(fail(
                            "the registry API repeated a pagination cursor (a pagination loop)",
                        ));
                    }
                    if pages >= self.max_pages {
                        return Err(fail(format!(
                            "the registry API has more than {} pages (HIVEGRAPH_SYNC_MAX_PAGES)",
                            self.max_pages
                        )));
                    }
                    cursor = Some(next);
                }
            }
        }
        let received = collector.received;
        let watermark = collector.watermark;
        let entries = Entries::Read(collector.finish());
        self.progress
            .event(ProgressEvent::Read { entries: received });
        Ok(Fetched {
            format,
            mode: if since.is_some() {
                SyncMode::Incremental
            } else {
                SyncMode::Full
            },
            entries,
            pages,
            bytes,
            received,
            state: SyncState {
                list_url: Some(list_url.to_string()),
                watermark: watermark.or(since),
                ..SyncState::default()
            },
        })
    }
}

/// The URL of one page: the list URL's own query, with `limit`, `cursor` and `updated_since` set.
pub fn page_url(list: &Url, limit: u32, cursor: Option<&str>, since: Option<DateTime<Utc>>) -> Url {
    let mut u = list.clone();
    let kept: Vec<(String, String)> = list
        .query_pairs()
        .filter(|(k, _)| !matches!(k.as_ref(), "limit" | "cursor" | "updated_since"))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    {
        let mut q = u.query_pairs_mut();
        q.clear();
        for (k, v) in &kept {
            q.append_pair(k, v);
        }
        q.append_pair("limit", &limit.to_string());
        if let Some(c) = cursor {
            q.append_pair("cursor", c);
        }
        if let Some(s) = since {
            q.append_pair(
                "updated_since",
                &s.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            );
        }
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn api_urls() {
        assert_eq!(
            mcp_list_url(&u("https://r.example")).as_str(),
            "https://r.example/v0.1/servers"
        );
        assert_eq!(
            mcp_list_url(&u("https://r.example/v0")).as_str(),
            "https://r.example/v0/servers"
        );
        assert_eq!(
            mcp_list_url(&u("https://r.example/v0.1/")).as_str(),
            "https://r.example/v0.1/servers"
        );
        assert_eq!(
            mcp_list_url(&u("https://r.example/v0.1/servers")).as_str(),
            "https://r.example/v0.1/servers"
        );
        assert_eq!(
            trs_list_url(&u("https://t.example/registry/main"))
                .unwrap()
                .as_str(),
            "https://t.example/registry/main/v0.1/servers"
        );
        assert!(trs_list_url(&u("https://t.example/")).is_err());
        assert_eq!(
            api_from_path(&u("https://t.example/registry/main"))
                .unwrap()
                .0,
            RegistryFormat::ToolhiveRegistryServer
        );
        assert_eq!(
            api_from_path(&u("https://r.example/v0.1")).unwrap().0,
            RegistryFormat::McpRegistry
        );
        assert!(api_from_path(&u("https://r.example/registry.json")).is_none());
        let since = "2025-01-01T00:00:00Z".parse().unwrap();
        let p = page_url(
            &u("https://r.example/v0.1/servers?search=x&limit=5"),
            100,
            Some("c/1"),
            Some(since),
        );
        assert_eq!(
            p.as_str(),
            "https://r.example/v0.1/servers?search=x&limit=100&cursor=c%2F1&updated_since=2025-01-01T00%3A00%3A00.000000Z"
        );
    }

    #[test]
    fn paginated_reads_have_a_total_cap() {
        assert!(super::within_total(super::MAX_TOTAL_BYTES).is_ok());
        assert!(super::within_total(super::MAX_TOTAL_BYTES + 1).is_err());
    }
}
