//! The `hearth` command line: `serve`, `relay`, and the small client helpers a newcomer needs for what
//! curl cannot do (making a key, signing an AuthToken).

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use pubky_common::auth::AuthToken;
use pubky_common::capabilities::Capabilities;
use pubky_common::crypto::Keypair;

use crate::config::{Config, ConfigError, RelayArgs, ServeArgs};
use crate::server::{Server, ServerError};

/// Why a command failed; printed as `hearth: <message>`.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Server(#[from] ServerError),
    /// What the command was asked to do cannot be done (a file that exists, a bad argument).
    #[error("{0}")]
    Usage(String),
    #[error("i/o failure: {0}")]
    Io(#[from] std::io::Error),
}

type Result<T> = std::result::Result<T, CliError>;

#[derive(Debug, Parser)]
#[command(
    name = "hearth",
    version,
    about = "A Pubky homeserver with an SSE firehose"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (LMDB in ./hearth-data, on 127.0.0.1:6287, unless told otherwise).
    Serve(ServeArgs),
    /// Run a relay: follow homeservers and relays (--source), serve their events as one
    /// merged /firehose (and /events/, /events-stream, /relay/sources).
    Relay(RelayArgs),
    /// Create a user keypair: writes the secret key file, prints the public key (z32).
    Keygen {
        /// Where to write the secret key (hex); refuses to overwrite.
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a Pubky AuthToken with a secret key file and write its bytes (for POST /signup or
    /// POST /session, e.g. `curl --data-binary @token.bin`).
    Token {
        /// The user's secret key file (from `hearth keygen`).
        #[arg(long)]
        secret_file: PathBuf,
        /// Capabilities, comma-separated `<scope>:<actions>`.
        #[arg(long, default_value = "/pub/:rw")]
        caps: String,
        /// Where to write the token; standard output if absent.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Run a parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let config = Config::load(&args)?;
            run_server(Server::start(config.clone()).await?, &config).await
        }
        Command::Relay(args) => {
            let config = Config::load_relay(&args)?;
            run_server(Server::start_relay(config.clone()).await?, &config).await
        }
        Command::Keygen { out } => keygen(&out),
        Command::Token {
            secret_file,
            caps,
            out,
        } => token(&secret_file, &caps, out.as_deref()),
    }
}

/// Say where a started server is, serve until Ctrl-C or SIGTERM, then stop it cleanly.
async fn run_server(server: Server, config: &Config) -> Result<()> {
    println!("hearth listening on {}", server.url());
    println!("server public key: {}", server.public_key());
    println!("data directory: {}", config.data_dir.display());
    if let Some(admin) = server.admin_addr() {
        println!("admin listening on http://{admin}");
    }
    if let Some(relay) = server.relay() {
        for source in relay.sources() {
            println!("following {}", source.source);
        }
    }
    wait_for_signal().await?;
    println!("shutting down: finishing requests, closing the store");
    server.shutdown();
    server.stopped().await?;
    println!("stopped cleanly");
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn wait_for_signal() -> Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}

fn keygen(out: &std::path::Path) -> Result<()> {
    if out.exists() {
        return Err(CliError::Usage(format!(
            "{} exists; not overwriting a key",
            out.display()
        )));
    }
    let keypair = Keypair::random();
    keypair.write_secret_key_file(out)?;
    println!("{}", keypair.public_key().z32());
    Ok(())
}

fn token(secret_file: &std::path::Path, caps: &str, out: Option<&std::path::Path>) -> Result<()> {
    let keypair = Keypair::from_secret_key_file(secret_file)
        .map_err(|err| CliError::Usage(format!("cannot read {}: {err}", secret_file.display())))?;
    let capabilities: Capabilities = caps
        .parse()
        .map_err(|err| CliError::Usage(format!("bad --caps {caps:?}: {err}")))?;
    let bytes = AuthToken::sign(&keypair, capabilities).serialize();
    match out {
        Some(path) => std::fs::write(path, bytes)?,
        None => std::io::stdout().write_all(&bytes)?,
    }
    Ok(())
}
