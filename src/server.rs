//! Starting and stopping a server.
//!
//! `Server::start` opens the store, starts the writer, binds the listeners and serves until
//! `shutdown` is called; `stopped` then waits for in-flight requests to finish, the writer to
//! drain, and LMDB to close. The binary and the tests use exactly this path.
//!
//! `Server::start_relay` is the same server in its other role: the same store, log, writer,
//! hub and event streams, with the relay's sources as the producer instead of file writes,
//! and the relay's routes (no files, no accounts).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, ConfigError};
use crate::files::Files;
use crate::http::{self, AppState};
use crate::identity::{self, IdentityError};
use crate::log::hub::{Hub, DEFAULT_MAILBOX};
use crate::log::EventLog;
use crate::log::{CommitListener, Writer};
use crate::migrations;
use crate::relay::{Relay, RelayError, RelayTables};
use crate::store::{meta_keys, Store, StoreError, StoreOptions};

/// Why a server could not start, or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Relay(#[from] RelayError),
    #[error("i/o failure: {0}")]
    Io(#[from] std::io::Error),
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
    public_key: String,
    files: Files,
    log: EventLog,
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

    async fn launch(config: Config, role: Role) -> Result<Server> {
        config.validate()?;
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

        let hub = Hub::new(log.last_seq()?, DEFAULT_MAILBOX);
        let publisher = Arc::clone(&hub);
        let on_commit: CommitListener = Arc::new(move |events| publisher.publish(events));
        let (writer, writer_thread) = Writer::start(&store, log.clone(), on_commit)?;
        let (shutdown, shutdown_rx) = watch::channel(false);

        let listener = TcpListener::bind(config.listen).await.map_err(|err| {
            ServerError::Io(std::io::Error::new(
                err.kind(),
                format!("cannot listen on {}: {err}", config.listen),
            ))
        })?;
        let addr = listener.local_addr()?;
        let admin_listener = match config.admin_listen {
            Some(admin) => Some(TcpListener::bind(admin).await.map_err(|err| {
                ServerError::Io(std::io::Error::new(
                    err.kind(),
                    format!("cannot listen on {admin}: {err}"),
                ))
            })?),
            None => None,
        };
        let admin_addr = admin_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;

        // Sources start once the listeners are bound: a server that cannot start reads none.
        let relay = match role {
            Role::Homeserver => None,
            Role::Relay => Some(Relay::start(
                writer.clone(),
                RelayTables::open(&store)?,
                &config.sources,
                crate::relay::Settings::default(),
                shutdown_rx.clone(),
            )?),
        };
        let state = AppState {
            files: files.clone(),
            log: log.clone(),
            writer,
            config: Arc::new(config),
            server_key: public_key.clone().into(),
            shutdown: shutdown_rx.clone(),
            hub: Arc::clone(&hub),
            relay: relay.clone(),
        };
        // Event streams never end by themselves: close them when shutdown begins, so that the
        // graceful shutdown below can finish.
        let stop_streams = shutdown_rx.clone();
        tokio::spawn(async move {
            signalled(stop_streams).await;
            hub.shutdown();
        });
        // `into_make_service`: each connection gets a cheap clone of the router. Serving the
        // `Router` itself re-runs `with_state(())` per connection, which deep-clones every
        // route (~19 KiB a connection, measured with heaptrack): too much for idle streams.
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
        // No Nagle: an event stream writes small frames one after another, and each would
        // otherwise wait for the previous one's ACK, which a client delays up to 40 ms.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            if let Err(err) = tcp.set_nodelay(true) {
                tracing::debug!(error = %err, "TCP_NODELAY refused");
            }
        });
        let public = axum::serve(listener, router.into_make_service())
            .with_graceful_shutdown(signalled(shutdown_rx.clone()));
        let admin = admin_listener.map(|listener| {
            axum::serve(listener, admin_router)
                .with_graceful_shutdown(signalled(shutdown_rx.clone()))
        });
        // Handlers hold their own clones; this one must not keep the writer alive.
        drop(state);

        let sources = relay.clone();
        let task = tokio::spawn(async move {
            let admin_task =
                admin.map(|admin| tokio::spawn(std::future::IntoFuture::into_future(admin)));
            let served = public.await;
            if let Some(admin_task) = admin_task {
                let _ = admin_task.await;
            }
            // The source tasks end on the same signal; their last batches reach the writer
            // before it drains.
            if let Some(relay) = sources {
                relay.stopped().await;
            }
            // Every `Writer` is gone with the router: the writer drains its queue and exits.
            tokio::task::spawn_blocking(move || {
                writer_thread.join();
                store.close();
            })
            .await
            .map_err(|err| ServerError::Task(format!("closing the store failed: {err}")))?;
            served.map_err(ServerError::Io)
        });

        Ok(Server {
            addr,
            admin_addr,
            public_key,
            files,
            log,
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
