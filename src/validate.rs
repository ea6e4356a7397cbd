//! Name rules shared by every layer that accepts names: registry sync (server labels, declared
//! environment variables), deployments (namespaces, instance names, env) and namespace grants.

/// The longest environment variable name accepted.
pub const MAX_ENV_NAME: usize = 256;

/// Whether `s` is a DNS-1123 label: 1 to 63 lower-case letters, digits and '-', starting and
/// ending with a letter or digit (Kubernetes namespaces and object names; server labels).
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Whether `s` is a valid environment variable name: a C identifier of at most
/// [`MAX_ENV_NAME`] characters.
pub fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= MAX_ENV_NAME
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        assert!(is_dns_label("web-1"));
        assert!(is_dns_label("a"));
        assert!(is_dns_label(&"a".repeat(63)));
        assert!(!is_dns_label(""));
        assert!(!is_dns_label("Web"));
        assert!(!is_dns_label("-web"));
        assert!(!is_dns_label("web-"));
        assert!(!is_dns_label("we_b"));
        assert!(!is_dns_label(&"a".repeat(64)));
    }

    #[test]
    fn env_names() {
        assert!(is_env_name("API_TOKEN"));
        assert!(is_env_name("_X1"));
        assert!(!is_env_name(""));
        assert!(!is_env_name("1X"));
        assert!(!is_env_name("A-B"));
        assert!(!is_env_name(&"A".repeat(MAX_ENV_NAME + 1)));
    }
}
