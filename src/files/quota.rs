//! Per-user limits, as the Pubky homeserver models them: each field is the server's default,
//! unlimited, or a value of the user's own. A signup token carries the limits its user gets;
//! the admin changes them later.
//!
//! Enforced here: the storage quota (`storage_quota_mb`, in MiB, over the server's default
//! `quota_bytes`) and `allowed_write_paths`. The bandwidth fields (`rate_read`, `rate_write`
//! and their bursts) are paced by the HTTP layer as bodies stream; this module says what they
//! amount to (`Bandwidth::kib_per_window`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One MiB, the unit of `storage_quota_mb`.
pub const MIB: u64 = 1024 * 1024;

/// A limit: the server's default, none, or the user's own value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Limit<T> {
    #[default]
    Default,
    Unlimited,
    Value(T),
}

impl<T> Limit<T> {
    pub fn is_default(&self) -> bool {
        matches!(self, Limit::Default)
    }
}

/// A bandwidth rate as Pubky writes it: `<n><kb|mb|gb>/<s|m|h|d>`, e.g. `10mb/s`. Kept in
/// its normalized text (unit in lower case); read back (from a store or a config file) only
/// if it parses.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Bandwidth(String);

impl TryFrom<String> for Bandwidth {
    type Error = String;

    fn try_from(text: String) -> Result<Bandwidth, String> {
        Bandwidth::parse(&text)
    }
}

impl From<Bandwidth> for String {
    fn from(rate: Bandwidth) -> String {
        rate.0
    }
}

impl std::str::FromStr for Bandwidth {
    type Err = String;

    fn from_str(text: &str) -> Result<Bandwidth, String> {
        Bandwidth::parse(text)
    }
}

impl Bandwidth {
    pub fn parse(text: &str) -> Result<Bandwidth, String> {
        let (rate, unit, time) = split_bandwidth(text)?;
        Ok(Bandwidth(format!("{rate}{unit}/{time}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The rate as KiB per window, in Pubky's units: `kb` is one KiB, `mb` 1,024 of them, `gb`
    /// 1,048,576; `s`, `m`, `h`, `d` are the window. `None` only for a stored value that no
    /// longer parses.
    pub fn kib_per_window(&self) -> Option<(u64, Duration)> {
        let (rate, unit, time) = split_bandwidth(&self.0).ok()?;
        Some((u64::from(rate) * kib_in(&unit), window_of(time)))
    }

    /// A burst given in the rate's own unit (`50` with `mb/s` is 50 MiB), in KiB.
    pub fn burst_kib(&self, burst: u32) -> u64 {
        let unit = split_bandwidth(&self.0).map_or(1, |(_, unit, _)| kib_in(&unit));
        u64::from(burst) * unit
    }
}

/// `<rate><kb|mb|gb>/<s|m|h|d>` into its rate, its unit in lower case and its window.
fn split_bandwidth(text: &str) -> Result<(u32, String, &str), String> {
    let (amount, time) = text.split_once('/').ok_or_else(|| {
        format!("invalid bandwidth rate {text:?}: expected <rate><kb|mb|gb>/<s|m|h|d>")
    })?;
    if !matches!(time, "s" | "m" | "h" | "d") {
        return Err(format!(
            "invalid time unit {time:?} in {text:?}: use s, m, h or d"
        ));
    }
    let digits = amount.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = amount.split_at(digits);
    let rate: u32 = number
        .parse()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("invalid rate in {text:?}: a whole number above 0"))?;
    let unit = unit.to_ascii_lowercase();
    if !matches!(unit.as_str(), "kb" | "mb" | "gb") {
        return Err(format!(
            "{text:?} is not a bandwidth: use a unit of kb, mb or gb, e.g. \"10mb/s\""
        ));
    }
    Ok((rate, unit, time))
}

fn kib_in(unit: &str) -> u64 {
    match unit {
        "gb" => 1024 * 1024,
        "mb" => 1024,
        _ => 1,
    }
}

fn window_of(time: &str) -> Duration {
    Duration::from_secs(match time {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        _ => 1,
    })
}

/// A user's limits (or those a signup token will give its user).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserQuota {
    /// Storage in MiB.
    pub storage_quota_mb: Limit<u64>,
    pub rate_read: Limit<Bandwidth>,
    pub rate_write: Limit<Bandwidth>,
    /// Burst in the rate's own unit; only with a rate of the user's own.
    pub rate_read_burst: Option<u32>,
    pub rate_write_burst: Option<u32>,
    /// Where the user may write: `None` anywhere; entries ending in `/` are prefixes, others
    /// exact paths; an empty list makes the user read-only.
    pub allowed_write_paths: Option<Vec<String>>,
}

/// A change to a user's limits: `None` keeps a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuotaPatch {
    pub storage_quota_mb: Option<Limit<u64>>,
    pub rate_read: Option<Limit<Bandwidth>>,
    pub rate_write: Option<Limit<Bandwidth>>,
    pub rate_read_burst: Option<Option<u32>>,
    pub rate_write_burst: Option<Option<u32>>,
    pub allowed_write_paths: Option<Option<Vec<String>>>,
}

impl UserQuota {
    /// The most bytes the user may store: their own limit, else `default_bytes` (the server's
    /// `quota_bytes`); `None` is unlimited.
    pub fn storage_bytes(&self, default_bytes: Option<u64>) -> Option<u64> {
        match self.storage_quota_mb {
            Limit::Default => default_bytes,
            Limit::Unlimited => None,
            Limit::Value(mb) => Some(mb.saturating_mul(MIB)),
        }
    }

    /// Whether `allowed_write_paths` lets the user write (or delete) `path`.
    pub fn may_write(&self, path: &str) -> bool {
        match &self.allowed_write_paths {
            None => true,
            Some(entries) => entries.iter().any(|entry| {
                if entry.ends_with('/') {
                    path.starts_with(entry.as_str())
                } else {
                    path == entry
                }
            }),
        }
    }

    /// Refuse limits that do not hold together (Pubky's rules): a burst needs a rate of the
    /// user's own, bursts are above 0, write paths are not `/` and not repeated.
    pub fn validate(&self) -> Result<(), String> {
        for (name, burst, rate) in [
            ("rate_read_burst", self.rate_read_burst, &self.rate_read),
            ("rate_write_burst", self.rate_write_burst, &self.rate_write),
        ] {
            match burst {
                Some(0) => return Err(format!("{name} must be above 0")),
                Some(_) if !matches!(rate, Limit::Value(_)) => {
                    return Err(format!(
                        "{name} requires the corresponding rate to be set to a value"
                    ))
                }
                _ => {}
            }
        }
        if let Some(paths) = &self.allowed_write_paths {
            for (index, path) in paths.iter().enumerate() {
                if path == "/" {
                    return Err(format!(
                        "allowed_write_paths[{index}] must not be '/'; use null for unrestricted access"
                    ));
                }
                if paths[..index].contains(path) {
                    return Err(format!(
                        "allowed_write_paths[{index}] is a duplicate: {path:?}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// These limits with `patch` applied (not yet validated).
    pub fn patched(&self, patch: &QuotaPatch) -> UserQuota {
        let mut quota = self.clone();
        if let Some(v) = &patch.storage_quota_mb {
            quota.storage_quota_mb = v.clone();
        }
        if let Some(v) = &patch.rate_read {
            quota.rate_read = v.clone();
        }
        if let Some(v) = &patch.rate_write {
            quota.rate_write = v.clone();
        }
        if let Some(v) = patch.rate_read_burst {
            quota.rate_read_burst = v;
        }
        if let Some(v) = patch.rate_write_burst {
            quota.rate_write_burst = v;
        }
        if let Some(v) = &patch.allowed_write_paths {
            quota.allowed_write_paths = v.clone();
        }
        quota
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidth_rates_amount_to_kib_per_window() {
        let rate = |text: &str| Bandwidth::parse(text).unwrap();
        assert_eq!(
            rate("10mb/s").kib_per_window(),
            Some((10 * 1024, Duration::from_secs(1)))
        );
        assert_eq!(
            rate("500kb/m").kib_per_window(),
            Some((500, Duration::from_secs(60)))
        );
        assert_eq!(
            rate("2GB/h").kib_per_window(),
            Some((2 * 1024 * 1024, Duration::from_secs(3600)))
        );
        assert_eq!(
            rate("1kb/d").kib_per_window(),
            Some((1, Duration::from_secs(86_400)))
        );
        assert_eq!(rate("100mb/s").burst_kib(50), 50 * 1024);
        assert_eq!(rate("3kb/s").burst_kib(7), 7);
    }

    #[test]
    fn bandwidth_rates_parse_as_pubky_writes_them() {
        assert_eq!(Bandwidth::parse("10MB/s").unwrap().as_str(), "10mb/s");
        assert_eq!(Bandwidth::parse("500kb/m").unwrap().as_str(), "500kb/m");
        for bad in [
            "10r/m", "0mb/s", "mb/s", "10mb", "10mb/y", "10mb/s/x", "-1mb/s",
        ] {
            assert!(Bandwidth::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn storage_limits_resolve_over_the_server_default() {
        let mut quota = UserQuota::default();
        assert_eq!(quota.storage_bytes(Some(7)), Some(7));
        quota.storage_quota_mb = Limit::Unlimited;
        assert_eq!(quota.storage_bytes(Some(7)), None);
        quota.storage_quota_mb = Limit::Value(2);
        assert_eq!(quota.storage_bytes(None), Some(2 * MIB));
    }

    #[test]
    fn write_paths_are_prefixes_or_exact() {
        let quota = UserQuota {
            allowed_write_paths: Some(vec!["/pub/app/".into(), "/pub/one.json".into()]),
            ..UserQuota::default()
        };
        assert!(quota.may_write("/pub/app/x/y"));
        assert!(quota.may_write("/pub/one.json"));
        assert!(!quota.may_write("/pub/one.json.bak"));
        assert!(!quota.may_write("/pub/other"));
        let read_only = UserQuota {
            allowed_write_paths: Some(vec![]),
            ..UserQuota::default()
        };
        assert!(!read_only.may_write("/pub/app/x"));
    }

    #[test]
    fn validation_follows_pubky() {
        let burst_alone = UserQuota {
            rate_read_burst: Some(5),
            ..UserQuota::default()
        };
        assert!(burst_alone.validate().is_err());
        let burst_with_rate = UserQuota {
            rate_read: Limit::Value(Bandwidth::parse("1mb/s").unwrap()),
            rate_read_burst: Some(5),
            ..UserQuota::default()
        };
        assert!(burst_with_rate.validate().is_ok());
        let dup = UserQuota {
            allowed_write_paths: Some(vec!["/pub/a/".into(), "/pub/a/".into()]),
            ..UserQuota::default()
        };
        assert!(dup.validate().is_err());
        let patched = burst_with_rate.patched(&QuotaPatch {
            rate_read: Some(Limit::Default),
            ..QuotaPatch::default()
        });
        assert!(patched.validate().is_err(), "the burst lost its rate");
    }
}
