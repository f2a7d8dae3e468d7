//! Who a request is about (its tenant), and reading its query string.
//!
//! The tenant is named like a Pubky homeserver names it: the `pubky-host` header, else the
//! `?pubky-host=` query parameter, else a label of the `Host` header that parses as a public
//! key. Whether the request may act for its tenant is `session`'s question.

use axum::http::{header, HeaderMap, Uri};

use super::error::{Error, Result};
use crate::keys;

pub const PUBKY_HOST: &str = "pubky-host";

/// Parse a tenant's public key; the canonical z32 string on success.
fn parse_user(value: &str) -> Result<String> {
    keys::parse_user(value)
        .map_err(|err| Error::bad_request(format!("{value:?} is not a public key: {err}")))
}

/// The tenant the request names, if it names one.
pub fn tenant(headers: &HeaderMap, uri: &Uri) -> Result<Option<String>> {
    if let Some(value) = headers.get(PUBKY_HOST) {
        let value = value
            .to_str()
            .map_err(|_| Error::bad_request("the pubky-host header is not text"))?;
        return parse_user(value).map(Some);
    }
    if let Some(value) = query_param(uri, PUBKY_HOST) {
        return parse_user(&value).map(Some);
    }
    Ok(host_name(headers)
        .rsplit('.')
        .find_map(|label| keys::parse(label).ok()))
}

/// The `Host` header's name, without its port: `a.example:80` -> `a.example`,
/// `[::1]:6287` -> `::1`. Empty when there is no (textual) `Host`.
pub fn host_name(headers: &HeaderMap) -> &str {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    strip_port(host)
}

fn strip_port(host: &str) -> &str {
    if let Some(bracketed) = host.strip_prefix('[') {
        return bracketed.split_once(']').map_or(bracketed, |(ip, _)| ip);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

/// The tenant, required: reads of `/pub/` and every write need one.
pub fn require_tenant(headers: &HeaderMap, uri: &Uri) -> Result<String> {
    tenant(headers, uri)?.ok_or_else(|| {
        Error::bad_request(
            "no tenant: name the user with the pubky-host header or ?pubky-host=<z32>",
        )
    })
}

/// The first value of a query parameter, percent-decoded.
pub fn query_param(uri: &Uri, name: &str) -> Option<String> {
    query_pairs(uri)
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

/// A boolean query parameter, by the one rule every endpoint uses (Pubky's `parse_bool`):
/// `true`, `yes`, `1`, or the bare key are true; `false`, `no`, `0` are false; any case.
/// Anything else is a 400. (`/events-stream` keeps Pubky's own, older rule for its two flags:
/// see `pubky_events`.)
pub fn parse_flag(name: &str, value: &str) -> Result<bool> {
    match value.to_ascii_lowercase().as_str() {
        "" | "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err(Error::bad_request(format!(
            "Invalid boolean parameter: {name}={value:?}; use true, yes, 1 or false, no, 0"
        ))),
    }
}

/// Every `key=value` of the query, percent-decoded (`+` is a space, as in forms).
pub fn query_pairs(uri: &Uri) -> impl Iterator<Item = (String, String)> + '_ {
    decode_form(uri.query().unwrap_or_default())
}

/// Every `key=value` of a query string or a form body, percent-decoded.
pub fn decode_form(text: &str) -> impl Iterator<Item = (String, String)> + '_ {
    text.split('&').filter(|pair| !pair.is_empty()).map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode_component(key), decode_component(value))
    })
}

fn decode_component(raw: &str) -> String {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_boolean_rule() {
        for truthy in ["", "true", "TRUE", "yes", "Yes", "1"] {
            assert_eq!(parse_flag("x", truthy).ok(), Some(true), "{truthy:?}");
        }
        for falsy in ["false", "False", "no", "NO", "0"] {
            assert_eq!(parse_flag("x", falsy).ok(), Some(false), "{falsy:?}");
        }
        for bad in ["maybe", "2", "on", " true", "t"] {
            let err = parse_flag("shallow", bad).expect_err(bad);
            assert!(err
                .to_string()
                .starts_with("Invalid boolean parameter: shallow="));
        }
    }

    #[test]
    fn host_ports_are_stripped_for_every_form() {
        assert_eq!(strip_port("example.com:6287"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:6287"), "::1");
        assert_eq!(strip_port("[::1]"), "::1");
        assert_eq!(strip_port("[::ffff:1.2.3.4]:80"), "::ffff:1.2.3.4");
        assert_eq!(strip_port("127.0.0.1:80"), "127.0.0.1");
        assert_eq!(strip_port("::1"), "::1");
        assert_eq!(strip_port("a:b"), "a:b");
        assert_eq!(strip_port(""), "");
    }
}
