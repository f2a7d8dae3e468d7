//! Server configuration: defaults, then a TOML file, then `HEARTH_*` environment variables,
//! then command-line flags, each overriding the one before.
//!
//! The defaults make `hearth serve` work with no setup at all: LMDB in `./hearth-data`,
//! listening on 127.0.0.1:6287, open signup, durable commits. `hearth relay` reads the same
//! file and shares the flags of `CommonArgs`; its sources come from `[[source]]` tables and
//! `--source` flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::relay::SourceSpec;

/// A configuration that cannot work; the message says which setting and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

type Result<T> = std::result::Result<T, ConfigError>;

/// Who may sign up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SignupMode {
    /// Anyone with a valid AuthToken.
    Open,
    /// Only with a signup token minted on the admin listener.
    Token,
}

/// Everything a server needs to start.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where LMDB, the server's key and spool files live.
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// The admin listener (minting signup tokens); off unless set.
    pub admin_listen: Option<SocketAddr>,
    /// Required on every admin request (`X-Admin-Password`); the admin listener refuses to start
    /// without one.
    pub admin_password: Option<String>,
    pub signup_mode: SignupMode,
    /// Per-user storage quota in bytes; none means unlimited.
    pub quota_bytes: Option<u64>,
    /// The largest body a PUT may carry.
    pub max_body_bytes: u64,
    /// fsync each commit. Off is faster and may lose the last commits on a crash (never
    /// corrupts the store).
    pub sync: bool,
    /// LMDB map size in bytes: the most the store can grow to.
    pub map_size: usize,
    /// Seconds between keep-alive comments on an idle event stream.
    pub keepalive_secs: u64,
    /// How many `sub` patterns one firehose connection may have.
    pub max_patterns: usize,
    /// What a relay follows: the file's `[[source]]` tables (`url`, `key`, or both).
    #[serde(rename = "source")]
    pub sources: Vec<SourceSpec>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("hearth-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 6287)),
            admin_listen: None,
            admin_password: None,
            signup_mode: SignupMode::Open,
            quota_bytes: None,
            max_body_bytes: 100 << 20,
            sync: true,
            map_size: 64 << 30,
            keepalive_secs: 15,
            max_patterns: 100,
            sources: Vec::new(),
        }
    }
}

/// Flags `hearth serve` and `hearth relay` share; each also reads its `HEARTH_*` environment
/// variable.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CommonArgs {
    /// A TOML file with any of the settings below (snake_case keys).
    #[arg(long, env = "HEARTH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory [default: ./hearth-data]
    #[arg(long, env = "HEARTH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:6287]
    #[arg(long, env = "HEARTH_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Address of the admin listener (off unless set)
    #[arg(long, env = "HEARTH_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Password for the admin listener
    #[arg(long, env = "HEARTH_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Skip fsync on commit: faster, but a crash may lose the last commits
    #[arg(long, env = "HEARTH_NO_SYNC")]
    pub no_sync: bool,
    /// Seconds between keep-alive comments on idle event streams [default: 15]
    #[arg(long, env = "HEARTH_KEEPALIVE_SECS")]
    pub keepalive_secs: Option<u64>,
}

/// Flags of `hearth serve`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Who may sign up [default: open]
    #[arg(long, env = "HEARTH_SIGNUP_MODE")]
    pub signup_mode: Option<SignupMode>,
    /// Per-user quota in bytes [default: unlimited]
    #[arg(long, env = "HEARTH_QUOTA_BYTES")]
    pub quota_bytes: Option<u64>,
    /// Largest PUT body in bytes [default: 104857600]
    #[arg(long, env = "HEARTH_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<u64>,
}

/// Flags of `hearth relay`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RelayArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// A source to follow, repeatable: http(s)://host[:port] (Hearth), pubky+http(s)://host[:port]
    /// (Pubky), a homeserver key (z32), or <z32>@<url>. Added to the file's [[source]] tables.
    #[arg(long = "source", value_name = "SPEC")]
    pub sources: Vec<SourceSpec>,
}

impl ConfigError {
    fn new(message: impl Into<String>) -> Self {
        ConfigError(message.into())
    }
}

impl Config {
    /// The configuration of `hearth serve`: a file (if named), then the flags/environment.
    pub fn load(args: &ServeArgs) -> Result<Config> {
        let mut config = Config::load_common(&args.common)?;
        let ServeArgs {
            common: _,
            signup_mode,
            quota_bytes,
            max_body_bytes,
        } = args.clone();
        if let Some(v) = signup_mode {
            config.signup_mode = v;
        }
        if quota_bytes.is_some() {
            config.quota_bytes = quota_bytes;
        }
        if let Some(v) = max_body_bytes {
            config.max_body_bytes = v;
        }
        if !config.sources.is_empty() {
            return Err(ConfigError::new(
                "[[source]] tables are for `hearth relay`; a homeserver follows no sources",
            ));
        }
        config.validate()?;
        Ok(config)
    }

    /// The configuration of `hearth relay`: the same file and shared flags as `serve`, the
    /// file's `[[source]]` tables, then the `--source` flags.
    pub fn load_relay(args: &RelayArgs) -> Result<Config> {
        let mut config = Config::load_common(&args.common)?;
        for spec in &args.sources {
            if !config.sources.contains(spec) {
                config.sources.push(spec.clone());
            }
        }
        let homeserver = Config::default();
        for (name, differs) in [
            ("signup_mode", config.signup_mode != homeserver.signup_mode),
            ("quota_bytes", config.quota_bytes != homeserver.quota_bytes),
            (
                "max_body_bytes",
                config.max_body_bytes != homeserver.max_body_bytes,
            ),
        ] {
            if differs {
                return Err(ConfigError::new(format!(
                    "{name} is a homeserver setting; a relay keeps no accounts or files"
                )));
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// The file (if named), then the flags both commands share.
    fn load_common(args: &CommonArgs) -> Result<Config> {
        let mut config = match &args.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        let CommonArgs {
            config: _,
            data_dir,
            listen,
            admin_listen,
            admin_password,
            no_sync,
            keepalive_secs,
        } = args.clone();
        if let Some(v) = data_dir {
            config.data_dir = v;
        }
        if let Some(v) = listen {
            config.listen = v;
        }
        if admin_listen.is_some() {
            config.admin_listen = admin_listen;
        }
        if admin_password.is_some() {
            config.admin_password = admin_password;
        }
        if no_sync {
            config.sync = false;
        }
        if let Some(v) = keepalive_secs {
            config.keepalive_secs = v;
        }
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|err| {
            ConfigError::new(format!("cannot read config {}: {err}", path.display()))
        })?;
        toml::from_str(&text)
            .map_err(|err| ConfigError::new(format!("config {}: {err}", path.display())))
    }

    /// Refuse settings that cannot work, before anything starts.
    pub fn validate(&self) -> Result<()> {
        if self.admin_listen.is_some() && self.admin_password.as_deref().is_none_or(str::is_empty) {
            return Err(ConfigError::new(
                "admin_listen is set but admin_password is not: the admin listener needs a password",
            ));
        }
        if self.keepalive_secs == 0 {
            return Err(ConfigError::new("keepalive_secs must be at least 1"));
        }
        if self.max_patterns == 0 {
            return Err(ConfigError::new("max_patterns must be at least 1"));
        }
        Ok(())
    }

    pub fn keepalive(&self) -> Duration {
        Duration::from_secs(self.keepalive_secs)
    }

    /// A configuration for tests and tools: a given data dir, an ephemeral port.
    pub fn ephemeral(data_dir: &Path) -> Config {
        Config {
            data_dir: data_dir.to_path_buf(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Config::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hearth.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:7000\"\nquota_bytes = 10\nsignup_mode = \"token\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            common: CommonArgs {
                config: Some(file),
                listen: Some("127.0.0.1:7001".parse().unwrap()),
                ..CommonArgs::default()
            },
            ..ServeArgs::default()
        };
        let config = Config::load(&args).unwrap();
        assert_eq!(config.listen.port(), 7001);
        assert_eq!(config.quota_bytes, Some(10));
        assert_eq!(config.signup_mode, SignupMode::Token);
    }

    #[test]
    fn unknown_keys_and_passwordless_admin_are_refused() {
        assert!(toml::from_str::<Config>("listn = \"x\"").is_err());
        let config = Config {
            admin_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Config::default()
        };
        assert!(config.validate().is_err());
    }

    #[test]
    fn a_relay_reads_sources_from_the_file_and_the_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("relay.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:7000\"\n[[source]]\nurl = \"http://127.0.0.1:1\"\n",
        )
        .unwrap();
        let common = CommonArgs {
            config: Some(file.clone()),
            ..CommonArgs::default()
        };
        let args = RelayArgs {
            common: common.clone(),
            sources: vec!["http://127.0.0.1:2".parse().unwrap()],
        };
        let config = Config::load_relay(&args).unwrap();
        let sources: Vec<String> = config.sources.iter().map(ToString::to_string).collect();
        assert_eq!(sources, vec!["http://127.0.0.1:1", "http://127.0.0.1:2"]);
        assert_eq!(config.listen.port(), 7000);
        // The same file refused by a homeserver, and homeserver settings by a relay.
        let serve = ServeArgs {
            common,
            ..ServeArgs::default()
        };
        assert!(Config::load(&serve).is_err());
        std::fs::write(&file, "signup_mode = \"token\"\n").unwrap();
        assert!(Config::load_relay(&args).is_err());
    }
}
