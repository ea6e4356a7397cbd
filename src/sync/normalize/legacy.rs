//! The legacy ToolHive `registry.json`: one entry of its `servers` or `remote_servers` object.

use super::*;

/// Reads one entry of a legacy `registry.json`: `remote` for `remote_servers`, else a container
/// server from `servers`.
pub fn legacy_entry(key: &str, value: Value, remote: bool) -> Entry {
    match legacy_inner(key, value, remote) {
        Ok(s) => Entry::Server {
            server: Box::new(s),
            latest: true,
        },
        Err(reason) => Entry::skip(key, reason),
    }
}

fn legacy_inner(key: &str, value: Value, remote: bool) -> Result<NewServer, String> {
    check_original_name(key)?;
    let name_hint =
        dns_label(key).ok_or_else(|| format!("no DNS label can be made from the name {key:?}"))?;
    let e: LegacyEntry = decode(&value)?;
    let toolhive: ToolhiveFields = decode(&value)?;
    let c = common(&toolhive)?;
    let mut req = c.requirements;
    let (image, url, version, transport) = if remote {
        if e.image.is_some() {
            return Err("a remote server must not have an image".into());
        }
        let url = check_remote_url(e.url.as_deref().ok_or("a remote server needs a url")?)?;
        let transport = map_transport(e.transport.as_deref(), Transport::Sse)?;
        if transport == Transport::Stdio {
            return Err("a remote server cannot use the stdio transport".into());
        }
        (None, Some(url), None, transport)
    } else {
        let raw = e
            .image
            .as_deref()
            .ok_or("a container server needs an image")?;
        let image = check_image(raw)?;
        let transport = map_transport(e.transport.as_deref(), Transport::Stdio)?;
        let version = match &image.tag {
            Some(t) => Some(check_version(t)?),
            None => None,
        };
        (Some(image.reference), None, version, transport)
    };
    if remote {
        req.remove("args");
    }
    Ok(NewServer {
        original_name: key.to_string(),
        name_hint,
        description: description(Some(&e.description)),
        version,
        image,
        url,
        transport,
        tier: c.tier,
        status: c.status,
        category: c.category,
        capabilities: c.capabilities,
        repository_url: check_repository_url(e.repository_url.as_deref())?,
        network_permissions: c.network_permissions,
        pull_count: c.pulls,
        stars: c.stars,
        last_updated: c.last_updated,
        deployment_requirements: Value::Object(req),
    })
}
