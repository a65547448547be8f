//! Every Redis key and channel the cluster uses, in one place. All live under
//! `redis.prefix` (written P below), so several clusters can share one Redis.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P:nodes` | zset | instance → last report (ms) |
//! | `P:node-info` | hash | instance → its connection count |
//! | `P:node-sockets:<instance>` | set | `namespace␟socket␟user` of the instance's sockets |
//! | `P:presence:<user>` | set | `instance␟namespace␟socket` of the user's sockets |
//! | `P:conn:<namespace>` | hash | socket → connection info (JSON, with its instance) |
//! | `P:offline:<user>:<namespace>` | list | messages kept for an offline user |
//! | `P:offline:<user>:<namespace>␟bytes` | string | bytes that list holds |
//! | `P:offline-expiry` | zset | offline list key → newest expiry (ms) |
//! | `P:events:<n>` | stream | client events and lifecycle news, partition n |
//! | `P:groups` | set | backend groups that ever subscribed |
//! | `P:deciders` | hash | instance → decisions its backends make (`c` connects, `j` joins) |
//! | `P:group:<group>` | zset | the group's reading instances → last read (ms) |
//! | `P:reap:<instance>` | string | which instance is reaping a gone one |
//!
//! Channels: `P:node:<instance>` (requests, answers and backend acks for one instance),
//! `P:room:<namespace>␟<room>` (sharded: requests for the instances with sockets in the
//! room), `P:all` (requests for every instance), `P:groups` (a backend group appeared).

/// Appended to an offline list's key to name its byte counter. Starts with a control
/// character, which no user id or namespace may contain, so it never names another list.
pub const OFFLINE_BYTES_SUFFIX: &str = "\u{1f}bytes";

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned() }
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut k = self.prefix.clone();
        for p in parts {
            k.push(':');
            k.push_str(p);
        }
        k
    }

    pub fn nodes(&self) -> String {
        self.key(&["nodes"])
    }

    pub fn node_info(&self) -> String {
        self.key(&["node-info"])
    }

    pub fn node_sockets(&self, instance: &str) -> String {
        self.key(&["node-sockets", instance])
    }

    pub fn presence(&self, user: &str) -> String {
        self.key(&["presence", user])
    }

    pub fn conn(&self, namespace: &str) -> String {
        self.key(&["conn", namespace])
    }

    pub fn offline(&self, user: &str, namespace: &str) -> String {
        self.key(&["offline", user, namespace])
    }

    /// Bytes held by `offline(user, namespace)`: its key plus [`OFFLINE_BYTES_SUFFIX`].
    pub fn offline_bytes(&self, user: &str, namespace: &str) -> String {
        self.offline(user, namespace) + OFFLINE_BYTES_SUFFIX
    }

    pub fn offline_expiry(&self) -> String {
        self.key(&["offline-expiry"])
    }

    pub fn events(&self, partition: usize) -> String {
        self.key(&["events", &partition.to_string()])
    }

    /// hash instance → which decisions its backends make (`c`, `j`, `cj`).
    pub fn deciders(&self) -> String {
        self.key(&["deciders"])
    }

    pub fn groups(&self) -> String {
        self.key(&["groups"])
    }

    pub fn group(&self, group: &str) -> String {
        self.key(&["group", group])
    }

    pub fn reap(&self, instance: &str) -> String {
        self.key(&["reap", instance])
    }

    pub fn node_channel(&self, instance: &str) -> String {
        self.key(&["node", instance])
    }

    /// A room's sharded channel. Namespaces and room names cannot contain control
    /// characters, so the separator keeps every (namespace, room) pair apart.
    pub fn room_channel(&self, namespace: &str, room: &str) -> String {
        format!("{}:room:{namespace}\u{1f}{room}", self.prefix)
    }

    pub fn all_channel(&self) -> String {
        self.key(&["all"])
    }
}
