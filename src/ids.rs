//! Global object identifiers: `base64url("<Type>:<uuid>")`, opaque to clients.
//!
//! Every `ID` the API returns is global, so `node(id)` can resolve any of them. Arguments that
//! expect one type also accept the bare UUID, which keeps scripts and logs easy to use.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use crate::error::AppError;

/// The entity types that have global ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Registry,
    Server,
    Instance,
    Deployment,
    Cluster,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Registry => "Registry",
            Kind::Server => "Server",
            Kind::Instance => "Instance",
            Kind::Deployment => "Deployment",
            Kind::Cluster => "Cluster",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "Registry" => Kind::Registry,
            "Server" => Kind::Server,
            "Instance" => Kind::Instance,
            "Deployment" => Kind::Deployment,
            "Cluster" => Kind::Cluster,
            _ => return None,
        })
    }
}

/// Encodes a global id.
pub fn encode(kind: Kind, id: Uuid) -> async_graphql::ID {
    async_graphql::ID(URL_SAFE_NO_PAD.encode(format!("{}:{}", kind.as_str(), id)))
}

/// Decodes any global id.
pub fn decode_any(raw: &str) -> Option<(Kind, Uuid)> {
    let bytes = URL_SAFE_NO_PAD.decode(raw.trim_end_matches('=')).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (kind, id) = text.split_once(':')?;
    Some((Kind::parse(kind)?, Uuid::parse_str(id).ok()?))
}

/// "a Server", "an Instance".
fn with_article(noun: &str) -> String {
    let vowel = noun
        .chars()
        .next()
        .is_some_and(|c| "AEIOUaeiou".contains(c));
    format!("{} {noun}", if vowel { "an" } else { "a" })
}

/// Decodes an id argument that must name an object of `kind`; `field` names the argument for
/// the `BAD_USER_INPUT` error.
pub fn decode(kind: Kind, raw: &str, field: &str) -> Result<Uuid, AppError> {
    if let Ok(uuid) = Uuid::parse_str(raw) {
        return Ok(uuid);
    }
    match decode_any(raw) {
        Some((k, id)) if k == kind => Ok(id),
        Some((k, _)) => Err(AppError::bad_input(
            field,
            format!(
                "expected the id of {}, got the id of {}",
                with_article(kind.as_str()),
                with_article(k.as_str())
            ),
        )),
        None => Err(AppError::bad_input(field, "malformed id")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_type_check() {
        let id = Uuid::new_v4();
        let global = encode(Kind::Server, id);
        assert_eq!(decode_any(&global), Some((Kind::Server, id)));
        assert_eq!(decode(Kind::Server, &global, "id").unwrap(), id);
        assert_eq!(decode(Kind::Server, &id.to_string(), "id").unwrap(), id);
        let err = decode(Kind::Registry, &global, "registryId").unwrap_err();
        assert_eq!(err.code().as_str(), "BAD_USER_INPUT");
        assert!(decode(Kind::Registry, "not-an-id", "id").is_err());
    }
}
