//! Being found: pkarr records on the Mainline DHT and its relays.
//!
//! The `pubky` SDK never takes a homeserver URL: it reads a user's `_pubky` record, then the
//! homeserver's own record, and connects to what that record says. This module owns both ends:
//!
//! - `Network`: which DHT and relays the server talks to, and the pkarr `Client` built from it;
//! - `record`: the server's own record (its shape is Pubky's, byte for byte);
//! - `publisher`: publishes that record in the background, retried until it lands, then hourly;
//! - `republisher`: republishes the users' own records, unchanged, so they don't expire;
//! - `resolve`: from a homeserver's key to how to reach it (for the relay);
//! - `tls`: the client side of PubkyTLS, for a server whose key is known;
//! - `testnet`: a local DHT for development (`hearth testnet`).
//!
//! `Beacon` runs the publisher and the republisher for a server. Nothing here knows HTTP or the
//! store: the server hands in the key, the settings, the list of users and the shutdown signal.

pub mod publisher;
pub mod record;
pub mod republisher;
pub mod resolve;
pub mod testnet;
pub mod tls;

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

pub use pkarr::{Client, ClientBuilder, Keypair, PublicKey, ResolvePolicy, SignedPacket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use publisher::PublishCount;
use record::{RecordError, ServerRecord};
use republisher::{Summary, UserRepublisher};

/// DHT nodes a publish must reach on the public Mainline DHT before Pubky counts it as done.
const PUBLIC_MIN_STORED_NODES: u32 = 10;

/// Which DHT and relays records are published to and resolved from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Network {
    /// DHT bootstrap nodes, `HOST:PORT`. None: the public Mainline DHT.
    pub bootstrap: Option<Vec<String>>,
    /// Relay URLs. None: pkarr's default relays, unless `bootstrap` is set (a private DHT and
    /// the public relays would disagree about every record).
    pub relays: Option<Vec<String>>,
}

/// Settings that cannot make a pkarr client. Fatal at start-up, unlike a failed publish.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("pkarr bootstrap node {0:?} is not HOST:PORT resolving to an IPv4 address")]
    Bootstrap(String),
    #[error("pkarr bootstrap list is empty")]
    EmptyBootstrap,
    #[error("pkarr relay {url:?} is not an http(s) URL: {reason}")]
    Relay { url: String, reason: String },
    #[error("cannot start the pkarr client: {0}")]
    Build(#[from] pkarr::errors::BuildError),
}

impl Network {
    /// A network of the given bootstrap nodes only: a local testnet.
    pub fn testnet(bootstrap: &[String]) -> Network {
        Network {
            bootstrap: Some(bootstrap.to_vec()),
            relays: None,
        }
    }

    /// A pkarr client builder for this network; `client` builds it.
    pub fn builder(&self) -> Result<ClientBuilder, NetworkError> {
        let mut builder = Client::builder();
        if let Some(bootstrap) = &self.bootstrap {
            let nodes = bootstrap_nodes(bootstrap)?;
            if nodes.iter().all(|node| node.ip().is_loopback()) {
                // A DHT on this machine: the client's own node listens there too, on any free
                // port (mainline would otherwise take 6881, the testnet's bootstrap port).
                builder.dht(|dht| {
                    dht.bind_address = Some(std::net::Ipv4Addr::LOCALHOST);
                    dht.port = Some(0);
                    dht
                });
            }
            builder
                .bootstrap(&nodes)
                .no_relays()
                // The thresholds behind pkarr's warnings are the public DHT's; a private
                // network of a few nodes would warn on every query.
                .dht_report_policy(pkarr::dht::ReportPolicy::testnet());
        }
        if let Some(relays) = &self.relays {
            let relays: Vec<&str> = relays
                .iter()
                .map(|url| url.trim())
                .filter(|url| !url.is_empty())
                .collect();
            if relays.is_empty() {
                builder.no_relays();
            } else {
                builder.relays(&relays).map_err(|err| NetworkError::Relay {
                    url: relays.join(","),
                    reason: err.to_string(),
                })?;
            }
        }
        Ok(builder)
    }

    /// A pkarr client for this network. It runs its own DHT node (a UDP socket and a thread)
    /// until the last clone is dropped.
    pub fn client(&self) -> Result<Client, NetworkError> {
        Ok(self.builder()?.build()?)
    }

    /// How many DHT nodes must store a republished record for it to count: Pubky's 10 on the
    /// public DHT, 1 on a private network (which may have only a handful of nodes).
    pub fn min_stored_nodes(&self) -> u32 {
        if self.bootstrap.is_some() {
            1
        } else {
            PUBLIC_MIN_STORED_NODES
        }
    }
}

/// What a server publishes, and where.
#[derive(Debug, Clone)]
pub struct BeaconSettings {
    pub network: Network,
    pub record: ServerRecord,
    /// Between passes over the users' records; zero: never.
    pub user_republish: Duration,
}

/// Why a beacon cannot start: bad settings, caught before the server serves.
#[derive(Debug, thiserror::Error)]
pub enum BeaconError {
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    Record(#[from] RecordError),
}

/// The server's presence on the DHT: its record published, its users' records kept alive.
pub struct Beacon {
    client: Client,
    published: watch::Receiver<PublishCount>,
    passes: watch::Receiver<Option<Summary>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Beacon {
    /// Sign the record and start the background tasks; returns at once. `users` lists the
    /// server's users (it is called on the blocking pool before each republishing pass).
    pub fn start<F, E>(
        keypair: &Keypair,
        settings: &BeaconSettings,
        users: F,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Beacon, BeaconError>
    where
        F: Fn() -> Result<Vec<PublicKey>, E> + Clone + Send + Sync + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let client = settings.network.client()?;
        let packet = settings.record.sign(keypair)?;
        let (published, publishing) = publisher::spawn(
            client.clone(),
            packet,
            publisher::Schedule::default(),
            shutdown.clone(),
        );
        let mut tasks = vec![publishing];
        let (pass, passes) = watch::channel(None);
        if settings.user_republish.is_zero() {
            tracing::info!("republishing users' pkarr records is off");
        } else {
            if settings.user_republish < republisher::PUBKY_MIN_INTERVAL {
                tracing::warn!(
                    secs = settings.user_republish.as_secs(),
                    "users' pkarr records are republished more often than every 30 minutes: \
                     heavy on the DHT (Pubky's homeserver refuses to go below that)"
                );
            }
            let republisher = UserRepublisher::new(
                client.clone(),
                keypair.public_key(),
                settings.network.min_stored_nodes(),
            );
            tasks.push(republisher::spawn(
                republisher,
                settings.user_republish,
                users,
                pass,
                shutdown,
            ));
        }
        Ok(Beacon {
            client,
            published,
            passes,
            tasks,
        })
    }

    /// The pkarr client the beacon publishes through.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// How publishing the server's record has gone so far, updated after each try.
    pub fn published(&self) -> watch::Receiver<PublishCount> {
        self.published.clone()
    }

    /// The last pass over the users' records (none before the first), updated after each.
    pub fn user_passes(&self) -> watch::Receiver<Option<Summary>> {
        self.passes.clone()
    }

    /// Wait for the tasks to end (they end on the shutdown signal).
    pub async fn stopped(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Check and resolve `HOST:PORT` entries. pkarr itself silently drops what does not resolve,
/// which would leave a server publishing nowhere without a word.
fn bootstrap_nodes(entries: &[String]) -> Result<Vec<SocketAddr>, NetworkError> {
    let mut nodes = Vec::new();
    for entry in entries.iter().map(|entry| entry.trim()) {
        if entry.is_empty() {
            continue;
        }
        let resolved: Vec<SocketAddr> = entry
            .to_socket_addrs()
            .map_err(|_| NetworkError::Bootstrap(entry.to_owned()))?
            .filter(SocketAddr::is_ipv4)
            .collect();
        if resolved.is_empty() {
            return Err(NetworkError::Bootstrap(entry.to_owned()));
        }
        nodes.extend(resolved);
    }
    if nodes.is_empty() {
        return Err(NetworkError::EmptyBootstrap);
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_entries_must_resolve() {
        assert!(bootstrap_nodes(&["127.0.0.1:6881".into()]).is_ok());
        assert!(matches!(
            bootstrap_nodes(&["no-port".into()]),
            Err(NetworkError::Bootstrap(_))
        ));
        assert!(matches!(
            bootstrap_nodes(&[]),
            Err(NetworkError::EmptyBootstrap)
        ));
    }

    #[test]
    fn relays_must_be_http() {
        let network = Network {
            bootstrap: None,
            relays: Some(vec!["ftp://relay.example".into()]),
        };
        assert!(matches!(network.builder(), Err(NetworkError::Relay { .. })));
    }
}
