//! Read-only views: paginated rooms and connections, and the status report.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;

use super::registry::Connection;
use super::router::GroupInfo;
use super::{Hub, HubError, SOCKET_ROOM_PREFIX, is_internal_room, user_room};
use crate::cluster::NodeInfo;

/// Largest page a caller may ask for.
pub const MAX_PAGE_SIZE: u32 = 1000;
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Page tokens are the last key of the previous page behind this prefix; opaque to
/// callers, but a restart does not invalidate them.
const TOKEN_PREFIX: &str = "after:";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSummary {
    pub name: String,
    pub members: u32,
}

/// A connection and the rooms it is in, as listed.
pub type ConnectionWithRooms = (Arc<Connection>, Vec<String>);

#[derive(Debug, Clone)]
pub enum ConnectionFilter {
    All,
    User(String),
    Room(String),
}

#[derive(Debug, Clone)]
pub struct StatusReport {
    pub instance_id: String,
    pub version: &'static str,
    pub uptime: Duration,
    pub connections: u64,
    pub unique_users: u64,
    pub rooms: u64,
    pub messages_in_per_second: f64,
    pub messages_out_per_second: f64,
    pub errors_per_second: f64,
    pub messages_in_total: u64,
    pub messages_out_total: u64,
    pub errors_total: u64,
    pub rss_bytes: u64,
    pub backend_groups: Vec<GroupInfo>,
    pub undelivered_events: u64,
    pub draining: bool,
    /// Live instances (cluster mode); this one alone in embedded mode.
    pub nodes: Vec<NodeInfo>,
    /// "disabled", "up" or "down".
    pub redis: &'static str,
}

fn page_bounds(page_size: u32, token: &str) -> Result<(usize, Option<String>), HubError> {
    if page_size > MAX_PAGE_SIZE {
        return Err(HubError::invalid("page_size", format!("at most {MAX_PAGE_SIZE}")));
    }
    let size = if page_size == 0 { DEFAULT_PAGE_SIZE } else { page_size } as usize;
    let after = if token.is_empty() {
        None
    } else {
        Some(
            token
                .strip_prefix(TOKEN_PREFIX)
                .filter(|t| t.len() <= 512)
                .ok_or_else(|| HubError::invalid("page_token", "not a token this API returned"))?
                .to_owned(),
        )
    };
    Ok((size, after))
}

fn next_token(more: bool, last: Option<&str>) -> String {
    match (more, last) {
        (true, Some(last)) => format!("{TOKEN_PREFIX}{last}"),
        _ => String::new(),
    }
}

impl Hub {
    pub async fn list_rooms(
        &self,
        namespace: &str,
        page_size: u32,
        page_token: &str,
        include_internal: bool,
    ) -> Result<Page<RoomSummary>, HubError> {
        self.check_namespace(namespace)?;
        let (size, after) = page_bounds(page_size, page_token)?;
        // Cluster-wide in cluster mode: the adapter asks every instance.
        let op = self.cluster_operators(namespace)?;
        let mut names: Vec<String> = op
            .clone()
            .rooms()
            .await
            .map_err(|e| HubError::Unavailable(format!("rooms unavailable: {e}")))?
            .into_iter()
            .map(|r| r.into_owned())
            .filter(|r| {
                // Per-socket rooms are plumbing, never listed.
                !r.starts_with(SOCKET_ROOM_PREFIX)
                    && (include_internal || !is_internal_room(r))
                    && after.as_ref().is_none_or(|a| r.as_str() > a.as_str())
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        let more = names.len() > size;
        names.truncate(size);
        let items: Vec<RoomSummary> = if self.cluster.is_some() {
            let counts = join_all(names.iter().map(|name| {
                let op = op.clone().within(name.clone());
                async move { op.fetch_sockets().await.map(|s| s.len()).unwrap_or(0) }
            }))
            .await;
            names
                .into_iter()
                .zip(counts)
                .map(|(name, members)| RoomSummary { name, members: u32::try_from(members).unwrap_or(u32::MAX) })
                .collect()
        } else {
            names
                .into_iter()
                .map(|name| {
                    let members = op.clone().within(name.clone()).sockets().len();
                    RoomSummary { name, members: u32::try_from(members).unwrap_or(u32::MAX) }
                })
                .collect()
        };
        let next_page_token = next_token(more, items.last().map(|r| r.name.as_str()));
        Ok(Page { items, next_page_token })
    }

    pub async fn list_connections(
        &self,
        namespace: &str,
        filter: &ConnectionFilter,
        page_size: u32,
        page_token: &str,
    ) -> Result<Page<ConnectionWithRooms>, HubError> {
        self.check_namespace(namespace)?;
        let (size, after) = page_bounds(page_size, page_token)?;
        if let ConnectionFilter::Room(room) = filter {
            super::validate_name(room).map_err(|m| HubError::invalid("room", m))?;
        }
        if self.cluster.is_some() {
            return self.list_cluster_connections(namespace, filter, size, after).await;
        }
        let room_members: Option<std::collections::HashSet<String>> = match filter {
            ConnectionFilter::Room(room) => Some(
                self.operators(namespace)?.within(room.clone()).sockets().iter().map(|s| s.id.to_string()).collect(),
            ),
            ConnectionFilter::User(u) => Some(
                self.operators(namespace)?.within(user_room(u)).sockets().iter().map(|s| s.id.to_string()).collect(),
            ),
            ConnectionFilter::All => None,
        };
        let (conns, more) = self.registry.page(
            |c| c.namespace == namespace && room_members.as_ref().is_none_or(|m| m.contains(&c.socket_id)),
            after.as_deref(),
            size,
        );
        let op = self.operators(namespace)?;
        let items: Vec<_> = conns
            .into_iter()
            .map(|c| {
                let rooms = c
                    .socket_id
                    .parse()
                    .ok()
                    .and_then(|sid| op.get_socket(sid))
                    .map(|s| {
                        let mut r: Vec<String> = s.rooms().into_iter().map(|r| r.into_owned()).collect();
                        r.sort_unstable();
                        r
                    })
                    .unwrap_or_default();
                (c, rooms)
            })
            .collect();
        let next_page_token = next_token(more, items.last().map(|(c, _)| c.socket_id.as_str()));
        Ok(Page { items, next_page_token })
    }

    /// Cluster mode: sockets come from every instance (the adapter's fetch), what they
    /// presented at connect from the Redis connection index, their rooms from their
    /// instance.
    async fn list_cluster_connections(
        &self,
        namespace: &str,
        filter: &ConnectionFilter,
        size: usize,
        after: Option<String>,
    ) -> Result<Page<ConnectionWithRooms>, HubError> {
        let Some(cluster) = &self.cluster else { return Err(HubError::Unavailable("not in cluster mode".into())) };
        let ops = self.cluster_operators(namespace)?;
        let op = match filter {
            ConnectionFilter::All => ops,
            ConnectionFilter::User(u) => ops.within(user_room(u)),
            ConnectionFilter::Room(r) => ops.within(r.clone()),
        };
        let mut sockets: Vec<_> = op
            .fetch_sockets()
            .await
            .map_err(|e| HubError::Unavailable(format!("other instances did not answer: {e}")))?
            .into_iter()
            .map(|s| (s.data().id.to_string(), s))
            .filter(|(id, _)| after.as_ref().is_none_or(|a| id.as_str() > a.as_str()))
            .collect();
        sockets.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        sockets.dedup_by(|a, b| a.0 == b.0);
        let more = sockets.len() > size;
        sockets.truncate(size);
        let ids: Vec<String> = sockets.iter().map(|(id, _)| id.clone()).collect();
        let infos = cluster.connection_infos(namespace, &ids).await?;
        let rooms = join_all(sockets.iter().map(|(_, s)| s.rooms())).await;
        let items: Vec<ConnectionWithRooms> = sockets
            .into_iter()
            .zip(infos)
            .zip(rooms)
            .map(|(((id, _), info), rooms)| {
                let conn = self.registry.get(namespace, &id).unwrap_or_else(|| {
                    let (user_id, handshake, at) = match info {
                        Some(i) => (i.user_id, i.handshake, i.connected_at_ms),
                        None => (None, Default::default(), 0),
                    };
                    let connected_at = std::time::UNIX_EPOCH + Duration::from_millis(at);
                    Arc::new(Connection::remote(id.clone(), namespace.to_owned(), user_id, handshake, connected_at))
                });
                let mut rooms: Vec<String> = rooms
                    .unwrap_or_default()
                    .into_iter()
                    .map(|r| r.into_owned())
                    .filter(|r| !r.starts_with(SOCKET_ROOM_PREFIX))
                    .collect();
                rooms.sort_unstable();
                (conn, rooms)
            })
            .collect();
        let next_page_token = next_token(more, items.last().map(|(c, _)| c.socket_id.as_str()));
        Ok(Page { items, next_page_token })
    }

    /// Rooms over all namespaces, internal per-user rooms excluded.
    pub async fn count_rooms(&self) -> u64 {
        let mut rooms = 0u64;
        for ns in &self.settings.namespaces {
            if let Some(op) = self.io.of(ns.as_str()).map(|op| op.local())
                && let Ok(list) = op.rooms().await
            {
                rooms += list.iter().filter(|r| !is_internal_room(r)).count() as u64;
            }
        }
        rooms
    }

    pub async fn status(&self) -> StatusReport {
        let rooms = self.count_rooms().await;
        let this = NodeInfo {
            instance_id: self.instance_id.clone(),
            connections: self.registry.len() as u64,
            last_seen: std::time::SystemTime::now(),
        };
        let nodes = match &self.cluster {
            None => vec![this],
            // Redis unreachable: this instance is all it can vouch for.
            Some(c) => c.nodes().await.ok().filter(|n| !n.is_empty()).unwrap_or_else(|| vec![this]),
        };
        let rates = self.metrics.rates();
        StatusReport {
            instance_id: self.instance_id.clone(),
            version: env!("CARGO_PKG_VERSION"),
            uptime: self.uptime(),
            connections: self.registry.len() as u64,
            unique_users: self.registry.unique_users() as u64,
            rooms,
            messages_in_per_second: rates.in_per_second,
            messages_out_per_second: rates.out_per_second,
            errors_per_second: rates.errors_per_second,
            messages_in_total: self.metrics.messages_in_total(),
            messages_out_total: self.metrics.messages_out_total(),
            errors_total: self.metrics.errors_total(),
            rss_bytes: rss_bytes(),
            backend_groups: self.router.groups(),
            undelivered_events: self.router.undelivered_len() as u64,
            draining: self.is_draining(),
            nodes,
            redis: self.redis_state(),
        }
    }
}

/// Resident set size from /proc (Linux); 0 elsewhere.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}
