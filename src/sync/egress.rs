//! Where the registry client may connect: the SSRF guard.
//!
//! Registry URLs come from admins, but a registry can still redirect, or a name can resolve, to an
//! address inside the gateway's own network (the cloud metadata service at 169.254.169.254, the
//! kube-apiserver, the database). So, unless `HIVEGRAPH_ALLOW_PRIVATE_REGISTRIES` is set:
//! - URLs whose host is a literal non-public address (or `localhost`) are refused when a registry
//!   is created or updated, and again before every request and every redirect hop;
//! - names are resolved by [`PublicOnlyResolver`], which drops non-public addresses, so a name that
//!   resolves only to such addresses fails to connect, with a message that says why; the address
//!   checked is the address connected to, so DNS rebinding cannot slip past the check.
//!
//! When `HIVEGRAPH_REGISTRY_ALLOWED_HOSTS` lists host patterns (`registry.example.com`,
//! `*.example.com`), registry URLs and redirect targets must match one of them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use url::{Host, Url};

use crate::config::RegistryPolicy;

/// Whether `ip` is an address a registry may never live at unless private networks are allowed:
/// loopback, private (RFC 1918, unique-local), link-local (including cloud metadata services),
/// shared (CGNAT), unspecified, broadcast, multicast, documentation and benchmarking ranges.
pub fn is_non_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_non_public(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4_non_public(v4);
            }
            let seg = v6.segments();
            // IPv4-compatible `::a.b.c.d` (deprecated, still routed by some stacks).
            if seg[..6].iter().all(|s| *s == 0) {
                let [a, b] = seg[6].to_be_bytes();
                let [c, d] = seg[7].to_be_bytes();
                return v4_non_public(Ipv4Addr::new(a, b, c, d));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (seg[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated, still private)
                || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
                || (seg[0] == 0x0064 && seg[1] == 0xff9b) // NAT64 to whatever v4 address
        }
    }
}

fn v4_non_public(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

/// The registry client's egress rules, from [`RegistryPolicy`].
#[derive(Debug, Clone, Default)]
pub struct Egress {
    allow_private: bool,
    allowed_hosts: Vec<String>,
}

impl Egress {
    /// The rules of `policy`.
    pub fn new(policy: &RegistryPolicy) -> Self {
        Egress {
            allow_private: policy.allow_private_networks,
            allowed_hosts: policy
                .allowed_hosts
                .iter()
                .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
        }
    }

    /// Whether non-public addresses are allowed.
    pub fn allows_private(&self) -> bool {
        self.allow_private
    }

    /// Checks the host of an http(s) URL against the rules. The message says what to change.
    pub fn check_url(&self, url: &Url) -> Result<(), String> {
        let Some(host) = url.host() else {
            return Err("the URL has no host".into());
        };
        let name = match &host {
            Host::Domain(d) => d.trim_end_matches('.').to_ascii_lowercase(),
            Host::Ipv4(ip) => ip.to_string(),
            Host::Ipv6(ip) => ip.to_string(),
        };
        if !self.allowed_hosts.is_empty() && !self.allowed_hosts.iter().any(|p| matches(p, &name)) {
            return Err(format!(
                "the host {name} is not on this gateway's registry allow-list (HIVEGRAPH_REGISTRY_ALLOWED_HOSTS)"
            ));
        }
        if self.allow_private {
            return Ok(());
        }
        let literal = match host {
            Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            Host::Domain(_) => None,
        };
        let local_name = name == "localhost" || name.ends_with(".localhost");
        if literal.is_some_and(is_non_public) || local_name {
            return Err(format!(
                "the host {name} is a loopback, private or link-local address; registries on \
                 private networks need HIVEGRAPH_ALLOW_PRIVATE_REGISTRIES=true"
            ));
        }
        Ok(())
    }
}

/// `pattern` is a host name, or `*.` followed by a domain that matches its subdomains.
fn matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(domain) => host
            .strip_suffix(domain)
            .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
        None => pattern == host,
    }
}

/// Resolves names with the system resolver and keeps only public addresses.
#[derive(Debug, Clone, Default)]
pub struct PublicOnlyResolver;

/// A name resolved only to addresses the gateway may not connect to.
#[derive(Debug, thiserror::Error)]
#[error(
    "{0} resolves only to loopback, private or link-local addresses; registries on private networks need HIVEGRAPH_ALLOW_PRIVATE_REGISTRIES=true"
)]
pub struct NonPublicName(String);

impl reqwest::dns::Resolve for PublicOnlyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| !is_non_public(a.ip()))
                .collect();
            if public.is_empty() {
                return Err(
                    Box::new(NonPublicName(host)) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn egress(private: bool, hosts: &[&str]) -> Egress {
        Egress::new(&RegistryPolicy {
            allow_file_urls: false,
            allow_private_networks: private,
            allowed_hosts: hosts.iter().map(|h| h.to_string()).collect(),
        })
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn non_public_ranges() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
            "::169.254.169.254",
            "::10.0.0.1",
            "fec0::1",
            "feff::1",
        ] {
            assert!(is_non_public(ip.parse().unwrap()), "{ip} must be blocked");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
        ] {
            assert!(!is_non_public(ip.parse().unwrap()), "{ip} is public");
        }
    }

    #[test]
    fn literal_private_hosts_are_refused_unless_allowed() {
        let strict = egress(false, &[]);
        for u in [
            "http://127.0.0.1:8080/r.json",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/r.json",
            "http://localhost/r.json",
            "http://api.localhost/r.json",
            "http://10.0.0.7/r.json",
        ] {
            let err = strict.check_url(&url(u)).unwrap_err();
            assert!(
                err.contains("HIVEGRAPH_ALLOW_PRIVATE_REGISTRIES"),
                "{u}: {err}"
            );
        }
        assert!(
            strict
                .check_url(&url("https://registry.example.com/x"))
                .is_ok()
        );
        assert!(strict.check_url(&url("https://8.8.8.8/x")).is_ok());
        let open = egress(true, &[]);
        assert!(open.check_url(&url("http://127.0.0.1:8080/r.json")).is_ok());
    }

    #[test]
    fn allow_list_patterns() {
        let e = egress(
            true,
            &[
                "registry.example.com",
                "*.github.io",
                " Upper.Example.ORG. ",
            ],
        );
        assert!(e.check_url(&url("https://registry.example.com/x")).is_ok());
        assert!(e.check_url(&url("https://REGISTRY.example.com./x")).is_ok());
        assert!(e.check_url(&url("https://stacklok.github.io/x")).is_ok());
        assert!(e.check_url(&url("https://a.b.github.io/x")).is_ok());
        assert!(e.check_url(&url("https://upper.example.org/x")).is_ok());
        for bad in [
            "https://github.io/x",
            "https://evilgithub.io/x",
            "https://registry.example.com.evil.net/x",
            "https://other.example.com/x",
        ] {
            let err = e.check_url(&url(bad)).unwrap_err();
            assert!(err.contains("allow-list"), "{bad}: {err}");
        }
    }

    #[tokio::test]
    async fn the_resolver_drops_non_public_addresses() {
        use reqwest::dns::Resolve;
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let err = match PublicOnlyResolver.resolve(name).await {
            Ok(addrs) => panic!("localhost resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("resolves only to"), "{err}");
    }
}
