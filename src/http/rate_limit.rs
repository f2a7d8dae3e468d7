//! Request-count rate limits, configured as the Pubky homeserver configures them: a list of
//! `[[rate_limits]]` tables, each with a `path` glob (fast-glob, as Pubky: `*` within a
//! segment, `**` across), one `method`, a `quota` like `10r/m` (`s`, `m`, `h`, `d`), a `key`
//! (`ip`: the client address; `user`: the request's tenant), an optional `burst` (default:
//! the quota's count) and an optional `whitelist` of addresses or keys that are never limited.
//!
//! Every rule that matches a request is checked, the shortest window first, and the first
//! refusal answers `429 Rate limit exceeded` with `Retry-After` (whole seconds, at least 1), so
//! a refusal by a short window does not spend a longer window's quota. Each rule is a GCRA
//! limiter keyed by client or user (`governor`): a quota of N per unit lets N through at once,
//! then one every unit/N.
//!
//! The client address is the connection's peer, or, when the peer is one of
//! `trusted_proxies`, the last address of `X-Forwarded-For` that is not itself a trusted proxy
//! (the address the nearest untrusted hop connected from). A client that is not behind a
//! trusted proxy cannot choose its address by sending the header.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use serde::Deserialize;

use super::error::Error;
use super::tenant::tenant;
use crate::clock::now_secs;

/// One `[[rate_limits]]` table, as written in the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitRule {
    pub path: String,
    pub method: String,
    pub quota: String,
    pub key: LimitKey,
    #[serde(default)]
    pub burst: Option<u32>,
    #[serde(default)]
    pub whitelist: Vec<String>,
}

/// What a rule counts requests by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitKey {
    /// The client's address.
    Ip,
    /// The user the request is about (its tenant), whoever sends it.
    User,
}

/// A parsed quota: `count` requests per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestQuota {
    pub count: NonZeroU32,
    pub window: Duration,
}

impl RequestQuota {
    /// `<n>r/<s|m|h|d>`, n at least 1.
    pub fn parse(text: &str) -> Result<RequestQuota, String> {
        let (count, unit) = text.split_once('/').ok_or_else(|| {
            format!("invalid quota {text:?}: expected <count>r/<s|m|h|d>, e.g. \"10r/m\"")
        })?;
        let count = count
            .strip_suffix('r')
            .ok_or_else(|| format!("invalid quota {text:?}: the count must end with r"))?
            .parse::<NonZeroU32>()
            .map_err(|_| format!("invalid quota {text:?}: the count is a whole number above 0"))?;
        let window = match unit {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            _ => {
                return Err(format!(
                    "invalid time unit in quota {text:?}: use s, m, h or d"
                ))
            }
        };
        Ok(RequestQuota { count, window })
    }
}

impl RateLimitRule {
    /// Refuse a rule that cannot work; the message names what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let quota = RequestQuota::parse(&self.quota)?;
        let _ = quota;
        Method::from_bytes(self.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("invalid method {:?}", self.method))?;
        if self.burst == Some(0) {
            return Err("burst must be at least 1".into());
        }
        for entry in &self.whitelist {
            let fits = match self.key {
                LimitKey::Ip => entry.parse::<IpAddr>().is_ok(),
                LimitKey::User => crate::keys::canonical(entry).is_ok(),
            };
            if !fits {
                return Err(format!(
                    "whitelist entry {entry:?} is not {} (key = {:?})",
                    match self.key {
                        LimitKey::Ip => "an IP address",
                        LimitKey::User => "a z32 public key",
                    },
                    self.key
                ));
            }
        }
        Ok(())
    }
}

/// Parse `trusted_proxies` entries: addresses (`10.0.0.1`) or networks (`10.0.0.0/8`).
pub fn parse_proxies(entries: &[String]) -> Result<Vec<IpNet>, String> {
    entries
        .iter()
        .map(|entry| {
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!("trusted_proxies entry {entry:?} is not an address or network")
                })
        })
        .collect()
}

/// A rule ready to check.
struct Limit {
    rule: RateLimitRule,
    method: Method,
    window: Duration,
    limiter: DefaultKeyedRateLimiter<String>,
}

/// Every configured limit, shared by the public router's requests.
pub struct Limits {
    limits: Vec<Limit>,
    proxies: Vec<IpNet>,
    sweeps: Sweeps,
}

/// How often keys that went quiet are dropped from the limiters' tables.
const SWEEP_SECS: u64 = 60;

/// When keyed limiters last forgot their quiet keys; says when to do it again, to one caller.
#[derive(Debug, Default)]
pub(super) struct Sweeps {
    /// Unix seconds of the last sweep.
    last: AtomicU64,
}

impl Sweeps {
    /// True once every `SWEEP_SECS`, for the one caller that claims the sweep.
    pub(super) fn due(&self) -> bool {
        let now = now_secs();
        let last = self.last.load(Ordering::Relaxed);
        now >= last + SWEEP_SECS
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

impl Limits {
    /// Build from validated rules (`Config::validate` ran first; a bad rule is skipped with a
    /// logged reason rather than panicking).
    pub fn new(rules: &[RateLimitRule], trusted_proxies: &[String]) -> Arc<Limits> {
        let mut limits: Vec<Limit> = rules
            .iter()
            .filter_map(|rule| match Self::limit(rule) {
                Ok(limit) => Some(limit),
                Err(err) => {
                    tracing::error!(path = %rule.path, error = %err, "rate limit skipped");
                    None
                }
            })
            .collect();
        // Shortest window first: its refusal must not spend a longer window's quota.
        limits.sort_by_key(|limit| limit.window);
        let proxies = parse_proxies(trusted_proxies).unwrap_or_else(|err| {
            tracing::error!(error = %err, "trusted_proxies ignored");
            Vec::new()
        });
        Arc::new(Limits {
            limits,
            proxies,
            sweeps: Sweeps::default(),
        })
    }

    fn limit(rule: &RateLimitRule) -> Result<Limit, String> {
        rule.validate()?;
        let quota = RequestQuota::parse(&rule.quota)?;
        let period = quota.window / quota.count.get();
        let burst = rule.burst.and_then(NonZeroU32::new).unwrap_or(quota.count);
        let governor_quota = Quota::with_period(period)
            .ok_or_else(|| format!("quota {:?} is too high", rule.quota))?
            .allow_burst(burst);
        let method = Method::from_bytes(rule.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("invalid method {:?}", rule.method))?;
        Ok(Limit {
            rule: rule.clone(),
            method,
            window: quota.window,
            limiter: RateLimiter::dashmap(governor_quota),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }

    /// The client's address: the peer, or behind a trusted proxy, from `X-Forwarded-For`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let trusted = |ip: &IpAddr| self.proxies.iter().any(|net| net.contains(ip));
        if !trusted(&peer) {
            return peer;
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|part| part.trim().parse::<IpAddr>().ok())
            .collect();
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !trusted(ip))
            .unwrap_or(peer)
    }

    /// Check a request against every rule that matches it.
    fn check(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        uri: &axum::http::Uri,
        peer: Option<SocketAddr>,
    ) -> Result<(), Error> {
        self.sweep();
        for limit in &self.limits {
            if limit.method != *method || !fast_glob::glob_match(&limit.rule.path, path) {
                continue;
            }
            let key = match limit.rule.key {
                LimitKey::Ip => {
                    let peer = peer.ok_or_else(|| {
                        Error::Internal("Missing client address for rate limiting".into())
                    })?;
                    self.client_ip(peer.ip(), headers).to_string()
                }
                LimitKey::User => tenant(headers, uri).ok().flatten().ok_or_else(|| {
                    Error::bad_request("Failed to extract user for rate limiting")
                })?,
            };
            if limit
                .rule
                .whitelist
                .iter()
                .any(|entry| whitelisted(entry, &key))
            {
                continue;
            }
            if let Err(not_until) = limit.limiter.check_key(&key) {
                let wait = not_until.wait_time_from(limit.limiter.clock().now());
                crate::telemetry::rate_limited(&limit.rule.path, limit.method.as_str());
                return Err(Error::TooManyRequests {
                    retry_after_secs: wait.as_secs().max(1),
                });
            }
        }
        Ok(())
    }

    /// Now and then, forget keys whose cells have all refilled (they are as if never seen).
    fn sweep(&self) {
        if !self.sweeps.due() {
            return;
        }
        for limit in &self.limits {
            limit.limiter.retain_recent();
        }
    }
}

fn whitelisted(entry: &str, key: &str) -> bool {
    match (entry.parse::<IpAddr>(), key.parse::<IpAddr>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => entry == key,
    }
}

/// The middleware: refuse what a limit refuses, before anything else runs.
pub async fn layer(State(limits): State<Arc<Limits>>, request: Request, next: Next) -> Response {
    if limits.is_empty() {
        return next.run(request).await;
    }
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    let checked = limits.check(
        request.method(),
        request.uri().path(),
        request.headers(),
        request.uri(),
        peer,
    );
    match checked {
        Ok(()) => next.run(request).await,
        Err(err) => err.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(path: &str, quota: &str, key: LimitKey) -> RateLimitRule {
        RateLimitRule {
            path: path.into(),
            method: "get".into(),
            quota: quota.into(),
            key,
            burst: None,
            whitelist: Vec::new(),
        }
    }

    #[test]
    fn quotas_parse_as_pubky_writes_them() {
        let q = RequestQuota::parse("10r/m").unwrap();
        assert_eq!((q.count.get(), q.window), (10, Duration::from_secs(60)));
        for bad in ["10/m", "0r/m", "10r/y", "r/m", "10r", "10mb/s", "-1r/s"] {
            assert!(RequestQuota::parse(bad).is_err(), "{bad}");
        }
        assert!(rule("/pub/**", "5r/s", LimitKey::Ip).validate().is_ok());
        let mut bad = rule("/pub/**", "5r/s", LimitKey::Ip);
        bad.whitelist = vec!["not-an-ip".into()];
        assert!(bad.validate().is_err());
        bad.whitelist = vec!["127.0.0.1".into()];
        bad.burst = Some(0);
        assert!(bad.validate().is_err());
    }

    #[test]
    fn globs_match_as_pubky_matches_them() {
        assert!(fast_glob::glob_match("/pub/*", "/pub/a"));
        assert!(!fast_glob::glob_match("/pub/*", "/pub/a/b"));
        assert!(fast_glob::glob_match("/pub/**", "/pub/a/b"));
        assert!(fast_glob::glob_match("/session", "/session"));
    }

    #[test]
    fn the_forwarded_address_counts_only_behind_a_trusted_proxy() {
        let limits = Limits::new(&[], &["10.0.0.0/8".into(), "127.0.0.1".into()]);
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "203.0.113.9, 10.1.2.3".parse().unwrap());
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(
            limits.client_ip(proxy, &headers),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(limits.client_ip(stranger, &headers), stranger);
        assert_eq!(limits.client_ip(proxy, &HeaderMap::new()), proxy);
    }

    #[test]
    fn a_quota_lets_its_count_through_then_refuses_with_a_wait() {
        let limits = Limits::new(&[rule("/pub/**", "2r/m", LimitKey::Ip)], &[]);
        let uri: axum::http::Uri = "/pub/a".parse().unwrap();
        let peer = Some("192.0.2.1:5000".parse().unwrap());
        let other = Some("192.0.2.2:5000".parse().unwrap());
        let check = |peer| limits.check(&Method::GET, "/pub/a", &HeaderMap::new(), &uri, peer);
        assert!(check(peer).is_ok());
        assert!(check(peer).is_ok());
        match check(peer) {
            Err(Error::TooManyRequests { retry_after_secs }) => {
                assert!((1..=30).contains(&retry_after_secs), "{retry_after_secs}")
            }
            other => panic!("expected 429, got {other:?}"),
        }
        assert!(check(other).is_ok(), "another client has its own quota");
        assert!(limits
            .check(&Method::PUT, "/pub/a", &HeaderMap::new(), &uri, peer)
            .is_ok());
    }
}
