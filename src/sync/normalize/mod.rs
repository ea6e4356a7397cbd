//! Normalisation and validation of one upstream registry entry into the gateway's Server model
//! (shared/DATA-MODEL.md): a DNS-label name next to the original name, a semantic version or tag,
//! a container image reference checked by `oci-spec`'s parser (or a ToolHive protocol scheme for
//! npm, PyPI and NuGet packages), the transport, tier and status enums, capabilities, categories,
//! popularity, repository URL, network permissions and deployment requirements.
//!
//! An entry that breaks a rule becomes [`Entry::Skipped`] with a reason; it never fails the sync.

use std::collections::HashSet;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use dataloaders::enums::{ServerStatus, ServerTier, Transport};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// Longest stored description; longer ones are cut at a character boundary.
pub const MAX_DESCRIPTION_CHARS: usize = 4000;
/// Longest accepted original name (the database's limit).
pub const MAX_ORIGINAL_NAME: usize = 255;
/// The `_meta` key of publisher-provided extensions.
pub const PUBLISHER_PROVIDED: &str = "io.modelcontextprotocol.registry/publisher-provided";
/// The publisher key of ToolHive's extensions.
pub const TOOLHIVE_PUBLISHER: &str = "io.github.stacklok";
/// The `_meta` key of the official MCP registry's own metadata.
pub const OFFICIAL_META: &str = "io.modelcontextprotocol.registry/official";

/// A server ready to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewServer {
    pub original_name: String,
    /// The preferred DNS label; the store makes it unique within the registry.
    pub name_hint: String,
    pub description: String,
    pub version: Option<String>,
    pub image: Option<String>,
    pub url: Option<String>,
    pub transport: Transport,
    pub tier: ServerTier,
    pub status: ServerStatus,
    pub category: Vec<String>,
    pub capabilities: Vec<String>,
    pub repository_url: Option<String>,
    pub network_permissions: Value,
    pub pull_count: i64,
    pub stars: i64,
    pub last_updated: Option<DateTime<Utc>>,
    pub deployment_requirements: Value,
}

impl NewServer {
    /// A remote server has a URL and no image.
    pub fn is_remote(&self) -> bool {
        self.image.is_none()
    }

    /// A stable hash of everything stored, so that an unchanged entry is not rewritten: the
    /// SHA-256 of the fields as one compact JSON array, serialised straight into the hasher.
    pub fn content_hash(&self) -> String {
        let fields = (
            &self.original_name,
            &self.description,
            &self.version,
            &self.image,
            &self.url,
            self.transport.as_db_str(),
            self.tier.as_db_str(),
            self.status.as_db_str(),
            &self.category,
            &self.capabilities,
            &self.repository_url,
            &self.network_permissions,
            self.pull_count,
            self.stars,
            self.last_updated.map(|t| t.to_rfc3339()),
            &self.deployment_requirements,
        );
        let mut hasher = Sha256::new();
        serde_json::to_writer(&mut hasher, &fields).expect("hashing cannot fail");
        hex::encode(&hasher.finalize()[..16])
    }
}

/// The outcome of reading one upstream entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A valid server. `latest` is false for an API entry that is not the latest version.
    Server {
        server: Box<NewServer>,
        latest: bool,
    },
    /// The upstream marks the server deleted (MCP Registry `deleted` status).
    Deleted { original_name: String },
    /// A malformed entry, with the reason; the rest of the registry still syncs.
    Skipped { name: String, reason: String },
}

impl Entry {
    fn skip(name: &str, reason: impl Into<String>) -> Entry {
        Entry::Skipped {
            name: name.to_string(),
            reason: reason.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Field rules
// ---------------------------------------------------------------------------------------------

/// The DNS label (RFC 1123, at most 63 characters) closest to `raw`: lower case, runs of other
/// characters become one hyphen. For reverse-DNS names (`io.github.stacklok/fetch`) the part after
/// the slash is used. Returns None when nothing usable is left.
pub fn dns_label(raw: &str) -> Option<String> {
    let base = raw.rsplit_once('/').map(|(_, n)| n).unwrap_or(raw);
    let label = slug(base, 63);
    let label = if label.is_empty() {
        slug(raw, 63)
    } else {
        label
    };
    (!label.is_empty()).then_some(label)
}

fn slug(raw: &str, max: usize) -> String {
    let mut out = String::with_capacity(raw.len().min(max));
    let mut pending_dash = false;
    for c in raw.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            if pending_dash && !out.is_empty() {
                out.push('-');
            }
            pending_dash = false;
            out.push(c);
        } else {
            pending_dash = true;
        }
    }
    if out.len() > max {
        out.truncate(max);
    }
    out.trim_end_matches('-').to_string()
}

/// A variant of `label` that is unique for `original_name`: a truncated label plus six hex digits
/// of the name's hash (and `n` when several tries are needed).
pub fn disambiguated_label(label: &str, original_name: &str, n: u32) -> String {
    let hash = hex::encode(&Sha256::digest(original_name.as_bytes())[..3]);
    let suffix = if n == 0 { hash } else { format!("{hash}-{n}") };
    let keep = 63 - suffix.len() - 1;
    let mut base = label.to_string();
    base.truncate(keep);
    format!("{}-{suffix}", base.trim_end_matches('-'))
}

/// Checks a version: a semantic version (an optional leading `v` allowed), or a tag as container
/// registries define it (letters, digits, `_`, `.`, `-`; at most 128 characters, not starting
/// with `.` or `-`). Ranges such as `^1.2` or `1.x` are refused.
pub fn check_version(v: &str) -> Result<String, String> {
    let v = v.trim();
    if v.is_empty() {
        return Err("the version is empty".into());
    }
    let bare = v.strip_prefix('v').unwrap_or(v);
    if semver::Version::parse(bare).is_ok() {
        return Ok(v.to_string());
    }
    let tag_ok = v.len() <= 128
        && v.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && !v.split('.').any(|p| p == "x" || p == "X" || p == "*");
    if tag_ok {
        Ok(v.to_string())
    } else {
        Err(format!(
            "version {v:?} is neither a semantic version nor a tag"
        ))
    }
}

/// A parsed container image reference.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRef {
    /// The reference as stored (as the registry spelled it).
    pub reference: String,
    /// The explicit tag, if the reference names one.
    pub tag: Option<String>,
    /// The digest, if the reference pins one.
    pub digest: Option<String>,
}

/// Checks a container image reference with the OCI distribution reference grammar
/// (`oci_spec::distribution::Reference`).
/// Compiles what normalising entries needs once, ahead of the first entry: the image-reference
/// grammar is a large pattern compiled on first use, which would otherwise delay the first chunk
/// of a sync (a sync calls this on a blocking thread while it downloads the document).
pub fn warm_up() {
    let _ = check_image("ghcr.io/warm/up:1.0.0");
}

pub fn check_image(raw: &str) -> Result<ImageRef, String> {
    let raw = raw.trim();
    let parsed = oci_spec::distribution::Reference::from_str(raw)
        .map_err(|e| format!("image {raw:?} is not a valid container image reference: {e}"))?;
    // The grammar lets a first path component with capitals pass as a registry host; like Docker's
    // own parser, refuse capitals in the repository of a Docker Hub reference.
    if parsed.repository().chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!(
            "image {raw:?} is not a valid container image reference: {}",
            oci_spec::distribution::ParseError::NameContainsUppercase
        ));
    }
    // The parser fills in `latest` when no tag is given; report only a tag the reference names.
    let explicit_tag = parsed
        .tag()
        .filter(|t| {
            raw.split('@')
                .next()
                .is_some_and(|name| name.ends_with(&format!(":{t}")))
        })
        .map(str::to_string);
    Ok(ImageRef {
        reference: raw.to_string(),
        tag: explicit_tag,
        digest: parsed.digest().map(str::to_string),
    })
}

/// Whether `raw` is an http(s) URL with a host.
fn http_url(raw: &str) -> Option<url::Url> {
    let u = url::Url::parse(raw.trim()).ok()?;
    (matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty()))
        .then_some(u)
}

fn check_remote_url(raw: &str) -> Result<String, String> {
    let u =
        http_url(raw).ok_or_else(|| format!("remote URL {raw:?} is not a valid http(s) URL"))?;
    if !u.username().is_empty() || u.password().is_some() {
        return Err("the remote URL embeds credentials".into());
    }
    Ok(raw.trim().to_string())
}

fn check_repository_url(raw: Option<&str>) -> Result<Option<String>, String> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(r) => http_url(r)
            .map(|_| Some(r.to_string()))
            .ok_or_else(|| format!("repository URL {r:?} is not a valid http(s) URL")),
    }
}

fn map_transport(raw: Option<&str>, default: Transport) -> Result<Transport, String> {
    match raw.map(|s| s.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(s) => match s.as_str() {
            "" => Ok(default),
            "stdio" => Ok(Transport::Stdio),
            "streamable-http" | "streamable_http" | "http" => Ok(Transport::Http),
            "sse" => Ok(Transport::Sse),
            other => Err(format!(
                "unknown transport {other:?} (expected stdio, streamable-http or sse)"
            )),
        },
    }
}

fn map_tier(raw: Option<&str>) -> Result<ServerTier, String> {
    match raw.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") => Ok(ServerTier::Community),
        Some("official") => Ok(ServerTier::Official),
        Some("community") => Ok(ServerTier::Community),
        Some(other) => Err(format!(
            "unknown tier {other:?} (expected Official or Community)"
        )),
    }
}

fn map_status(raw: Option<&str>) -> Result<ServerStatus, String> {
    match raw.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("active") | Some("available") => Ok(ServerStatus::Available),
        Some("deprecated") => Ok(ServerStatus::Deprecated),
        Some("experimental") | Some("beta") | Some("alpha") => Ok(ServerStatus::Experimental),
        Some(other) => Err(format!(
            "unknown status {other:?} (expected Active or Deprecated)"
        )),
    }
}

fn count(raw: Option<f64>, what: &str) -> Result<i64, String> {
    match raw {
        None => Ok(0),
        Some(n) if (0.0..9.0e18).contains(&n) => Ok(n as i64),
        Some(n) => Err(format!("{what} must be a non-negative number, not {n}")),
    }
}

fn timestamp(raw: Option<&str>, what: &str) -> Result<Option<DateTime<Utc>>, String> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| format!("{what} {s:?} is not an RFC 3339 timestamp")),
    }
}

fn description(raw: Option<&str>) -> String {
    let d = raw.unwrap_or("").trim();
    match d.char_indices().nth(MAX_DESCRIPTION_CHARS) {
        Some((cut, _)) => d[..cut].to_string(),
        None => d.to_string(),
    }
}

/// Trims, drops empty and duplicate strings, keeping the first occurrence's order.
fn unique(items: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut seen = HashSet::new();
    items
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && seen.insert(s.clone()))
        .collect()
}

fn check_env_name(name: &str) -> Result<(), String> {
    if crate::validate::is_env_name(name) {
        Ok(())
    } else {
        Err(format!("environment variable name {name:?} is not valid"))
    }
}

fn check_original_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("the entry has no name".into());
    }
    if name.chars().count() > MAX_ORIGINAL_NAME {
        return Err(format!(
            "the name is longer than {MAX_ORIGINAL_NAME} characters"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("the name contains control characters".into());
    }
    Ok(())
}

/// A package name as npm, PyPI or NuGet spell them: letters, digits, `@`, `/`, `.`, `_`, `-`,
/// `~`; no spaces, no scheme separators.
fn check_package_name(name: &str, kind: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 214
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '@' | '/' | '.' | '_' | '-' | '~'))
        && !name.contains("//");
    if ok {
        Ok(())
    } else {
        Err(format!("{kind} package name {name:?} is not valid"))
    }
}

// ---------------------------------------------------------------------------------------------
// Shared shapes (ToolHive's snake_case and the MCP server.json camelCase)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
struct Popularity {
    stars: Option<f64>,
    pulls: Option<f64>,
    last_updated: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ToolDefinition {
    name: String,
}

#[derive(Debug, Deserialize)]
struct EnvVar {
    name: String,
    description: Option<String>,
    required: Option<bool>,
    secret: Option<bool>,
    default: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Header {
    name: String,
    description: Option<String>,
    required: Option<bool>,
    secret: Option<bool>,
    default: Option<String>,
    choices: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
struct Outbound {
    allow_host: Option<Vec<String>>,
    allow_port: Option<Vec<u16>>,
    insecure_allow_all: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
struct Network {
    outbound: Option<Outbound>,
}

#[derive(Debug, Default, Deserialize)]
struct Permissions {
    name: Option<String>,
    network: Option<Network>,
    read: Option<Vec<String>>,
    write: Option<Vec<String>>,
    privileged: Option<bool>,
}

/// Fields common to a legacy entry and ToolHive's publisher-provided extension.
#[derive(Debug, Default, Deserialize)]
struct ToolhiveFields {
    tier: Option<String>,
    status: Option<String>,
    tools: Option<Vec<String>>,
    tool_definitions: Option<Vec<ToolDefinition>>,
    metadata: Option<Popularity>,
    tags: Option<Vec<String>>,
    permissions: Option<Permissions>,
    args: Option<Vec<String>>,
    target_port: Option<u16>,
    proxy_port: Option<u16>,
    env_vars: Option<Vec<EnvVar>>,
    headers: Option<Vec<Header>>,
    oauth_config: Option<Value>,
    docker_tags: Option<Vec<String>>,
}

/// The fields of a legacy `registry.json` entry (container or remote) beyond [`ToolhiveFields`].
#[derive(Debug, Deserialize)]
struct LegacyEntry {
    description: String,
    transport: Option<String>,
    repository_url: Option<String>,
    image: Option<String>,
    url: Option<String>,
}

fn decode<'de, T: Deserialize<'de>>(v: &'de Value) -> Result<T, String> {
    serde_path_to_error::deserialize::<_, T>(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path == "." {
            format!("malformed entry: {inner}")
        } else {
            format!("malformed field {path}: {inner}")
        }
    })
}

fn network_permissions(p: Option<&Permissions>) -> Result<Value, String> {
    let Some(outbound) = p
        .and_then(|p| p.network.as_ref())
        .and_then(|n| n.outbound.as_ref())
    else {
        return Ok(json!({}));
    };
    let hosts = unique(outbound.allow_host.clone().unwrap_or_default());
    if let Some(bad) = hosts
        .iter()
        .find(|h| h.chars().any(|c| c.is_whitespace() || c == '/'))
    {
        return Err(format!(
            "permissions.network.outbound.allow_host entry {bad:?} is not a host name"
        ));
    }
    let ports = outbound.allow_port.clone().unwrap_or_default();
    if ports.contains(&0) {
        return Err("permissions.network.outbound.allow_port contains port 0".into());
    }
    Ok(json!({
        "outbound": {
            "allowHost": hosts,
            "allowPort": ports,
            "insecureAllowAll": outbound.insecure_allow_all.unwrap_or(false),
        }
    }))
}

fn env_vars(vars: &[EnvVar]) -> Result<Vec<Value>, String> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(vars.len());
    for v in vars {
        check_env_name(&v.name)?;
        if !seen.insert(v.name.clone()) {
            continue;
        }
        let mut o = Map::new();
        o.insert("name".into(), json!(v.name));
        o.insert(
            "description".into(),
            json!(v.description.clone().unwrap_or_default()),
        );
        o.insert("required".into(), json!(v.required.unwrap_or(false)));
        o.insert("secret".into(), json!(v.secret.unwrap_or(false)));
        if let Some(d) = &v.default {
            o.insert("default".into(), json!(d));
        }
        out.push(Value::Object(o));
    }
    Ok(out)
}

fn headers(hs: &[Header]) -> Result<Vec<Value>, String> {
    hs.iter()
        .map(|h| {
            let ok = !h.name.is_empty()
                && h.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !ok {
                return Err(format!("header name {:?} is not valid", h.name));
            }
            let mut o = Map::new();
            o.insert("name".into(), json!(h.name));
            o.insert(
                "description".into(),
                json!(h.description.clone().unwrap_or_default()),
            );
            o.insert("required".into(), json!(h.required.unwrap_or(false)));
            o.insert("secret".into(), json!(h.secret.unwrap_or(false)));
            if let Some(d) = &h.default {
                o.insert("default".into(), json!(d));
            }
            if let Some(c) = &h.choices {
                o.insert("choices".into(), json!(c));
            }
            Ok(Value::Object(o))
        })
        .collect()
}

/// Applies the ToolHive fields shared by legacy entries and upstream extensions.
struct Common {
    tier: ServerTier,
    status: ServerStatus,
    category: Vec<String>,
    capabilities: Vec<String>,
    stars: i64,
    pulls: i64,
    last_updated: Option<DateTime<Utc>>,
    network_permissions: Value,
    requirements: Map<String, Value>,
}

fn common(t: &ToolhiveFields) -> Result<Common, String> {
    let tier = map_tier(t.tier.as_deref())?;
    let status = map_status(t.status.as_deref())?;
    let mut tools: Vec<String> = t.tools.clone().unwrap_or_default();
    tools.extend(t.tool_definitions.iter().flatten().map(|d| d.name.clone()));
    let capabilities = unique(tools);
    if let Some(bad) = capabilities
        .iter()
        .find(|c| c.len() > 256 || c.chars().any(char::is_control))
    {
        return Err(format!("tool name {bad:?} is not valid"));
    }
    let category = unique(t.tags.clone().unwrap_or_default());
    if let Some(bad) = category
        .iter()
        .find(|c| c.len() > 128 || c.chars().any(char::is_control))
    {
        return Err(format!("tag {bad:?} is not valid"));
    }
    let meta = t.metadata.as_ref();
    let stars = count(meta.and_then(|m| m.stars), "metadata.stars")?;
    let pulls = count(meta.and_then(|m| m.pulls), "metadata.pulls")?;
    let last_updated = timestamp(
        meta.and_then(|m| m.last_updated.as_deref()),
        "metadata.last_updated",
    )?;
    let network_permissions = network_permissions(t.permissions.as_ref())?;

    let mut req = Map::new();
    req.insert(
        "envVars".into(),
        Value::Array(env_vars(t.env_vars.as_deref().unwrap_or_default())?),
    );
    req.insert("args".into(), json!(t.args.clone().unwrap_or_default()));
    if let Some(p) = t.target_port {
        if p == 0 {
            return Err("target_port must be between 1 and 65535".into());
        }
        req.insert("targetPort".into(), json!(p));
    }
    if let Some(p) = t.proxy_port {
        if p == 0 {
            return Err("proxy_port must be between 1 and 65535".into());
        }
        req.insert("proxyPort".into(), json!(p));
    }
    if let Some(p) = &t.permissions
        && (p.read.is_some() || p.write.is_some() || p.privileged.is_some() || p.name.is_some())
    {
        req.insert(
            "permissions".into(),
            json!({
                "profile": p.name,
                "read": p.read.clone().unwrap_or_default(),
                "write": p.write.clone().unwrap_or_default(),
                "privileged": p.privileged.unwrap_or(false),
            }),
        );
    }
    if let Some(h) = &t.headers {
        req.insert("headers".into(), Value::Array(headers(h)?));
    }
    if let Some(o) = &t.oauth_config {
        if !o.is_object() {
            return Err("oauth_config must be an object".into());
        }
        req.insert("oauth".into(), o.clone());
    }
    if let Some(tags) = &t.docker_tags {
        req.insert("dockerTags".into(), json!(tags));
    }
    Ok(Common {
        tier,
        status,
        category,
        capabilities,
        stars,
        pulls,
        last_updated,
        network_permissions,
        requirements: req,
    })
}

mod legacy;
mod server_json;

pub use legacy::legacy_entry;
pub use server_json::{OfficialMeta, server_json_entry};

#[cfg(test)]
mod tests {
    use super::*;

    fn server(e: Entry) -> NewServer {
        match e {
            Entry::Server { server, .. } => *server,
            other => panic!("expected a server, got {other:?}"),
        }
    }

    fn skipped(e: Entry) -> String {
        match e {
            Entry::Skipped { reason, .. } => reason,
            other => panic!("expected a skip, got {other:?}"),
        }
    }

    #[test]
    fn dns_labels() {
        assert_eq!(
            dns_label("io.github.stacklok/fetch").as_deref(),
            Some("fetch")
        );
        assert_eq!(
            dns_label("io.github.x/My_Server.v2").as_deref(),
            Some("my-server-v2")
        );
        assert_eq!(dns_label("--Weird--Name--").as_deref(), Some("weird-name"));
        assert_eq!(dns_label("io.github.x/___").as_deref(), Some("io-github-x"));
        assert_eq!(dns_label("___"), None);
        let long = "a".repeat(100);
        let l = dns_label(&long).unwrap();
        assert_eq!(l.len(), 63);
        assert!(crate::validate::is_dns_label(&l));
        let d = disambiguated_label(&l, "io.github.a/aaa", 0);
        assert!(crate::validate::is_dns_label(&d), "{d}");
        assert_ne!(d, disambiguated_label(&l, "io.github.b/aaa", 0));
        assert!(crate::validate::is_dns_label(&disambiguated_label(
            "x", "n", 3
        )));
        assert!(!crate::validate::is_dns_label("-a"));
        assert!(!crate::validate::is_dns_label("A"));
    }

    #[test]
    fn versions() {
        for ok in [
            "1.0.3",
            "v0.22.0",
            "0.0.1-seed",
            "1.2.3+build.5",
            "latest",
            "2025.01.02",
            "main",
        ] {
            assert!(check_version(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "^1.2.3",
            "~1.2",
            ">=1.0",
            "1.x",
            "1.*",
            "lingo.dev@0.111.4",
            "has space",
        ] {
            assert!(check_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn images_use_the_oci_grammar() {
        let i = check_image("ghcr.io/stackloklabs/gofetch/server:1.0.3").unwrap();
        assert_eq!(i.tag.as_deref(), Some("1.0.3"));
        assert_eq!(check_image("docker.io/mcp/filesystem").unwrap().tag, None);
        assert_eq!(
            check_image("localhost:5000/x/y:tag")
                .unwrap()
                .tag
                .as_deref(),
            Some("tag")
        );
        let digest = format!("ghcr.io/a/b@sha256:{}", "a".repeat(64));
        let d = check_image(&digest).unwrap();
        assert_eq!(d.tag, None);
        assert!(d.digest.is_some());
        for bad in [
            "@edubase/mcp",
            "Omedia/mcp-server-drupal",
            "ghcr.io/a/b:bad tag",
            "",
            "a/b@sha256:123",
        ] {
            assert!(check_image(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn legacy_container_entry() {
        let v = json!({
            "description": "Allows you to fetch content from the web",
            "tier": "Community", "status": "Active", "transport": "streamable-http",
            "tools": ["fetch"],
            "tool_definitions": [{"name": "fetch", "inputSchema": {}}, {"name": "extra"}],
            "metadata": {"stars": 20, "pulls": 12390, "last_updated": "2026-02-05T04:47:22Z"},
            "repository_url": "https://github.com/stackloklabs/gofetch",
            "tags": ["content", "html", "content"],
            "image": "ghcr.io/stackloklabs/gofetch/server:1.0.3",
            "target_port": 8080,
            "args": ["--flag"],
            "env_vars": [{"name": "TOKEN", "description": "a token", "required": true, "secret": true},
                         {"name": "LEVEL", "description": "log level", "required": false, "default": "info"}],
            "permissions": {"network": {"outbound": {"insecure_allow_all": true, "allow_port": [443],
                                                      "allow_host": [".github.com"]}},
                            "read": ["/data"]}
        });
        let s = server(legacy_entry("fetch", v, false));
        assert_eq!(s.name_hint, "fetch");
        assert_eq!(s.original_name, "fetch");
        assert_eq!(s.version.as_deref(), Some("1.0.3"));
        assert_eq!(s.transport, Transport::Http);
        assert_eq!(s.tier, ServerTier::Community);
        assert_eq!(s.status, ServerStatus::Available);
        assert_eq!(s.capabilities, vec!["fetch", "extra"]);
        assert_eq!(s.category, vec!["content", "html"]);
        assert_eq!((s.stars, s.pull_count), (20, 12390));
        assert!(s.last_updated.is_some());
        assert_eq!(s.network_permissions["outbound"]["allowPort"], json!([443]));
        assert_eq!(
            s.network_permissions["outbound"]["allowHost"],
            json!([".github.com"])
        );
        assert_eq!(
            s.network_permissions["outbound"]["insecureAllowAll"],
            json!(true)
        );
        let r = &s.deployment_requirements;
        assert_eq!(r["targetPort"], json!(8080));
        assert_eq!(r["args"], json!(["--flag"]));
        assert_eq!(
            r["envVars"][0],
            json!({"name": "TOKEN", "description": "a token", "required": true, "secret": true})
        );
        assert_eq!(r["envVars"][1]["default"], json!("info"));
        assert_eq!(r["permissions"]["read"], json!(["/data"]));
        assert!(!s.is_remote());
    }

    #[test]
    fn legacy_remote_entry() {
        let v = json!({
            "description": "GitHub's remote server", "tier": "Official", "status": "Active",
            "transport": "streamable-http", "tools": ["get_me"], "url": "https://api.githubcopilot.com/mcp",
            "headers": [{"name": "X-Token", "description": "token", "required": true, "secret": true}],
            "oauth_config": {"authorize_url": "https://github.com/login/oauth/authorize", "use_pkce": true}
        });
        let s = server(legacy_entry("github-remote", v, true));
        assert!(s.is_remote());
        assert_eq!(s.url.as_deref(), Some("https://api.githubcopilot.com/mcp"));
        assert_eq!(s.transport, Transport::Http);
        assert_eq!(s.tier, ServerTier::Official);
        assert_eq!(s.version, None);
        assert_eq!(
            s.deployment_requirements["headers"][0]["secret"],
            json!(true)
        );
        assert_eq!(s.deployment_requirements["oauth"]["use_pkce"], json!(true));
        // sse by default for remotes, stdio refused
        let sse = server(legacy_entry(
            "r",
            json!({"description": "d", "url": "https://x.example/sse"}),
            true,
        ));
        assert_eq!(sse.transport, Transport::Sse);
        let stdio = legacy_entry(
            "r",
            json!({"description": "d", "url": "https://x.example", "transport": "stdio"}),
            true,
        );
        assert!(skipped(stdio).contains("stdio"));
    }

    #[test]
    fn malformed_legacy_entries_are_skipped_with_reasons() {
        let cases = [
            (json!({"image": "ghcr.io/a/b:1"}), "description"),
            (
                json!({"description": "d", "image": "Not A Ref"}),
                "container image reference",
            ),
            (json!({"description": "d"}), "needs an image"),
            (
                json!({"description": "d", "image": "a/b:1", "transport": "carrier-pigeon"}),
                "unknown transport",
            ),
            (
                json!({"description": "d", "image": "a/b:1", "tier": "gold"}),
                "unknown tier",
            ),
            (
                json!({"description": "d", "image": "a/b:1", "status": "zombie"}),
                "unknown status",
            ),
            (
                json!({"description": "d", "image": "a/b:1", "metadata": {"stars": -3}}),
                "metadata.stars",
            ),
            (
                json!({"description": "d", "image": "a/b:1", "metadata": {"stars": "many"}}),
                "metadata.stars",
            ),
            (
                json!({"description": "d", "image": "a/b:1", "metadata": {"last_updated": "yesterday"}}),
                "RFC 3339",
            ),
            (
                json!({"description": "d", "image": "a/b:1", "target_port": 70000}),
                "target_port",
            ),
            (
                json!({"description": "d", "image": "a/b:1", "env_vars": [{"name": "1BAD", "required": true}]}),
                "environment variable",
            ),
            (
                json!({"description": "d", "image": "a/b:1", "repository_url": "not a url"}),
                "repository URL",
            ),
            (
                json!({"description": "d", "image": "a/b:1", "tools": "fetch"}),
                "tools",
            ),
            (json!("just a string"), "malformed entry"),
        ];
        for (v, want) in cases {
            let reason = skipped(legacy_entry("x", v.clone(), false));
            assert!(reason.contains(want), "{v}: {reason}");
        }
        assert!(
            skipped(legacy_entry(
                "",
                json!({"description": "d", "image": "a/b:1"}),
                false
            ))
            .contains("no name")
        );
    }

    #[test]
    fn upstream_entry_with_toolhive_extension() {
        let v = json!({
            "name": "io.github.stacklok/fetch",
            "description": "Fetch", "version": "1.0.1",
            "repository": {"url": "https://github.com/stackloklabs/gofetch", "source": "github"},
            "packages": [{"registryType": "oci", "identifier": "ghcr.io/stackloklabs/gofetch/server:1.0.1",
                          "transport": {"type": "streamable-http", "url": "http://localhost:8080"},
                          "environmentVariables": [{"name": "K", "description": "key", "isRequired": true, "isSecret": true}]}],
            "_meta": {"io.modelcontextprotocol.registry/publisher-provided": {"io.github.stacklok": {
                "ghcr.io/stackloklabs/gofetch/server:1.0.1": {
                    "status": "Deprecated", "tier": "Official", "tools": ["fetch"], "tags": ["web"],
                    "metadata": {"stars": 17.0, "pulls": 5, "last_updated": "2025-11-15T02:31:08Z"},
                    "permissions": {"network": {"outbound": {"allow_host": ["example.com"]}}},
                    "args": ["--x"]
                }}}}
        });
        let s = server(server_json_entry(v, None));
        assert_eq!(s.original_name, "io.github.stacklok/fetch");
        assert_eq!(s.name_hint, "fetch");
        assert_eq!(s.version.as_deref(), Some("1.0.1"));
        assert_eq!(
            s.image.as_deref(),
            Some("ghcr.io/stackloklabs/gofetch/server:1.0.1")
        );
        assert_eq!(s.transport, Transport::Http);
        assert_eq!(s.tier, ServerTier::Official);
        assert_eq!(s.status, ServerStatus::Deprecated);
        assert_eq!(s.capabilities, vec!["fetch"]);
        assert_eq!(s.category, vec!["web"]);
        assert_eq!((s.stars, s.pull_count), (17, 5));
        assert_eq!(
            s.repository_url.as_deref(),
            Some("https://github.com/stackloklabs/gofetch")
        );
        let r = &s.deployment_requirements;
        assert_eq!(r["targetPort"], json!(8080));
        assert_eq!(r["args"], json!(["--x"]));
        assert_eq!(r["envVars"][0]["secret"], json!(true));
        assert_eq!(r["package"]["registryType"], json!("oci"));
        assert_eq!(
            s.network_permissions["outbound"]["allowHost"],
            json!(["example.com"])
        );
    }

    #[test]
    fn mcp_registry_packages_become_images_or_protocol_schemes() {
        let npm = json!({"name": "io.github.21st-dev/magic-mcp", "description": "d", "version": "0.0.1-seed",
            "packages": [{"registryType": "npm", "identifier": "@21st-dev/magic", "version": "0.0.46",
                          "transport": {"type": "stdio"}}]});
        let s = server(server_json_entry(npm, None));
        assert_eq!(s.image.as_deref(), Some("npx://@21st-dev/magic@0.0.46"));
        assert_eq!(
            s.deployment_requirements["package"]["buildRequired"],
            json!(true)
        );
        assert_eq!(s.transport, Transport::Stdio);
        assert_eq!(s.tier, ServerTier::Community);

        let pypi = json!({"name": "a.b/c", "description": "d", "version": "1",
            "packages": [{"registryType": "pypi", "identifier": "mcp-server-x", "version": "2025.1.0"}]});
        assert_eq!(
            server(server_json_entry(pypi, None)).image.as_deref(),
            Some("uvx://mcp-server-x@2025.1.0")
        );

        let oci = json!({"name": "io.github.apache/iotdb", "description": "Apache IoTDB", "version": "0.0.1-seed",
            "packages": [{"registryType": "oci", "identifier": "apache/iotdb", "version": "2.0.5",
                          "registryBaseUrl": "https://docker.io", "transport": {"type": "stdio"}}]});
        assert_eq!(
            server(server_json_entry(oci, None)).image.as_deref(),
            Some("apache/iotdb:2.0.5")
        );

        let ghcr = json!({"name": "a.b/c", "description": "d", "version": "1.0.0",
            "packages": [{"registryType": "oci", "identifier": "org/img", "version": "1.0.0",
                          "registryBaseUrl": "https://ghcr.io"}]});
        assert_eq!(
            server(server_json_entry(ghcr, None)).image.as_deref(),
            Some("ghcr.io/org/img:1.0.0")
        );

        let bad_oci = json!({"name": "io.github.edubase/mcp", "description": "d", "version": "0.0.1-seed",
            "packages": [{"registryType": "oci", "identifier": "@edubase/mcp", "version": "1.0.10",
                          "registryBaseUrl": "https://docker.io"}]});
        assert!(
            skipped(server_json_entry(bad_oci, None))
                .contains("not a valid container image reference")
        );

        let mcpb = json!({"name": "a.b/c", "description": "d", "version": "1.0.0",
            "packages": [{"registryType": "mcpb", "identifier": "https://x/y.mcpb"}]});
        assert!(skipped(server_json_entry(mcpb, None)).contains("mcpb"));
    }

    #[test]
    fn remotes_and_official_status() {
        let remote = json!({"name": "com.example/r", "description": "d", "version": "2.0.0",
            "remotes": [{"type": "sse", "url": "https://r.example/sse"},
                        {"type": "streamable-http", "url": "https://r.example/mcp",
                         "headers": [{"name": "X-Key", "isRequired": true, "isSecret": true}]}]});
        let meta = OfficialMeta {
            status: Some("deprecated".into()),
            updated_at: Some("2025-10-01T00:00:00Z".parse().unwrap()),
            is_latest: Some(false),
            ..Default::default()
        };
        match server_json_entry(remote.clone(), Some(&meta)) {
            Entry::Server { server, latest } => {
                assert!(!latest);
                assert_eq!(server.url.as_deref(), Some("https://r.example/mcp"));
                assert_eq!(server.transport, Transport::Http);
                assert_eq!(server.status, ServerStatus::Deprecated);
                assert_eq!(server.last_updated, meta.updated_at);
                assert_eq!(
                    server.deployment_requirements["headers"][0]["name"],
                    json!("X-Key")
                );
            }
            other => panic!("{other:?}"),
        }
        let deleted = OfficialMeta {
            status: Some("deleted".into()),
            ..Default::default()
        };
        assert_eq!(
            server_json_entry(remote, Some(&deleted)),
            Entry::Deleted {
                original_name: "com.example/r".into()
            }
        );
        for (v, want) in [
            (
                json!({"name": "noslash", "description": "d", "version": "1"}),
                "reverse-DNS",
            ),
            (json!({"name": "a.b/c", "description": "d"}), "no version"),
            (
                json!({"name": "a.b/c", "description": "d", "version": "^1.0"}),
                "neither",
            ),
            (
                json!({"name": "a.b/c", "description": "d", "version": "1"}),
                "neither a package nor a remote",
            ),
            (
                json!({"name": "a.b/c", "description": "d", "version": "1", "remotes": [{"type": "sse", "url": "ftp://x"}]}),
                "remote URL",
            ),
        ] {
            let r = skipped(server_json_entry(v.clone(), None));
            assert!(r.contains(want), "{v}: {r}");
        }
    }

    #[test]
    fn content_hash_is_the_one_earlier_versions_stored() {
        // Stored hashes stay valid across the upgrade: the formula of earlier versions.
        let mut s = server(legacy_entry(
            "x",
            json!({"description": "d \\ \"q\" é", "image": "a/b:1", "tags": ["t", "u"],
                   "tools": ["a_b"], "metadata": {"stars": 3, "pulls": 4, "last_updated": "2026-02-18T00:05:37Z"},
                   "permissions": {"network": {"outbound": {"allow_port": [443]}}}}),
            false,
        ));
        s.version = Some("1.2.3".into());
        let earlier = json!([
            s.original_name,
            s.description,
            s.version,
            s.image,
            s.url,
            s.transport.as_db_str(),
            s.tier.as_db_str(),
            s.status.as_db_str(),
            s.category,
            s.capabilities,
            s.repository_url,
            s.network_permissions,
            s.pull_count,
            s.stars,
            s.last_updated.map(|t| t.to_rfc3339()),
            s.deployment_requirements,
        ]);
        let earlier = hex::encode(&Sha256::digest(earlier.to_string().as_bytes())[..16]);
        assert!(s.last_updated.is_some() && !s.category.is_empty());
        assert_eq!(s.content_hash(), earlier);
    }

    #[test]
    fn content_hash_changes_with_content() {
        let v = json!({"description": "d", "image": "a/b:1"});
        let a = server(legacy_entry("x", v.clone(), false));
        let mut b = a.clone();
        assert_eq!(a.content_hash(), b.content_hash());
        b.stars += 1;
        assert_ne!(a.content_hash(), b.content_hash());
    }
}
