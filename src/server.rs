//! Starting and stopping a server.
//!
//! `Server::start` locks the data directory, opens the store, starts the writer, binds the
//! listeners and serves until `shutdown` is called; `stopped` then waits for in-flight requests
//! to finish (at most the shutdown grace), the writer to drain, and LMDB to close. The binary
//! and the tests use exactly this path.
//!
//! `Server::start_relay` is the same server in its other role: the same store, log, writer,
//! hub and event streams, with the relay's sources as the producer instead of file writes,
//! and the relay's routes (no files, no accounts).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::config::{Config, ConfigError};
use crate::datadir::{DataDirError, DataDirLock};
use crate::files::content::InFlight;
use crate::files::Files;
use crate::http::serve::{self, Listener};
use crate::http::throttle::Throttles;
use crate::http::{self, AppState};
use crate::identity::{self, IdentityError};
use crate::log::hub::{Hub, DEFAULT_MAILBOX};
use crate::log::EventLog;
use crate::log::{CommitListener, Writer};
use crate::migrations;
use crate::pkarr::publisher::PublishCount;
use crate::pkarr::record::ServerRecord;
use crate::pkarr::republisher::Summary;
use crate::pkarr::{Beacon, BeaconSettings, PublicKey};
use crate::relay::{Relay, RelayError, RelayTables};
use crate::store::{meta_keys, Store, StoreError, StoreOptions};

/// Why a server could not start, or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Relay(#[from] RelayError),
    #[error("i/o failure: {0}")]
    Io(#[from] std::io::Error),
    /// A setting that passed the config's own checks but cannot work (the pkarr network).
    #[error("{0}")]
    Setting(String),
    /// The data directory belongs to another key.
    #[error("{0}")]
    KeyMismatch(String),
    /// A task of the server's own panicked or was cancelled.
    #[error("internal error: {0}")]
    Task(String),
}

type Result<T> = std::result::Result<T, ServerError>;

/// A running server.
pub struct Server {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    tls_addr: Option<SocketAddr>,
    public_key: String,
    /// How publishing the pkarr record goes, and the passes over users' records.
    published: Option<watch::Receiver<PublishCount>>,
    user_passes: Option<watch::Receiver<Option<Summary>>>,
    files: Files,
    log: EventLog,
    bodies: InFlight,
    relay: Option<Relay>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<Result<()>>,
}

/// What a server is: a homeserver (its events come from file writes) or a relay (from its
/// sources).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Homeserver,
    Relay,
}

impl Server {
    /// Open the store in `config.data_dir`, bind, and start serving as a homeserver.
    pub async fn start(config: Config) -> Result<Server> {
        Self::launch(config, Role::Homeserver).await
    }

    /// Open the store, bind, start following `config.sources`, and serve as a relay.
    pub async fn start_relay(config: Config) -> Result<Server> {
        Self::launch(config, Role::Relay).await
    }

    async fn launch(mut config: Config, role: Role) -> Result<Server> {
        config.validate()?;
        if config.tls_listen.is_some() || role == Role::Relay {
            // Bootstrap nodes and relay URLs are checked before anything starts (a relay
            // resolves the sources it follows by key there).
            config.pkarr_network().builder().map_err(bad_setting)?;
        }
        // Before anything in the directory is touched: one server per data directory.
        let lock = DataDirLock::acquire(&config.data_dir)?;
        let keypair = identity::load_or_create(&config.data_dir)?;
        let public_key = keypair.public_key().z32();
        let options = StoreOptions {
            map_size: config.map_size,
            sync: config.sync,
        };
        let data_dir = config.data_dir.clone();
        let store =
            tokio::task::spawn_blocking(move || Store::open(&data_dir, &options, migrations::ALL))
                .await
                .map_err(|err| ServerError::Task(format!("opening the store failed: {err}")))??;
        check_server_key(&store, &public_key)?;
        let log = EventLog::open(&store)?;
        let files = Files::open(&store)?;

        let hub = Hub::new(log.last_seq()?, DEFAULT_MAILBOX, config.keepalive());
        let publisher = Arc::clone(&hub);
        let on_commit: CommitListener = Arc::new(move |events| publisher.publish(events));
        let (writer, writer_thread) = Writer::start(&store, log.clone(), on_commit)?;

        let listener = bind(config.listen).await?;
        let addr = listener.local_addr()?;
        // What was bound (port 0 becomes a real one): the admin status page links to it.
        config.listen = addr;
        let tls_listener = match config.tls_listen {
            Some(tls) => Some(bind(tls).await?),
            None => None,
        };
        let tls_addr = tls_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        if tls_addr.is_some() {
            config.tls_listen = tls_addr;
        }
        let admin_listener = match config.admin_listen {
            Some(admin) => Some(bind(admin).await?),
            None => None,
        };
        let admin_addr = admin_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        let metrics_listener = match config.metrics_listen {
            Some(metrics) => Some(bind(metrics).await?),
            None => None,
        };
        let metrics_addr = metrics_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        let retention = config.retention();
        let open_files = serve::raise_open_file_limit();
        let max_connections = config
            .max_connections
            .unwrap_or_else(|| serve::default_max_connections(open_files));
        tracing::info!(open_files, max_connections, "connection limit");
        let limits = config.connection_limits();

        let (shutdown, shutdown_rx) = watch::channel(false);
        // Findable only with a TLS listener: the record points clients at it.
        let beacon = match tls_addr {
            Some(tls_addr) => Some(start_beacon(
                &config,
                &keypair,
                addr,
                tls_addr,
                files.clone(),
                shutdown_rx.clone(),
            )?),
            None => None,
        };
        let published = beacon.as_ref().map(Beacon::published);
        let user_passes = beacon.as_ref().map(Beacon::user_passes);
        let bodies = InFlight::new(config.max_body_bytes_in_flight);
        // Sources start once the listeners are bound: a server that cannot start reads none.
        let relay = match role {
            Role::Homeserver => None,
            Role::Relay => Some(Relay::start(
                writer.clone(),
                RelayTables::open(&store)?,
                &config.sources,
                crate::relay::Settings {
                    network: config.pkarr_network(),
                    ..crate::relay::Settings::default()
                },
                shutdown_rx.clone(),
            )?),
        };
        let throttles = Arc::new(Throttles::new(
            config.rate_read.clone(),
            config.rate_write.clone(),
        ));
        let state = AppState::new(http::Shared {
            files: files.clone(),
            log: log.clone(),
            writer,
            config: Arc::new(config),
            server_key: public_key.clone().into(),
            shutdown: shutdown_rx.clone(),
            hub: Arc::clone(&hub),
            bodies: bodies.clone(),
            relay: relay.clone(),
            throttles,
            login_key: http::admin_login_key(&keypair.secret_key()),
        });
        // Event streams never end by themselves: close them when shutdown begins, so that the
        // graceful shutdown below can finish.
        let stop_streams = shutdown_rx.clone();
        tokio::spawn(async move {
            signalled(stop_streams).await;
            hub.shutdown();
        });
        // The public listeners (plain and TLS) share one connection limit; the admin listener
        // has its own few slots, so that a flood on the public port never locks the admin out.
        let slots = Arc::new(Semaphore::new(max_connections));
        let (router, admin_router) = match role {
            Role::Homeserver => (
                http::router(state.clone()),
                http::admin::router(state.clone()),
            ),
            Role::Relay => (
                http::relay::router(state.clone()),
                http::relay::admin_router(state.clone()),
            ),
        };
        let mut listeners = vec![Listener {
            tcp: listener,
            tls: None,
            app: router.clone(),
            streams: true,
            slots: Arc::clone(&slots),
            name: "http",
        }];
        if let Some(tcp) = tls_listener {
            listeners.push(Listener {
                tcp,
                tls: Some(serve::tls_acceptor(keypair.as_inner())),
                app: router,
                streams: true,
                slots,
                name: "tls",
            });
        }
        if let Some(tcp) = admin_listener {
            listeners.push(Listener {
                tcp,
                tls: None,
                app: admin_router,
                streams: false,
                slots: Arc::new(Semaphore::new(ADMIN_CONNECTIONS)),
                name: "admin",
            });
        }
        // The metrics listener: its own few slots too, like the admin's.
        if let (Some(tcp), Some(handle)) = (metrics_listener, crate::telemetry::install()) {
            listeners.push(Listener {
                tcp,
                tls: None,
                app: http::metrics::router(state.clone(), handle),
                streams: false,
                slots: Arc::new(Semaphore::new(ADMIN_CONNECTIONS)),
                name: "metrics",
            });
        }
        // Retention holds a writer until shutdown, like a handler would.
        crate::log::retention::spawn(
            state.writer.clone(),
            log.clone(),
            retention,
            shutdown_rx.clone(),
        );
        // Handlers hold their own clones; this one must not keep the writer alive.
        drop(state);

        let sources = relay.clone();
        let task = tokio::spawn(async move {
            let serving: Vec<_> = listeners
                .into_iter()
                .map(|listener| {
                    tokio::spawn(serve::serve(listener, limits.clone(), shutdown_rx.clone()))
                })
                .collect();
            for listener in serving {
                let _ = listener.await;
            }
            // The source tasks end on the same signal; their last batches reach the writer
            // before it drains.
            if let Some(relay) = sources {
                relay.stopped().await;
            }
            // The republisher reads the store: it must be done before the store closes.
            if let Some(beacon) = beacon {
                beacon.stopped().await;
            }
            // Every `Writer` is gone with the routers: the writer drains its queue (every
            // acknowledged write is committed already) and exits; then the store closes.
            tokio::task::spawn_blocking(move || {
                writer_thread.join();
                store.close();
            })
            .await
            .map_err(|err| ServerError::Task(format!("closing the store failed: {err}")))?;
            drop(lock);
            Ok(())
        });

        Ok(Server {
            addr,
            admin_addr,
            metrics_addr,
            tls_addr,
            public_key,
            published,
            user_passes,
            files,
            log,
            bodies,
            relay,
            shutdown,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The metrics listener's address, when `metrics_listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The TLS listener's address, when `tls_listen` is set.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// Publishes of the server's pkarr record so far (with a TLS listener only).
    pub fn record_published(&self) -> Option<watch::Receiver<PublishCount>> {
        self.published.clone()
    }

    /// The last pass republishing users' records (with a TLS listener only).
    pub fn user_passes(&self) -> Option<watch::Receiver<Option<Summary>>> {
        self.user_passes.clone()
    }

    /// The server's public key, z-base32.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Begin a graceful shutdown: stop accepting, let requests finish, end event streams.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// The homeserver's state being served, for reading what is committed (tests, tools).
    pub fn files(&self) -> &Files {
        &self.files
    }

    /// The most bytes of request bodies held in memory at once so far.
    pub fn body_bytes_peak(&self) -> u64 {
        self.bodies.peak_bytes()
    }

    /// The event log being served.
    pub fn log(&self) -> &EventLog {
        &self.log
    }

    /// A relay's sources (`None` for a homeserver).
    pub fn relay(&self) -> Option<&Relay> {
        self.relay.as_ref()
    }

    /// Wait until the server has stopped and the store is closed.
    pub async fn stopped(self) -> Result<()> {
        let Server {
            files,
            log,
            relay,
            task,
            ..
        } = self;
        // The store closes once every handle is gone, these included.
        drop((files, log, relay));
        task.await
            .map_err(|err| ServerError::Task(format!("the server task failed: {err}")))?
    }
}

/// Connection slots of the admin listener, apart from the public limit.
const ADMIN_CONNECTIONS: usize = 64;

async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|err| {
        ServerError::Io(std::io::Error::new(
            err.kind(),
            format!("cannot listen on {addr}: {err}"),
        ))
    })
}

/// Publish the server's record (pointing at the bound or configured public ports) and keep
/// its users' records alive.
fn start_beacon(
    config: &Config,
    keypair: &pubky_common::crypto::Keypair,
    http_addr: SocketAddr,
    tls_addr: SocketAddr,
    files: Files,
    shutdown: watch::Receiver<bool>,
) -> Result<Beacon> {
    let settings = BeaconSettings {
        network: config.pkarr_network(),
        record: ServerRecord {
            public_ip: config.public_ip,
            tls_port: config.public_tls_port.unwrap_or(tls_addr.port()),
            http_port: config.public_http_port.unwrap_or(http_addr.port()),
            icann_domain: config.icann_domain.clone(),
        },
        user_republish: std::time::Duration::from_secs(config.user_republish_secs),
    };
    // Keys in the users table were checked at signup; one that no longer parses is skipped.
    let users = move || {
        files.user_keys().map(|keys| {
            keys.iter()
                .filter_map(|key| PublicKey::try_from(key.as_str()).ok())
                .collect::<Vec<_>>()
        })
    };
    let beacon =
        Beacon::start(keypair.as_inner(), &settings, users, shutdown).map_err(bad_setting)?;
    tracing::info!(
        record = ?settings.record,
        network = ?settings.network,
        "publishing the server's pkarr record in the background"
    );
    Ok(beacon)
}

fn bad_setting(err: impl std::fmt::Display) -> ServerError {
    ServerError::Setting(err.to_string())
}

async fn signalled(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// The store remembers which key served it; a different key file is a mistake to stop at.
fn check_server_key(store: &Store, public_key: &str) -> Result<()> {
    match store.meta(meta_keys::SERVER_KEY)? {
        None => Ok(store.put_meta(meta_keys::SERVER_KEY, public_key.as_bytes())?),
        Some(stored) if stored == public_key.as_bytes() => Ok(()),
        Some(stored) => Err(ServerError::KeyMismatch(format!(
            "this data directory was served by key {}, but its key file now holds {public_key}; \
             restore the original {} file",
            String::from_utf8_lossy(&stored),
            identity::KEY_FILE
        ))),
    }
}
