//! Republishes the users' own pkarr records, so a user who stays offline is still found.
//!
//! A user's record (the `_pubky` HTTPS record naming their homeserver) is signed by the user,
//! and DHT nodes drop records nobody refreshes within a few hours. The server cannot re-sign
//! it, but it can put the same signed bytes back: for every user, on an interval, it reads the
//! most recent record from the network (or its own cache of it, if that is newer), and if the
//! record still names this homeserver, publishes it again, unchanged (same timestamp, same
//! signature). A user who moved elsewhere is left alone. This is what Pubky's homeserver does.
//!
//! Lookups run a few at a time; each user gets a few attempts with a growing pause; every pass
//! ends with one log line counting users, found, republished, elsewhere, missing and failed.

use std::time::Duration;

use futures_util::StreamExt;
use pkarr::dns::rdata::RData;
use pkarr::errors::{PublishError, ResolveError};
use pkarr::{Client, PublicKey, ResolvePolicy, SignedPacket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Default interval between passes: 4 hours, as Pubky.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(4 * 60 * 60);
/// Pubky's homeserver never republishes more often than this; Hearth warns below it.
pub const PUBKY_MIN_INTERVAL: Duration = Duration::from_secs(30 * 60);
/// Users looked up at once, as Pubky.
pub const CONCURRENCY: usize = 12;
/// The first pass waits this long after start (or one interval, if shorter), so a server
/// restarting in a loop does not flood the DHT.
pub const FIRST_DELAY: Duration = Duration::from_secs(60);
/// Attempts per user, and the pause before the second one (doubled each time).
const ATTEMPTS: u32 = 4;
const FIRST_PAUSE: Duration = Duration::from_millis(200);
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// Republishes users' records through one pkarr client.
#[derive(Debug, Clone)]
pub struct UserRepublisher {
    client: Client,
    homeserver: PublicKey,
    min_stored_nodes: u32,
    concurrency: usize,
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Users of this server looked up.
    pub users: usize,
    /// Users whose record was found (on the network or in the client's cache).
    pub found: usize,
    /// Records published again.
    pub republished: usize,
    /// Records found that name another homeserver (or none): left alone.
    pub elsewhere: usize,
    /// Users with no record on the network.
    pub missing: usize,
    /// Users whose record could not be read or republished after every attempt.
    pub failed: usize,
}

impl Summary {
    fn add(&mut self, outcome: Outcome) {
        self.users += 1;
        match outcome {
            Outcome::Republished => self.republished += 1,
            Outcome::Elsewhere => self.elsewhere += 1,
            Outcome::Missing => self.missing += 1,
            Outcome::Failed { .. } => self.failed += 1,
        }
        if matches!(
            outcome,
            Outcome::Republished | Outcome::Elsewhere | Outcome::Failed { found: true }
        ) {
            self.found += 1;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Republished,
    Elsewhere,
    Missing,
    /// `found`: the record was read, but publishing it failed.
    Failed {
        found: bool,
    },
}

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("lookup failed: {0}")]
    Resolve(#[from] ResolveError),
    #[error("publish failed: {0}")]
    Publish(#[from] PublishError),
    #[error("stored on only {0} DHT nodes")]
    TooFewNodes(u32),
}

impl UserRepublisher {
    /// `min_stored_nodes`: how many DHT nodes must take a record for it to count
    /// (`Network::min_stored_nodes`).
    pub fn new(client: Client, homeserver: PublicKey, min_stored_nodes: u32) -> Self {
        UserRepublisher {
            client,
            homeserver,
            min_stored_nodes,
            concurrency: CONCURRENCY,
        }
    }

    /// One pass over `users`, `CONCURRENCY` at a time.
    pub async fn run_once(&self, users: Vec<PublicKey>) -> Summary {
        let outcomes = futures_util::stream::iter(users)
            .map(|user| async move { self.republish(&user).await })
            .buffer_unordered(self.concurrency);
        outcomes
            .fold(Summary::default(), |mut summary, outcome| async move {
                summary.add(outcome);
                summary
            })
            .await
    }

    async fn republish(&self, user: &PublicKey) -> Outcome {
        let mut pause = FIRST_PAUSE;
        let mut attempt = 1;
        loop {
            match self.attempt(user).await {
                Ok(outcome) => return outcome,
                Err(err) if attempt < ATTEMPTS => {
                    tracing::debug!(user = %user, attempt, "republishing a user's record: {err}");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                    attempt += 1;
                }
                Err(err) => {
                    tracing::warn!(user = %user, attempt, "republishing a user's record failed: {err}");
                    let found = !matches!(err, AttemptError::Resolve(_));
                    return Outcome::Failed { found };
                }
            }
        }
    }

    async fn attempt(&self, user: &PublicKey) -> Result<Outcome, AttemptError> {
        // What this client saw last time, if anything: it may outlive the network's copy.
        let cached = self
            .client
            .resolve(user, ResolvePolicy::CacheOnly)
            .await
            .ok();
        let network = match self.client.resolve(user, ResolvePolicy::NetworkOnly).await {
            Ok(packet) => Some(packet),
            Err(ResolveError::NotFound) => None,
            // A newer item that is not a valid record: only ours, if at least as new, wins.
            Err(ResolveError::InvalidSignedPacket { seq })
                if cached
                    .as_ref()
                    .is_some_and(|packet| packet.timestamp().as_u64() as i64 >= seq) =>
            {
                None
            }
            Err(err) => return Err(err.into()),
        };
        let packet = match (network, cached) {
            (Some(network), Some(cached)) if cached.more_recent_than(&network) => cached,
            (Some(network), _) => network,
            (None, Some(cached)) => cached,
            (None, None) => return Ok(Outcome::Missing),
        };
        if !names_homeserver(&packet, &self.homeserver) {
            return Ok(Outcome::Elsewhere);
        }
        let stored_on = self.client.publish(&packet).await?;
        if stored_on < self.min_stored_nodes {
            return Err(AttemptError::TooFewNodes(stored_on));
        }
        Ok(Outcome::Republished)
    }
}

/// Whether the user's `_pubky` record (HTTPS or SVCB) names `homeserver` as its target.
pub fn names_homeserver(packet: &SignedPacket, homeserver: &PublicKey) -> bool {
    packet
        .resource_records("_pubky")
        .find_map(|record| match &record.rdata {
            RData::HTTPS(https) => Some(https.0.target.to_string()),
            RData::SVCB(svcb) => Some(svcb.target.to_string()),
            _ => None,
        })
        .and_then(|target| PublicKey::try_from(target.as_str()).ok())
        .is_some_and(|target| target == *homeserver)
}

/// Run a pass every `interval` until `shutdown`, over the users `users` lists at that moment,
/// and tell `passes` how each went. Reading the list runs on the blocking pool (it reads the
/// store).
pub fn spawn<F, E>(
    republisher: UserRepublisher,
    interval: Duration,
    users: F,
    passes: watch::Sender<Option<Summary>>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()>
where
    F: Fn() -> Result<Vec<PublicKey>, E> + Clone + Send + Sync + 'static,
    E: std::fmt::Display + Send + 'static,
{
    tokio::spawn(async move {
        let mut wait = FIRST_DELAY.min(interval);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            wait = interval;
            let list = users.clone();
            let keys = match tokio::task::spawn_blocking(list).await {
                Ok(Ok(keys)) => keys,
                Ok(Err(err)) => {
                    tracing::error!("cannot list users to republish their records: {err}");
                    continue;
                }
                Err(err) => {
                    tracing::error!("listing users to republish their records panicked: {err}");
                    continue;
                }
            };
            let started = std::time::Instant::now();
            let summary = tokio::select! {
                summary = republisher.run_once(keys) => summary,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            log(&summary, started.elapsed());
            passes.send_replace(Some(summary));
        }
    })
}

fn log(summary: &Summary, elapsed: Duration) {
    let Summary {
        users,
        found,
        republished,
        elsewhere,
        missing,
        failed,
    } = *summary;
    let elapsed_ms = elapsed.as_millis() as u64;
    tracing::info!(
        users,
        found,
        republished,
        elsewhere,
        missing,
        failed,
        elapsed_ms,
        "republished users' pkarr records"
    );
    if failed > 0 {
        tracing::warn!(failed, "some users' pkarr records could not be republished");
    }
}

#[cfg(test)]
mod tests {
    use pkarr::dns::rdata::SVCB;
    use pkarr::dns::Name;
    use pkarr::Keypair;

    use super::*;
    use crate::pkarr::Network;

    /// A user's `_pubky` record, as the SDK publishes it at signup.
    fn user_record(user: &Keypair, homeserver: &PublicKey) -> SignedPacket {
        let target = homeserver.to_z32();
        SignedPacket::builder()
            .https(
                Name::new_unchecked("_pubky"),
                SVCB::new(0, Name::new_unchecked(&target)),
                3600,
            )
            .sign(user)
            .unwrap()
    }

    #[test]
    fn only_records_naming_this_homeserver_are_ours() {
        let user = Keypair::random();
        let ours = Keypair::random().public_key();
        let theirs = Keypair::random().public_key();
        assert!(names_homeserver(&user_record(&user, &ours), &ours));
        assert!(!names_homeserver(&user_record(&user, &theirs), &ours));
        let empty = SignedPacket::builder().sign(&user).unwrap();
        assert!(!names_homeserver(&empty, &ours));
    }

    #[tokio::test]
    async fn one_pass_counts_every_user() {
        let testnet = mainline::Testnet::builder(3).build().unwrap();
        let network = Network::testnet(&testnet.bootstrap);
        let homeserver = Keypair::random().public_key();
        let publisher = network.client().unwrap();

        let ours = Keypair::random();
        let packet = user_record(&ours, &homeserver);
        publisher.publish(&packet).await.unwrap();
        let moved = Keypair::random();
        let elsewhere = Keypair::random().public_key();
        publisher
            .publish(&user_record(&moved, &elsewhere))
            .await
            .unwrap();
        let silent = Keypair::random();

        let republisher = UserRepublisher::new(
            network.client().unwrap(),
            homeserver,
            network.min_stored_nodes(),
        );
        let summary = republisher
            .run_once(vec![
                ours.public_key(),
                moved.public_key(),
                silent.public_key(),
            ])
            .await;
        assert_eq!(
            summary,
            Summary {
                users: 3,
                found: 2,
                republished: 1,
                elsewhere: 1,
                missing: 1,
                failed: 0,
            }
        );

        // What is on the DHT is the user's record, unchanged: same timestamp, same bytes.
        let reader = network.client().unwrap();
        let found = reader
            .resolve(&ours.public_key(), ResolvePolicy::NetworkOnly)
            .await
            .unwrap();
        assert_eq!(found.timestamp(), packet.timestamp());
        assert_eq!(found.as_bytes(), packet.as_bytes());
    }
}
