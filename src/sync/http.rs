//! The registry HTTP client: bounded in time and size, careful with redirects and credentials.
//!
//! - connect and total timeouts on every request (reqwest has none by default);
//! - the body is streamed and refused past `max_body_bytes` (a `Content-Length` above the limit is
//!   refused before reading);
//! - at most `max_redirects` redirects; never from https to http, never to another scheme, and,
//!   when credentials are configured, never to another origin;
//! - retries with exponential backoff and jitter on timeouts, connection failures, HTTP 5xx and
//!   429, a bounded number of times;
//! - errors name only the host, never the URL (query strings may carry tokens) nor credentials.

use std::time::Duration;

use rand::Rng;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use secrecy::ExposeSecret;
use tokio::io::AsyncReadExt;
use url::Url;

use std::sync::Arc;

use super::egress::{Egress, PublicOnlyResolver};
use crate::config::{RegistryPolicy, SyncConfig};
use crate::registries::RegistryAuth;

/// A fetched response body.
#[derive(Debug)]
pub struct Body {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
}

/// Why a fetch failed. Messages name the host only.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FetchError {
    #[error("could not connect to the registry at {host}: {detail}")]
    Connect { host: String, detail: String },
    #[error("the registry at {host} did not answer within {seconds} s")]
    Timeout { host: String, seconds: f64 },
    #[error("the registry at {host} answered HTTP {status}{hint}")]
    Status {
        host: String,
        status: u16,
        hint: &'static str,
    },
    #[error("the response from {host} is larger than the {limit} limit")]
    TooLarge { host: String, limit: String },
    #[error("the registry at {host} redirected more than {max} times (a redirect loop?)")]
    TooManyRedirects { host: String, max: usize },
    #[error("refused to follow a redirect from {host}: {reason}")]
    RedirectRefused { host: String, reason: String },
    #[error("reading the response from {host} failed: {detail}")]
    Body { host: String, detail: String },
    #[error("the registry URL is not usable: {0}")]
    BadUrl(String),
    #[error("refused to connect: {0}")]
    Blocked(String),
    #[error("cannot read the local registry file: {0}")]
    File(String),
    #[error("the sync was interrupted because the gateway is shutting down")]
    Cancelled,
}

impl FetchError {
    fn retryable(&self) -> bool {
        match self {
            FetchError::Connect { .. } | FetchError::Timeout { .. } => true,
            FetchError::Status { status, .. } => *status >= 500 || *status == 429,
            FetchError::Body { .. } => true,
            _ => false,
        }
    }
}

/// `host[:port]` of a URL, the only part of it that errors and logs show.
pub fn host_of(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, _) => url.scheme().to_string(),
    }
}

fn human_bytes(n: u64) -> String {
    if n >= 1024 * 1024 && n.is_multiple_of(1024 * 1024) {
        format!("{} MiB", n / (1024 * 1024))
    } else if n >= 1024 * 1024 {
        format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0))
    } else {
        format!("{n} bytes")
    }
}

/// Why a redirect is refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct RedirectRefusal(String);

/// Decides whether to follow a redirect to `next`, given the URLs visited so far (the first being
/// the original request). `Err(None)` means too many redirects.
pub fn check_redirect(
    next: &Url,
    previous: &[Url],
    max: usize,
    same_origin_only: bool,
) -> Result<(), Option<String>> {
    if previous.len() > max {
        return Err(None);
    }
    if !matches!(next.scheme(), "http" | "https") {
        return Err(Some(format!(
            "the target scheme {:?} is not http or https",
            next.scheme()
        )));
    }
    if next.scheme() == "http" && previous.iter().any(|u| u.scheme() == "https") {
        return Err(Some(
            "a redirect from https to plain http would expose the request".into(),
        ));
    }
    if same_origin_only
        && let Some(first) = previous.first()
        && first.origin() != next.origin()
    {
        return Err(Some(format!(
            "the registry redirected to another host ({}); credentials are not sent to other hosts",
            host_of(next)
        )));
    }
    Ok(())
}

fn redirect_policy(
    max: usize,
    same_origin_only: bool,
    egress: Egress,
) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        match check_redirect(attempt.url(), attempt.previous(), max, same_origin_only)
            .and_then(|()| egress.check_url(attempt.url()).map_err(Some))
        {
            Ok(()) => attempt.follow(),
            Err(None) => attempt.error(RedirectRefusal(format!("more than {max} redirects"))),
            Err(Some(reason)) => attempt.error(RedirectRefusal(reason)),
        }
    })
}

/// An HTTP client for registries; `same_origin_only` keeps redirects on the original origin.
fn build_client(
    settings: &SyncConfig,
    egress: &Egress,
    same_origin_only: bool,
) -> reqwest::Result<reqwest::Client> {
    let builder = reqwest::Client::builder();
    let builder = if egress.allows_private() {
        builder
    } else {
        builder.dns_resolver(Arc::new(PublicOnlyResolver))
    };
    builder
        .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
        .timeout(Duration::from_millis(settings.timeout_ms))
        .redirect(redirect_policy(
            settings.max_redirects,
            same_origin_only,
            egress.clone(),
        ))
        .user_agent(concat!(
            "hivegraph/",
            env!("CARGO_PKG_VERSION"),
            " (registry sync)"
        ))
        .no_proxy()
        .build()
}

/// The registry client.
#[derive(Clone)]
pub struct RegistryClient {
    anonymous: reqwest::Client,
    /// Used when credentials are sent: redirects stay on the original origin. Built on first use.
    authenticated: Arc<std::sync::OnceLock<reqwest::Client>>,
    settings: SyncConfig,
    allow_file: bool,
    egress: Egress,
}

impl RegistryClient {
    /// Builds the client. Installs rustls' ring provider if the process has none yet. The client
    /// for credentialed requests is built on first use: each build loads the system's root
    /// certificates, a noticeable part of a one-shot `registry sync` of a public registry.
    pub fn new(settings: &SyncConfig, policy: &RegistryPolicy) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let egress = Egress::new(policy);
        Ok(RegistryClient {
            anonymous: build_client(settings, &egress, false)?,
            authenticated: Arc::new(std::sync::OnceLock::new()),
            settings: settings.clone(),
            allow_file: policy.allow_file_urls,
            egress,
        })
    }

    /// The client for a request; with credentials, the one whose redirects stay on the original
    /// origin.
    fn client_for(
        &self,
        credentials: bool,
        host: &str,
    ) -> Result<&reqwest::Client, (FetchError, Option<Duration>)> {
        if !credentials {
            return Ok(&self.anonymous);
        }
        if let Some(c) = self.authenticated.get() {
            return Ok(c);
        }
        let built = build_client(&self.settings, &self.egress, true).map_err(|e| {
            let detail = format!("the HTTP client could not be built: {e}");
            let host = host.to_string();
            (FetchError::Connect { host, detail }, None)
        })?;
        Ok(self.authenticated.get_or_init(|| built))
    }

    /// The settings in force.
    pub fn settings(&self) -> &SyncConfig {
        &self.settings
    }

    /// Fetches `url` with retries. `cancel` ends the wait early (shutdown).
    pub async fn fetch(
        &self,
        url: &Url,
        auth: Option<&RegistryAuth>,
        cancel: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<Body, FetchError> {
        if url.scheme() == "file" {
            return self.read_file(url).await;
        }
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchError::BadUrl(format!(
                "unsupported scheme {:?}",
                url.scheme()
            )));
        }
        self.egress.check_url(url).map_err(FetchError::Blocked)?;
        let mut attempt: u32 = 0;
        loop {
            if *cancel.borrow() {
                return Err(FetchError::Cancelled);
            }
            let outcome = tokio::select! {
                r = self.fetch_once(url, auth) => r,
                _ = cancel.changed() => return Err(FetchError::Cancelled),
            };
            match outcome {
                Ok(b) => return Ok(b),
                Err((e, retry_after)) if e.retryable() && attempt < self.settings.retries => {
                    let delay = retry_after
                        .unwrap_or_else(|| backoff(self.settings.retry_base_ms, attempt));
                    tracing::info!(host = %host_of(url), error = %e, attempt = attempt + 1, ?delay, "registry request failed; retrying");
                    attempt += 1;
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = cancel.changed() => return Err(FetchError::Cancelled),
                    }
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    async fn fetch_once(
        &self,
        url: &Url,
        auth: Option<&RegistryAuth>,
    ) -> Result<Body, (FetchError, Option<Duration>)> {
        let host = host_of(url);
        let client = self.client_for(auth.is_some(), &host)?;
        let mut req = client.get(url.clone()).header(ACCEPT, "application/json");
        req = match auth {
            None => req,
            Some(RegistryAuth::Bearer(token)) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
                    .map_err(|_| {
                        (
                            FetchError::BadUrl(
                                "the bearer token is not a valid header value".into(),
                            ),
                            None,
                        )
                    })?;
                v.set_sensitive(true);
                req.header(AUTHORIZATION, v)
            }
            Some(RegistryAuth::Basic { username, password }) => {
                req.basic_auth(username, Some(password.expose_secret()))
            }
            Some(RegistryAuth::Header { name, value }) => {
                let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    (
                        FetchError::BadUrl("the custom auth header name is not valid".into()),
                        None,
                    )
                })?;
                let mut v = HeaderValue::from_str(value.expose_secret()).map_err(|_| {
                    (
                        FetchError::BadUrl("the custom auth header value is not valid".into()),
                        None,
                    )
                })?;
                v.set_sensitive(true);
                req.header(n, v)
            }
        };
        // reqwest's own timeout covers the body too; the outer one is a second fence.
        let total = Duration::from_millis(self.settings.timeout_ms);
        let timeout_err = || FetchError::Timeout {
            host: host.clone(),
            seconds: total.as_secs_f64(),
        };
        let run = async {
            let mut resp = req.send().await.map_err(|e| (self.map_err(e, url), None))?;
            let status = resp.status();
            if !status.is_success() {
                let retry_after = resp
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .map(|s| Duration::from_secs(s.min(10)));
                let hint = match status.as_u16() {
                    401 => {
                        " Unauthorized: the registry needs credentials, or refused the configured ones"
                    }
                    403 => " Forbidden: the configured credentials may not read this registry",
                    404 => " Not Found: check the registry URL",
                    429 => " Too Many Requests",
                    s if s >= 500 => " (server error)",
                    _ => "",
                };
                return Err((
                    FetchError::Status {
                        host: host.clone(),
                        status: status.as_u16(),
                        hint,
                    },
                    retry_after,
                ));
            }
            let limit = self.settings.max_body_bytes;
            let too_large = || FetchError::TooLarge {
                host: host.clone(),
                limit: human_bytes(limit),
            };
            if resp.content_length().is_some_and(|n| n > limit) {
                return Err((too_large(), None));
            }
            let content_type = resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let mut bytes =
                Vec::with_capacity(resp.content_length().unwrap_or(0).min(limit) as usize);
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| (self.map_err(e, url), None))?
            {
                if bytes.len() as u64 + chunk.len() as u64 > limit {
                    return Err((too_large(), None));
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(Body {
                bytes,
                content_type,
            })
        };
        match tokio::time::timeout(total + Duration::from_millis(250), run).await {
            Ok(r) => r,
            Err(_) => Err((timeout_err(), None)),
        }
    }

    /// Maps a reqwest error to a message that names only the host.
    fn map_err(&self, e: reqwest::Error, url: &Url) -> FetchError {
        let host = host_of(url);
        let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
        let mut refusal = None;
        let mut io_kind = None;
        while let Some(s) = source {
            if let Some(r) = s.downcast_ref::<RedirectRefusal>() {
                refusal = Some(r.0.clone());
            }
            if let Some(n) = s.downcast_ref::<super::egress::NonPublicName>() {
                return FetchError::Blocked(n.to_string());
            }
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                io_kind = Some(io.kind());
            }
            source = s.source();
        }
        if e.is_timeout() {
            return FetchError::Timeout {
                host,
                seconds: self.settings.timeout_ms as f64 / 1000.0,
            };
        }
        if e.is_redirect() || refusal.is_some() {
            return match refusal {
                Some(r) if r.starts_with("more than") => FetchError::TooManyRedirects {
                    host,
                    max: self.settings.max_redirects,
                },
                Some(reason) => FetchError::RedirectRefused { host, reason },
                None => FetchError::TooManyRedirects {
                    host,
                    max: self.settings.max_redirects,
                },
            };
        }
        if e.is_connect() {
            // A failed name lookup is an io error of no particular kind ("uncategorized error").
            let unnamed = |k: &std::io::ErrorKind| {
                *k == std::io::ErrorKind::Other || k.to_string() == "uncategorized error"
            };
            let detail = match io_kind {
                Some(k) if !unnamed(&k) => k.to_string(),
                _ if e.is_dns() || io_kind.is_some() => {
                    "the host name could not be resolved".into()
                }
                _ => "the connection failed".into(),
            };
            return FetchError::Connect { host, detail };
        }
        let detail = match io_kind {
            Some(k) => k.to_string(),
            None if e.is_body() || e.is_decode() => {
                "the connection broke while reading the body".into()
            }
            None => "the request failed".into(),
        };
        FetchError::Body { host, detail }
    }

    async fn read_file(&self, url: &Url) -> Result<Body, FetchError> {
        if !self.allow_file {
            return Err(FetchError::File(
                "file:// registries are disabled on this gateway (HIVEGRAPH_ALLOW_FILE_REGISTRIES)"
                    .into(),
            ));
        }
        let path = url
            .to_file_path()
            .map_err(|_| FetchError::File("the file URL has no usable path".into()))?;
        let limit = self.settings.max_body_bytes;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| FetchError::File(e.kind().to_string()))?;
        let meta = file
            .metadata()
            .await
            .map_err(|e| FetchError::File(e.kind().to_string()))?;
        if !meta.is_file() {
            return Err(FetchError::File("the path is not a regular file".into()));
        }
        if meta.len() > limit {
            return Err(FetchError::TooLarge {
                host: "the local file".into(),
                limit: human_bytes(limit),
            });
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.take(limit + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| FetchError::File(e.kind().to_string()))?;
        if bytes.len() as u64 > limit {
            return Err(FetchError::TooLarge {
                host: "the local file".into(),
                limit: human_bytes(limit),
            });
        }
        Ok(Body {
            bytes,
            content_type: Some("application/json".into()),
        })
    }
}

/// The delay before retry number `attempt` (0-based): `base * 2^attempt`, capped at 10 s, with
/// "equal jitter" (half fixed, half random).
pub fn backoff(base_ms: u64, attempt: u32) -> Duration {
    let full = base_ms.saturating_mul(1u64 << attempt.min(16)).min(10_000);
    let half = full / 2;
    Duration::from_millis(half + rand::thread_rng().gen_range(0..=half))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn redirect_rules() {
        let start = [u("https://reg.example/a")];
        assert!(check_redirect(&u("https://reg.example/b"), &start, 5, false).is_ok());
        let down = check_redirect(&u("http://reg.example/b"), &start, 5, false)
            .unwrap_err()
            .unwrap();
        assert!(down.contains("https to plain http"), "{down}");
        // Once https, never http again, even after further hops.
        let hops = [u("https://reg.example/a"), u("https://cdn.example/b")];
        assert!(check_redirect(&u("http://cdn.example/c"), &hops, 5, false).is_err());
        assert!(
            check_redirect(
                &u("http://plain.example/b"),
                &[u("http://plain.example/a")],
                5,
                false
            )
            .is_ok()
        );
        assert!(
            check_redirect(&u("ftp://reg.example/x"), &start, 5, false)
                .unwrap_err()
                .unwrap()
                .contains("scheme")
        );
        let many: Vec<Url> = (0..6)
            .map(|i| u(&format!("https://reg.example/{i}")))
            .collect();
        assert_eq!(
            check_redirect(&u("https://reg.example/x"), &many, 5, false),
            Err(None)
        );
        let cross = check_redirect(&u("https://other.example/x"), &start, 5, true)
            .unwrap_err()
            .unwrap();
        assert!(cross.contains("other.example"), "{cross}");
        assert!(check_redirect(&u("https://reg.example/x"), &start, 5, true).is_ok());
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        for attempt in 0..4 {
            let full = 100u64 << attempt;
            for _ in 0..20 {
                let d = backoff(100, attempt).as_millis() as u64;
                assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d}");
            }
        }
        assert!(backoff(1000, 30) <= Duration::from_secs(10));
    }

    #[test]
    fn hosts_only() {
        assert_eq!(
            host_of(&u("https://reg.example:8443/x?token=secret")),
            "reg.example:8443"
        );
        assert_eq!(
            host_of(&u("https://reg.example/x?token=secret")),
            "reg.example"
        );
        let e = FetchError::Status {
            host: "reg.example".into(),
            status: 401,
            hint: "",
        };
        assert!(!e.to_string().contains("secret"));
    }
}
