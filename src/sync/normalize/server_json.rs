//! MCP `server.json` entries: the ToolHive upstream format, the MCP Registry API and the ToolHive
//! Registry Server API.

use super::*;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServerJson {
    name: String,
    description: Option<String>,
    version: Option<String>,
    repository: Option<Repository>,
    website_url: Option<String>,
    packages: Option<Vec<Package>>,
    remotes: Option<Vec<Remote>>,
    #[serde(rename = "_meta")]
    meta: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
struct Repository {
    url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Package {
    registry_type: String,
    identifier: String,
    version: Option<String>,
    registry_base_url: Option<String>,
    runtime_hint: Option<String>,
    transport: Option<PackageTransport>,
    runtime_arguments: Option<Vec<Value>>,
    package_arguments: Option<Vec<Value>>,
    environment_variables: Option<Vec<KeyValueInput>>,
}

#[derive(Debug, Deserialize)]
struct PackageTransport {
    #[serde(rename = "type")]
    kind: String,
    url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Remote {
    #[serde(rename = "type")]
    kind: String,
    url: String,
    headers: Option<Vec<KeyValueInput>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyValueInput {
    name: String,
    description: Option<String>,
    is_required: Option<bool>,
    is_secret: Option<bool>,
    default: Option<String>,
    choices: Option<Vec<String>>,
}

impl KeyValueInput {
    fn env(&self) -> EnvVar {
        EnvVar {
            name: self.name.clone(),
            description: self.description.clone(),
            required: self.is_required,
            secret: self.is_secret,
            default: self.default.clone(),
        }
    }
    fn header(&self) -> Header {
        Header {
            name: self.name.clone(),
            description: self.description.clone(),
            required: self.is_required,
            secret: self.is_secret,
            default: self.default.clone(),
            choices: self.choices.clone(),
        }
    }
}

/// The official registry's metadata of one API entry (`_meta["io.modelcontextprotocol.registry/official"]`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OfficialMeta {
    pub status: Option<String>,
    pub published_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub is_latest: Option<bool>,
}

impl OfficialMeta {
    /// Reads the official metadata from a `_meta` object, if present and well-formed.
    pub fn from_meta(meta: Option<&Value>) -> Option<OfficialMeta> {
        let raw = meta?.get(OFFICIAL_META)?;
        serde_json::from_value(raw.clone()).ok()
    }

    /// Whether the entry is deleted upstream.
    pub fn is_deleted(&self) -> bool {
        self.status
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("deleted"))
    }
}

/// Which runnable form of a server.json entry is stored.
enum Runnable<'a> {
    Package(&'a Package),
    Remote(&'a Remote),
}

fn choose_runnable(s: &ServerJson) -> Option<Runnable<'_>> {
    let rank = |p: &Package| match p.registry_type.to_ascii_lowercase().as_str() {
        "oci" | "docker" => 0,
        "npm" => 1,
        "pypi" => 2,
        "nuget" => 3,
        _ => 9,
    };
    let pkgs = s.packages.as_deref().unwrap_or_default();
    if let Some(p) = pkgs.iter().min_by_key(|p| rank(p)) {
        return Some(Runnable::Package(p));
    }
    let remotes = s.remotes.as_deref().unwrap_or_default();
    remotes
        .iter()
        .find(|r| r.kind.eq_ignore_ascii_case("streamable-http"))
        .or_else(|| remotes.first())
        .map(Runnable::Remote)
}

/// The ToolHive extension block of an entry: keyed by image reference or remote URL, with a lone
/// block accepted whatever its key.
fn toolhive_extension<'a>(
    meta: Option<&'a Map<String, Value>>,
    keys: &[&str],
) -> Option<&'a Value> {
    let blocks = meta?
        .get(PUBLISHER_PROVIDED)?
        .get(TOOLHIVE_PUBLISHER)?
        .as_object()?;
    for k in keys {
        if let Some(v) = blocks.get(*k) {
            return Some(v);
        }
    }
    if blocks.len() == 1 {
        blocks.values().next()
    } else {
        None
    }
}

/// The image reference of an OCI package: `identifier`, plus `:version` when the identifier names
/// no tag or digest, plus the registry host of `registryBaseUrl` when the identifier names none.
fn oci_reference(p: &Package) -> Result<ImageRef, String> {
    let ident = p.identifier.trim();
    let first = ident.split('/').next().unwrap_or("");
    let has_domain =
        ident.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut reference = ident.to_string();
    if !has_domain
        && let Some(host) = p
            .registry_base_url
            .as_deref()
            .and_then(http_url)
            .and_then(|u| u.host_str().map(str::to_string))
        && !matches!(
            host.as_str(),
            "docker.io" | "index.docker.io" | "registry-1.docker.io"
        )
    {
        reference = format!("{host}/{ident}");
    }
    let last = reference.rsplit('/').next().unwrap_or("");
    if !last.contains(':')
        && !reference.contains('@')
        && let Some(v) = p
            .version
            .as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
    {
        reference = format!("{reference}:{v}");
    }
    check_image(&reference)
}

fn package_image(p: &Package) -> Result<(String, Map<String, Value>), String> {
    let kind = p.registry_type.to_ascii_lowercase();
    let mut pkg = Map::new();
    pkg.insert("registryType".into(), json!(kind));
    pkg.insert("identifier".into(), json!(p.identifier));
    if let Some(v) = &p.version {
        pkg.insert("version".into(), json!(v));
    }
    if let Some(h) = &p.runtime_hint {
        pkg.insert("runtimeHint".into(), json!(h));
    }
    let image = match kind.as_str() {
        "oci" | "docker" => {
            pkg.insert("buildRequired".into(), json!(false));
            oci_reference(p)?.reference
        }
        "npm" | "pypi" | "nuget" => {
            let (scheme, label) = match kind.as_str() {
                "npm" => ("npx", "npm"),
                "pypi" => ("uvx", "PyPI"),
                _ => ("dnx", "NuGet"),
            };
            check_package_name(p.identifier.trim(), label)?;
            let version = match p
                .version
                .as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
            {
                Some(v) => Some(check_version(v).map_err(|e| format!("package {e}"))?),
                None => None,
            };
            pkg.insert("scheme".into(), json!(scheme));
            pkg.insert("buildRequired".into(), json!(true));
            match version {
                Some(v) => format!("{scheme}://{}@{v}", p.identifier.trim()),
                None => format!("{scheme}://{}", p.identifier.trim()),
            }
        }
        other => {
            return Err(format!(
                "package type {other:?} cannot run as a container (expected oci, npm, pypi or nuget)"
            ));
        }
    };
    Ok((image, pkg))
}

fn port_of(url: Option<&str>) -> Option<u16> {
    url.and_then(|u| url::Url::parse(u).ok())
        .and_then(|u| u.port_or_known_default())
}

/// Reads one MCP `server.json` entry. `official` is the API's metadata for the entry, when it
/// came from a registry API.
pub fn server_json_entry(value: Value, official: Option<&OfficialMeta>) -> Entry {
    let name = value
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let label = if name.is_empty() {
        "(unnamed entry)".to_string()
    } else {
        name.clone()
    };
    if official.is_some_and(OfficialMeta::is_deleted) && !name.is_empty() {
        return Entry::Deleted {
            original_name: name,
        };
    }
    let latest = official.and_then(|o| o.is_latest).unwrap_or(true);
    match server_json_inner(value, official) {
        Ok(s) => Entry::Server {
            server: Box::new(s),
            latest,
        },
        Err(reason) => Entry::skip(&label, reason),
    }
}

fn check_server_json_name(name: &str) -> Result<(), String> {
    check_original_name(name)?;
    let Some((ns, n)) = name.split_once('/') else {
        return Err(format!(
            "name {name:?} is not in reverse-DNS form (namespace/name)"
        ));
    };
    let ns_ok = !ns.is_empty()
        && ns
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    let n_ok = !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ns_ok && n_ok {
        Ok(())
    } else {
        Err(format!(
            "name {name:?} is not in reverse-DNS form (namespace/name)"
        ))
    }
}

fn server_json_inner(value: Value, official: Option<&OfficialMeta>) -> Result<NewServer, String> {
    let s: ServerJson = decode(&value)?;
    check_server_json_name(&s.name)?;
    let name_hint = dns_label(&s.name)
        .ok_or_else(|| format!("no DNS label can be made from the name {:?}", s.name))?;
    let version = check_version(s.version.as_deref().ok_or("the entry has no version")?)?;
    let runnable =
        choose_runnable(&s).ok_or("the entry has neither a package nor a remote to run")?;

    let mut req_extra = Map::new();
    let Parts {
        image,
        url,
        transport,
        ext_keys,
        target_port,
    } = match runnable {
        Runnable::Package(p) => package_parts(&s, p, &mut req_extra)?,
        Runnable::Remote(r) => remote_parts(r, &mut req_extra)?,
    };

    let keys: Vec<&str> = ext_keys.iter().map(String::as_str).collect();
    let ext: ToolhiveFields = match toolhive_extension(s.meta.as_ref(), &keys) {
        Some(v) => decode(v).map_err(|e| format!("ToolHive extension: {e}"))?,
        None => ToolhiveFields::default(),
    };
    let mut c = common(&ext)?;
    // The official registry's status applies when the publisher gave none.
    if ext.status.is_none()
        && official
            .and_then(|o| o.status.as_deref())
            .is_some_and(|s| s.eq_ignore_ascii_case("deprecated"))
    {
        c.status = ServerStatus::Deprecated;
    }
    let last_updated = c.last_updated.or(official.and_then(|o| o.updated_at));
    let mut req = c.requirements;
    // Package-level settings win over the extension's (an empty list from the extension does not
    // hide the package's variables).
    for (k, v) in req_extra {
        req.insert(k, v);
    }
    if let Some(p) = target_port {
        req.entry("targetPort").or_insert(json!(p));
    }
    if url.is_some() {
        req.remove("args");
    }
    if let Some(w) = s
        .website_url
        .as_deref()
        .and_then(|w| http_url(w).map(|_| w.to_string()))
    {
        req.insert("websiteUrl".into(), json!(w));
    }
    Ok(NewServer {
        original_name: s.name.clone(),
        name_hint,
        description: description(s.description.as_deref()),
        version: Some(version),
        image,
        url,
        transport,
        tier: c.tier,
        status: c.status,
        category: c.category,
        capabilities: c.capabilities,
        repository_url: check_repository_url(s.repository.as_ref().and_then(|r| r.url.as_deref()))?,
        network_permissions: c.network_permissions,
        pull_count: c.pulls,
        stars: c.stars,
        last_updated,
        deployment_requirements: Value::Object(req),
    })
}

/// What an entry runs: its image or URL, transport, the keys its ToolHive extension may be
/// filed under, and the port it listens on.
struct Parts {
    image: Option<String>,
    url: Option<String>,
    transport: Transport,
    ext_keys: Vec<String>,
    target_port: Option<u16>,
}

/// The parts of an entry that runs a package; its deployment requirements go into `req`.
fn package_parts(
    s: &ServerJson,
    p: &Package,
    req: &mut Map<String, Value>,
) -> Result<Parts, String> {
    let (image, pkg) = package_image(p)?;
    let t = p.transport.as_ref();
    let transport = map_transport(t.map(|t| t.kind.as_str()), Transport::Stdio)?;
    let target_port = if transport == Transport::Stdio {
        None
    } else {
        port_of(t.and_then(|t| t.url.as_deref()))
    };
    req.insert("package".into(), Value::Object(pkg));
    let env: Vec<EnvVar> = p
        .environment_variables
        .iter()
        .flatten()
        .map(KeyValueInput::env)
        .collect();
    req.insert("envVars".into(), Value::Array(env_vars(&env)?));
    if let Some(a) = &p.package_arguments {
        req.insert("packageArguments".into(), json!(a));
    }
    if let Some(a) = &p.runtime_arguments {
        req.insert("runtimeArguments".into(), json!(a));
    }
    let remotes: Vec<Value> = s
        .remotes
        .iter()
        .flatten()
        .filter(|r| http_url(&r.url).is_some())
        .map(|r| json!({ "type": r.kind, "url": r.url }))
        .collect();
    if !remotes.is_empty() {
        req.insert("remotes".into(), Value::Array(remotes));
    }
    Ok(Parts {
        image: Some(image.clone()),
        url: None,
        transport,
        ext_keys: vec![image, p.identifier.clone()],
        target_port,
    })
}

/// The parts of an entry that is a remote endpoint; its headers go into `req`.
fn remote_parts(r: &Remote, req: &mut Map<String, Value>) -> Result<Parts, String> {
    let url = check_remote_url(&r.url)?;
    let transport = map_transport(Some(&r.kind), Transport::Http)?;
    if transport == Transport::Stdio {
        return Err("a remote cannot use the stdio transport".into());
    }
    let hs: Vec<Header> = r
        .headers
        .iter()
        .flatten()
        .map(KeyValueInput::header)
        .collect();
    req.insert("headers".into(), Value::Array(headers(&hs)?));
    Ok(Parts {
        image: None,
        url: Some(url.clone()),
        transport,
        ext_keys: vec![url],
        target_port: None,
    })
}
