//! Starting and stopping a server.
//!
//! `Server::start` opens the store, starts the writer, binds the listeners and serves until
//! `shutdown` is called; `stopped` then waits for in-flight requests to finish, the writer to
//! drain, and LMDB to close. The binary and the tests use exactly this path.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, ConfigError};
use crate::files::content::InFlight;
use crate::files::Files;
use crate::http::{self, AppState};
use crate::identity::{self, IdentityError};
use crate::log::hub::{Hub, DEFAULT_MAILBOX};
use crate::log::EventLog;
use crate::log::{CommitListener, Writer};
use crate::migrations;
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
    bodies: InFlight,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<Result<()>>,
}

impl Server {
    /// Open the store in `config.data_dir`, bind, and start serving.
    pub async fn start(config: Config) -> Result<Server> {
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

        let hub = Hub::new(log.last_seq()?, DEFAULT_MAILBOX, config.keepalive());
        let publisher = Arc::clone(&hub);
        let on_commit: CommitListener = Arc::new(move |events| publisher.publish(events));
        let (writer, writer_thread) = Writer::start(&store, log.clone(), on_commit)?;

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

        let (shutdown, shutdown_rx) = watch::channel(false);
        let bodies = InFlight::new(config.max_body_bytes_in_flight);
        let state = AppState {
            files: files.clone(),
            log: log.clone(),
            writer,
            config: Arc::new(config),
            server_key: public_key.clone().into(),
            shutdown: shutdown_rx.clone(),
            hub: Arc::clone(&hub),
            bodies: bodies.clone(),
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
        let public = axum::serve(listener, http::router(state.clone()).into_make_service())
            .with_graceful_shutdown(signalled(shutdown_rx.clone()));
        let admin = admin_listener.map(|listener| {
            axum::serve(listener, http::admin::router(state.clone()))
                .with_graceful_shutdown(signalled(shutdown_rx.clone()))
        });
        // Handlers hold their own clones; this one must not keep the writer alive.
        drop(state);

        let task = tokio::spawn(async move {
            let admin_task =
                admin.map(|admin| tokio::spawn(std::future::IntoFuture::into_future(admin)));
            let served = public.await;
            if let Some(admin_task) = admin_task {
                let _ = admin_task.await;
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
            bodies,
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

    /// The most bytes of request bodies held in memory at once so far.
    pub fn body_bytes_peak(&self) -> u64 {
        self.bodies.peak_bytes()
    }

    /// The event log being served.
    pub fn log(&self) -> &EventLog {
        &self.log
    }

    /// Wait until the server has stopped and the store is closed.
    pub async fn stopped(self) -> Result<()> {
        let Server {
            files, log, task, ..
        } = self;
        // The store closes once every handle is gone, these included.
        drop((files, log));
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
