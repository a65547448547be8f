//! Who is connected: socket ↔ user, the handshake each socket presented, and presence
//! (a user is online while at least one of their sockets is connected, in any namespace).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime};

/// What a client presented when it connected; forwarded to the backend with its events.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Handshake {
    pub user_agent: String,
    pub remote_address: String,
    pub origin: String,
    /// The `auth` payload as JSON with secret fields removed.
    pub auth_json: String,
    pub transport: String,
}

/// One connected socket.
#[derive(Debug)]
pub struct Connection {
    pub socket_id: String,
    pub namespace: String,
    pub user_id: Option<String>,
    pub connected_at: SystemTime,
    pub handshake: Arc<Handshake>,
    /// What a deciding backend attached when it allowed the connect (JSON; empty: none).
    pub data_json: String,
    /// Per-socket event rate limit.
    bucket: Mutex<TokenBucket>,
    /// Events refused in a row for going over the rate; a flood past a limit disconnects.
    strikes: std::sync::atomic::AtomicU32,
    /// Cleared when the registry removes the socket (it disconnected): holders of the
    /// connection (the socket's event handler) then treat it as gone, as a lookup would.
    registered: std::sync::atomic::AtomicBool,
    /// Disconnected for flooding: its transport closes shortly, its events are dropped.
    flooded: std::sync::atomic::AtomicBool,
    /// Bytes of this socket's events waiting for a backend (see `hub::budget`).
    pub pending_bytes: Arc<std::sync::atomic::AtomicUsize>,
    /// Pushes with a ttl it could not take yet (see `hub::redelivery`).
    pub owed: Mutex<Owed>,
}

impl Connection {
    pub fn new(
        socket_id: String,
        namespace: String,
        user_id: Option<String>,
        handshake: Handshake,
        rate: f64,
        burst: u32,
    ) -> Self {
        Self {
            socket_id,
            namespace,
            user_id,
            connected_at: SystemTime::now(),
            handshake: Arc::new(handshake),
            data_json: String::new(),
            bucket: Mutex::new(TokenBucket::new(rate, f64::from(burst))),
            strikes: std::sync::atomic::AtomicU32::new(0),
            registered: std::sync::atomic::AtomicBool::new(true),
            flooded: std::sync::atomic::AtomicBool::new(false),
            pending_bytes: Arc::default(),
            owed: Mutex::default(),
        }
    }

    /// Whether the registry still holds this connection.
    pub fn is_registered(&self) -> bool {
        self.registered.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Marks the socket as disconnected for flooding; true the first time only.
    pub fn mark_flooded(&self) -> bool {
        !self.flooded.swap(true, std::sync::atomic::Ordering::AcqRel)
    }

    pub fn is_flooded(&self) -> bool {
        self.flooded.load(std::sync::atomic::Ordering::Acquire)
    }

    /// A socket held by another instance of the cluster, as listings show it.
    pub fn remote(
        socket_id: String,
        namespace: String,
        user_id: Option<String>,
        handshake: Handshake,
        connected_at: SystemTime,
    ) -> Self {
        Self { connected_at, ..Self::new(socket_id, namespace, user_id, handshake, 1.0, 1) }
    }

    /// Takes one event's token. `Err(n)` when the socket is over its rate, with the number
    /// of events refused in a row.
    pub fn take_event_token(&self) -> Result<(), u32> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.bucket.lock().map(|mut b| b.take(Instant::now())).unwrap_or(true) {
            self.strikes.store(0, Relaxed);
            Ok(())
        } else {
            Err(self.strikes.fetch_add(1, Relaxed) + 1)
        }
    }
}

/// Pushes with a ttl owed to one socket, oldest first, with the bytes they hold (see
/// `hub::redelivery`).
#[derive(Debug, Default)]
pub struct Owed {
    pub(super) queue: std::collections::VecDeque<super::offline::OfflineMessage>,
    pub(super) bytes: usize,
}

/// Classic token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: f64, burst: f64) -> Self {
        Self { rate, burst, tokens: burst, last: Instant::now() }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Presence change caused by a register or unregister.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Unchanged,
    /// The user's first socket arrived.
    CameOnline,
    /// The user's last socket left.
    WentOffline,
}

/// socketioxide gives one client's sockets in different namespaces the same id, so a
/// socket is known by its namespace and id together.
type Key = (String, String);

#[derive(Default)]
pub struct Registry {
    sockets: RwLock<HashMap<Key, Arc<Connection>>>,
    /// Live socket count per user. Changed under one lock with `sockets`' updates so each
    /// online/offline transition is seen exactly once, however sockets race.
    users: Mutex<HashMap<String, usize>>,
}

impl Registry {
    pub fn register(&self, conn: Arc<Connection>) -> Presence {
        let user = conn.user_id.clone();
        if let Ok(mut sockets) = self.sockets.write() {
            sockets.insert((conn.namespace.clone(), conn.socket_id.clone()), conn);
        }
        let Some(user) = user else { return Presence::Unchanged };
        let Ok(mut users) = self.users.lock() else { return Presence::Unchanged };
        let count = users.entry(user).or_insert(0);
        *count += 1;
        if *count == 1 { Presence::CameOnline } else { Presence::Unchanged }
    }

    pub fn unregister(&self, namespace: &str, socket_id: &str) -> Option<(Arc<Connection>, Presence)> {
        let conn = self.sockets.write().ok()?.remove(&(namespace.to_owned(), socket_id.to_owned()))?;
        conn.registered.store(false, std::sync::atomic::Ordering::Release);
        let Some(user) = &conn.user_id else { return Some((conn, Presence::Unchanged)) };
        let mut users = self.users.lock().ok()?;
        let presence = match users.get_mut(user) {
            Some(count) if *count > 1 => {
                *count -= 1;
                Presence::Unchanged
            }
            Some(_) => {
                users.remove(user);
                Presence::WentOffline
            }
            None => Presence::Unchanged,
        };
        drop(users);
        Some((conn, presence))
    }

    pub fn get(&self, namespace: &str, socket_id: &str) -> Option<Arc<Connection>> {
        self.sockets.read().ok()?.get(&(namespace.to_owned(), socket_id.to_owned())).cloned()
    }

    /// Connections registered longer ago than `age`.
    pub fn older_than(&self, age: std::time::Duration) -> Vec<Arc<Connection>> {
        let Some(cutoff) = SystemTime::now().checked_sub(age) else { return Vec::new() };
        self.sockets
            .read()
            .map(|s| s.values().filter(|c| c.connected_at < cutoff).cloned().collect())
            .unwrap_or_default()
    }

    pub fn all(&self) -> Vec<Arc<Connection>> {
        self.sockets.read().map(|s| s.values().cloned().collect()).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.sockets.read().map(|s| s.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn unique_users(&self) -> usize {
        self.users.lock().map(|u| u.len()).unwrap_or(0)
    }

    pub fn is_online(&self, user_id: &str) -> bool {
        self.users.lock().map(|u| u.contains_key(user_id)).unwrap_or(false)
    }

    /// Connections matching `keep`, sorted by socket id, starting after `after`, at most
    /// `limit` (plus whether more follow).
    pub fn page(
        &self,
        keep: impl Fn(&Connection) -> bool,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<Arc<Connection>>, bool) {
        let Ok(sockets) = self.sockets.read() else { return (Vec::new(), false) };
        let mut matching: Vec<&Arc<Connection>> =
            sockets.values().filter(|c| after.is_none_or(|a| c.socket_id.as_str() > a) && keep(c)).collect();
        matching.sort_unstable_by(|a, b| a.socket_id.cmp(&b.socket_id));
        let more = matching.len() > limit;
        (matching.into_iter().take(limit).cloned().collect(), more)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn conn(sid: &str, user: Option<&str>) -> Arc<Connection> {
        Arc::new(Connection::new(sid.into(), "/".into(), user.map(Into::into), Handshake::default(), 10.0, 2))
    }

    #[test]
    fn presence_transitions_once_per_user() {
        let r = Registry::default();
        assert_eq!(r.register(conn("a", Some("u"))), Presence::CameOnline);
        assert_eq!(r.register(conn("b", Some("u"))), Presence::Unchanged);
        assert_eq!(r.register(conn("c", None)), Presence::Unchanged);
        assert_eq!(r.unique_users(), 1);
        assert_eq!(r.unregister("/", "a").unwrap().1, Presence::Unchanged);
        assert_eq!(r.unregister("/", "b").unwrap().1, Presence::WentOffline);
        assert!(r.unregister("/", "b").is_none());
        assert!(!r.is_online("u"));
    }

    #[test]
    fn one_id_in_two_namespaces_is_two_sockets() {
        let r = Registry::default();
        let other =
            Arc::new(Connection::new("a".into(), "/chat".into(), Some("u".into()), Handshake::default(), 1.0, 1));
        assert_eq!(r.register(conn("a", Some("u"))), Presence::CameOnline);
        assert_eq!(r.register(other), Presence::Unchanged);
        assert_eq!(r.len(), 2);
        assert_eq!(r.get("/chat", "a").unwrap().namespace, "/chat");
        assert_eq!(r.unregister("/chat", "a").unwrap().1, Presence::Unchanged);
        assert_eq!(r.get("/", "a").unwrap().namespace, "/");
        assert_eq!(r.unregister("/", "a").unwrap().1, Presence::WentOffline);
    }

    #[test]
    fn paging_is_ordered_and_complete() {
        let r = Registry::default();
        for sid in ["d", "a", "c", "b", "e"] {
            r.register(conn(sid, None));
        }
        let (first, more) = r.page(|_| true, None, 2);
        assert_eq!(first.iter().map(|c| c.socket_id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert!(more);
        let (rest, more) = r.page(|_| true, Some("b"), 10);
        assert_eq!(rest.len(), 3);
        assert!(!more);
    }

    #[test]
    fn token_bucket_allows_burst_then_rate() {
        let mut b = TokenBucket::new(10.0, 2.0);
        let t0 = b.last;
        assert!(b.take(t0));
        assert!(b.take(t0));
        assert!(!b.take(t0));
        assert!(b.take(t0 + Duration::from_millis(100)));
    }
}
