//! Where a request comes from, as a browser says it: the page's `Origin`, and the `Host` the
//! page's script believed it was talking to (DNS rebinding).

use std::net::IpAddr;

/// The origins allowed by `security.allowedOrigins`.
#[derive(Debug, Clone)]
pub struct AllowedOrigins {
    any: bool,
    patterns: Vec<OriginPattern>,
}

/// `scheme://host[:port]`; without a port, any port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OriginPattern {
    scheme: String,
    host: String,
    port: Option<u16>,
}

/// An `Origin` header value, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    fn parse(value: &str) -> Option<Self> {
        let uri: http::Uri = value.parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let authority = uri.authority()?;
        if authority.as_str().contains('@')
            || uri.path_and_query().is_some_and(|p| p.as_str() != "/")
        {
            return None;
        }
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        Some(Self {
            scheme,
            host: authority.host().to_ascii_lowercase(),
            port: authority.port_u16().unwrap_or(default_port),
        })
    }
}

impl AllowedOrigins {
    /// From the configured list (checked by the config's validation; an entry that does not
    /// parse allows nothing).
    pub fn new(configured: &[String]) -> Self {
        let any = configured.iter().any(|origin| origin == "*");
        let patterns = configured
            .iter()
            .filter_map(|origin| {
                let uri: http::Uri = origin.parse().ok()?;
                let authority = uri.authority()?;
                Some(OriginPattern {
                    scheme: uri.scheme_str()?.to_ascii_lowercase(),
                    host: authority.host().to_ascii_lowercase(),
                    port: authority.port_u16(),
                })
            })
            .collect();
        Self { any, patterns }
    }

    /// Whether a page of `origin` (an `Origin` header value) may call memgate. `null`
    /// (sandboxed frames, `file:` pages) and anything unparsable may not, unless every origin
    /// is allowed.
    pub fn allows(&self, origin: &str) -> bool {
        if self.any {
            return true;
        }
        let Some(origin) = Origin::parse(origin.trim()) else {
            return false;
        };
        self.patterns.iter().any(|pattern| {
            pattern.scheme == origin.scheme
                && pattern.host == origin.host
                && pattern.port.is_none_or(|port| port == origin.port)
        })
    }
}

/// The host names served while listening on a loopback address: loopback names, and
/// `security.allowedHosts`.
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    extra: Vec<String>,
}

impl AllowedHosts {
    pub fn new(configured: &[String]) -> Self {
        Self {
            extra: configured
                .iter()
                .map(|host| host.to_ascii_lowercase())
                .collect(),
        }
    }

    /// Whether a request for `authority` (a `Host` header or an HTTP/2 `:authority`,
    /// `host[:port]`) is for memgate on this machine rather than for a name that an attacker's
    /// DNS pointed here.
    pub fn allows(&self, authority: &str) -> bool {
        let authority = authority.trim();
        // A `Host` carries no user part; one that does is not for us.
        let Ok(authority) = authority.parse::<http::uri::Authority>() else {
            return false;
        };
        if authority.as_str().contains('@') {
            return false;
        }
        let host = authority.host().to_ascii_lowercase();
        is_loopback_name(&host) || self.extra.contains(&host)
    }
}

/// `localhost`, a name under `.localhost` (which browsers resolve to loopback themselves), or
/// a loopback address.
fn is_loopback_name(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> AllowedOrigins {
        AllowedOrigins::new(&crate::config::SecurityConfig::default().allowed_origins)
    }

    #[test]
    fn loopback_pages_on_any_port_are_allowed_by_default() {
        let allowed = defaults();
        for origin in [
            "http://localhost:5173",
            "http://localhost",
            "https://127.0.0.1:8443",
            "http://[::1]:3000",
            "HTTP://LOCALHOST:1",
        ] {
            assert!(allowed.allows(origin), "{origin}");
        }
    }

    #[test]
    fn other_pages_are_not() {
        let allowed = defaults();
        for origin in [
            "http://evil.example",
            "http://127.0.0.2:8111",
            "http://localhost.evil.example",
            "null",
            "file://",
            "chrome-extension://abcdef",
            "http://user@localhost",
            "",
        ] {
            assert!(!allowed.allows(origin), "{origin}");
        }
    }

    #[test]
    fn a_configured_port_is_matched_exactly_and_defaults_apply() {
        let allowed = AllowedOrigins::new(&[
            "https://app.example.com".into(),
            "http://tools.example.com:8080".into(),
        ]);
        assert!(allowed.allows("https://app.example.com"));
        assert!(allowed.allows("https://app.example.com:444"));
        assert!(!allowed.allows("http://app.example.com"));
        assert!(allowed.allows("http://tools.example.com:8080"));
        assert!(!allowed.allows("http://tools.example.com"));
        assert!(AllowedOrigins::new(&["*".into()]).allows("http://anything.example"));
    }

    #[test]
    fn hosts_are_loopback_names_or_configured() {
        let hosts = AllowedHosts::new(&["memgate.internal".into()]);
        for host in [
            "localhost:8080",
            "127.0.0.1:8080",
            "127.0.0.2",
            "[::1]:8080",
            "app.localhost:8080",
            "LOCALHOST",
            "memgate.internal:8080",
        ] {
            assert!(hosts.allows(host), "{host}");
        }
        for host in [
            "evil.example:8080",
            "localhost.evil.example",
            "10.0.0.1:8080",
            "[::2]:80",
            "",
            "user@localhost",
        ] {
            assert!(!hosts.allows(host), "{host}");
        }
    }
}
