//! Why a cluster cannot be reached, in words: a Kubernetes client error is a chain of errors
//! whose top ("client error (Connect)") hides the cause (a certificate the gateway does not
//! trust, a refused connection). This names the cause, and tells credential failures (401/403,
//! the cluster is `UNAUTHORIZED`) from transport failures (the cluster is `DISCONNECTED`).

/// What kind of failure keeps the gateway from a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The API server refused the credentials (401) or the identity may do nothing (403).
    Credentials,
    /// TLS failed: the server's certificate is not trusted, expired or for another name.
    Certificate,
    /// No answer: connection refused or reset, DNS, timeouts, 5xx.
    Transport,
}

/// Whether the API server answered 401 (credentials rejected).
pub fn is_unauthorized(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 401)
}

/// The whole cause chain of `e`, outermost first, joined with ": " (repeated parts skipped).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    parts.join(": ")
}

fn is_certificate(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("certificate") || t.contains("unknownissuer") || t.contains("tls handshake")
}

/// The kind of failure `e` is.
pub fn classify(e: &kube::Error) -> Failure {
    match e {
        kube::Error::Api(s) if s.code == 401 || s.code == 403 => Failure::Credentials,
        kube::Error::Api(_) => Failure::Transport,
        other if is_certificate(&chain(other)) => Failure::Certificate,
        _ => Failure::Transport,
    }
}

/// `e` in words for `lastError` and operation logs: the status code for API answers, the
/// certificate problem for TLS failures, the root cause otherwise.
pub fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 401 => format!(
            "401 Unauthorized: the API server rejected the gateway's credentials ({})",
            s.message
        ),
        kube::Error::Api(s) if s.code == 403 => format!("403 Forbidden: {}", s.message),
        kube::Error::Api(s) => format!("HTTP {}: {}", s.code, s.message),
        other => {
            let text = chain(other);
            if is_certificate(&text) {
                format!("TLS: the API server's certificate is not trusted ({text})")
            } else {
                text
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("no", "Unauthorized")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn credentials_and_transport_are_told_apart() {
        assert_eq!(classify(&api(401)), Failure::Credentials);
        assert_eq!(classify(&api(403)), Failure::Credentials);
        assert_eq!(classify(&api(503)), Failure::Transport);
        assert!(describe(&api(401)).starts_with("401 Unauthorized"));
        assert!(is_unauthorized(&api(401)) && !is_unauthorized(&api(403)));
        assert!(is_certificate("invalid peer certificate: UnknownIssuer"));
        assert!(!is_certificate(
            "tcp connect error: Connection refused (os error 111)"
        ));
    }
}
