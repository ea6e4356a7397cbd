//! Credentials of clusters registered through the API (`RegisterClusterInput.credentials`).
//!
//! * [`validate`] turns the input (a kubeconfig, or a server URL with its CA and one kind of
//!   credential) into [`Credentials`], refusing what would make the gateway run programs or read
//!   its own files: `exec` and auth-provider plugins, file paths, and plain `http://` servers
//!   unless `insecureSkipTlsVerify` is set explicitly. Errors name the offending field and never
//!   repeat the input.
//! * [`seal`] / [`open`] keep them in `clusters.credentials`, sealed with the keyring of
//!   registry secrets (bound to the row, rotated by `hivegraph keys rotate`).
//! * [`Credentials::kube_config`] builds the client configuration from them in memory; no file
//!   is written and nothing is read from the gateway's disk.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use kube::config::{
    AuthInfo, Cluster, Context, KubeConfigOptions, Kubeconfig, NamedAuthInfo, NamedCluster,
    NamedContext,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::secrets::{Binding, Keyring, Sealed};

/// Longest kubeconfig accepted.
const MAX_KUBECONFIG: usize = 256 * 1024;
/// Longest single value (token, PEM data) accepted.
const MAX_VALUE: usize = 64 * 1024;

/// `ClusterCredentialsInput`: a kubeconfig, or the server with its CA and one kind of credential.
#[derive(Default)]
pub struct CredentialsInput {
    pub kubeconfig: Option<String>,
    pub server: Option<String>,
    pub certificate_authority_data: Option<String>,
    pub bearer_token: Option<String>,
    pub client_certificate_data: Option<String>,
    pub client_key_data: Option<String>,
    pub insecure_skip_tls_verify: Option<bool>,
}

/// Checked credentials of one cluster, as sealed in `clusters.credentials`.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct Credentials {
    /// The API server URL.
    pub server: String,
    /// CA bundle, base64 of PEM.
    #[serde(default)]
    pub ca_data: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
    /// Client certificate, base64 of PEM.
    #[serde(default)]
    pub client_cert_data: Option<String>,
    /// Client key, base64 of PEM.
    #[serde(default)]
    pub client_key_data: Option<String>,
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub tls_server_name: Option<String>,
    /// The kubeconfig context's default namespace.
    #[serde(default)]
    pub namespace: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("server", &self.server)
            .field("secrets", &"<redacted>")
            .finish()
    }
}

/// What the input field at `field` is called in errors.
fn field(name: &str) -> String {
    format!("credentials.{name}")
}

fn bad(name: &str, message: impl Into<String>) -> AppError {
    AppError::bad_input(field(name), message)
}

fn looks_like_path(v: &str) -> bool {
    let v = v.trim();
    v.starts_with('/')
        || v.starts_with("~/")
        || v.starts_with("./")
        || v.starts_with("../")
        || v.starts_with("file:")
        || (v.len() > 2 && v.as_bytes()[1] == b':' && v.as_bytes()[2] == b'\\')
}

/// PEM data given either as base64 of PEM (as in kubeconfigs) or as PEM itself; returned as
/// base64 of PEM.
fn pem_data(name: &str, v: &str, what: &str) -> AppResult<String> {
    let v = v.trim();
    if v.is_empty() || v.len() > MAX_VALUE {
        return Err(bad(name, format!("{what} must be 1 to 64 KiB of PEM data")));
    }
    if looks_like_path(v) {
        return Err(bad(
            name,
            format!("{what}: file paths are refused; give the PEM data itself (base64)"),
        ));
    }
    let pem = if v.starts_with("-----BEGIN") {
        v.as_bytes().to_vec()
    } else {
        let compact: String = v.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        B64.decode(compact)
            .map_err(|_| bad(name, format!("{what} must be base64 of PEM data")))?
    };
    if !pem.windows(10).any(|w| w == b"-----BEGIN") {
        return Err(bad(name, format!("{what} must be base64 of PEM data")));
    }
    Ok(B64.encode(pem))
}

/// Checks a server URL: https, or http only with `insecureSkipTlsVerify: true`.
fn check_server(name: &str, server: &str, insecure: Option<bool>) -> AppResult<String> {
    let server = server.trim();
    if looks_like_path(server) {
        return Err(bad(name, "the server must be a URL, not a file path"));
    }
    let url = url::Url::parse(server).map_err(|_| {
        bad(
            name,
            "the server must be a URL such as https://10.0.0.1:6443",
        )
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            name,
            "the server URL must not carry credentials; use bearerToken or client certificates",
        ));
    }
    if url.host_str().is_none() || url.query().is_some() || url.fragment().is_some() {
        return Err(bad(
            name,
            "the server must be a URL such as https://10.0.0.1:6443",
        ));
    }
    match (url.scheme(), insecure) {
        ("https", _) => {}
        ("http", Some(true)) => {}
        ("http", _) => {
            return Err(bad(
                name,
                "plain http:// servers are refused unless insecureSkipTlsVerify is set to true",
            ));
        }
        _ => return Err(bad(name, "the server URL must use https://")),
    }
    Ok(server.trim_end_matches('/').to_string())
}

/// A bearer token: printable, no whitespace, bounded.
fn check_token(name: &str, token: &str) -> AppResult<String> {
    let t = token.trim();
    if t.is_empty() || t.len() > MAX_VALUE || t.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(bad(
            name,
            "the bearer token must be 1 to 64 KiB without spaces or control characters",
        ));
    }
    if looks_like_path(t) {
        return Err(bad(
            name,
            "file paths are refused; give the token itself, not a token file",
        ));
    }
    Ok(t.to_string())
}

/// Checks the input; `context` picks a context of a multi-context kubeconfig.
pub fn validate(mut input: CredentialsInput, context: Option<&str>) -> AppResult<Credentials> {
    let direct = input.server.is_some()
        || input.certificate_authority_data.is_some()
        || input.bearer_token.is_some()
        || input.client_certificate_data.is_some()
        || input.client_key_data.is_some();
    match (input.kubeconfig.take(), direct) {
        (Some(_), true) => Err(bad(
            "kubeconfig",
            "give either a kubeconfig or a server with its credentials, not both",
        )),
        (Some(kc), false) => from_kubeconfig(&kc, context, input.insecure_skip_tls_verify),
        (None, _) => {
            if context.is_some() {
                return Err(AppError::bad_input(
                    "context",
                    "context names a context of a kubeconfig; give credentials.kubeconfig, or \
                     leave context out",
                ));
            }
            from_fields(input)
        }
    }
}

fn from_fields(input: CredentialsInput) -> AppResult<Credentials> {
    let insecure = input.insecure_skip_tls_verify;
    let server = check_server(
        "server",
        input
            .server
            .as_deref()
            .ok_or_else(|| bad("server", "the API server URL is required"))?,
        insecure,
    )?;
    let ca_data = input
        .certificate_authority_data
        .as_deref()
        .map(|v| pem_data("certificateAuthorityData", v, "the CA"))
        .transpose()?;
    let token = input
        .bearer_token
        .as_deref()
        .map(|t| check_token("bearerToken", t))
        .transpose()?;
    let cert = input
        .client_certificate_data
        .as_deref()
        .map(|v| pem_data("clientCertificateData", v, "the client certificate"))
        .transpose()?;
    let key = input
        .client_key_data
        .as_deref()
        .map(|v| pem_data("clientKeyData", v, "the client key"))
        .transpose()?;
    match (&token, &cert, &key) {
        (Some(_), None, None) | (None, Some(_), Some(_)) => {}
        (None, None, None) => {
            return Err(bad(
                "bearerToken",
                "give one kind of credential: bearerToken, or clientCertificateData with \
                 clientKeyData",
            ));
        }
        (Some(_), _, _) => {
            return Err(bad(
                "bearerToken",
                "give one kind of credential: bearerToken or a client certificate, not both",
            ));
        }
        (None, Some(_), None) => {
            return Err(bad("clientKeyData", "a client certificate needs its key"));
        }
        (None, None, Some(_)) => {
            return Err(bad(
                "clientCertificateData",
                "a client key needs its certificate",
            ));
        }
    }
    Ok(Credentials {
        server,
        ca_data,
        token,
        client_cert_data: cert,
        client_key_data: key,
        insecure: insecure.unwrap_or(false),
        tls_server_name: None,
        namespace: None,
    })
}

/// One cluster, user and context of a kubeconfig, with everything inline.
fn from_kubeconfig(
    text: &str,
    context: Option<&str>,
    insecure_override: Option<bool>,
) -> AppResult<Credentials> {
    const F: &str = "kubeconfig";
    if text.trim().is_empty() || text.len() > MAX_KUBECONFIG {
        return Err(bad(F, "the kubeconfig must be 1 byte to 256 KiB"));
    }
    // The parser's messages may quote the input: say only where it failed.
    let kc = Kubeconfig::from_yaml(text).map_err(|_| {
        bad(
            F,
            "the kubeconfig is not a valid kubeconfig document (YAML or JSON)",
        )
    })?;
    let ctx = match context {
        Some(name) => kc.contexts.iter().find(|c| c.name == name).ok_or_else(|| {
            AppError::bad_input("context", format!("the kubeconfig has no context {name:?}"))
        })?,
        None if kc.contexts.len() == 1 => &kc.contexts[0],
        None if kc.contexts.is_empty() => return Err(bad(F, "the kubeconfig has no context")),
        None => {
            return Err(AppError::bad_input(
                "context",
                "the kubeconfig has several contexts: name one in context",
            ));
        }
    };
    let c = ctx
        .context
        .as_ref()
        .ok_or_else(|| bad(F, "the context is empty"))?;
    let cluster = kc
        .clusters
        .iter()
        .find(|n| n.name == c.cluster)
        .and_then(|n| n.cluster.as_ref())
        .ok_or_else(|| bad(F, "the context's cluster is not in the kubeconfig"))?;
    let user = match &c.user {
        Some(u) => kc
            .auth_infos
            .iter()
            .find(|n| &n.name == u)
            .and_then(|n| n.auth_info.as_ref())
            .ok_or_else(|| bad(F, "the context's user is not in the kubeconfig"))?,
        None => return Err(bad(F, "the context names no user")),
    };
    refuse_unsafe_user(user)?;
    if cluster.certificate_authority.is_some() {
        return Err(bad(
            F,
            "clusters[].cluster.certificate-authority: file paths are refused; use \
             certificate-authority-data",
        ));
    }
    if cluster.proxy_url.is_some() {
        return Err(bad(
            F,
            "clusters[].cluster.proxy-url: proxies are not supported",
        ));
    }
    let insecure = insecure_override.or(cluster.insecure_skip_tls_verify);
    let server = check_server(
        F,
        cluster
            .server
            .as_deref()
            .ok_or_else(|| bad(F, "clusters[].cluster.server is missing"))?,
        insecure,
    )?;
    let mut creds = from_fields(CredentialsInput {
        kubeconfig: None,
        server: Some(server),
        certificate_authority_data: cluster.certificate_authority_data.clone(),
        bearer_token: user.token.as_ref().map(|t| t.expose_secret().to_string()),
        client_certificate_data: user.client_certificate_data.clone(),
        client_key_data: user
            .client_key_data
            .as_ref()
            .map(|k| k.expose_secret().to_string()),
        insecure_skip_tls_verify: insecure,
    })
    .map_err(|e| match e {
        // Errors name the kubeconfig, the field the client sent.
        AppError::BadInput { message, .. } => bad(F, message),
        other => other,
    })?;
    creds.tls_server_name = cluster.tls_server_name.clone();
    creds.namespace = c.namespace.clone();
    Ok(creds)
}

/// Refuses users that would run programs, read files or act as someone else.
fn refuse_unsafe_user(user: &AuthInfo) -> AppResult<()> {
    const F: &str = "kubeconfig";
    let refused = [
        (
            user.exec.is_some(),
            "users[].user.exec: exec plugins are refused (they would run programs on the gateway)",
        ),
        (
            user.auth_provider.is_some(),
            "users[].user.auth-provider: auth-provider plugins are refused",
        ),
        (
            user.token_file.is_some(),
            "users[].user.tokenFile: file paths are refused; use token",
        ),
        (
            user.client_certificate.is_some() || user.client_key.is_some(),
            "users[].user.client-certificate / client-key: file paths are refused; use \
             client-certificate-data and client-key-data",
        ),
        (
            user.username.is_some() || user.password.is_some(),
            "users[].user.username / password: basic authentication is not supported",
        ),
        (
            user.impersonate.is_some() || user.impersonate_groups.is_some(),
            "users[].user.as: impersonation is not supported",
        ),
    ];
    match refused.iter().find(|(hit, _)| *hit) {
        Some((_, message)) => Err(bad(F, *message)),
        None => Ok(()),
    }
}

impl Credentials {
    /// A fingerprint of the credentials (a hash prefix: tells versions apart, reveals nothing).
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let plain = serde_json::to_vec(self).expect("credentials serialize");
        format!("sealed:{}", hex::encode(&sha2::Sha256::digest(plain)[..12]))
    }

    /// The input field that carries the credential proper (named when the cluster refuses it).
    pub fn credential_field(&self, from_kubeconfig: bool) -> String {
        if from_kubeconfig {
            field("kubeconfig")
        } else if self.token.is_some() {
            field("bearerToken")
        } else {
            field("clientCertificateData")
        }
    }

    /// A client configuration built in memory.
    pub async fn kube_config(&self) -> AppResult<kube::Config> {
        let kc = Kubeconfig {
            clusters: vec![NamedCluster {
                name: "cluster".into(),
                cluster: Some(Cluster {
                    server: Some(self.server.clone()),
                    insecure_skip_tls_verify: Some(self.insecure),
                    certificate_authority_data: self.ca_data.clone(),
                    tls_server_name: self.tls_server_name.clone(),
                    ..Default::default()
                }),
                other: Default::default(),
            }],
            auth_infos: vec![NamedAuthInfo {
                name: "user".into(),
                auth_info: Some(AuthInfo {
                    token: self.token.clone().map(SecretString::from),
                    client_certificate_data: self.client_cert_data.clone(),
                    client_key_data: self.client_key_data.clone().map(SecretString::from),
                    ..Default::default()
                }),
                other: Default::default(),
            }],
            contexts: vec![NamedContext {
                name: "context".into(),
                context: Some(Context {
                    cluster: "cluster".into(),
                    user: Some("user".into()),
                    namespace: self.namespace.clone(),
                    ..Default::default()
                }),
                other: Default::default(),
            }],
            current_context: Some("context".into()),
            ..Default::default()
        };
        kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|_| {
                // kube's message may quote PEM data: keep it out of the answer and the logs.
                bad(
                    "certificateAuthorityData",
                    "the certificates or key cannot be used (not valid PEM of the expected kind)",
                )
            })
    }
}

fn binding(row: Uuid) -> Binding<'static> {
    Binding {
        table: "clusters",
        row,
        column: "credentials",
    }
}

/// Seals credentials for the cluster row `row`.
pub fn seal(keys: &Keyring, row: Uuid, creds: &Credentials) -> serde_json::Value {
    let plain = serde_json::to_vec(creds).expect("credentials serialize");
    let sealed = keys.seal(&plain, binding(row));
    serde_json::to_value(sealed).expect("a sealed value serializes")
}

/// The message of the error when this process's keyring cannot open a cluster's credentials.
pub const UNOPENED: &str =
    "the cluster's stored credentials cannot be opened with the configured keys";

/// Opens the sealed credentials of the cluster row `row`.
pub fn open(keys: &Keyring, row: Uuid, stored: &serde_json::Value) -> AppResult<Credentials> {
    let unavailable = |why: &str| {
        tracing::warn!(cluster = %row, why, "the cluster's stored credentials cannot be opened");
        AppError::Unavailable(UNOPENED.into())
    };
    let sealed: Sealed =
        serde_json::from_value(stored.clone()).map_err(|_| unavailable("malformed"))?;
    let plain = keys
        .open(&sealed, binding(row))
        .map_err(|e| unavailable(&e.to_string()))?;
    serde_json::from_slice(plain.expose_secret()).map_err(|_| unavailable("malformed content"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn direct(server: &str) -> CredentialsInput {
        CredentialsInput {
            server: Some(server.into()),
            bearer_token: Some("tok".into()),
            ..Default::default()
        }
    }

    fn field_of(r: AppResult<Credentials>) -> String {
        match r {
            Err(AppError::BadInput { field, .. }) => field,
            other => panic!("expected BAD_USER_INPUT, got {other:?}"),
        }
    }

    #[test]
    fn servers_and_fields() {
        assert!(validate(direct("https://10.0.0.1:6443"), None).is_ok());
        assert_eq!(
            field_of(validate(direct("http://10.0.0.1:6443"), None)),
            "credentials.server"
        );
        let mut plain = direct("http://10.0.0.1:6443");
        plain.insecure_skip_tls_verify = Some(true);
        assert!(validate(plain, None).is_ok());
        assert_eq!(
            field_of(validate(direct("/etc/kubernetes/admin.conf"), None)),
            "credentials.server"
        );
        assert_eq!(
            field_of(validate(direct("https://u:p@10.0.0.1"), None)),
            "credentials.server"
        );
        let mut ca_path = direct("https://10.0.0.1");
        ca_path.certificate_authority_data = Some("/etc/ca.crt".into());
        assert_eq!(
            field_of(validate(ca_path, None)),
            "credentials.certificateAuthorityData"
        );
        let mut ca = direct("https://10.0.0.1");
        ca.certificate_authority_data = Some(B64.encode(PEM));
        assert!(validate(ca, None).unwrap().ca_data.is_some());
        let mut two = direct("https://10.0.0.1");
        two.client_certificate_data = Some(B64.encode(PEM));
        assert_eq!(field_of(validate(two, None)), "credentials.bearerToken");
        let none = CredentialsInput {
            server: Some("https://10.0.0.1".into()),
            ..Default::default()
        };
        assert_eq!(field_of(validate(none, None)), "credentials.bearerToken");
    }

    fn kubeconfig(user: &str, contexts: &[&str]) -> String {
        let ctx: String = contexts
            .iter()
            .map(|c| format!("- name: {c}\n  context: {{cluster: c, user: u}}\n"))
            .collect();
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: 'https://10.0.0.1:6443'}}\n\
             users:\n- name: u\n  user: {user}\ncontexts:\n{ctx}"
        )
    }

    #[test]
    fn kubeconfigs_are_checked() {
        let kc = |user: &str, ctx: &[&str]| CredentialsInput {
            kubeconfig: Some(kubeconfig(user, ctx)),
            ..Default::default()
        };
        let ok = validate(kc("{token: abc}", &["one"]), None).unwrap();
        assert_eq!(ok.server, "https://10.0.0.1:6443");
        assert_eq!(ok.token.as_deref(), Some("abc"));
        for user in [
            "{exec: {command: /bin/sh, apiVersion: client.authentication.k8s.io/v1}}",
            "{auth-provider: {name: gcp}}",
            "{tokenFile: /var/run/token}",
            "{client-certificate: /tmp/c.crt, client-key: /tmp/c.key}",
        ] {
            assert_eq!(
                field_of(validate(kc(user, &["one"]), None)),
                "credentials.kubeconfig",
                "{user}"
            );
        }
        assert_eq!(
            field_of(validate(kc("{token: abc}", &["a", "b"]), None)),
            "context"
        );
        assert!(validate(kc("{token: abc}", &["a", "b"]), Some("b")).is_ok());
        let both = CredentialsInput {
            kubeconfig: Some(kubeconfig("{token: abc}", &["a"])),
            server: Some("https://x".into()),
            ..Default::default()
        };
        assert_eq!(field_of(validate(both, None)), "credentials.kubeconfig");
        let garbage = CredentialsInput {
            kubeconfig: Some("token: CANARY: [".into()),
            ..Default::default()
        };
        match validate(garbage, None) {
            Err(AppError::BadInput { message, .. }) => assert!(!message.contains("CANARY")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sealed_at_rest_and_bound_to_the_row() {
        let keys = Keyring::ephemeral();
        let row = Uuid::new_v4();
        let creds = validate(direct("https://10.0.0.1"), None).unwrap();
        let stored = seal(&keys, row, &creds);
        assert!(!stored.to_string().contains("tok\""));
        assert_eq!(open(&keys, row, &stored).unwrap(), creds);
        assert!(open(&keys, Uuid::new_v4(), &stored).is_err());
        assert!(!format!("{creds:?}").contains("tok\""));
    }
}
