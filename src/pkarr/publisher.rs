//! Publishes the server's record in the background.
//!
//! The server never waits for the DHT: the first publish runs in a task of its own, retried
//! every minute until it lands, then the same signed record is republished every hour (DHT
//! nodes forget what is not refreshed). A failure is logged and counted, never fatal. The task
//! ends when the server's shutdown signal flips, in the middle of a publish if need be.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pkarr::{Client, SignedPacket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long after a failed publish the next try comes.
pub const RETRY: Duration = Duration::from_secs(60);
/// How long after a successful publish the record is published again.
pub const REFRESH: Duration = Duration::from_secs(60 * 60);

/// What the publisher has done so far; shared with whoever wants to know.
#[derive(Debug, Default)]
pub struct PublishStatus {
    published: AtomicU64,
    failed: AtomicU64,
}

impl PublishStatus {
    /// Publishes that succeeded.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Publishes that failed.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

/// When to try again.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub retry: Duration,
    pub refresh: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            retry: RETRY,
            refresh: REFRESH,
        }
    }
}

/// Start publishing `packet` until `shutdown` becomes true.
pub fn spawn(
    client: Client,
    packet: SignedPacket,
    schedule: Schedule,
    shutdown: watch::Receiver<bool>,
) -> (Arc<PublishStatus>, JoinHandle<()>) {
    let status = Arc::new(PublishStatus::default());
    let task = tokio::spawn(run(client, packet, schedule, Arc::clone(&status), shutdown));
    (status, task)
}

async fn run(
    client: Client,
    packet: SignedPacket,
    schedule: Schedule,
    status: Arc<PublishStatus>,
    mut shutdown: watch::Receiver<bool>,
) {
    let key = packet.public_key().to_z32();
    loop {
        let published = tokio::select! {
            result = client.publish(&packet) => result,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let wait = match published {
            Ok(stored_on) => {
                status.published.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%key, stored_on, "published the server's pkarr record");
                schedule.refresh
            }
            Err(err) => {
                let failed = status.failed.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(
                    %key,
                    failed,
                    retry_in_secs = schedule.retry.as_secs(),
                    "publishing the server's pkarr record failed: {err}"
                );
                schedule.retry
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}
