//! Per-user bandwidth: a user's `rate_write` paces the PUT bodies sent to their files and
//! `rate_read` the file bodies read from them, as the Pubky homeserver paces them. A limit of
//! the user's own is a GCRA limiter counted in KiB (`governor`), shared by every request for
//! that user in that direction; its burst is one window of the rate unless the user's burst
//! says otherwise (in the rate's own unit). A paced body is slow, never refused: each chunk
//! waits for its KiB before it is passed on, so TCP's flow control slows the other side.
//!
//! A user whose rate is the default is paced by the server's `rate_read` / `rate_write` (each
//! user on their own, burst one window), when set; `unlimited` is never paced.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::rate_limit::Sweeps;
use crate::files::quota::{Bandwidth, Limit, UserQuota};

/// Which way a body goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// A file read (`rate_read`).
    Read,
    /// A file written (`rate_write`).
    Write,
}

/// A direction, a rate and its burst: users with the same share one limiter.
type LimitKey = (Direction, Bandwidth, Option<u32>);

/// One limiter per distinct (rate, burst) and direction, keyed by user within it.
#[derive(Default)]
pub struct Throttles {
    /// The server's rates for users whose own are the default.
    default_read: Option<Bandwidth>,
    default_write: Option<Bandwidth>,
    limiters: Mutex<HashMap<LimitKey, Arc<UserLimiter>>>,
    sweeps: Sweeps,
}

struct UserLimiter {
    limiter: DefaultKeyedRateLimiter<String>,
    /// The most KiB one wait may ask for: the limiter's burst.
    burst: NonZeroU32,
}

impl Throttles {
    /// With the server's rates for users whose own are the default (none: unpaced).
    pub fn new(default_read: Option<Bandwidth>, default_write: Option<Bandwidth>) -> Throttles {
        Throttles {
            default_read,
            default_write,
            ..Throttles::default()
        }
    }

    /// The rate and burst that pace `quota`'s user going `direction`: their own, else the
    /// server's (burst one window); `None` when unpaced.
    pub fn rate<'a>(
        &'a self,
        quota: &'a UserQuota,
        direction: Direction,
    ) -> Option<(&'a Bandwidth, Option<u32>)> {
        let (own, burst, default) = match direction {
            Direction::Read => (&quota.rate_read, quota.rate_read_burst, &self.default_read),
            Direction::Write => (
                &quota.rate_write,
                quota.rate_write_burst,
                &self.default_write,
            ),
        };
        match own {
            Limit::Value(rate) => Some((rate, burst)),
            Limit::Default => default.as_ref().map(|rate| (rate, None)),
            Limit::Unlimited => None,
        }
    }

    /// The pacer for `user`'s bodies going `direction`, when a rate applies to them.
    pub fn pacer(&self, user: &str, quota: &UserQuota, direction: Direction) -> Option<Pacer> {
        let (rate, burst) = self.rate(quota, direction)?;
        self.sweep();
        let mut limiters = self
            .limiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (direction, rate.clone(), burst);
        let limiter = match limiters.get(&key) {
            Some(limiter) => Arc::clone(limiter),
            None => {
                let limiter = Arc::new(UserLimiter::new(rate, burst)?);
                limiters.insert(key, Arc::clone(&limiter));
                limiter
            }
        };
        Some(Pacer {
            limiter,
            user: user.to_string(),
        })
    }

    /// Now and then, forget users whose cells have all refilled (they are as if never seen).
    fn sweep(&self) {
        if !self.sweeps.due() {
            return;
        }
        let limiters = self
            .limiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for limiter in limiters.values() {
            limiter.limiter.retain_recent();
        }
    }
}

impl UserLimiter {
    /// `None` when the rate is too fast to pace (more than a KiB a nanosecond) or unreadable.
    fn new(rate: &Bandwidth, burst: Option<u32>) -> Option<UserLimiter> {
        let (kib, window) = rate.kib_per_window()?;
        let period = window.checked_div(u32::try_from(kib).ok()?)?;
        let burst_kib = burst.map_or(kib, |burst| rate.burst_kib(burst));
        let burst = NonZeroU32::new(u32::try_from(burst_kib).unwrap_or(u32::MAX))?;
        let quota = Quota::with_period(period)?.allow_burst(burst);
        Some(UserLimiter {
            limiter: RateLimiter::dashmap(quota),
            burst,
        })
    }
}

/// Paces one user's bodies in one direction.
#[derive(Clone)]
pub struct Pacer {
    limiter: Arc<UserLimiter>,
    user: String,
}

impl Pacer {
    /// `body`, each chunk passed on once its KiB (rounded up) are allowed.
    pub fn pace<S, E>(self, body: S) -> impl Stream<Item = Result<Bytes, E>> + Send + 'static
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Send + 'static,
    {
        body.then(move |chunk| {
            let pacer = self.clone();
            async move {
                if let Ok(bytes) = &chunk {
                    pacer.wait_for(bytes.len()).await;
                }
                chunk
            }
        })
    }

    async fn wait_for(&self, bytes: usize) {
        let UserLimiter { limiter, burst } = &*self.limiter;
        let mut kib = u64::try_from(bytes.div_ceil(1024)).unwrap_or(u64::MAX);
        while kib > 0 {
            // At most a burst at a time: a bigger ask could never be granted.
            let ask = NonZeroU32::new(u32::try_from(kib.min(u64::from(burst.get()))).unwrap_or(1))
                .unwrap_or(NonZeroU32::MIN);
            loop {
                match limiter.check_key_n(&self.user, ask) {
                    Ok(Ok(())) => break,
                    Ok(Err(not_until)) => {
                        let wait = not_until.wait_time_from(limiter.clock().now());
                        tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
                    }
                    // Not reachable (the ask is at most the burst); never wait forever on it.
                    Err(_) => break,
                }
            }
            kib -= u64::from(ask.get());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::quota::Bandwidth;

    fn quota(rate: &str, burst: Option<u32>) -> UserQuota {
        UserQuota {
            rate_read: Limit::Value(Bandwidth::parse(rate).unwrap()),
            rate_read_burst: burst,
            ..UserQuota::default()
        }
    }

    #[test]
    fn a_users_own_rate_wins_then_the_servers() {
        let rate = |text: &str| Bandwidth::parse(text).unwrap();
        let default = UserQuota::default();
        let unlimited = UserQuota {
            rate_read: Limit::Unlimited,
            ..UserQuota::default()
        };
        let own = quota("1mb/s", Some(3));

        let unpaced = Throttles::default();
        assert!(unpaced.pacer("u", &default, Direction::Read).is_none());
        assert!(unpaced.pacer("u", &unlimited, Direction::Read).is_none());
        assert_eq!(
            unpaced.rate(&own, Direction::Read),
            Some((&rate("1mb/s"), Some(3)))
        );
        assert!(unpaced.pacer("u", &own, Direction::Read).is_some());
        assert!(unpaced.pacer("u", &own, Direction::Write).is_none());

        let server = Throttles::new(Some(rate("5mb/s")), Some(rate("2kb/s")));
        assert_eq!(
            server.rate(&default, Direction::Read),
            Some((&rate("5mb/s"), None))
        );
        assert_eq!(
            server.rate(&default, Direction::Write),
            Some((&rate("2kb/s"), None))
        );
        assert_eq!(server.rate(&unlimited, Direction::Read), None);
        assert_eq!(
            server.rate(&own, Direction::Read),
            Some((&rate("1mb/s"), Some(3)))
        );
    }

    #[test]
    fn the_burst_is_one_window_unless_the_user_sets_it() {
        let limiter = UserLimiter::new(&Bandwidth::parse("2mb/s").unwrap(), None).unwrap();
        assert_eq!(limiter.burst.get(), 2048);
        let limiter = UserLimiter::new(&Bandwidth::parse("2mb/s").unwrap(), Some(5)).unwrap();
        assert_eq!(limiter.burst.get(), 5 * 1024);
        let limiter = UserLimiter::new(&Bandwidth::parse("7kb/m").unwrap(), None).unwrap();
        assert_eq!(limiter.burst.get(), 7);
    }

    // The limiter keeps real time (not tokio's), so this waits for real: about one second.
    #[tokio::test]
    async fn a_body_past_its_burst_waits_for_its_rate() {
        let throttles = Throttles::default();
        // 16 KiB a second, 16 KiB at once: the first 16 KiB pass, the next 16 wait a second.
        let pacer = throttles
            .pacer("u", &quota("16kb/s", None), Direction::Read)
            .unwrap();
        let chunks = (0..4).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 8192])));
        let start = std::time::Instant::now();
        let paced: Vec<_> = pacer
            .pace(futures_util::stream::iter(chunks))
            .collect()
            .await;
        assert_eq!(paced.len(), 4);
        assert!(paced
            .iter()
            .all(|chunk| chunk.as_ref().unwrap().len() == 8192));
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(900), "{took:?}");
    }
}
