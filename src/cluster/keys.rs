//! Every Redis key and channel the cluster uses, in one place. All live under
//! `redis.prefix` (written P below), so several clusters can share one Redis.
//!
//! On a single Redis the names are the plain ones below. In a Redis Cluster every command
//! with several keys (a script, a pipeline) must stay on one slot, so keys that go
//! together carry the same hash tag (the part in braces, which alone picks the slot):
//!
//! | key (single Redis) | in a Redis Cluster | slot (hash tag) | type | holds |
//! |---|---|---|---|---|
//! | `P:nodes` | `{P}:nodes` | `{P}`, the instance-wide slot | zset | instance → last report (ms) |
//! | `P:node-info` | `{P}:node-info` | `{P}` | hash | instance → its connection count |
//! | `P:deciders` | `{P}:deciders` | `{P}` | hash | instance → decisions its backends make (`c` connects, `j` joins) |
//! | `P:groups` | `{P}:groups` | `{P}` | set | backend groups that ever subscribed |
//! | `P:group:<group>` | `{P}:group:<group>` | `{P}` | zset | the group's reading instances → last read (ms) |
//! | `P:reap:<instance>` | `{P}:reap:<instance>` | `{P}` | string | which instance is reaping a gone one |
//! | `P:node-sockets:<instance>` | `P:node-sockets:{<instance>}` | the instance's | set | `namespace␟socket␟user` of the instance's sockets |
//! | `P:presence:<user>` | `P:presence:{<user>}` | the user's | set | `instance␟namespace␟socket` of the user's sockets |
//! | `P:offline:<user>:<namespace>` | `P:offline:{<user>}:<namespace>` | the user's | list | messages kept for an offline user |
//! | `P:offline:<user>:<namespace>␟bytes` | `P:offline:{<user>}:<namespace>␟bytes` | the user's | string | bytes that list holds |
//! | `P:conn:<namespace>` | `P:conn:{c<n>}:<namespace>` | bucket n of 256, by socket id | hash | socket → connection info (JSON, with its instance) |
//! | `P:offline-expiry` | same | its own | zset | offline list key → newest expiry (ms) |
//! | `P:events:<n>` | same | its own (partitions spread over the shards) | stream | client events and lifecycle news, partition n |
//!
//! A user's presence set, offline lists and their byte counters share the user's slot, so
//! the script that stores a message only while the user has no socket checks and writes in
//! one step. The instance-wide keys are small and written about once a second per
//! instance: one slot holds them all, so the heartbeat stays one pipeline. The connection
//! index is split in buckets so that connects and disconnects spread over the shards.
//!
//! Channels: `P:node:<instance>` (requests, answers and backend acks for one instance;
//! sharded in a Redis Cluster, served by the shard that owns it), `P:room:<namespace>␟<room>`
//! (sharded: requests for the instances with sockets in the room), `P:events:<n>` (sharded,
//! Redis Cluster only: "partition n has new entries", for readers that cannot block on
//! several shards), `P:all` (requests for every instance) and `P:groups` / `{P}:groups` (a
//! backend group appeared). The last two are classic pub/sub: in a Redis Cluster every
//! message on them is forwarded to every node of the cluster, which is what they need
//! (every instance listens) and costs one cluster-bus message per node per publish.
//!
//! A user id or instance id inside braces has `%` and `}` written as `%25` and `%7D`, so
//! the tag always ends where the bridge meant it to and stays one per user. `redis.prefix`
//! cannot contain braces (the configuration refuses them).

/// Appended to an offline list's key to name its byte counter. Starts with a control
/// character, which no user id or namespace may contain, so it never names another list.
pub const OFFLINE_BYTES_SUFFIX: &str = "\u{1f}bytes";

/// Buckets of the connection index in a Redis Cluster: enough to spread over any number
/// of shards a deployment would run, few enough to stay small per namespace.
const CONN_BUCKETS: u64 = 256;

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    /// Hash-tagged names for a Redis Cluster.
    cluster: bool,
}

impl Keys {
    pub fn new(prefix: &str, cluster: bool) -> Self {
        Self { prefix: prefix.to_owned(), cluster }
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut k = self.prefix.clone();
        for p in parts {
            k.push(':');
            k.push_str(p);
        }
        k
    }

    /// An instance-wide key: in a Redis Cluster all of them share the prefix' slot.
    fn instance_wide(&self, parts: &[&str]) -> String {
        if !self.cluster {
            return self.key(parts);
        }
        let mut k = format!("{{{}}}", self.prefix);
        for p in parts {
            k.push(':');
            k.push_str(p);
        }
        k
    }

    /// `P:<kind>:<owner>` on a single Redis, `P:<kind>:{<owner>}` in a Redis Cluster.
    fn owned(&self, kind: &str, owner: &str) -> String {
        if self.cluster { format!("{}:{kind}:{{{}}}", self.prefix, tag(owner)) } else { self.key(&[kind, owner]) }
    }

    pub fn nodes(&self) -> String {
        self.instance_wide(&["nodes"])
    }

    pub fn node_info(&self) -> String {
        self.instance_wide(&["node-info"])
    }

    pub fn node_sockets(&self, instance: &str) -> String {
        self.owned("node-sockets", instance)
    }

    pub fn presence(&self, user: &str) -> String {
        self.owned("presence", user)
    }

    /// The part of the connection index that holds `socket_id`.
    pub fn conn(&self, namespace: &str, socket_id: &str) -> String {
        if self.cluster {
            let bucket = crate::hub::keyhash::key_hash(socket_id) % CONN_BUCKETS;
            format!("{}:conn:{{c{bucket}}}:{namespace}", self.prefix)
        } else {
            self.key(&["conn", namespace])
        }
    }

    pub fn offline(&self, user: &str, namespace: &str) -> String {
        self.owned("offline", user) + ":" + namespace
    }

    /// Bytes held by `offline(user, namespace)`: its key plus [`OFFLINE_BYTES_SUFFIX`].
    pub fn offline_bytes(&self, user: &str, namespace: &str) -> String {
        self.offline(user, namespace) + OFFLINE_BYTES_SUFFIX
    }

    pub fn offline_expiry(&self) -> String {
        self.key(&["offline-expiry"])
    }

    /// A partition's stream; in a Redis Cluster also the sharded channel that says it has
    /// new entries (same name, so the same slot: one pipeline writes both).
    pub fn events(&self, partition: usize) -> String {
        self.key(&["events", &partition.to_string()])
    }

    /// hash instance → which decisions its backends make (`c`, `j`, `cj`).
    pub fn deciders(&self) -> String {
        self.instance_wide(&["deciders"])
    }

    /// The set of backend groups, and the channel that announces a new one.
    pub fn groups(&self) -> String {
        self.instance_wide(&["groups"])
    }

    pub fn group(&self, group: &str) -> String {
        self.instance_wide(&["group", group])
    }

    pub fn reap(&self, instance: &str) -> String {
        self.instance_wide(&["reap", instance])
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

/// `s` as the inside of a hash tag: `%` and `}` escaped, so the tag ends at the brace the
/// bridge wrote and two different ids never share a key.
fn tag(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['%', '}']) { s.replace('%', "%25").replace('}', "%7D").into() } else { s.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slot Redis Cluster computes for a key: CRC16 (XMODEM) of its hash tag (the part
    /// between the first `{` and the next `}`, when not empty) or of the whole key.
    fn slot(key: &str) -> u16 {
        let b = key.as_bytes();
        let hashed = match b.iter().position(|&c| c == b'{') {
            Some(open) => match b[open + 1..].iter().position(|&c| c == b'}') {
                Some(len) if len > 0 => &b[open + 1..open + 1 + len],
                _ => b,
            },
            None => b,
        };
        let mut crc: u16 = 0;
        for &byte in hashed {
            crc ^= u16::from(byte) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
            }
        }
        crc % 16384
    }

    #[test]
    fn the_slot_function_matches_redis() {
        // CLUSTER KEYSLOT on Redis 7 answers these.
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("x:node:abc"), 7852);
        assert_eq!(slot("{user1000}.following"), slot("user1000"));
    }

    #[test]
    fn keys_a_script_or_pipeline_uses_together_share_a_slot_whatever_the_ids() {
        let k = Keys::new("sb", true);
        for user in ["alice", "}", "a}b{c", "%7D", "{x}", "é"] {
            let s = slot(&k.presence(user));
            assert_eq!(slot(&k.offline(user, "/chat")), s, "{user}");
            assert_eq!(slot(&k.offline_bytes(user, "/{weird}")), s, "{user}");
        }
        assert_ne!(k.presence("}"), k.presence("%7D"), "escaping keeps ids apart");
        let s = slot(&k.nodes());
        for key in [k.node_info(), k.deciders(), k.groups(), k.group("g"), k.reap("0123456789abcdef")] {
            assert_eq!(slot(&key), s, "{key}");
        }
    }

    #[test]
    fn a_single_redis_keeps_the_plain_names() {
        let k = Keys::new("sb", false);
        assert_eq!(k.presence("alice"), "sb:presence:alice");
        assert_eq!(k.nodes(), "sb:nodes");
        assert_eq!(k.conn("/", "sid"), "sb:conn:/");
        assert_eq!(k.offline("alice", "/"), "sb:offline:alice:/");
    }
}
