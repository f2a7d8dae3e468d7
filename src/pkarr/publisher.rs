//! Publishes the server's record in the background.
//!
//! The server never waits for the DHT: the first publish runs in a task of its own, retried
//! every minute until it lands, then the same signed record is republished every hour (DHT
//! nodes forget what is not refreshed). A failure is logged and counted, never fatal. The task
//! ends when the server's shutdown signal flips, in the middle of a publish if need be.

use std::time::Duration;

use pkarr::{Client, SignedPacket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long after a failed publish the next try comes.
pub const RETRY: Duration = Duration::from_secs(60);
/// How long after a successful publish the record is published again.
pub const REFRESH: Duration = Duration::from_secs(60 * 60);

/// What the publisher has done so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PublishCount {
    /// Publishes that succeeded.
    pub published: u64,
    /// Publishes that failed.
    pub failed: u64,
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
) -> (watch::Receiver<PublishCount>, JoinHandle<()>) {
    let (count, counted) = watch::channel(PublishCount::default());
    let task = tokio::spawn(run(client, packet, schedule, count, shutdown));
    (counted, task)
}

async fn run(
    client: Client,
    packet: SignedPacket,
    schedule: Schedule,
    count: watch::Sender<PublishCount>,
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
                count.send_modify(|count| count.published += 1);
                tracing::info!(%key, stored_on, "published the server's pkarr record");
                schedule.refresh
            }
            Err(err) => {
                count.send_modify(|count| count.failed += 1);
                let failed = count.borrow().failed;
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
