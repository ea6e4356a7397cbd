//! Registry management: validation of user input, and the writes that create, change and
//! delete registries. Sync lives in its own module.

pub mod store;

use dataloaders::enums::{RegistryAuthKind, RegistryFormat};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::error::{AppError, AppResult};

/// Largest accepted `metadata` document, serialised.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;
/// Longest accepted description.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;
/// Longest accepted URL.
pub const MAX_URL_CHARS: usize = 2048;
/// Bounds of the periodic sync interval, in seconds.
pub const SYNC_INTERVAL_BOUNDS: (i32, i32) = (60, 7 * 24 * 3600);

/// Credentials for a private registry, held only in memory in clear.
pub enum RegistryAuth {
    /// `Authorization: Bearer <token>`.
    Bearer(SecretString),
    /// HTTP basic authentication.
    Basic {
        username: String,
        password: SecretString,
    },
    /// A custom header.
    Header { name: String, value: SecretString },
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RegistryAuth::Bearer(_) => "Bearer(<redacted>)",
            RegistryAuth::Basic { .. } => "Basic(<redacted>)",
            RegistryAuth::Header { .. } => "Header(<redacted>)",
        })
    }
}

/// The serialised form that is sealed into `registries.auth_config`.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum StoredAuth {
    Bearer { token: String },
    Basic { username: String, password: String },
    Header { name: String, value: String },
}

impl RegistryAuth {
    /// The kind stored next to the sealed value.
    pub fn kind(&self) -> RegistryAuthKind {
        match self {
            RegistryAuth::Bearer(_) => RegistryAuthKind::Bearer,
            RegistryAuth::Basic { .. } => RegistryAuthKind::Basic,
            RegistryAuth::Header { .. } => RegistryAuthKind::Header,
        }
    }

    /// Serialises for sealing. The returned buffer holds the secret: seal it at once.
    pub fn to_plaintext(&self) -> secrecy::SecretBox<Vec<u8>> {
        let stored = match self {
            RegistryAuth::Bearer(t) => StoredAuth::Bearer {
                token: t.expose_secret().to_string(),
            },
            RegistryAuth::Basic { username, password } => StoredAuth::Basic {
                username: username.clone(),
                password: password.expose_secret().to_string(),
            },
            RegistryAuth::Header { name, value } => StoredAuth::Header {
                name: name.clone(),
                value: value.expose_secret().to_string(),
            },
        };
        secrecy::SecretBox::new(Box::new(serde_json::to_vec(&stored).expect("serialisable")))
    }

    /// Parses an opened sealed value.
    pub fn from_plaintext(bytes: &[u8]) -> Option<Self> {
        Some(match serde_json::from_slice::<StoredAuth>(bytes).ok()? {
            StoredAuth::Bearer { token } => RegistryAuth::Bearer(token.into()),
            StoredAuth::Basic { username, password } => RegistryAuth::Basic {
                username,
                password: password.into(),
            },
            StoredAuth::Header { name, value } => RegistryAuth::Header {
                name,
                value: value.into(),
            },
        })
    }
}

/// Raw authentication input, as a client sends it.
#[derive(Default)]
pub struct AuthInput {
    pub bearer_token: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub header_name: Option<String>,
    pub header_value: Option<String>,
}

/// Headers a custom auth header may not replace.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "accept-encoding",
    "cookie",
];

/// Checks that exactly one authentication method is given, completely.
pub fn validate_auth(input: AuthInput) -> AppResult<RegistryAuth> {
    let field = "authConfig";
    let nonempty = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
    let bearer = nonempty(&input.bearer_token);
    let basic = input.username.is_some() || input.password.is_some();
    let header = input.header_name.is_some() || input.header_value.is_some();
    let methods = [bearer, basic, header].iter().filter(|m| **m).count();
    if methods != 1 {
        return Err(AppError::bad_input(
            field,
            "give exactly one authentication method: bearerToken, username and password, or headerName and headerValue",
        ));
    }
    let no_control = |s: &str| !s.chars().any(|c| c.is_control());
    if bearer {
        let token = input.bearer_token.unwrap_or_default();
        if !no_control(&token) || token.len() > 8192 {
            return Err(AppError::bad_input(
                "authConfig.bearerToken",
                "the token contains control characters or is too long",
            ));
        }
        return Ok(RegistryAuth::Bearer(token.into()));
    }
    if basic {
        let (Some(username), Some(password)) = (input.username, input.password) else {
            return Err(AppError::bad_input(
                field,
                "basic authentication needs both username and password",
            ));
        };
        if username.is_empty() || username.contains(':') || !no_control(&username) {
            return Err(AppError::bad_input(
                "authConfig.username",
                "the username must be non-empty and contain no ':' or control characters",
            ));
        }
        if !no_control(&password) {
            return Err(AppError::bad_input(
                "authConfig.password",
                "the password contains control characters",
            ));
        }
        return Ok(RegistryAuth::Basic {
            username,
            password: password.into(),
        });
    }
    let (Some(name), Some(value)) = (input.header_name, input.header_value) else {
        return Err(AppError::bad_input(
            field,
            "a custom header needs both headerName and headerValue",
        ));
    };
    let token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty()
        || !name.chars().all(token_char)
        || RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str())
    {
        return Err(AppError::bad_input(
            "authConfig.headerName",
            "not a valid or allowed HTTP header name",
        ));
    }
    if value.is_empty() || !no_control(&value) {
        return Err(AppError::bad_input(
            "authConfig.headerValue",
            "the header value must be non-empty with no control characters",
        ));
    }
    Ok(RegistryAuth::Header {
        name,
        value: value.into(),
    })
}

/// Checks a registry name: 1 to 64 letters, digits and hyphens.
pub fn validate_name(name: &str) -> AppResult<()> {
    let ok = (1..=64).contains(&name.chars().count())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(AppError::bad_input(
            "name",
            "the name must be 1 to 64 characters: letters, digits and hyphens",
        ))
    }
}

/// Checks a registry URL: http or https with a host the egress rules allow (see
/// [`crate::sync::egress`]), or file:// when the policy allows local files. URLs may not embed
/// credentials (use `authConfig`).
pub fn validate_url(raw: &str, policy: &crate::config::RegistryPolicy) -> AppResult<String> {
    let allow_file = policy.allow_file_urls;
    let field = "url";
    if raw.chars().count() > MAX_URL_CHARS {
        return Err(AppError::bad_input(
            field,
            format!("the URL is longer than {MAX_URL_CHARS} characters"),
        ));
    }
    let url = url::Url::parse(raw.trim())
        .map_err(|e| AppError::bad_input(field, format!("not a valid URL: {e}")))?;
    match url.scheme() {
        "http" | "https" => {
            if url.host_str().is_none_or(str::is_empty) {
                return Err(AppError::bad_input(field, "the URL needs a host"));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(AppError::bad_input(
                    field,
                    "the URL must not contain credentials; put them in authConfig",
                ));
            }
            if let Some(name) = credential_parameter(&url) {
                return Err(AppError::bad_input(
                    field,
                    format!(
                        "the URL carries a credential in its query string ({name}); put it in authConfig"
                    ),
                ));
            }
            crate::sync::egress::Egress::new(policy)
                .check_url(&url)
                .map_err(|m| AppError::bad_input(field, m))?;
        }
        "file" if allow_file => {
            if url.path().is_empty() || url.path() == "/" {
                return Err(AppError::bad_input(field, "a file URL must name a file"));
            }
        }
        "file" => {
            return Err(AppError::bad_input(
                field,
                "file:// registries are disabled on this gateway (set HIVEGRAPH_ALLOW_FILE_REGISTRIES=true to allow them)",
            ));
        }
        other => {
            return Err(AppError::bad_input(
                field,
                format!("unsupported scheme {other:?}: use http or https"),
            ));
        }
    }
    Ok(url.to_string())
}

/// Checks an optional description.
pub fn validate_description(d: Option<String>) -> AppResult<Option<String>> {
    match d {
        Some(d) if d.chars().count() > MAX_DESCRIPTION_CHARS => Err(AppError::bad_input(
            "description",
            format!("the description is longer than {MAX_DESCRIPTION_CHARS} characters"),
        )),
        Some(d) if d.trim().is_empty() => Ok(None),
        other => Ok(other),
    }
}

/// Checks a sync interval.
pub fn validate_interval(seconds: i32) -> AppResult<i32> {
    let (lo, hi) = SYNC_INTERVAL_BOUNDS;
    if (lo..=hi).contains(&seconds) {
        Ok(seconds)
    } else {
        Err(AppError::bad_input(
            "syncIntervalSeconds",
            format!("the sync interval must be between {lo} and {hi} seconds"),
        ))
    }
}

/// Checks metadata: a JSON object of bounded size.
pub fn validate_metadata(v: Value) -> AppResult<Value> {
    if !v.is_object() {
        return Err(AppError::bad_input(
            "metadata",
            "metadata must be a JSON object",
        ));
    }
    if serde_json::to_vec(&v)
        .map(|b| b.len())
        .unwrap_or(usize::MAX)
        > MAX_METADATA_BYTES
    {
        return Err(AppError::bad_input(
            "metadata",
            "metadata is larger than 64 KiB",
        ));
    }
    Ok(v)
}

/// A validated new registry.
#[derive(Debug)]
pub struct NewRegistry {
    pub name: String,
    pub url: String,
    pub description: Option<String>,
    pub format: RegistryFormat,
    pub sync_interval_seconds: i32,
    pub metadata: Value,
    pub auth: Option<RegistryAuth>,
}

/// A validated change to a registry; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct RegistryChanges {
    pub name: Option<String>,
    pub url: Option<String>,
    pub description: Option<Option<String>>,
    pub format: Option<RegistryFormat>,
    pub sync_interval_seconds: Option<i32>,
    pub metadata: Option<Value>,
    /// `Some(None)` removes stored credentials.
    pub auth: Option<Option<RegistryAuth>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("toolhive-main").is_ok());
        assert!(validate_name(&"a".repeat(64)).is_ok());
        for bad in [
            "",
            "has space",
            "dots.not.ok",
            "under_score",
            &"a".repeat(65),
            "ünïcode",
        ] {
            let e = validate_name(bad).unwrap_err();
            assert_eq!(e.code().as_str(), "BAD_USER_INPUT", "{bad}");
        }
    }

    fn policy(allow_file: bool, allow_private: bool) -> crate::config::RegistryPolicy {
        crate::config::RegistryPolicy {
            allow_file_urls: allow_file,
            allow_private_networks: allow_private,
            allowed_hosts: Vec::new(),
        }
    }

    #[test]
    fn urls() {
        let strict = policy(false, false);
        assert!(validate_url("https://example.com/registry.json", &strict).is_ok());
        assert!(validate_url("http://127.0.0.1:8080/x", &policy(false, true)).is_ok());
        assert!(validate_url("file:///tmp/registry.json", &policy(true, false)).is_ok());
        for bad in [
            "ftp://example.com/x",
            "file:///tmp/x.json",
            "not a url",
            "https://user:pw@example.com/",
            "javascript:alert(1)",
            "http://127.0.0.1:8080/x",
            "http://169.254.169.254/latest/meta-data/",
        ] {
            let e = validate_url(bad, &strict).unwrap_err();
            assert_eq!(e.code().as_str(), "BAD_USER_INPUT", "{bad}");
        }
    }

    #[test]
    fn auth_needs_exactly_one_complete_method() {
        let bearer = AuthInput {
            bearer_token: Some("t".into()),
            ..Default::default()
        };
        assert!(matches!(validate_auth(bearer), Ok(RegistryAuth::Bearer(_))));
        let two = AuthInput {
            bearer_token: Some("t".into()),
            username: Some("u".into()),
            password: Some("p".into()),
            ..Default::default()
        };
        assert!(validate_auth(two).is_err());
        let half = AuthInput {
            username: Some("u".into()),
            ..Default::default()
        };
        assert!(validate_auth(half).is_err());
        let host = AuthInput {
            header_name: Some("Host".into()),
            header_value: Some("x".into()),
            ..Default::default()
        };
        assert!(validate_auth(host).is_err());
        let ok = AuthInput {
            header_name: Some("X-Api-Key".into()),
            header_value: Some("v".into()),
            ..Default::default()
        };
        let auth = validate_auth(ok).unwrap();
        assert_eq!(format!("{auth:?}"), "Header(<redacted>)");
        let round = RegistryAuth::from_plaintext(auth.to_plaintext().expose_secret()).unwrap();
        assert!(matches!(round, RegistryAuth::Header { .. }));
    }
}

/// The first query parameter of `url` whose name says it holds a credential.
fn credential_parameter(url: &url::Url) -> Option<String> {
    const EXACT: &[&str] = &["key", "auth", "sig", "signature", "pass", "pwd", "code"];
    const PARTS: &[&str] = &[
        "token",
        "secret",
        "password",
        "passwd",
        "apikey",
        "api_key",
        "api-key",
        "access_key",
        "credential",
        "authorization",
        "session",
    ];
    url.query_pairs()
        .map(|(k, _)| k.to_ascii_lowercase())
        .find(|k| EXACT.contains(&k.as_str()) || PARTS.iter().any(|p| k.contains(p)))
}

#[cfg(test)]
mod credential_tests {
    #[test]
    fn credentials_in_the_query_string_are_named() {
        for (url, found) in [
            (
                "https://r.example/r.json?access_token=x",
                Some("access_token"),
            ),
            ("https://r.example/r.json?API_KEY=x", Some("api_key")),
            ("https://r.example/r.json?key=x", Some("key")),
            ("https://r.example/r.json?page=2&limit=5", None),
        ] {
            let u = url::Url::parse(url).unwrap();
            assert_eq!(super::credential_parameter(&u).as_deref(), found, "{url}");
        }
    }
}
