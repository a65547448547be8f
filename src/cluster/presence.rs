//! Who is online where: presence per user, each instance's sockets, and the connection
//! index, changed only by Lua scripts so racing instances see one consistent answer. The
//! same sets say where a push must travel: a user's presence members name the instance of
//! each of their sockets, the index names a socket's instance.

use std::collections::BTreeMap;
use std::sync::Arc;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use super::Cluster;
use super::offline::eval;
use crate::hub::backplane::{Located, Remote};
use crate::hub::registry::{Connection, Handshake};
use crate::hub::router::{BackendMessage, SocketDisconnected};
use crate::hub::{HubError, Target, wall_ms};

const PRESENCE_ADD: &str = include_str!("scripts/presence_add.lua");
const PRESENCE_DEL: &str = include_str!("scripts/presence_del.lua");

/// What the connection index keeps per socket.
#[derive(Debug, Serialize, Deserialize)]
pub struct ConnectionInfo {
    pub user_id: Option<String>,
    pub instance_id: String,
    pub connected_at_ms: u64,
    pub handshake: Handshake,
}

/// Separates the parts of set members. Names cannot contain control characters (they are
/// validated), so no part can contain it.
const SEP: char = '\u{1f}';

pub(super) fn presence_member(instance: &str, namespace: &str, socket_id: &str) -> String {
    format!("{instance}{SEP}{namespace}{SEP}{socket_id}")
}

pub(super) fn node_socket_entry(namespace: &str, socket_id: &str, user: Option<&str>) -> String {
    format!("{namespace}{SEP}{socket_id}{SEP}{}", user.unwrap_or(""))
}

/// `namespace SEP socket SEP user` → its parts (user may be empty: anonymous).
pub(super) fn split_node_socket(entry: &str) -> Option<(&str, &str, Option<&str>)> {
    let mut parts = entry.splitn(3, SEP);
    let (namespace, socket_id, user) = (parts.next()?, parts.next()?, parts.next()?);
    Some((namespace, socket_id, (!user.is_empty()).then_some(user)))
}

/// Instance and namespace of a presence member.
fn member_place(member: &str) -> Option<(&str, &str)> {
    let mut parts = member.split(SEP);
    Some((parts.next()?, parts.next()?))
}

/// SocketDisconnected (and UserOffline when it was the user's last socket), only from
/// whoever actually removed the socket.
pub(super) fn disconnect_messages(
    socket_id: &str,
    user: Option<&str>,
    namespace: &str,
    reason: &str,
    removed: bool,
    went_offline: bool,
) -> Vec<BackendMessage> {
    let mut out = Vec::with_capacity(2);
    if removed {
        out.push(BackendMessage::SocketDisconnected(Arc::new(SocketDisconnected {
            socket_id: socket_id.to_owned(),
            user_id: user.map(str::to_owned),
            namespace: namespace.to_owned(),
            reason: reason.to_owned(),
        })));
    }
    if went_offline && let Some(user) = user {
        out.push(BackendMessage::UserOffline(user.into()));
    }
    out
}

impl Cluster {
    /// Adds a socket of this instance. True when the user just came online anywhere.
    ///
    /// Three writes, each on its own key's slot (in a Redis Cluster they may sit on three
    /// shards), in this order: the instance's socket set first, so a socket is never
    /// findable (presence, index) without being in the set a reaper reads when this
    /// instance dies; then presence, whose script alone decides "came online"; then the
    /// connection index.
    pub(super) async fn presence_add(&self, conn: &Connection) -> Result<bool, redis::RedisError> {
        let mut redis = self.link.conn().ok_or_else(super::link::unreachable)?;
        let info = ConnectionInfo {
            user_id: conn.user_id.clone(),
            instance_id: self.instance_id().to_owned(),
            connected_at_ms: wall_ms(conn.connected_at),
            handshake: (*conn.handshake).clone(),
        };
        let mut steps = redis::pipe();
        steps.sadd(
            self.keys.node_sockets(self.instance_id()),
            node_socket_entry(&conn.namespace, &conn.socket_id, conn.user_id.as_deref()),
        );
        if let Some(user) = &conn.user_id {
            let mut add = eval(PRESENCE_ADD, &[&self.keys.presence(user)]);
            add.arg(presence_member(self.instance_id(), &conn.namespace, &conn.socket_id));
            steps.add_command(add);
        }
        steps.hset(
            self.keys.conn(&conn.namespace, &conn.socket_id),
            &conn.socket_id,
            serde_json::to_string(&info).unwrap_or_default(),
        );
        let replies = redis.in_order(&steps).await?;
        let came = match (&conn.user_id, replies.get(1)) {
            (Some(_), Some(reply)) => redis::from_redis_value::<i64>(reply.clone())? == 1,
            _ => false,
        };
        Ok(came)
    }

    /// Removes one socket of `instance`. Returns (removed by this call, the user went
    /// offline).
    ///
    /// The reverse order of [`Self::presence_add`]: presence, the index, and the instance's
    /// socket set last, so a socket half removed (this instance died midway) is still in
    /// the set the reaper reads. Split over slots, the decision stays one atomic step: a
    /// user's socket is reported by whoever removes its presence member (the script on the
    /// user's slot, which also tells "went offline"), an anonymous socket by whoever removes
    /// it from the instance's set; racing removers (this instance, a reaper, a resync)
    /// therefore report it once.
    pub(super) async fn presence_del(
        &self,
        instance: &str,
        namespace: &str,
        socket_id: &str,
        user: Option<&str>,
    ) -> Result<(bool, bool), redis::RedisError> {
        let mut redis = self.link.conn().ok_or_else(super::link::unreachable)?;
        let mut steps = redis::pipe();
        if let Some(user) = user {
            let mut del = eval(PRESENCE_DEL, &[&self.keys.presence(user)]);
            del.arg(presence_member(instance, namespace, socket_id));
            steps.add_command(del);
        }
        steps.hdel(self.keys.conn(namespace, socket_id), socket_id);
        steps.srem(self.keys.node_sockets(instance), node_socket_entry(namespace, socket_id, user));
        let replies = redis.in_order(&steps).await?;
        if user.is_some() {
            let first = replies.into_iter().next().unwrap_or(redis::Value::Nil);
            let (removed, offline): (i64, i64) = redis::from_redis_value(first)?;
            Ok((removed == 1, offline == 1))
        } else {
            let last = replies.into_iter().last().unwrap_or(redis::Value::Nil);
            Ok((redis::from_redis_value::<i64>(last)? == 1, false))
        }
    }

    /// Where a target's sockets are besides this instance: for a user, the instances
    /// named by their presence; for a socket, its index entry; rooms and everyone may be
    /// anywhere.
    pub(super) async fn locate(&self, namespace: &str, target: &Target) -> Result<Located, HubError> {
        let me = self.instance_id();
        match target {
            Target::User(user) => {
                let mut redis = self.conn()?;
                let members: Vec<String> =
                    redis.smembers(self.keys.presence(user)).await.map_err(super::redis_unavailable)?;
                if members.is_empty() && self.presence_may_be_missing() {
                    return Err(rebuilding());
                }
                let mut elsewhere: BTreeMap<&str, u32> = BTreeMap::new();
                for (instance, ns) in members.iter().filter_map(|m| member_place(m)) {
                    if ns == namespace && instance != me {
                        *elsewhere.entry(instance).or_default() += 1;
                    }
                }
                Ok(Located {
                    remote_sockets: Some(elsewhere.values().sum()),
                    remote: nodes(elsewhere.into_keys().map(str::to_owned).collect()),
                })
            }
            Target::Socket(socket_id) => {
                let mut redis = self.conn()?;
                let info: Option<String> = redis
                    .hget(self.keys.conn(namespace, socket_id), socket_id)
                    .await
                    .map_err(super::redis_unavailable)?;
                if info.is_none() && self.presence_may_be_missing() {
                    return Err(rebuilding());
                }
                let instance = info
                    .and_then(|i| serde_json::from_str::<ConnectionInfo>(&i).ok())
                    .map(|i| i.instance_id)
                    .filter(|i| i != me);
                Ok(Located {
                    remote_sockets: Some(u32::from(instance.is_some())),
                    remote: nodes(instance.into_iter().collect()),
                })
            }
            Target::Room(room) => Ok(Located {
                remote: Remote::Room { namespace: namespace.to_owned(), room: room.clone() },
                remote_sockets: None,
            }),
            Target::Everyone => Ok(Located { remote: Remote::All, remote_sockets: None }),
        }
    }
}

/// A target not found in presence while the instances re-register their sockets.
fn rebuilding() -> HubError {
    HubError::Unavailable(
        "Redis was lost moments ago and the instances are registering their sockets again; the target may be \
         connected: retry"
            .into(),
    )
}

fn nodes(instances: Vec<String>) -> Remote {
    if instances.is_empty() { Remote::None } else { Remote::Nodes(instances) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_members_round_trip_whatever_printable_names_contain() {
        let entry = node_socket_entry("/a|b", "sid1", Some("u|1"));
        assert_eq!(split_node_socket(&entry), Some(("/a|b", "sid1", Some("u|1"))));
        assert_eq!(split_node_socket(&node_socket_entry("/", "sid1", None)), Some(("/", "sid1", None)));
        assert_eq!(member_place(&presence_member("0123abcd", "/x|y", "sid9")), Some(("0123abcd", "/x|y")));
    }

    #[test]
    fn only_the_remover_reports_a_disconnect() {
        assert!(disconnect_messages("s", Some("u"), "/", "r", false, false).is_empty());
        let both = disconnect_messages("s", Some("u"), "/", "r", true, true);
        assert!(matches!(both[0], BackendMessage::SocketDisconnected(_)));
        assert!(matches!(both[1], BackendMessage::UserOffline(_)));
    }
}
