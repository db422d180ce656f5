//! Which path a request takes: fast (the sidecar answers) or legacy (forwarded upstream).
//!
//! `rollout.percent` of requests take the fast path. The choice is sticky: a stable hash of
//! the configured header's value (else the client address) picks one of 100 buckets, so one
//! user sees one path, on every replica and across restarts. `x-memgate-route: fast|legacy`
//! forces a path.

use std::net::IpAddr;

use http::header::HeaderName;
use http::HeaderMap;
use xxhash_rust::xxh3::xxh3_64;

use crate::config::RolloutHandle;
use crate::front::error::ApiError;
use crate::front::http::ROUTE_HEADER;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoutePath {
    Fast,
    Legacy,
}

impl RoutePath {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fast => "fast",
            Self::Legacy => "legacy",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Router {
    rollout: RolloutHandle,
    sticky_header: Option<HeaderName>,
}

/// The bucket (0..100) of a sticky key.
pub fn bucket(key: &[u8]) -> u8 {
    (xxh3_64(key) % 100) as u8
}

impl Router {
    pub fn new(rollout: RolloutHandle, sticky_header: Option<HeaderName>) -> Self {
        Self {
            rollout,
            sticky_header,
        }
    }

    pub fn rollout(&self) -> &RolloutHandle {
        &self.rollout
    }

    /// The path for a request with these headers from this client.
    pub fn choose(&self, headers: &HeaderMap, client: IpAddr) -> Result<RoutePath, ApiError> {
        self.choose_by(headers, client.to_string().as_bytes())
    }

    /// The path of an MCP session, chosen once when it opens: sticky by the configured
    /// header, else by the `user` of its metadata, else by the session itself.
    pub fn choose_for_session(
        &self,
        headers: &HeaderMap,
        metadata_user: Option<&str>,
        session_id: &str,
    ) -> Result<RoutePath, ApiError> {
        let fallback = metadata_user
            .filter(|user| !user.is_empty())
            .unwrap_or(session_id);
        self.choose_by(headers, fallback.as_bytes())
    }

    /// Forced by `x-memgate-route`, else sticky by the configured header, else by `fallback`.
    fn choose_by(&self, headers: &HeaderMap, fallback: &[u8]) -> Result<RoutePath, ApiError> {
        if let Some(forced) = headers.get(ROUTE_HEADER) {
            return match forced.as_bytes() {
                b"fast" => Ok(RoutePath::Fast),
                b"legacy" => Ok(RoutePath::Legacy),
                _ => Err(ApiError::bad_request(
                    "invalid_route",
                    format!("`{ROUTE_HEADER}` must be `fast` or `legacy`"),
                )),
            };
        }
        let percent = self.rollout.percent();
        if percent >= 100 {
            return Ok(RoutePath::Fast);
        }
        if percent == 0 {
            return Ok(RoutePath::Legacy);
        }
        let sticky_value = self
            .sticky_header
            .as_ref()
            .and_then(|name| headers.get(name))
            .map(|value| value.as_bytes())
            .filter(|value| !value.is_empty());
        let in_rollout = match sticky_value {
            Some(value) => bucket(value) < percent,
            None => bucket(fallback) < percent,
        };
        Ok(if in_rollout {
            RoutePath::Fast
        } else {
            RoutePath::Legacy
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use http::HeaderValue;

    use super::*;

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn router(percent: u8) -> Router {
        Router::new(
            RolloutHandle::new(percent),
            Some(HeaderName::from_static("x-user-id")),
        )
    }

    fn user(id: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-user-id", HeaderValue::from_str(id).expect("valid"));
        headers
    }

    #[test]
    fn the_split_over_ten_thousand_users_matches_the_setting() {
        for percent in [1u8, 10, 25, 50, 75, 90, 99] {
            let router = router(percent);
            let fast = (0..10_000)
                .filter(|i| {
                    router.choose(&user(&format!("user-{i}")), LOCALHOST) == Ok(RoutePath::Fast)
                })
                .count();
            let observed = fast as f64 / 100.0;
            assert!(
                (observed - f64::from(percent)).abs() <= 2.0,
                "{percent}% configured, {observed}% observed"
            );
        }
    }

    #[test]
    fn one_user_stays_on_one_path() {
        let router = router(50);
        for i in 0..200 {
            let headers = user(&format!("user-{i}"));
            let first = router.choose(&headers, LOCALHOST);
            for _ in 0..3 {
                assert_eq!(router.choose(&headers, LOCALHOST), first);
            }
        }
    }

    #[test]
    fn raising_the_percentage_only_moves_users_to_fast() {
        let low = router(20);
        let high = router(60);
        for i in 0..2_000 {
            let headers = user(&format!("u{i}"));
            if low.choose(&headers, LOCALHOST) == Ok(RoutePath::Fast) {
                assert_eq!(high.choose(&headers, LOCALHOST), Ok(RoutePath::Fast));
            }
        }
    }

    #[test]
    fn the_client_address_is_the_fallback_key() {
        let router = router(50);
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let first = router.choose(&HeaderMap::new(), a);
        assert_eq!(router.choose(&HeaderMap::new(), a), first);
    }

    #[test]
    fn forcing_a_path() {
        let mut headers = user("someone");
        headers.insert(ROUTE_HEADER, HeaderValue::from_static("legacy"));
        assert_eq!(
            router(100).choose(&headers, LOCALHOST),
            Ok(RoutePath::Legacy)
        );
        headers.insert(ROUTE_HEADER, HeaderValue::from_static("fast"));
        assert_eq!(router(0).choose(&headers, LOCALHOST), Ok(RoutePath::Fast));
        headers.insert(ROUTE_HEADER, HeaderValue::from_static("sideways"));
        assert_eq!(
            router(50).choose(&headers, LOCALHOST).unwrap_err().code,
            "invalid_route"
        );
    }

    #[test]
    fn zero_and_hundred_are_absolute() {
        for i in 0..500 {
            let headers = user(&format!("{i}"));
            assert_eq!(router(0).choose(&headers, LOCALHOST), Ok(RoutePath::Legacy));
            assert_eq!(router(100).choose(&headers, LOCALHOST), Ok(RoutePath::Fast));
        }
    }
}
