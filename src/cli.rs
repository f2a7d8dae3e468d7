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
    #[error(transparent)]
    Backup(#[from] crate::backup::BackupError),
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
    /// How log lines on standard error look: `text` (colour only on a terminal) or `json`.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "HEARTH_LOG_FORMAT"
    )]
    pub log_format: crate::logging::LogFormat,
}

#[derive(Debug, Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once at start-up; boxing would only add noise"
)]
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
    /// Copy a data directory (its store, compacted, and the server key) into a new directory,
    /// while its server runs. Restore by starting a server on the copy.
    Backup {
        /// The data directory to copy.
        #[arg(long, env = "HEARTH_DATA_DIR")]
        data_dir: PathBuf,
        /// A new (or empty) directory, which becomes a data directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Check a data directory's store: schema, sequences, the by_user index, files against
    /// their newest events. Exits non-zero when it finds a problem.
    Verify {
        #[arg(long, env = "HEARTH_DATA_DIR")]
        data_dir: PathBuf,
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
    /// Run a local Mainline DHT for development (127.0.0.1 only) until Ctrl-C; point servers
    /// and clients at it with --pkarr-bootstrap 127.0.0.1:PORT.
    Testnet {
        /// The bootstrap node's UDP port (the SDK's testnet mode expects 6881).
        #[arg(long, default_value_t = crate::pkarr::testnet::DEFAULT_PORT)]
        port: u16,
        /// How many DHT nodes to run.
        #[arg(long, default_value_t = 5)]
        nodes: usize,
    },
    /// Look up a homeserver's pkarr record on the DHT and relays, print it like dig, and say
    /// how a client would reach it.
    Resolve {
        /// The homeserver's public key (z32).
        key: String,
        /// DHT bootstrap nodes, HOST:PORT[,...] [default: the public Mainline DHT]
        #[arg(long, value_delimiter = ',')]
        pkarr_bootstrap: Option<Vec<String>>,
        /// pkarr relay URLs, URL[,...] [default: pkarr's public relays, none with
        /// --pkarr-bootstrap]
        #[arg(long, value_delimiter = ',')]
        pkarr_relay: Option<Vec<String>>,
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
        Command::Backup { data_dir, out } => backup(&data_dir, &out),
        Command::Verify { data_dir } => verify(&data_dir),
        Command::Token {
            secret_file,
            caps,
            out,
        } => token(&secret_file, &caps, out.as_deref()),
        Command::Testnet { port, nodes } => {
            let testnet = crate::pkarr::testnet::Testnet::start(port, nodes).await?;
            println!(
                "local DHT: {} nodes, bootstrap 127.0.0.1:{}",
                testnet.len(),
                testnet.bootstrap().port()
            );
            println!("serve with: --pkarr-bootstrap {}", testnet.bootstrap());
            wait_for_signal().await?;
            drop(testnet);
            Ok(())
        }
        Command::Resolve {
            key,
            pkarr_bootstrap,
            pkarr_relay,
        } => {
            let network = crate::pkarr::Network {
                bootstrap: pkarr_bootstrap,
                relays: pkarr_relay,
            };
            resolve(&key, &network).await
        }
    }
}

async fn resolve(key: &str, network: &crate::pkarr::Network) -> Result<()> {
    use crate::pkarr::{record, resolve};
    let key = crate::pkarr::PublicKey::try_from(key)
        .map_err(|err| CliError::Usage(format!("{key:?} is not a public key: {err}")))?;
    let client = network
        .client()
        .map_err(|err| CliError::Usage(err.to_string()))?;
    let packet = resolve::lookup(&client, &key, crate::pkarr::ResolvePolicy::NetworkOnly)
        .await
        .map_err(|err| CliError::Usage(err.to_string()))?;
    for line in record::dig(&packet) {
        println!("{line}");
    }
    let address = resolve::read_record(&packet).map_err(|err| CliError::Usage(err.to_string()))?;
    for addr in address.tls_addrs() {
        println!("; PubkyTLS: {addr}");
    }
    if let Some(url) = address.icann_url() {
        println!("; ICANN (browsers): {url}");
    }
    Ok(())
}

/// Say where a started server is, serve until Ctrl-C or SIGTERM, then stop it cleanly.
async fn run_server(server: Server, config: &Config) -> Result<()> {
    println!("hearth listening on {}", server.url());
    println!("server public key: {}", server.public_key());
    println!("data directory: {}", config.data_dir.display());
    if let Some(admin) = server.admin_addr() {
        println!("admin listening on http://{admin}");
    }
    if let Some(tls) = server.tls_addr() {
        println!("PubkyTLS listening on {tls}; publishing the pkarr record in the background");
    }
    if let Some(metrics) = server.metrics_addr() {
        println!("metrics listening on http://{metrics}/metrics");
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

fn backup(data_dir: &std::path::Path, out: &std::path::Path) -> Result<()> {
    let made = crate::backup::backup(data_dir, out)?;
    println!(
        "backup of {} written to {}: {} bytes of store{}",
        data_dir.display(),
        made.dir.display(),
        made.data_bytes,
        if made.with_key {
            ", and the server key"
        } else {
            "; no server key file was found (a new key would be made on start)"
        }
    );
    let report = crate::verify::verify(&made.dir)?;
    println!("{report}");
    if !report.is_clean() {
        return Err(CliError::Usage("the backup does not verify".into()));
    }
    println!("restore: hearth serve --data-dir {}", made.dir.display());
    Ok(())
}

fn verify(data_dir: &std::path::Path) -> Result<()> {
    let report = crate::verify::verify(data_dir)?;
    println!("{report}");
    if report.is_clean() {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "{} problem(s) found in {}",
            report.problem_count,
            data_dir.display()
        )))
    }
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
