//! Server configuration: defaults, then a TOML file, then `HEARTH_*` environment variables,
//! then command-line flags, each overriding the one before.
//!
//! The defaults make `hearth serve` work with no setup at all: LMDB in `./hearth-data`,
//! listening on 127.0.0.1:6287, open signup, durable commits. `hearth relay` reads the same
//! file and shares the flags of `CommonArgs`; its sources come from `[[source]]` tables and
//! `--source` flags.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::files::quota::Bandwidth;
use crate::http::rate_limit::RateLimitRule;
use crate::relay::SourceSpec;

/// A configuration that cannot work; the message says which setting and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

type Result<T> = std::result::Result<T, ConfigError>;

/// The smallest LMDB map this server opens: room for its tables and a few writes.
pub const MIN_MAP_SIZE: usize = 1 << 20;

/// Who may sign up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SignupMode {
    /// Anyone with a valid AuthToken.
    Open,
    /// Only with a signup token minted on the admin listener.
    Token,
}

/// Everything a server needs to start.
#[derive(Debug, Clone, Deserialize, Serialize)]
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
    /// The pace of file reads for users whose own `rate_read` is the default (`10mb/s`);
    /// none means unpaced.
    pub rate_read: Option<Bandwidth>,
    /// The same for writes (`rate_write`).
    pub rate_write: Option<Bandwidth>,
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
    /// The metrics listener (Prometheus text at `/metrics`); off unless set.
    pub metrics_listen: Option<SocketAddr>,
    /// Retention: keep only the newest this many events; off unless set.
    pub retain_events: Option<u64>,
    /// Retention: keep only events of the last this many days (fractions allowed); off
    /// unless set.
    pub retain_days: Option<f64>,
    /// Request-count limits, Pubky's `[[rate_limits]]` tables (TOML only).
    pub rate_limits: Vec<RateLimitRule>,
    /// Proxies (addresses or networks) whose `X-Forwarded-For` names the client (`--trusted-proxies`).
    pub trusted_proxies: Vec<String>,
    /// The TLS listener (the server key as an RFC 7250 raw public key); off unless set.
    pub tls_listen: Option<SocketAddr>,
    /// Seconds a client has to send a whole request head.
    pub head_timeout_secs: u64,
    /// Seconds a kept-alive connection may wait between requests.
    pub idle_timeout_secs: u64,
    /// Seconds a request body may send nothing before it is refused (408), and a response may
    /// wait for the client to read before it is dropped.
    pub body_stall_secs: u64,
    /// Seconds a stop waits for open connections before closing them.
    pub shutdown_grace_secs: u64,
    /// Open connections at most; none derives it from the open-file limit.
    pub max_connections: Option<usize>,
    /// The IP address the pkarr record advertises.
    pub public_ip: IpAddr,
    /// The TLS port the record advertises; none: the port the TLS listener bound.
    pub public_tls_port: Option<u16>,
    /// The HTTP port the record advertises (for `icann_domain = "localhost"`); none: the port
    /// `listen` bound.
    pub public_http_port: Option<u16>,
    /// An ICANN domain serving the same routes over plain HTTP(S), for browsers.
    pub icann_domain: Option<String>,
    /// DHT bootstrap nodes (`HOST:PORT`); none: the public Mainline DHT.
    pub pkarr_bootstrap: Option<Vec<String>>,
    /// pkarr relay URLs; none: pkarr's default relays, or no relay with `pkarr_bootstrap`.
    pub pkarr_relay: Option<Vec<String>>,
    /// Seconds between passes republishing the users' pkarr records; 0 turns it off.
    pub user_republish_secs: u64,
    /// How many bytes of request bodies may be held in memory at once (received and waiting
    /// for their commit); a PUT beyond it waits before its body is read.
    pub max_body_bytes_in_flight: u64,
    /// What a relay follows: the file's `[[source]]` tables (`url`, `key`, or `spec`).
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
            rate_read: None,
            rate_write: None,
            max_body_bytes: 100 << 20,
            sync: true,
            map_size: 64 << 30,
            keepalive_secs: 15,
            max_patterns: 100,
            metrics_listen: None,
            retain_events: None,
            retain_days: None,
            rate_limits: Vec::new(),
            trusted_proxies: Vec::new(),
            tls_listen: None,
            head_timeout_secs: 10,
            idle_timeout_secs: 60,
            body_stall_secs: 30,
            shutdown_grace_secs: 5,
            max_connections: None,
            public_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            public_tls_port: None,
            public_http_port: None,
            icann_domain: None,
            pkarr_bootstrap: None,
            pkarr_relay: None,
            user_republish_secs: crate::pkarr::republisher::DEFAULT_INTERVAL.as_secs(),
            max_body_bytes_in_flight: 64 << 20,
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
    /// fsync every commit (the default); overrides `sync = false` in the config file
    #[arg(long, env = "HEARTH_SYNC", overrides_with = "no_sync")]
    pub sync: bool,
    /// Skip fsync on commit: faster, but a crash may lose the last commits
    #[arg(long, env = "HEARTH_NO_SYNC", overrides_with = "sync")]
    pub no_sync: bool,
    /// LMDB map size in bytes: the most the store can grow to. Address space, not memory;
    /// after a 507 "the store is full", raise it and restart [default: 68719476736 (64 GiB)]
    #[arg(long, env = "HEARTH_MAP_SIZE")]
    pub map_size: Option<usize>,
    /// Patterns one event stream may follow: `sub` on /firehose, users x paths on
    /// /events-stream [default: 100]
    #[arg(long, env = "HEARTH_MAX_PATTERNS")]
    pub max_patterns: Option<usize>,
    /// Seconds between keep-alive comments on idle event streams [default: 15]
    #[arg(long, env = "HEARTH_KEEPALIVE_SECS")]
    pub keepalive_secs: Option<u64>,
    /// Address of the metrics listener, Prometheus text at /metrics (off unless set)
    #[arg(long, env = "HEARTH_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Keep only the newest N events; older ones are trimmed in the background (off unless set)
    #[arg(long, env = "HEARTH_RETAIN_EVENTS")]
    pub retain_events: Option<u64>,
    /// Keep only events of the last D days (fractions allowed); older ones are trimmed (off
    /// unless set)
    #[arg(long, env = "HEARTH_RETAIN_DAYS")]
    pub retain_days: Option<f64>,
    /// Proxies whose X-Forwarded-For names the client (for rate limits), ADDR-or-CIDR[,...]
    /// [default: none: the socket's peer is the client]
    #[arg(long, env = "HEARTH_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,
    /// Address of the TLS listener, the server key as a raw public key (off unless set)
    #[arg(long, env = "HEARTH_TLS_LISTEN")]
    pub tls_listen: Option<SocketAddr>,
    /// Seconds a client has to send a whole request head [default: 10]
    #[arg(long, env = "HEARTH_HEAD_TIMEOUT_SECS")]
    pub head_timeout_secs: Option<u64>,
    /// Seconds a kept-alive connection may wait between requests [default: 60]
    #[arg(long, env = "HEARTH_IDLE_TIMEOUT_SECS")]
    pub idle_timeout_secs: Option<u64>,
    /// Seconds a request body may send nothing before it is refused with 408, and a response
    /// may wait for the client to read before it is dropped [default: 30]
    #[arg(long, env = "HEARTH_BODY_STALL_SECS")]
    pub body_stall_secs: Option<u64>,
    /// Seconds a stop waits for open connections before closing them [default: 5]
    #[arg(long, env = "HEARTH_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// Open connections at most; beyond, new ones are answered 503 [default: the open-file
    /// limit less a reserve]
    #[arg(long, env = "HEARTH_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// IP address published in the server's pkarr record [default: 127.0.0.1]
    #[arg(long, env = "HEARTH_PUBLIC_IP")]
    pub public_ip: Option<IpAddr>,
    /// TLS port published in the record [default: the port --tls-listen bound]
    #[arg(long, env = "HEARTH_PUBLIC_TLS_PORT")]
    pub public_tls_port: Option<u16>,
    /// HTTP port published in the record for --icann-domain localhost [default: the port
    /// --listen bound]
    #[arg(long, env = "HEARTH_PUBLIC_HTTP_PORT")]
    pub public_http_port: Option<u16>,
    /// ICANN domain serving the same routes for browsers, published in the record
    #[arg(long, env = "HEARTH_ICANN_DOMAIN")]
    pub icann_domain: Option<String>,
    /// DHT bootstrap nodes, HOST:PORT[,...]: a private DHT, and no relay unless named
    /// [default: the public Mainline DHT]
    #[arg(long, env = "HEARTH_PKARR_BOOTSTRAP", value_delimiter = ',')]
    pub pkarr_bootstrap: Option<Vec<String>>,
    /// pkarr relay URLs, URL[,...] [default: pkarr's public relays, none with --pkarr-bootstrap]
    #[arg(long, env = "HEARTH_PKARR_RELAY", value_delimiter = ',')]
    pub pkarr_relay: Option<Vec<String>>,
    /// Seconds between republishing the users' pkarr records; 0 = off [default: 14400]
    #[arg(long, env = "HEARTH_USER_REPUBLISH_SECS")]
    pub user_republish_secs: Option<u64>,
}

/// Flags of `hearth serve`: the shared ones, and a homeserver's own.
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
    /// Pace of a user's file reads unless their own limits say otherwise, e.g. 10mb/s
    /// [default: unpaced]
    #[arg(long, env = "HEARTH_RATE_READ", value_name = "RATE")]
    pub rate_read: Option<Bandwidth>,
    /// Pace of a user's file writes unless their own limits say otherwise, e.g. 1mb/s
    /// [default: unpaced]
    #[arg(long, env = "HEARTH_RATE_WRITE", value_name = "RATE")]
    pub rate_write: Option<Bandwidth>,
    /// Largest PUT body in bytes [default: 104857600]
    #[arg(long, env = "HEARTH_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<u64>,
    /// Bytes of request bodies held in memory at once; a PUT beyond it waits before its body
    /// is read [default: 67108864]
    #[arg(long, env = "HEARTH_MAX_BODY_BYTES_IN_FLIGHT")]
    pub max_body_bytes_in_flight: Option<u64>,
}

/// Flags of `hearth relay`: the shared ones, and its sources.
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
            rate_read,
            rate_write,
            max_body_bytes,
            max_body_bytes_in_flight,
        } = args.clone();
        if let Some(v) = signup_mode {
            config.signup_mode = v;
        }
        if quota_bytes.is_some() {
            config.quota_bytes = quota_bytes;
        }
        if rate_read.is_some() {
            config.rate_read = rate_read;
        }
        if rate_write.is_some() {
            config.rate_write = rate_write;
        }
        if let Some(v) = max_body_bytes {
            config.max_body_bytes = v;
        }
        if let Some(v) = max_body_bytes_in_flight {
            config.max_body_bytes_in_flight = v;
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
            ("rate_read", config.rate_read != homeserver.rate_read),
            ("rate_write", config.rate_write != homeserver.rate_write),
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
            sync,
            no_sync,
            map_size,
            max_patterns,
            keepalive_secs,
            metrics_listen,
            retain_events,
            retain_days,
            trusted_proxies,
            tls_listen,
            head_timeout_secs,
            idle_timeout_secs,
            body_stall_secs,
            shutdown_grace_secs,
            max_connections,
            public_ip,
            public_tls_port,
            public_http_port,
            icann_domain,
            pkarr_bootstrap,
            pkarr_relay,
            user_republish_secs,
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
        // The last of the two on the command line wins; a flag and the other's environment
        // variable together are refused by the parser rather than guessed at.
        if sync {
            config.sync = true;
        }
        if no_sync {
            config.sync = false;
        }
        if let Some(v) = map_size {
            config.map_size = v;
        }
        if let Some(v) = max_patterns {
            config.max_patterns = v;
        }
        if let Some(v) = keepalive_secs {
            config.keepalive_secs = v;
        }
        if metrics_listen.is_some() {
            config.metrics_listen = metrics_listen;
        }
        if retain_events.is_some() {
            config.retain_events = retain_events;
        }
        if retain_days.is_some() {
            config.retain_days = retain_days;
        }
        if let Some(v) = trusted_proxies {
            config.trusted_proxies = v;
        }
        if tls_listen.is_some() {
            config.tls_listen = tls_listen;
        }
        if let Some(v) = head_timeout_secs {
            config.head_timeout_secs = v;
        }
        if let Some(v) = idle_timeout_secs {
            config.idle_timeout_secs = v;
        }
        if let Some(v) = body_stall_secs {
            config.body_stall_secs = v;
        }
        if let Some(v) = shutdown_grace_secs {
            config.shutdown_grace_secs = v;
        }
        if max_connections.is_some() {
            config.max_connections = max_connections;
        }
        if let Some(v) = public_ip {
            config.public_ip = v;
        }
        if public_tls_port.is_some() {
            config.public_tls_port = public_tls_port;
        }
        if public_http_port.is_some() {
            config.public_http_port = public_http_port;
        }
        if icann_domain.is_some() {
            config.icann_domain = icann_domain;
        }
        if pkarr_bootstrap.is_some() {
            config.pkarr_bootstrap = pkarr_bootstrap;
        }
        if pkarr_relay.is_some() {
            config.pkarr_relay = pkarr_relay;
        }
        if let Some(v) = user_republish_secs {
            config.user_republish_secs = v;
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
        if self.map_size < MIN_MAP_SIZE {
            return Err(ConfigError::new(format!(
                "map_size must be at least {MIN_MAP_SIZE} bytes (1 MiB), not {}",
                self.map_size
            )));
        }
        if self.max_patterns == 0 {
            return Err(ConfigError::new("max_patterns must be at least 1"));
        }
        if self.retain_events == Some(0) {
            return Err(ConfigError::new("retain_events must be at least 1"));
        }
        if self
            .retain_days
            .is_some_and(|days| !days.is_finite() || days <= 0.0)
        {
            return Err(ConfigError::new(
                "retain_days must be a number of days above 0",
            ));
        }
        for (index, rule) in self.rate_limits.iter().enumerate() {
            rule.validate().map_err(|why| {
                ConfigError::new(format!(
                    "rate_limits[{index}] (path {:?}): {why}",
                    rule.path
                ))
            })?;
        }
        crate::http::rate_limit::parse_proxies(&self.trusted_proxies).map_err(ConfigError::new)?;
        for (name, secs) in [
            ("head_timeout_secs", self.head_timeout_secs),
            ("idle_timeout_secs", self.idle_timeout_secs),
            ("body_stall_secs", self.body_stall_secs),
        ] {
            if secs == 0 {
                return Err(ConfigError::new(format!("{name} must be at least 1")));
            }
        }
        if self.max_connections == Some(0) {
            return Err(ConfigError::new("max_connections must be at least 1"));
        }
        if let Some(domain) = &self.icann_domain {
            crate::pkarr::record::check_domain(domain)
                .map_err(|err| ConfigError::new(err.to_string()))?;
        }
        if self.public_tls_port == Some(0) || self.public_http_port == Some(0) {
            return Err(ConfigError::new(
                "public_tls_port and public_http_port must not be 0",
            ));
        }
        Ok(())
    }

    /// The retention policy the settings ask for (off when neither is set).
    pub fn retention(&self) -> crate::log::retention::Policy {
        crate::log::retention::Policy {
            events: self.retain_events,
            days: self.retain_days,
        }
    }

    /// The DHT and relays the server's pkarr client uses.
    pub fn pkarr_network(&self) -> crate::pkarr::Network {
        crate::pkarr::Network {
            bootstrap: self.pkarr_bootstrap.clone(),
            relays: self.pkarr_relay.clone(),
        }
    }

    pub fn keepalive(&self) -> Duration {
        Duration::from_secs(self.keepalive_secs)
    }

    /// The connection deadlines and stop grace, as the connection layer takes them.
    pub fn connection_limits(&self) -> crate::http::serve::Limits {
        crate::http::serve::Limits {
            head: Duration::from_secs(self.head_timeout_secs),
            idle: Duration::from_secs(self.idle_timeout_secs),
            body_stall: Duration::from_secs(self.body_stall_secs),
            grace: Duration::from_secs(self.shutdown_grace_secs),
        }
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

    fn load(file_text: &str, flags: &[&str]) -> Config {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hearth.toml");
        std::fs::write(&file, file_text).unwrap();
        let config = file.display().to_string();
        let argv = ["hearth", "--config", &config]
            .into_iter()
            .chain(flags.iter().copied());
        let cli = Cli::try_parse_from(argv).unwrap();
        Config::load(&cli.serve).unwrap()
    }

    #[test]
    fn sync_flags_override_the_file_either_way() {
        assert!(!load("sync = false", &[]).sync);
        assert!(load("sync = false", &["--sync"]).sync);
        assert!(!load("sync = true", &["--no-sync"]).sync);
        assert!(
            !load("", &["--sync", "--no-sync"]).sync,
            "the last one wins"
        );
        assert!(load("", &["--no-sync", "--sync"]).sync, "the last one wins");
    }

    #[test]
    fn map_size_and_max_patterns_flags_win_over_the_file() {
        let config = load(
            "map_size = 1048576\nmax_patterns = 7",
            &["--map-size", "2097152", "--max-patterns", "9"],
        );
        assert_eq!((config.map_size, config.max_patterns), (2 << 20, 9));
        let config = load("map_size = 1048576\nmax_patterns = 7", &[]);
        assert_eq!((config.map_size, config.max_patterns), (1 << 20, 7));
        let too_small = Config {
            map_size: 4096,
            ..Config::default()
        };
        assert!(too_small.validate().is_err());
    }

    /// The README promises that `--help` lists every setting: each key of the file has a flag
    /// of the same name (and so an environment variable).
    #[test]
    fn every_file_key_is_a_flag() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let command = <Cli as clap::CommandFactory>::command();
        let flags: Vec<String> = command
            .get_arguments()
            .filter_map(|arg| arg.get_long())
            .map(|long| long.replace('-', "_"))
            .collect();
        let settings = serde_json::to_value(Config::default()).unwrap();
        // Lists of tables have no sensible flag: rate limits live in the file, and a relay's
        // sources in the file or its repeatable --source.
        let tables = ["rate_limits", "source"];
        for key in settings.as_object().unwrap().keys() {
            if tables.contains(&key.as_str()) {
                continue;
            }
            assert!(flags.contains(key), "the setting {key} has no --flag");
        }
    }

    #[test]
    fn server_bandwidth_rates_are_read_checked_and_homeserver_only() {
        let config = load("rate_read = \"10MB/s\"\n", &["--rate-write", "500kb/m"]);
        assert_eq!(config.rate_read, Some(Bandwidth::parse("10mb/s").unwrap()));
        assert_eq!(
            config.rate_write,
            Some(Bandwidth::parse("500kb/m").unwrap())
        );
        let bad = toml::from_str::<Config>("rate_read = \"10r/m\"\n").unwrap_err();
        assert!(bad.to_string().contains("not a bandwidth"), "{bad}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("relay.toml");
        std::fs::write(&file, "rate_write = \"1mb/s\"\n").unwrap();
        let refused = Config::load_relay(&RelayArgs {
            common: CommonArgs {
                config: Some(file),
                ..CommonArgs::default()
            },
            sources: Vec::new(),
        })
        .unwrap_err();
        assert!(
            refused.0.contains("rate_write is a homeserver setting"),
            "{refused}"
        );
    }

    #[test]
    fn rate_limits_are_pubky_tables_and_bad_ones_are_refused() {
        let config: Config = toml::from_str(
            "trusted_proxies = [\"10.0.0.0/8\"]\n\
             [[rate_limits]]\npath = \"/pub/**\"\nmethod = \"PUT\"\nquota = \"10r/m\"\nkey = \"user\"\n\
             [[rate_limits]]\npath = \"/session\"\nmethod = \"post\"\nquota = \"2r/s\"\nkey = \"ip\"\nburst = 5\nwhitelist = [\"127.0.0.1\"]\n",
        )
        .unwrap();
        assert_eq!(config.rate_limits.len(), 2);
        assert!(config.validate().is_ok());
        let mut bad = config.clone();
        bad.rate_limits[0].quota = "10mb/m".into();
        assert!(bad.validate().is_err());
        let mut bad = config.clone();
        bad.trusted_proxies = vec!["nowhere".into()];
        assert!(bad.validate().is_err());
        let mut bad = config;
        bad.retain_events = Some(0);
        assert!(bad.validate().is_err());
    }

    #[test]
    fn connection_settings_from_the_file_and_flags() {
        let config: Config = toml::from_str(
            "tls_listen = \"127.0.0.1:7443\"\nhead_timeout_secs = 3\nidle_timeout_secs = 4\n\
             body_stall_secs = 5\nshutdown_grace_secs = 0\nmax_connections = 100\n",
        )
        .unwrap();
        assert_eq!(config.tls_listen, Some("127.0.0.1:7443".parse().unwrap()));
        let limits = config.connection_limits();
        assert_eq!(
            (limits.head, limits.idle, limits.body_stall, limits.grace),
            (
                Duration::from_secs(3),
                Duration::from_secs(4),
                Duration::from_secs(5),
                Duration::ZERO
            )
        );
        assert_eq!(config.max_connections, Some(100));
        assert!(Config {
            head_timeout_secs: 0,
            ..Config::default()
        }
        .validate()
        .is_err());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hearth.toml");
        std::fs::write(&file, "shutdown_grace_secs = 9\n").unwrap();
        let args = ServeArgs {
            common: CommonArgs {
                config: Some(file),
                shutdown_grace_secs: Some(1),
                ..CommonArgs::default()
            },
            ..ServeArgs::default()
        };
        assert_eq!(Config::load(&args).unwrap().shutdown_grace_secs, 1);
    }

    #[test]
    fn pkarr_settings_from_file_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hearth.toml");
        std::fs::write(
            &file,
            "public_ip = \"203.0.113.5\"\nicann_domain = \"localhost\"\n\
             pkarr_bootstrap = [\"127.0.0.1:6881\"]\nuser_republish_secs = 0\n",
        )
        .unwrap();
        let args = ServeArgs {
            common: CommonArgs {
                config: Some(file),
                public_tls_port: Some(443),
                pkarr_relay: Some(vec!["http://127.0.0.1:15411".into()]),
                ..CommonArgs::default()
            },
            ..ServeArgs::default()
        };
        let config = Config::load(&args).unwrap();
        assert_eq!(config.public_ip, IpAddr::from([203, 0, 113, 5]));
        assert_eq!(config.public_tls_port, Some(443));
        assert_eq!(config.public_http_port, None);
        assert_eq!(config.icann_domain.as_deref(), Some("localhost"));
        assert_eq!(config.user_republish_secs, 0);
        let network = config.pkarr_network();
        assert_eq!(network.bootstrap, Some(vec!["127.0.0.1:6881".to_owned()]));
        assert_eq!(
            network.relays,
            Some(vec!["http://127.0.0.1:15411".to_owned()])
        );

        let defaults = Config::default();
        assert_eq!(defaults.public_ip, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(defaults.user_republish_secs, 4 * 3600);
        assert_eq!(defaults.pkarr_network(), crate::pkarr::Network::default());
    }

    #[test]
    fn list_flags_split_on_commas() {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from([
            "hearth",
            "serve",
            "--pkarr-bootstrap",
            "127.0.0.1:1,127.0.0.1:2",
            "--icann-domain",
            "localhost",
        ])
        .unwrap();
        let crate::cli::Command::Serve(args) = cli.command else {
            panic!("not serve");
        };
        assert_eq!(
            args.common.pkarr_bootstrap,
            Some(vec!["127.0.0.1:1".to_owned(), "127.0.0.1:2".to_owned()])
        );
        let bad = ServeArgs {
            common: CommonArgs {
                icann_domain: Some("not a domain".into()),
                ..CommonArgs::default()
            },
            ..ServeArgs::default()
        };
        assert!(Config::load(&bad).is_err());
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

    #[test]
    fn unknown_keys_and_passwordless_admin_are_refused() {
        assert!(toml::from_str::<Config>("listn = \"x\"").is_err());
        let config = Config {
            admin_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Config::default()
        };
        assert!(config.validate().is_err());
    }
}
