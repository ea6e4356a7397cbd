//! The OIDC issuer's signing keys: discovered, fetched, cached, and refreshed on unknown key ids
//! with a rate limit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::RwLock;

use super::{AuthError, JWKS_REFRESH_MIN_INTERVAL};

/// How long fetched keys are trusted without a refresh.
const JWKS_TTL: Duration = Duration::from_secs(600);

/// Cached signing keys of one issuer.
pub struct JwksCache {
    issuer: String,
    http: reqwest::Client,
    keys: RwLock<HashMap<String, (DecodingKey, Option<Algorithm>)>>,
    fetched_at: Mutex<Option<Instant>>,
    last_attempt: Mutex<Option<Instant>>,
}

impl JwksCache {
    /// A cache for `issuer` (keys are fetched on first use).
    pub fn new(issuer: String) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()?;
        Ok(JwksCache {
            issuer: issuer.trim_end_matches('/').to_string(),
            http,
            keys: RwLock::new(HashMap::new()),
            fetched_at: Mutex::new(None),
            last_attempt: Mutex::new(None),
        })
    }

    /// The key for `kid`, refreshing the set when the key is unknown or the set is stale (at most
    /// once per rate-limit interval).
    pub async fn key(&self, kid: &str, alg: Algorithm) -> Result<DecodingKey, AuthError> {
        let stale = self
            .fetched_at
            .lock()
            .expect("lock")
            .is_none_or(|t| t.elapsed() > JWKS_TTL);
        if !stale && let Some(k) = self.lookup(kid, alg).await? {
            return Ok(k);
        }
        let may_refresh = {
            let mut last = self.last_attempt.lock().expect("lock");
            let ok = last.is_none_or(|t| t.elapsed() >= JWKS_REFRESH_MIN_INTERVAL);
            if ok {
                *last = Some(Instant::now());
            }
            ok
        };
        if may_refresh {
            match self.refresh().await {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(issuer = %self.issuer, error = %e, "JWKS refresh failed");
                    if self.keys.read().await.is_empty() {
                        return Err(AuthError::ProviderUnavailable);
                    }
                }
            }
        }
        self.lookup(kid, alg).await?.ok_or(AuthError::UnknownKey)
    }

    async fn lookup(&self, kid: &str, alg: Algorithm) -> Result<Option<DecodingKey>, AuthError> {
        match self.keys.read().await.get(kid) {
            Some((key, key_alg)) => {
                if key_alg.is_some_and(|a| a != alg) {
                    return Err(AuthError::BadSignature);
                }
                Ok(Some(key.clone()))
            }
            None => Ok(None),
        }
    }

    async fn refresh(&self) -> anyhow::Result<()> {
        let discovery: serde_json::Value = self
            .http
            .get(format!("{}/.well-known/openid-configuration", self.issuer))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let jwks_uri = discovery
            .get("jwks_uri")
            .and_then(|v| v.as_str())
            .ok_or_else(|| anyhow::anyhow!("the discovery document has no jwks_uri"))?;
        let set: JwkSet = self
            .http
            .get(jwks_uri)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok());
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.insert(kid, (key, alg));
            }
        }
        *self.keys.write().await = keys;
        *self.fetched_at.lock().expect("lock") = Some(Instant::now());
        Ok(())
    }
}
