//! Read-only views: paginated rooms and connections, and the status report.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::backplane::{ConnectionView, NodeInfo, NodeReply, NodeRequest, Remote, Wait};
use super::router::GroupInfo;
use super::{Hub, HubError, SOCKET_ROOM_PREFIX, is_internal_room};

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Rooms of a namespace over every instance, with their members counted over every
    /// instance.
    pub async fn list_rooms(
        &self,
        namespace: &str,
        page_size: u32,
        page_token: &str,
        include_internal: bool,
    ) -> Result<Page<RoomSummary>, HubError> {
        self.check_namespace(namespace)?;
        let (size, after) = page_bounds(page_size, page_token)?;
        let mut members: BTreeMap<String, u32> = BTreeMap::new();
        for answer in self.ask_everyone(NodeRequest::ListRooms { namespace: namespace.to_owned() }).await {
            if let NodeReply::Rooms(rooms) = answer {
                for (name, n) in rooms {
                    *members.entry(name).or_default() += n;
                }
            }
        }
        let mut items: Vec<RoomSummary> = members
            .into_iter()
            .filter(|(r, _)| {
                // Per-socket rooms are plumbing, never listed.
                !r.starts_with(SOCKET_ROOM_PREFIX)
                    && (include_internal || !is_internal_room(r))
                    && after.as_ref().is_none_or(|a| r.as_str() > a.as_str())
            })
            .map(|(name, members)| RoomSummary { name, members })
            .take(size + 1)
            .collect();
        let more = items.len() > size;
        items.truncate(size);
        let next_page_token = next_token(more, items.last().map(|r| r.name.as_str()));
        Ok(Page { items, next_page_token })
    }

    /// Connections of a namespace over every instance, each with what it presented at
    /// connect and its rooms.
    pub async fn list_connections(
        &self,
        namespace: &str,
        filter: &ConnectionFilter,
        page_size: u32,
        page_token: &str,
    ) -> Result<Page<ConnectionView>, HubError> {
        self.check_namespace(namespace)?;
        let (size, after) = page_bounds(page_size, page_token)?;
        if let ConnectionFilter::Room(room) = filter {
            super::validate_name(room).map_err(|e| HubError::invalid("room", e.to_string()))?;
        }
        let request = NodeRequest::ListConnections {
            namespace: namespace.to_owned(),
            filter: filter.clone(),
            after,
            limit: size + 1,
        };
        let mut items: Vec<ConnectionView> = Vec::new();
        for answer in self.ask_everyone(request).await {
            if let NodeReply::Connections(mut found) = answer {
                items.append(&mut found);
            }
        }
        items.sort_unstable_by(|a, b| a.socket_id.cmp(&b.socket_id));
        items.dedup_by(|a, b| a.socket_id == b.socket_id);
        let more = items.len() > size;
        items.truncate(size);
        for item in &mut items {
            item.rooms.retain(|r| !r.starts_with(SOCKET_ROOM_PREFIX));
        }
        let next_page_token = next_token(more, items.last().map(|c| c.socket_id.as_str()));
        Ok(Page { items, next_page_token })
    }

    /// This instance's answer and every other instance's that came in time.
    async fn ask_everyone(&self, request: NodeRequest) -> Vec<NodeReply> {
        let wait = Wait::Answers { extra: Duration::ZERO };
        let (local, remote) =
            tokio::join!(self.apply_local(request.clone()), self.backplane.relay(Remote::All, request, wait));
        let mut answers = remote.unwrap_or_else(|e| {
            tracing::debug!(error = %e, "other instances not asked; listing this one");
            Vec::new()
        });
        answers.push(local);
        answers
    }

    /// This instance's rooms in a namespace, internal ones excluded.
    pub async fn local_rooms(&self, namespace: &str) -> Vec<String> {
        let Some(op) = self.io.of(namespace) else { return Vec::new() };
        op.rooms()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| !is_internal_room(r))
            .map(|r| r.into_owned())
            .collect()
    }

    /// Rooms over all namespaces, internal per-user rooms excluded.
    pub async fn count_rooms(&self) -> u64 {
        let mut rooms = 0u64;
        for ns in &self.settings.namespaces {
            if let Some(op) = self.io.of(ns.as_str())
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
        // Alone, or cut off from the others: this instance is all it can vouch for.
        let nodes = self.backplane.nodes().await.ok().filter(|n| !n.is_empty()).unwrap_or_else(|| vec![this]);
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
