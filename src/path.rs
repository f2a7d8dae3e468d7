//! File paths: the rules of the contract (spec section 3), applied once at the edge.
//!
//! A `FilePath` exists only in normalized, valid form, so storage and the firehose never see
//! `//`, `.`, `..`, control characters or over-long segments. Percent-encoding is decoded here,
//! which is why `%2e%2e` cannot be used to climb out of `/pub/`. Refusals are `PathError`s;
//! the HTTP layer answers them with 400.

/// Why a path is refused; the message is what a client sees in its 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is not valid UTF-8 once percent-decoded")]
    NotUtf8,
    #[error("path must start with /pub/")]
    NotAbsolute,
    #[error("path is {0} bytes long; at most {MAX_PATH_BYTES} are allowed")]
    TooLong(usize),
    #[error("path segment is {0} bytes long; at most {MAX_SEGMENT_BYTES} are allowed")]
    SegmentTooLong(usize),
    #[error("path contains a control character")]
    ControlCharacter,
    #[error("path {0} is outside /pub/")]
    OutsidePub(String),
    #[error("{0} is a directory; a file path must not end with /")]
    IsDirectory(String),
}

type Result<T> = std::result::Result<T, PathError>;

/// Every stored path lives under this root.
pub const PUBLIC_ROOT: &str = "/pub/";
pub const MAX_SEGMENT_BYTES: usize = 255;
pub const MAX_PATH_BYTES: usize = 4096;

/// A normalized path under `/pub/`. Ends with `/` when it names a directory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FilePath(String);

impl FilePath {
    /// Decode and normalize a request path (as it appears in the URI).
    pub fn from_uri_path(raw: &str) -> Result<Self> {
        let decoded = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| PathError::NotUtf8)?;
        Self::parse(&decoded)
    }

    /// Normalize an already-decoded path: `//` collapses, `.` drops, `..` pops (never above
    /// the root). The result must lie under `/pub/`.
    pub fn parse(path: &str) -> Result<Self> {
        if !path.starts_with('/') {
            return Err(PathError::NotAbsolute);
        }
        if path.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong(path.len()));
        }
        let mut segments: Vec<&str> = Vec::new();
        for segment in path.split('/') {
            match segment {
                "" | "." => {}
                ".." => {
                    segments.pop();
                }
                _ => {
                    if segment.len() > MAX_SEGMENT_BYTES {
                        return Err(PathError::SegmentTooLong(segment.len()));
                    }
                    if segment.chars().any(char::is_control) {
                        return Err(PathError::ControlCharacter);
                    }
                    segments.push(segment);
                }
            }
        }
        // A trailing `/`, `/.` or `/..` leaves a directory; so does the bare root `/pub`.
        let is_dir = path.ends_with('/')
            || path.ends_with("/.")
            || path.ends_with("/..")
            || segments == ["pub"];
        let mut normalized = String::with_capacity(path.len());
        for segment in &segments {
            normalized.push('/');
            normalized.push_str(segment);
        }
        if is_dir || segments.is_empty() {
            normalized.push('/');
        }
        if !normalized.starts_with(PUBLIC_ROOT) && normalized != "/pub/" {
            return Err(PathError::OutsidePub(normalized));
        }
        Ok(FilePath(normalized))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `path` is already a file path as `parse` would write it (under `/pub/`, no
    /// empty, `.` or `..` segment, no trailing `/`, within the limits, no control
    /// character): one pass, no allocation, for paths that arrive normalized (a relay's
    /// events). False means only "not sure": `parse` has the answer and the reason.
    pub fn is_normalized_file(path: &str) -> bool {
        let Some(rest) = path.strip_prefix(PUBLIC_ROOT) else {
            return false;
        };
        path.len() <= MAX_PATH_BYTES
            && path.is_ascii()
            && rest.split('/').all(|segment| {
                !matches!(segment, "" | "." | "..")
                    && segment.len() <= MAX_SEGMENT_BYTES
                    && !segment.bytes().any(|b| b.is_ascii_control())
            })
    }

    /// True when the path names a directory (ends with `/`).
    pub fn is_dir(&self) -> bool {
        self.0.ends_with('/')
    }

    /// The path of a file: directories cannot be written or deleted.
    pub fn into_file(self) -> Result<Self> {
        if self.is_dir() {
            return Err(PathError::IsDirectory(self.0));
        }
        Ok(self)
    }
}

impl std::fmt::Display for FilePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        FilePath::parse(raw).expect(raw).0
    }

    #[test]
    fn normalizes() {
        assert_eq!(ok("/pub/a/b.txt"), "/pub/a/b.txt");
        assert_eq!(ok("/pub//a///b"), "/pub/a/b");
        assert_eq!(ok("/pub/./a/./b"), "/pub/a/b");
        assert_eq!(ok("/pub/a/../b"), "/pub/b");
        assert_eq!(ok("/pub/a/"), "/pub/a/");
        assert_eq!(ok("/pub/a/.."), "/pub/");
        assert_eq!(ok("/pub"), "/pub/");
    }

    #[test]
    fn refuses() {
        for bad in [
            "pub/a",
            "/pub/../etc/passwd",
            "/../../pub/../x",
            "/priv/a",
            "/",
            "/pub/a\u{0}b",
            "/pub/a\nb",
        ] {
            assert!(FilePath::parse(bad).is_err(), "{bad:?} should be refused");
        }
        let long = format!("/pub/{}", "x".repeat(256));
        assert!(FilePath::parse(&long).is_err());
        let deep = format!("/pub/{}", "a/".repeat(2100));
        assert!(FilePath::parse(&deep).is_err());
    }

    #[test]
    fn recognizes_normalized_file_paths() {
        for good in ["/pub/a", "/pub/a/b.json", "/pub/.x", "/pub/a..b"] {
            assert!(FilePath::is_normalized_file(good), "{good:?}");
            assert_eq!(ok(good), good);
        }
        for unsure in [
            "/pub/",
            "/pub",
            "/pub/a/",
            "/pub//a",
            "/pub/./a",
            "/pub/a/..",
            "/priv/a",
            "/pub/a\tb",
            "/pub/é",
        ] {
            assert!(!FilePath::is_normalized_file(unsure), "{unsure:?}");
        }
        let long = format!("/pub/{}", "x".repeat(256));
        assert!(!FilePath::is_normalized_file(&long));
    }

    #[test]
    fn decodes_percent_before_normalizing() {
        assert!(FilePath::from_uri_path("/pub/%2e%2e/%2e%2e/etc").is_err());
        assert_eq!(
            FilePath::from_uri_path("/pub/a%20b").unwrap().as_str(),
            "/pub/a b"
        );
        assert!(FilePath::from_uri_path("/pub/%ff").is_err());
        assert!(FilePath::from_uri_path("/pub/a%00").is_err());
    }
}
