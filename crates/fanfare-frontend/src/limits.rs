//! The frontend's limits: publish rates per user and per client address, open connections per
//! frontend and per address, and the idle and header-read timeouts of API connections.
//!
//! - [`LimitSettings`] is the `[limits]` section of the frontend's config.
//! - [`RateLimiter`] is a keyed GCRA (generic cell rate algorithm, the token bucket written as
//!   one "theoretical arrival time" per key). Its keys are 64-bit keyed hashes, kept in
//!   sharded maps capped at `max_tracked_keys`: a key whose bucket is full again carries no
//!   information and is dropped when room is needed, so a flood of distinct users or
//!   addresses costs bounded memory.
//! - [`PublishLimits`] checks a like or comment against the user's and the address's limit
//!   (one call, made by the handler once it knows who publishes).
//! - [`ConnectionLimiter`] counts open connections; a [`ConnectionSlot`] gives its place back
//!   when dropped.
//! - [`ApiActivity`] tells an API keep-alive connection's watcher when the connection has been
//!   idle too long or is taking too long to send a request head.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fanfare_model::COMMENT_TEXT_MAX_CHARS;
use fanfare_telemetry::{Limit, PublishKind};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::problem::ApiError;

/// The `[limits]` section of a frontend's config. The defaults suit a production frontend; a
/// rate of `inf` turns that rate limit off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Likes per second one user may publish, sustained.
    pub like_user_rate: f64,
    /// Likes one user may publish at once, after a quiet spell.
    pub like_user_burst: u32,
    /// Likes per second from one client address (IPv4 address or IPv6 /64), sustained.
    pub like_address_rate: f64,
    pub like_address_burst: u32,
    /// Comments per second one user may publish, sustained.
    pub comment_user_rate: f64,
    pub comment_user_burst: u32,
    /// Comments per second from one client address, sustained.
    pub comment_address_rate: f64,
    pub comment_address_burst: u32,
    /// Changes of a multi-video stream's subscriptions (`POST /v1/connections/{id}/
    /// subscriptions`) per second from one client address, sustained.
    pub subscription_address_rate: f64,
    pub subscription_address_burst: u32,
    /// Videos one stream may follow (`GET /v1/events?videos=`, and after subscription
    /// changes). A stream's `id:` grows with it (see README, "Multi-video streams").
    pub max_videos_per_connection: usize,
    /// Users (or addresses) each rate limiter remembers at most; beyond it the key closest to
    /// a full bucket is forgotten. About 40 bytes each.
    pub max_tracked_keys: usize,
    /// Open TCP connections (viewers and API) of this frontend; beyond it new ones get 503.
    /// Keep it below the process's file-descriptor limit, minus NATS and headroom.
    pub max_connections: usize,
    /// Open TCP connections from one client address; beyond it new ones get 429.
    pub max_connections_per_address: usize,
    /// Longest comment text, in characters (at most the model's 2000).
    pub max_comment_chars: usize,
    /// Longest request head (request line and headers), in bytes; beyond it 431.
    pub max_head_bytes: usize,
    /// A client has this long to send a request head once it started one (the first one: from
    /// connecting); beyond it the connection is closed.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// An API keep-alive connection without a request for this long is closed. Viewer streams
    /// are not subject to it.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            like_user_rate: 10.0,
            like_user_burst: 20,
            like_address_rate: 100.0,
            like_address_burst: 200,
            comment_user_rate: 1.0,
            comment_user_burst: 5,
            comment_address_rate: 20.0,
            comment_address_burst: 40,
            subscription_address_rate: 20.0,
            subscription_address_burst: 40,
            max_videos_per_connection: 64,
            max_tracked_keys: 100_000,
            // About 20,000 file descriptors per process: leave room for NATS, refusals and
            // the accept queue.
            max_connections: 16_000,
            max_connections_per_address: 256,
            max_comment_chars: COMMENT_TEXT_MAX_CHARS,
            max_head_bytes: 16 * 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Smallest `max_head_bytes`: hyper's read buffer, which holds the heads of keep-alive
/// requests, cannot be smaller.
pub const MIN_HEAD_BYTES: usize = 8 * 1024;
const MAX_HEAD_BYTES: usize = 1024 * 1024;

impl LimitSettings {
    /// Limits that never throttle a benchmark or a test: rates off, connection caps far above
    /// what one process can hold, long idle timeout. Sizes and the header-read timeout stay.
    pub fn unthrottled() -> Self {
        Self {
            like_user_rate: f64::INFINITY,
            like_address_rate: f64::INFINITY,
            comment_user_rate: f64::INFINITY,
            comment_address_rate: f64::INFINITY,
            subscription_address_rate: f64::INFINITY,
            max_connections: 1_000_000,
            max_connections_per_address: 1_000_000,
            idle_timeout: Duration::from_secs(3600),
            ..Self::default()
        }
    }

    /// Checks what serde cannot; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let rates = [
            ("like_user", self.like_user_rate, self.like_user_burst),
            (
                "like_address",
                self.like_address_rate,
                self.like_address_burst,
            ),
            (
                "comment_user",
                self.comment_user_rate,
                self.comment_user_burst,
            ),
            (
                "comment_address",
                self.comment_address_rate,
                self.comment_address_burst,
            ),
            (
                "subscription_address",
                self.subscription_address_rate,
                self.subscription_address_burst,
            ),
        ];
        for (name, rate, burst) in rates {
            if rate.is_nan() || rate <= 0.0 {
                return Err(format!(
                    "limits.{name}_rate: must be more than 0 per second (inf turns it off), got {rate}"
                ));
            }
            if burst == 0 {
                return Err(format!("limits.{name}_burst: must be at least 1"));
            }
        }
        if !(1..=fanfare_model::CONNECTION_POSITION_MAX_VIDEOS)
            .contains(&self.max_videos_per_connection)
        {
            return Err(format!(
                "limits.max_videos_per_connection: must be 1 to {}",
                fanfare_model::CONNECTION_POSITION_MAX_VIDEOS
            ));
        }
        if self.max_tracked_keys < 1024 {
            return Err("limits.max_tracked_keys: must be at least 1024".to_owned());
        }
        if self.max_connections == 0 {
            return Err("limits.max_connections: must be at least 1".to_owned());
        }
        if self.max_connections_per_address == 0 {
            return Err("limits.max_connections_per_address: must be at least 1".to_owned());
        }
        if !(1..=COMMENT_TEXT_MAX_CHARS).contains(&self.max_comment_chars) {
            return Err(format!(
                "limits.max_comment_chars: must be 1 to {COMMENT_TEXT_MAX_CHARS}, got {}",
                self.max_comment_chars
            ));
        }
        if !(MIN_HEAD_BYTES..=MAX_HEAD_BYTES).contains(&self.max_head_bytes) {
            return Err(format!(
                "limits.max_head_bytes: must be {MIN_HEAD_BYTES} to {MAX_HEAD_BYTES}, got {}",
                self.max_head_bytes
            ));
        }
        if self.header_read_timeout < Duration::from_millis(100) {
            return Err("limits.header_read_timeout: must be at least 100ms".to_owned());
        }
        if self.idle_timeout < Duration::from_millis(100) {
            return Err("limits.idle_timeout: must be at least 100ms".to_owned());
        }
        Ok(())
    }
}

/// The peer address of the connection a request came on; `listen` puts it into every API
/// request's extensions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(pub IpAddr);

/// What a limit is keyed by for an address: an IPv4 address, or an IPv6 address's /64 (one
/// subscriber usually holds a whole /64, so single IPv6 addresses would be free to rotate).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

const SHARDS: usize = 16;

/// A keyed GCRA rate limiter; see the module docs.
pub(crate) struct RateLimiter {
    /// Time one request costs: 1 / rate. Zero when the limit is off.
    interval: Duration,
    /// How far ahead of now a key's theoretical arrival time may run: burst × interval.
    tolerance: Duration,
    /// Per key: the theoretical arrival time (when its bucket is full again).
    shards: Vec<Mutex<HashMap<u64, Instant>>>,
    shard_cap: usize,
    /// Keys are hashed with a per-process random key, so nobody can aim at one shard.
    hasher: std::collections::hash_map::RandomState,
}

impl RateLimiter {
    pub(crate) fn new(per_second: f64, burst: u32, max_keys: usize) -> Self {
        let interval = if per_second.is_finite() {
            Duration::from_secs_f64(1.0 / per_second)
        } else {
            Duration::ZERO
        };
        Self {
            interval,
            tolerance: interval.saturating_mul(burst),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            shard_cap: max_keys.div_ceil(SHARDS).max(1),
            hasher: Default::default(),
        }
    }

    fn is_off(&self) -> bool {
        self.interval.is_zero()
    }

    fn key<K: std::hash::Hash>(&self, key: &K) -> u64 {
        self.hasher.hash_one(key)
    }

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, HashMap<u64, Instant>> {
        let shard = &self.shards[(key as usize) % SHARDS];
        shard
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `Ok` if one more request of `key` fits now, else how long until it would.
    fn check(&self, key: u64, now: Instant) -> Result<(), Duration> {
        if self.is_off() {
            return Ok(());
        }
        let arrival = self.shard(key).get(&key).copied().unwrap_or(now).max(now);
        let next = arrival + self.interval;
        let ahead = next - now;
        if ahead <= self.tolerance {
            Ok(())
        } else {
            Err(ahead - self.tolerance)
        }
    }

    /// Counts one request of `key` (after [`check`](Self::check) said it fits).
    fn record(&self, key: u64, now: Instant) {
        if self.is_off() {
            return;
        }
        let mut shard = self.shard(key);
        if !shard.contains_key(&key) && shard.len() >= self.shard_cap {
            // Keys whose bucket is full again are the same as absent ones.
            shard.retain(|_, arrival| *arrival > now);
            if shard.len() >= self.shard_cap {
                // Still full of active keys: forget the one closest to a full bucket.
                let oldest = shard
                    .iter()
                    .min_by_key(|(_, arrival)| **arrival)
                    .map(|(key, _)| *key);
                if let Some(oldest) = oldest {
                    shard.remove(&oldest);
                }
            }
        }
        let arrival = shard.entry(key).or_insert(now);
        *arrival = (*arrival).max(now) + self.interval;
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap().len())
            .sum()
    }
}

/// The rate limits of publishing; see [`PublishLimits::admit`].
pub(crate) struct PublishLimits {
    like_user: RateLimiter,
    like_address: RateLimiter,
    comment_user: RateLimiter,
    comment_address: RateLimiter,
    subscription_address: RateLimiter,
}

impl PublishLimits {
    pub(crate) fn new(settings: &LimitSettings) -> Self {
        let keys = settings.max_tracked_keys;
        Self {
            like_user: RateLimiter::new(settings.like_user_rate, settings.like_user_burst, keys),
            like_address: RateLimiter::new(
                settings.like_address_rate,
                settings.like_address_burst,
                keys,
            ),
            comment_user: RateLimiter::new(
                settings.comment_user_rate,
                settings.comment_user_burst,
                keys,
            ),
            comment_address: RateLimiter::new(
                settings.comment_address_rate,
                settings.comment_address_burst,
                keys,
            ),
            subscription_address: RateLimiter::new(
                settings.subscription_address_rate,
                settings.subscription_address_burst,
                keys,
            ),
        }
    }

    /// Admits one change of a stream's subscriptions from `client`.
    pub(crate) fn admit_subscription_change(&self, client: ClientAddr) -> Result<(), ApiError> {
        let now = Instant::now();
        let limiter = &self.subscription_address;
        let key = limiter.key(&address_key(client.0));
        limiter
            .check(key, now)
            .map_err(|wait| ApiError::RateLimited {
                limit: Limit::SubscriptionAddressRate,
                retry_after_secs: retry_after_secs(wait),
            })?;
        limiter.record(key, now);
        Ok(())
    }

    /// Admits one like or comment of `user` from `client`, or says which limit refuses it and
    /// when to retry. A refused request counts against neither limit.
    pub(crate) fn admit(
        &self,
        kind: PublishKind,
        user: &str,
        client: ClientAddr,
    ) -> Result<(), ApiError> {
        let (by_user, by_address, user_limit, address_limit) = match kind {
            PublishKind::Like => (
                &self.like_user,
                &self.like_address,
                Limit::LikeUserRate,
                Limit::LikeAddressRate,
            ),
            PublishKind::Comment => (
                &self.comment_user,
                &self.comment_address,
                Limit::CommentUserRate,
                Limit::CommentAddressRate,
            ),
        };
        let now = Instant::now();
        let user_key = by_user.key(&user);
        let address_key = by_address.key(&address_key(client.0));
        let refused = |limit, wait: Duration| ApiError::RateLimited {
            limit,
            retry_after_secs: retry_after_secs(wait),
        };
        by_user
            .check(user_key, now)
            .map_err(|wait| refused(user_limit, wait))?;
        by_address
            .check(address_key, now)
            .map_err(|wait| refused(address_limit, wait))?;
        by_user.record(user_key, now);
        by_address.record(address_key, now);
        Ok(())
    }
}

/// `Retry-After` in whole seconds: rounded up, at least 1.
fn retry_after_secs(wait: Duration) -> u64 {
    let whole = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    whole.max(1)
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectionRefused {
    /// The frontend holds `max_connections`.
    Frontend,
    /// The client's address holds `max_connections_per_address`.
    Address,
}

/// Counts open connections, of the frontend and per client address.
pub(crate) struct ConnectionLimiter {
    max_total: usize,
    max_per_address: usize,
    open: AtomicUsize,
    /// Open connections per address key; an address leaves the map with its last connection,
    /// so the map never holds more than `max_total` entries.
    per_address: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnectionLimiter {
    pub(crate) fn new(settings: &LimitSettings) -> Self {
        Self {
            max_total: settings.max_connections,
            max_per_address: settings.max_connections_per_address,
            open: AtomicUsize::new(0),
            per_address: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for a new connection from `peer`, held until the connection closes.
    pub(crate) fn admit(
        self: &Arc<Self>,
        peer: IpAddr,
    ) -> Result<ConnectionSlot, ConnectionRefused> {
        let address = address_key(peer);
        let mut per_address = self
            .per_address
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.open.load(Ordering::Relaxed) >= self.max_total {
            return Err(ConnectionRefused::Frontend);
        }
        let count = per_address.entry(address).or_insert(0);
        if *count >= self.max_per_address {
            return Err(ConnectionRefused::Address);
        }
        *count += 1;
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(ConnectionSlot {
            limiter: self.clone(),
            address,
        })
    }

    #[cfg(test)]
    fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// One open connection's place in the [`ConnectionLimiter`]; given back on drop.
pub(crate) struct ConnectionSlot {
    limiter: Arc<ConnectionLimiter>,
    address: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut per_address = self
            .limiter
            .per_address
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = per_address.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                per_address.remove(&self.address);
            }
        }
        self.limiter.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What an API connection is doing, for its idle and header-read watch: reads are reported by
/// the connection's socket wrapper, requests by the service wrapper.
pub(crate) struct ApiActivity {
    epoch: Instant,
    /// Requests handed to the router and not answered yet.
    in_flight: AtomicUsize,
    /// When the connection last became idle (no request in flight), in nanoseconds since
    /// `epoch`.
    idle_since: AtomicU64,
    /// When the first bytes of the next request head arrived, in nanoseconds since `epoch`,
    /// plus one; 0 while no head is being read.
    head_started: AtomicU64,
}

/// What the watch of an API connection decides.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Watch {
    /// Nothing to do until then.
    Until(Instant),
    /// No request for `idle_timeout`: close.
    Idle,
    /// A request head took longer than `header_read_timeout`: close.
    HeaderTimeout,
}

impl ApiActivity {
    pub(crate) fn new() -> Self {
        Self {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
        }
    }

    fn nanos(&self, now: Instant) -> u64 {
        now.duration_since(self.epoch).as_nanos() as u64
    }

    fn at(&self, nanos: u64) -> Instant {
        self.epoch + Duration::from_nanos(nanos)
    }

    /// Bytes arrived on the connection.
    pub(crate) fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.head_started.load(Ordering::Acquire) == 0
        {
            let now = self.nanos(Instant::now()) + 1;
            let _ = self
                .head_started
                .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    /// A whole request head arrived and goes to the router.
    pub(crate) fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(0, Ordering::Release);
    }

    /// The router answered a request.
    pub(crate) fn request_finished(&self) {
        self.idle_since
            .store(self.nanos(Instant::now()), Ordering::Release);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    pub(crate) fn watch(&self, now: Instant, idle: Duration, header: Duration) -> Watch {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            // A request is being handled: its own deadlines (publish timeouts) apply.
            return Watch::Until(now + idle.min(header));
        }
        let head_started = self.head_started.load(Ordering::Acquire);
        if head_started > 0 {
            let deadline = self.at(head_started - 1) + header;
            return if now >= deadline {
                Watch::HeaderTimeout
            } else {
                Watch::Until(deadline)
            };
        }
        let deadline = self.at(self.idle_since.load(Ordering::Acquire)) + idle;
        if now >= deadline {
            Watch::Idle
        } else {
            Watch::Until(deadline)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> LimitSettings {
        LimitSettings {
            like_user_rate: 1.0,
            like_user_burst: 2,
            like_address_rate: 10.0,
            like_address_burst: 3,
            ..LimitSettings::default()
        }
    }

    fn client(ip: &str) -> ClientAddr {
        ClientAddr(ip.parse().unwrap())
    }

    fn refused_limit(result: Result<(), ApiError>) -> (Limit, u64) {
        match result {
            Err(ApiError::RateLimited {
                limit,
                retry_after_secs,
            }) => (limit, retry_after_secs),
            other => panic!("expected a rate limit, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_user_gets_its_burst_then_waits_one_interval_per_request() {
        let limits = PublishLimits::new(&settings());
        let like = |user: &str, ip: &str| limits.admit(PublishKind::Like, user, client(ip));
        like("ann", "10.0.0.1").unwrap();
        like("ann", "10.0.0.2").unwrap();
        let (limit, retry) = refused_limit(like("ann", "10.0.0.3"));
        assert_eq!(limit, Limit::LikeUserRate);
        assert_eq!(retry, 1);
        // Another user is not affected.
        like("bob", "10.0.0.4").unwrap();
        tokio::time::advance(Duration::from_millis(1000)).await;
        like("ann", "10.0.0.1").unwrap();
        refused_limit(like("ann", "10.0.0.1"));
        // Comments have their own limits.
        limits
            .admit(PublishKind::Comment, "ann", client("10.0.0.1"))
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_address_is_limited_across_users_and_a_refusal_costs_nothing() {
        let limits = PublishLimits::new(&settings());
        for user in ["a", "b", "c"] {
            limits
                .admit(PublishKind::Like, user, client("10.0.0.9"))
                .unwrap();
        }
        let (limit, retry) =
            refused_limit(limits.admit(PublishKind::Like, "d", client("10.0.0.9")));
        assert_eq!(limit, Limit::LikeAddressRate);
        assert_eq!(retry, 1, "0.1 s rounds up to 1");
        // "d" was refused, so its own bucket is untouched: two at once still fit.
        limits
            .admit(PublishKind::Like, "d", client("10.0.0.8"))
            .unwrap();
        limits
            .admit(PublishKind::Like, "d", client("10.0.0.7"))
            .unwrap();
    }

    #[test]
    fn ipv6_addresses_share_their_64_and_mapped_ipv4_is_ipv4() {
        let one: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let two: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(one), address_key(two));
        assert_ne!(address_key(one), address_key(other));
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(address_key(mapped), "10.1.2.3".parse::<IpAddr>().unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn tracked_keys_stay_bounded_under_a_flood_of_distinct_keys() {
        let limiter = RateLimiter::new(1.0, 5, 1024);
        let now = Instant::now();
        for user in 0..100_000u64 {
            let key = limiter.key(&user);
            limiter.check(key, now).unwrap();
            limiter.record(key, now);
        }
        assert!(limiter.tracked() <= 1024, "{}", limiter.tracked());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_at_least_one() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
    }

    #[test]
    fn an_infinite_rate_turns_the_limit_off() {
        let limiter = RateLimiter::new(f64::INFINITY, 1, 1024);
        let now = Instant::now();
        for _ in 0..10 {
            limiter.check(7, now).unwrap();
            limiter.record(7, now);
        }
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn connections_are_capped_per_address_and_per_frontend_and_freed_on_drop() {
        let limiter = Arc::new(ConnectionLimiter::new(&LimitSettings {
            max_connections: 3,
            max_connections_per_address: 2,
            ..LimitSettings::default()
        }));
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let first = limiter.admit(a).unwrap();
        let _second = limiter.admit(a).unwrap();
        assert_eq!(limiter.admit(a).err(), Some(ConnectionRefused::Address));
        let _third = limiter.admit(b).unwrap();
        assert_eq!(limiter.admit(b).err(), Some(ConnectionRefused::Frontend));
        drop(first);
        assert_eq!(limiter.open(), 2);
        let _again = limiter.admit(a).unwrap();
        assert_eq!(limiter.per_address.lock().unwrap().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_api_connection_is_idle_until_a_head_starts_and_busy_while_answering() {
        let idle = Duration::from_secs(60);
        let header = Duration::from_secs(10);
        let activity = ApiActivity::new();
        let start = Instant::now();
        assert_eq!(
            activity.watch(start, idle, header),
            Watch::Until(start + idle)
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        activity.bytes_read();
        let head_at = Instant::now();
        assert_eq!(
            activity.watch(head_at, idle, header),
            Watch::Until(head_at + header)
        );
        assert_eq!(
            activity.watch(head_at + header, idle, header),
            Watch::HeaderTimeout
        );
        activity.request_started();
        assert!(matches!(
            activity.watch(head_at + idle * 2, idle, header),
            Watch::Until(_)
        ));
        activity.request_finished();
        let done = Instant::now();
        assert_eq!(activity.watch(done + idle, idle, header), Watch::Idle);
    }

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_field() {
        LimitSettings::default().validate().unwrap();
        LimitSettings::unthrottled().validate().unwrap();
        let cases: Vec<(LimitSettings, &str)> = vec![
            (
                LimitSettings {
                    like_user_rate: 0.0,
                    ..Default::default()
                },
                "limits.like_user_rate",
            ),
            (
                LimitSettings {
                    comment_address_burst: 0,
                    ..Default::default()
                },
                "limits.comment_address_burst",
            ),
            (
                LimitSettings {
                    max_comment_chars: COMMENT_TEXT_MAX_CHARS + 1,
                    ..Default::default()
                },
                "limits.max_comment_chars",
            ),
            (
                LimitSettings {
                    max_head_bytes: 1024,
                    ..Default::default()
                },
                "limits.max_head_bytes",
            ),
            (
                LimitSettings {
                    max_connections_per_address: 0,
                    ..Default::default()
                },
                "limits.max_connections_per_address",
            ),
            (
                LimitSettings {
                    idle_timeout: Duration::ZERO,
                    ..Default::default()
                },
                "limits.idle_timeout",
            ),
        ];
        for (settings, field) in cases {
            let error = settings.validate().unwrap_err();
            assert!(error.starts_with(field), "{error}");
        }
    }
}
