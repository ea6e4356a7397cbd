//! Authentication: who is asking.
//!
//! `HIVEGRAPH_AUTH=none` (loopback only) treats every caller as the local administrator.
//! `HIVEGRAPH_AUTH=jwt` validates bearer tokens, either HS256 with a shared secret or RS256/ES256
//! against an OIDC issuer's JWKS (found through discovery, cached, refreshed when an unknown `kid`
//! appears, at most once per [`JWKS_REFRESH_MIN_INTERVAL`]). Algorithms are pinned; `iss`, `aud`,
//! `exp` and `nbf` are checked.

pub mod jwks;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

/// The least time between two JWKS fetches caused by unknown key ids.
pub const JWKS_REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(30);
/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECONDS: u64 = 60;

/// An application role, from the configured token claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, async_graphql::Enum)]
pub enum Role {
    /// May read registries, servers, and the instances of granted namespaces.
    Viewer,
    /// May also deploy and manage instances in granted namespaces.
    Deployer,
    /// May do everything, including managing registries, clusters and grants.
    Admin,
}

impl Role {
    fn parse(s: &str) -> Option<Role> {
        match s.to_ascii_lowercase().as_str() {
            "viewer" | "read" | "reader" => Some(Role::Viewer),
            "deployer" | "deploy" => Some(Role::Deployer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Who is asking, once authenticated.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The token's `sub`, or `local` without authentication.
    pub subject: String,
    /// Roles granted by the token.
    pub roles: BTreeSet<Role>,
    /// When the credentials expire (websockets are closed then).
    pub expires_at: Option<DateTime<Utc>>,
    /// Whether the caller presented valid credentials (or authentication is off).
    pub authenticated: bool,
}

impl Principal {
    /// The caller when authentication is off: the local administrator.
    pub fn local() -> Self {
        Principal {
            subject: "local".into(),
            roles: [Role::Viewer, Role::Deployer, Role::Admin]
                .into_iter()
                .collect(),
            expires_at: None,
            authenticated: true,
        }
    }

    /// A caller without credentials.
    pub fn anonymous() -> Self {
        Principal {
            subject: "anonymous".into(),
            roles: BTreeSet::new(),
            expires_at: None,
            authenticated: false,
        }
    }

    /// Whether the caller holds `role` (admin implies deployer implies viewer).
    pub fn has(&self, role: Role) -> bool {
        self.roles.iter().any(|r| *r >= role)
    }
}

/// Why a token was refused. The text is safe to show: it never includes the token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error("the Authorization header must be `Bearer <token>`")]
    Malformed,
    #[error("the token is expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's issuer is not accepted")]
    WrongIssuer,
    #[error("the token's audience is not accepted")]
    WrongAudience,
    #[error("the token's signature or algorithm is not accepted")]
    BadSignature,
    #[error("the token is signed with an unknown key")]
    UnknownKey,
    #[error("the identity provider cannot be reached")]
    ProviderUnavailable,
    #[error("the token is invalid")]
    Invalid,
}

impl From<jsonwebtoken::errors::Error> for AuthError {
    fn from(e: jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind::*;
        match e.kind() {
            ExpiredSignature => AuthError::Expired,
            ImmatureSignature => AuthError::NotYetValid,
            InvalidIssuer => AuthError::WrongIssuer,
            InvalidAudience => AuthError::WrongAudience,
            InvalidSignature | InvalidAlgorithm | InvalidAlgorithmName | InvalidKeyFormat => {
                AuthError::BadSignature
            }
            _ => AuthError::Invalid,
        }
    }
}

/// Settings of JWT validation.
#[derive(Clone)]
pub struct JwtSettings {
    /// HS256 shared secret.
    pub hs256_secret: Option<SecretString>,
    /// OIDC issuer URL (JWKS found through discovery).
    pub oidc_issuer: Option<String>,
    /// Expected `iss`; checked when set.
    pub issuer: Option<String>,
    /// Expected `aud`; checked when set.
    pub audience: Option<String>,
    /// Claim holding the roles (a string array, or a space- or comma-separated string).
    pub roles_claim: String,
}

impl JwtSettings {
    /// The validator settings of the configuration.
    pub fn from_config(c: &crate::config::JwtConfig) -> Self {
        JwtSettings {
            hs256_secret: c.jwt_secret.clone(),
            oidc_issuer: c.oidc_issuer.clone(),
            issuer: c.jwt_issuer.clone(),
            audience: c.jwt_audience.clone(),
            roles_claim: c.roles_claim.clone(),
        }
    }
}

impl std::fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSettings")
            .field(
                "hs256_secret",
                &self.hs256_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("oidc_issuer", &self.oidc_issuer)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("roles_claim", &self.roles_claim)
            .finish()
    }
}

/// Validates credentials.
#[derive(Clone)]
pub enum Authenticator {
    /// Authentication is off: everyone is the local administrator.
    Off,
    /// Bearer JWTs.
    Jwt(Arc<JwtAuthenticator>),
}

/// The JWT validator.
pub struct JwtAuthenticator {
    settings: JwtSettings,
    jwks: Option<jwks::JwksCache>,
}

impl Authenticator {
    /// A JWT authenticator. Needs an HS256 secret or an OIDC issuer.
    pub fn jwt(settings: JwtSettings) -> anyhow::Result<Self> {
        if settings.hs256_secret.is_none() && settings.oidc_issuer.is_none() {
            anyhow::bail!("HIVEGRAPH_AUTH=jwt needs HIVEGRAPH_JWT_SECRET or HIVEGRAPH_OIDC_ISSUER");
        }
        if let Some(secret) = &settings.hs256_secret
            && secret.expose_secret().len() < 32
        {
            anyhow::bail!("HIVEGRAPH_JWT_SECRET must be at least 32 bytes");
        }
        let jwks = settings
            .oidc_issuer
            .clone()
            .map(jwks::JwksCache::new)
            .transpose()?;
        Ok(Authenticator::Jwt(Arc::new(JwtAuthenticator {
            settings,
            jwks,
        })))
    }

    /// Who the `Authorization` header value (if any) belongs to.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        match self {
            Authenticator::Off => Ok(Principal::local()),
            Authenticator::Jwt(jwt) => match authorization {
                None => Ok(Principal::anonymous()),
                Some(value) => {
                    let token = value
                        .strip_prefix("Bearer ")
                        .or_else(|| value.strip_prefix("bearer "))
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .ok_or(AuthError::Malformed)?;
                    jwt.validate(token).await
                }
            },
        }
    }
}

impl JwtAuthenticator {
    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.algorithms = vec![alg];
        v.leeway = LEEWAY_SECONDS;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "sub"]);
        match &self.settings.issuer {
            Some(iss) => v.set_issuer(&[iss]),
            None => v.iss = None,
        }
        match &self.settings.audience {
            Some(aud) => v.set_audience(&[aud]),
            None => v.validate_aud = false,
        }
        v
    }

    /// Validates a token and maps its claims to a principal.
    pub async fn validate(&self, token: &str) -> Result<Principal, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid)?;
        let claims: Value = match header.alg {
            Algorithm::HS256 => {
                let secret = self
                    .settings
                    .hs256_secret
                    .as_ref()
                    .ok_or(AuthError::BadSignature)?;
                let key = DecodingKey::from_secret(secret.expose_secret().as_bytes());
                jsonwebtoken::decode::<Value>(token, &key, &self.validation(Algorithm::HS256))?
                    .claims
            }
            alg @ (Algorithm::RS256 | Algorithm::ES256) => {
                let jwks = self.jwks.as_ref().ok_or(AuthError::BadSignature)?;
                let kid = header.kid.ok_or(AuthError::UnknownKey)?;
                let key = jwks.key(&kid, alg).await?;
                jsonwebtoken::decode::<Value>(token, &key, &self.validation(alg))?.claims
            }
            _ => return Err(AuthError::BadSignature),
        };
        Ok(self.principal(&claims))
    }

    fn principal(&self, claims: &Value) -> Principal {
        let roles = match claims.get(&self.settings.roles_claim) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str())
                .filter_map(Role::parse)
                .collect(),
            Some(Value::String(s)) => s.split([' ', ',']).filter_map(Role::parse).collect(),
            _ => BTreeSet::new(),
        };
        Principal {
            subject: claims
                .get("sub")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_string(),
            roles,
            // NumericDate may carry fractions (RFC 7519 §2): a float `exp` counts too.
            expires_at: claims
                .get("exp")
                .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f.floor() as i64)))
                .and_then(|s| DateTime::from_timestamp(s, 0)),
            authenticated: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn auth(issuer: Option<&str>, audience: Option<&str>) -> Authenticator {
        Authenticator::jwt(JwtSettings {
            hs256_secret: Some(SECRET.to_string().into()),
            oidc_issuer: None,
            issuer: issuer.map(str::to_string),
            audience: audience.map(str::to_string),
            roles_claim: "roles".into(),
        })
        .unwrap()
    }

    fn token(claims: Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> i64 {
        Utc::now().timestamp()
    }

    #[tokio::test]
    async fn a_valid_token_maps_roles() {
        let a = auth(Some("https://idp.example"), Some("hivegraph"));
        let t = token(
            json!({ "sub": "alice", "exp": now() + 600, "iss": "https://idp.example", "aud": "hivegraph", "roles": ["deployer"] }),
        );
        let p = a.authenticate(Some(&format!("Bearer {t}"))).await.unwrap();
        assert_eq!(p.subject, "alice");
        assert!(p.has(Role::Viewer) && p.has(Role::Deployer) && !p.has(Role::Admin));
    }

    #[tokio::test]
    async fn bad_tokens_are_refused_for_the_right_reason() {
        let a = auth(Some("https://idp.example"), Some("hivegraph"));
        let ok = json!({ "sub": "a", "exp": now() + 600, "iss": "https://idp.example", "aud": "hivegraph" });
        let with = |k: &str, v: Value| {
            let mut c = ok.clone();
            c[k] = v;
            token(c)
        };
        let cases = [
            (with("exp", json!(now() - 3600)), "expired"),
            (with("nbf", json!(now() + 3600)), "not valid yet"),
            (with("iss", json!("https://evil.example")), "issuer"),
            (with("aud", json!("other")), "audience"),
        ];
        for (t, why) in cases {
            let e = a
                .authenticate(Some(&format!("Bearer {t}")))
                .await
                .unwrap_err();
            assert!(e.to_string().contains(why), "{e} should mention {why}");
        }
        let forged = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &ok,
            &EncodingKey::from_secret(b"another-secret-another-secret-xx"),
        )
        .unwrap();
        assert!(matches!(
            a.authenticate(Some(&format!("Bearer {forged}"))).await,
            Err(AuthError::BadSignature)
        ));
        // alg=none and algorithm confusion are refused.
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&ok.to_string())
        );
        assert!(
            a.authenticate(Some(&format!("Bearer {none}")))
                .await
                .is_err()
        );
        assert!(matches!(
            a.authenticate(Some("Basic abc")).await,
            Err(AuthError::Malformed)
        ));
        let anon = a.authenticate(None).await.unwrap();
        assert!(!anon.authenticated && anon.roles.is_empty());
    }

    fn b64(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn short_secrets_are_refused() {
        let r = Authenticator::jwt(JwtSettings {
            hs256_secret: Some("short".to_string().into()),
            oidc_issuer: None,
            issuer: None,
            audience: None,
            roles_claim: "roles".into(),
        });
        assert!(r.is_err());
    }
}
