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
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let host = host.rsplit_once(':').map_or(host, |(name, _port)| name);
    Ok(host.rsplit('.').find_map(|label| keys::parse(label).ok()))
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
