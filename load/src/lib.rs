//! `hearth-load`: a load generator that measures a running homeserver over HTTP only.
//!
//! It speaks the Pubky protocol (signup with an `AuthToken`, cookie sessions, `PUT /pub/...`,
//! `/events/`, `/events-stream`) plus Hearth's `/firehose`, so the same commands can be aimed
//! at Hearth and at another Pubky homeserver and the figures compared as ratios. Each
//! scenario prints one JSON line on stdout and a readable summary on stderr.
//!
//! Every scenario is bounded in count and in time, and only loopback targets are accepted.
//! `relay-catchup` and `relay-live` measure a Hearth relay (`--url`) following homeservers.

mod client;
mod idle;
mod live;
mod put;
mod relay;
mod replay;
mod slow;
mod sse;
mod stats;

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

pub use client::Target;

/// Why a load run failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The command line asks for something impossible or unsafe.
    #[error("{0}")]
    Usage(String),
    /// Talking to the server failed.
    #[error("{0}")]
    Http(String),
    /// The server answered, but not as the protocol says.
    #[error("{0}")]
    Protocol(String),
}

/// `hearth-load [--url URL] [--pid PID] <scenario> ...`
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// The server to load; must be loopback (127.0.0.0/8, ::1, localhost).
    #[arg(long, global = true, default_value = "http://127.0.0.1:6287")]
    pub url: String,
    /// The server's process id, to read its memory and CPU from /proc.
    #[arg(long, global = true)]
    pub pid: Option<u32>,
    /// A signup token, for servers that require one (it must admit every user signed up).
    #[arg(long, global = true, conflicts_with = "admin_url")]
    pub signup_token: Option<String>,
    /// The server's admin endpoint (loopback only): mint one signup token per user there,
    /// for servers that require tokens (the Pubky homeserver's default).
    #[arg(long, global = true)]
    pub admin_url: Option<String>,
    /// The admin password sent as `X-Admin-Password` with `--admin-url`.
    #[arg(
        long,
        global = true,
        env = "HEARTH_ADMIN_PASSWORD",
        hide_env_values = true,
        default_value = "admin"
    )]
    pub admin_password: String,
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Scenario {
    /// U users, C concurrent writers PUT N files of S bytes: PUT/s and latency.
    Put(put::PutArgs),
    /// Read the whole event log from the start: events/s on /firehose, /events/, /events-stream.
    Replay(replay::ReplayArgs),
    /// K live subscribers while a writer PUTs at R/s: delivery latency, missed, duplicated.
    Live(live::LiveArgs),
    /// N idle SSE connections: the server's resident memory per connection.
    Idle(idle::IdleArgs),
    /// One subscriber stalls while W events are written, then resumes: completeness, memory.
    Slow(slow::SlowArgs),
    /// A fresh relay (--url) reads pre-filled homeservers (--source): events/s into it.
    RelayCatchup(relay::CatchupArgs),
    /// Writes at R/s over homeservers (--source) reach a relay's (--url) subscribers: lag.
    RelayLive(relay::RelayLiveArgs),
}

/// Which event stream a subscriber follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StreamKind {
    /// Hearth's native `/firehose`.
    Firehose,
    /// The Pubky-compatible `/events-stream` (needs the writer's user).
    EventsStream,
}

/// What every scenario gets: where the server is, and how to watch it.
pub(crate) struct Context {
    pub target: Target,
    pub process: Option<stats::Process>,
    pub admission: client::Admission,
    /// A random name for this run: every path written goes under `/pub/hearth-load/<run>/`.
    pub run_id: String,
}

impl Context {
    /// The folder this run writes in.
    pub fn prefix(&self, scenario: &str) -> String {
        format!("/pub/hearth-load/{}/{scenario}/", self.run_id)
    }

    pub fn sample(&self) -> Result<Option<stats::Sample>, LoadError> {
        self.process.map(|p| p.sample()).transpose()
    }
}

/// Run one scenario and print its figures.
pub async fn run(args: LoadArgs) -> Result<(), LoadError> {
    let target = Target::parse(&args.url)?;
    let process = args.pid.map(stats::Process::new).transpose()?;
    let run_id = hex(&pubky_common::crypto::random_bytes::<6>());
    let admission = match (&args.signup_token, &args.admin_url) {
        (Some(token), _) => client::Admission::Token(token.clone()),
        (None, Some(admin)) => client::Admission::Mint {
            admin: Target::parse(admin)?,
            password: args.admin_password.clone(),
        },
        (None, None) => client::Admission::Open,
    };
    let context = Context {
        target,
        process,
        admission,
        run_id,
    };
    let report = match &args.scenario {
        Scenario::Put(a) => put::run(&context, a).await?,
        Scenario::Replay(a) => replay::run(&context, a).await?,
        Scenario::Live(a) => live::run(&context, a).await?,
        Scenario::Idle(a) => idle::run(&context, a).await?,
        Scenario::Slow(a) => slow::run(&context, a).await?,
        Scenario::RelayCatchup(a) => relay::catchup(&context, a).await?,
        Scenario::RelayLive(a) => relay::live(&context, a).await?,
    };
    report.print();
    Ok(())
}

/// A scenario's outcome: the JSON lines (one per measured thing) and the readable summary.
pub(crate) struct Report {
    pub lines: Vec<serde_json::Value>,
    pub summary: String,
}

impl Report {
    fn print(&self) {
        for line in &self.lines {
            println!("{line}");
        }
        eprintln!("{}", self.summary.trim_end());
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Raise the soft open-files limit to the hard one, and check that `needed` descriptors fit.
/// Each connection is a descriptor, on the client and on the server alike.
pub(crate) fn ensure_fd_limit(needed: u64) -> Result<u64, LoadError> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if got != 0 {
        return Err(LoadError::Usage(format!(
            "reading the open-files limit: {}",
            std::io::Error::last_os_error()
        )));
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    let available = limit.rlim_cur;
    if available < needed {
        return Err(LoadError::Usage(format!(
            "this needs {needed} open files but the limit is {available}: raise it with \
             `ulimit -n {needed}` (the server needs as many)"
        )));
    }
    Ok(available)
}

/// Check a count or duration option against its bound.
pub(crate) fn bounded<T: PartialOrd + std::fmt::Display + Copy>(
    name: &str,
    value: T,
    min: T,
    max: T,
) -> Result<T, LoadError> {
    if value < min || value > max {
        return Err(LoadError::Usage(format!(
            "--{name} must be between {min} and {max}, not {value}"
        )));
    }
    Ok(value)
}

/// Seconds from a command-line float, bounded.
pub(crate) fn seconds(name: &str, value: f64, max: f64) -> Result<Duration, LoadError> {
    if !(value.is_finite() && value > 0.0 && value <= max) {
        return Err(LoadError::Usage(format!(
            "--{name} must be more than 0 and at most {max} seconds, not {value}"
        )));
    }
    Ok(Duration::from_secs_f64(value))
}

/// A file body of `size` bytes that differs from file to file (no server can dedupe it).
pub(crate) fn body_for(index: u64, size: usize) -> bytes::Bytes {
    let mut body = vec![b'x'; size];
    let stamp = index.to_string();
    let n = stamp.len().min(size);
    body[..n].copy_from_slice(&stamp.as_bytes()[..n]);
    bytes::Bytes::from(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        load: LoadArgs,
    }

    #[test]
    fn parses_every_scenario() {
        for line in [
            "x put --users 4 --writers 8 --files 100 --size 256",
            "x --url http://127.0.0.1:1 replay --via firehose",
            "x live --subscribers 10 --rate 50 --seconds 1 --pid 1",
            "x idle --connections 10",
            "x slow --events 100 --stream events-stream",
            "x --admin-url http://127.0.0.1:6288 --admin-password p put --files 1",
            "x relay-catchup --source http://127.0.0.1:1 --source http://127.0.0.1:2 --relay-admin http://127.0.0.1:3 --fill 10",
            "x --url http://127.0.0.1:4 relay-live --source http://127.0.0.1:1 --relay-admin http://127.0.0.1:3 --rate 100",
        ] {
            let parsed = Cli::try_parse_from(line.split(' '));
            assert!(parsed.is_ok(), "{line}: {:?}", parsed.err());
        }
    }

    #[test]
    fn bounds_options() {
        assert!(bounded("files", 0u64, 1, 10).is_err());
        assert_eq!(bounded("files", 5u64, 1, 10).ok(), Some(5));
        assert!(seconds("seconds", f64::NAN, 10.0).is_err());
        assert!(seconds("seconds", 11.0, 10.0).is_err());
        assert!(seconds("seconds", 0.5, 10.0).is_ok());
    }

    #[test]
    fn bodies_differ() {
        assert_eq!(body_for(12, 4), "12xx");
        assert_eq!(body_for(123456, 3), "123");
        assert_eq!(body_for(1, 0).len(), 0);
    }
}
