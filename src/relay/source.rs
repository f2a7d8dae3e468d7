//! What a relay follows: a source spec, parsed and written back in one canonical form.
//!
//! - `http(s)://host[:port]`: a Hearth homeserver or relay, followed on `/firehose`;
//! - `pubky+http(s)://host[:port]`: a Pubky homeserver, followed by paging `/events/`;
//! - `<z32>`: a homeserver known by its key, located through its pkarr record;
//! - `<z32>@<url>`: either URL form with the homeserver's key named (a Pubky homeserver's
//!   key cannot be learnt from its URL; a Hearth one's `GET /` is checked against it).
//!
//! The canonical text (`Display`) names the source everywhere: in `/relay/sources`, in the
//! admin API, and as the key of its row in the store.

use std::fmt;

use serde::Deserialize;

use crate::keys::{self, USER_KEY_LEN};

/// Why a text is not a source spec; the message is what an operator sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("source {spec:?}: {reason}")]
pub struct SpecError {
    spec: String,
    reason: String,
}

impl SpecError {
    fn new(spec: &str, reason: impl Into<String>) -> Self {
        SpecError {
            spec: spec.to_string(),
            reason: reason.into(),
        }
    }
}

const FORMS: &str = "a source is http(s)://host[:port] (a Hearth homeserver or relay), \
    pubky+http(s)://host[:port] (a Pubky homeserver), a homeserver's key (z32), or <z32>@<url>";

/// How a source is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Hearth's `/firehose`, resumed with `Last-Event-ID`.
    Hearth,
    /// Pubky's `/events/` pages.
    Pubky,
}

/// Where a source is: its protocol and base URL (`http(s)://host[:port]`, no trailing slash).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub protocol: Protocol,
    pub base: String,
}

impl Endpoint {
    /// The URL of `path` (which starts with `/`) at this endpoint.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.protocol {
            Protocol::Hearth => f.write_str(&self.base),
            Protocol::Pubky => write!(f, "pubky+{}", self.base),
        }
    }
}

/// A parsed source spec: a key, an endpoint, or both.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceSpec {
    /// The homeserver's key, when the spec names it.
    pub key: Option<String>,
    /// Where it is, unless it is to be found by its key.
    pub endpoint: Option<Endpoint>,
}

impl SourceSpec {
    pub fn parse(text: &str) -> Result<SourceSpec, SpecError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(SpecError::new(text, FORMS));
        }
        let (key, rest) = match text.split_once('@') {
            Some((key, rest)) if !key.contains(':') && !key.contains('/') => (Some(key), rest),
            _ if !text.contains("://") => (Some(text), ""),
            _ => (None, text),
        };
        let key = key
            .map(|key| {
                keys::canonical(key).map_err(|err| {
                    SpecError::new(text, format!("{key:?} is not a homeserver key: {err}"))
                })
            })
            .transpose()?;
        let endpoint = if rest.is_empty() {
            None
        } else {
            Some(parse_endpoint(rest).map_err(|reason| SpecError::new(text, reason))?)
        };
        Ok(SourceSpec { key, endpoint })
    }
}

fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
    let (protocol, url) = match text.split_once("://") {
        Some((scheme, _)) => match scheme.to_ascii_lowercase().as_str() {
            "http" | "https" => (Protocol::Hearth, text),
            "pubky+http" | "pubky+https" => (Protocol::Pubky, &text["pubky+".len()..]),
            _ => return Err(format!("unknown scheme {scheme:?}; {FORMS}")),
        },
        None => return Err(FORMS.to_string()),
    };
    let parsed = reqwest::Url::parse(url).map_err(|err| format!("{url:?}: {err}"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("a source URL carries no user or password".into());
    }
    if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() || parsed.fragment().is_some()
    {
        return Err(format!(
            "a source URL is scheme://host[:port] only, without a path or query: {url:?}"
        ));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| format!("{url:?} names no host"))?;
    let base = match parsed.port() {
        Some(port) => format!("{}://{host}:{port}", parsed.scheme()),
        None => format!("{}://{host}", parsed.scheme()),
    };
    Ok(Endpoint { protocol, base })
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.key, &self.endpoint) {
            (Some(key), Some(endpoint)) => write!(f, "{key}@{endpoint}"),
            (Some(key), None) => f.write_str(key),
            (None, Some(endpoint)) => write!(f, "{endpoint}"),
            (None, None) => Ok(()),
        }
    }
}

impl std::str::FromStr for SourceSpec {
    type Err = SpecError;

    fn from_str(text: &str) -> Result<Self, SpecError> {
        SourceSpec::parse(text)
    }
}

/// A `[[source]]` table of the config file: `url`, `key`, or both; or `spec`, the whole
/// spec as the command line writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceTable {
    /// `http(s)://…` or `pubky+http(s)://…`.
    pub url: Option<String>,
    /// The homeserver's key, z32.
    pub key: Option<String>,
    /// Any spec form (instead of `url` and `key`).
    pub spec: Option<String>,
}

impl TryFrom<SourceTable> for SourceSpec {
    type Error = SpecError;

    fn try_from(table: SourceTable) -> Result<Self, SpecError> {
        match (table.key, table.url, table.spec) {
            (None, None, Some(spec)) => SourceSpec::parse(&spec),
            (_, _, Some(spec)) => Err(SpecError::new(&spec, "give spec alone, or url and key")),
            (Some(key), Some(url), None) => SourceSpec::parse(&format!("{key}@{url}")),
            (None, Some(url), None) => SourceSpec::parse(&url),
            (Some(key), None, None) if key.len() == USER_KEY_LEN => SourceSpec::parse(&key),
            (Some(key), None, None) => Err(SpecError::new(&key, "not a homeserver key")),
            (None, None, None) => Err(SpecError::new(
                "",
                "a [[source]] needs a url, a key, both, or a spec",
            )),
        }
    }
}

impl<'de> Deserialize<'de> for SourceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let table = SourceTable::deserialize(deserializer)?;
        SourceSpec::try_from(table).map_err(serde::de::Error::custom)
    }
}

/// Written back as the `spec` form of a `[[source]]` table, which reads back the same.
impl serde::Serialize for SourceSpec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut table = serializer.serialize_struct("SourceTable", 1)?;
        table.serialize_field("spec", &self.to_string())?;
        table.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "o1gg96ewuojmopcjbz8895478wdtxtzzuxnfjjz8o8e77csa1ngo";

    fn canonical(text: &str) -> String {
        SourceSpec::parse(text).expect(text).to_string()
    }

    #[test]
    fn every_form_parses_to_one_canonical_text() {
        assert_eq!(canonical("http://127.0.0.1:6287"), "http://127.0.0.1:6287");
        assert_eq!(canonical(" HTTP://Example.COM/ "), "http://example.com");
        assert_eq!(canonical("https://example.com:443"), "https://example.com");
        assert_eq!(
            canonical("pubky+http://127.0.0.1:6286/"),
            "pubky+http://127.0.0.1:6286"
        );
        assert_eq!(canonical(KEY), KEY);
        assert_eq!(
            canonical(&format!("{KEY}@pubky+https://hs.example")),
            format!("{KEY}@pubky+https://hs.example")
        );
        let spec = SourceSpec::parse(&format!("{KEY}@http://127.0.0.1:1")).unwrap();
        assert_eq!(spec.key.as_deref(), Some(KEY));
        let endpoint = spec.endpoint.unwrap();
        assert_eq!(endpoint.protocol, Protocol::Hearth);
        assert_eq!(endpoint.url("/firehose"), "http://127.0.0.1:1/firehose");
    }

    #[test]
    fn refuses_what_is_not_a_source() {
        for bad in [
            "",
            "127.0.0.1:6287",
            "ftp://x",
            "http://",
            "http://x/firehose",
            "http://x?a=b",
            "http://u:p@x",
            "nope@http://x",
            &KEY[1..],
            "pubky+ftp://x",
        ] {
            assert!(SourceSpec::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn config_tables() {
        #[derive(Deserialize)]
        struct File {
            source: Vec<SourceSpec>,
        }
        let file: File = toml::from_str(&format!(
            "[[source]]\nurl = \"http://127.0.0.1:1\"\n[[source]]\nurl = \"pubky+http://h\"\nkey = \"{KEY}\"\n[[source]]\nkey = \"{KEY}\"\n[[source]]\nspec = \"{KEY}@http://h:2\"\n"
        ))
        .unwrap();
        let texts: Vec<String> = file.source.iter().map(ToString::to_string).collect();
        assert_eq!(
            texts,
            vec![
                "http://127.0.0.1:1".to_string(),
                format!("{KEY}@pubky+http://h"),
                KEY.to_string(),
                format!("{KEY}@http://h:2"),
            ]
        );
        assert!(toml::from_str::<File>("[[source]]\nurl = \"ftp://x\"\n").is_err());
        assert!(toml::from_str::<File>("[[source]]\nuri = \"http://x\"\n").is_err());
        assert!(toml::from_str::<File>("[[source]]\n").is_err());
        assert!(
            toml::from_str::<File>("[[source]]\nspec = \"http://x\"\nurl = \"http://x\"\n")
                .is_err()
        );
    }
}
