//! Pushes, room membership and disconnects requested by the backend (gRPC and REST run
//! exactly this code).

use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::join_all;
use socketioxide::BroadcastError;
use socketioxide::socket::Sid;

use super::offline::OfflineMessage;
use super::payload::ClientAckArgs;
use super::{
    Door, ErrorKind, Hub, HubError, MAX_LIST_LEN, Operators, Payload, Socket, socket_room, user_room, validate_event,
    validate_room,
};
use crate::cluster::{Cluster, StoredMessage};
use crate::telemetry::metrics::Metrics;

/// Most pushes in one batch.
pub const MAX_BATCH: usize = 1000;
/// Longest ack wait a push may ask for.
pub const MAX_ACK_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest a message may be kept for an offline user.
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Which sockets an operation applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    User(String),
    Room(String),
    Socket(String),
    Everyone,
}

#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    pub volatile: bool,
    pub except_rooms: Vec<String>,
    pub except_sockets: Vec<String>,
    pub ack_timeout: Option<Duration>,
    pub ttl: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct PushCommand {
    pub target: Target,
    pub namespace: String,
    pub event: String,
    pub payload: Payload,
    pub options: PushOptions,
    /// The door the push came through, for metrics.
    pub door: Door,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckOutcome {
    Acked(Payload),
    Timeout,
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketAck {
    pub socket_id: String,
    pub outcome: AckOutcome,
}

/// What a push achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    pub message_id: String,
    pub sockets_reached: u32,
    pub acks: Vec<SocketAck>,
    pub stored_offline: bool,
}

fn parse_sid(field: &str, id: &str) -> Result<Sid, HubError> {
    id.parse().map_err(|_| {
        HubError::invalid(field, format!("{:?} is not a socket id", id.chars().take(64).collect::<String>()))
    })
}

fn validate_target(target: &Target, field: &str) -> Result<(), HubError> {
    match target {
        Target::User(u)
            if u.is_empty() || u.chars().count() > super::auth::MAX_USER_ID_LEN || u.chars().any(char::is_control) =>
        {
            Err(HubError::invalid(format!("{field}.user_id"), "must be 1 to 128 characters of printable text"))
        }
        Target::Room(r) => validate_room(r).map_err(|e| rename_field(e, &format!("{field}.room"))),
        Target::Socket(s) => parse_sid(&format!("{field}.socket_id"), s).map(|_| ()),
        _ => Ok(()),
    }
}

fn rename_field(e: HubError, field: &str) -> HubError {
    match e {
        HubError::InvalidArgument { message, .. } => HubError::invalid(field, message),
        other => other,
    }
}

fn validate_rooms(rooms: &[String], field: &str) -> Result<(), HubError> {
    if rooms.len() > MAX_LIST_LEN {
        return Err(HubError::invalid(field, format!("at most {MAX_LIST_LEN} rooms")));
    }
    rooms.iter().try_for_each(|r| validate_room(r).map_err(|e| rename_field(e, field)))
}

impl Hub {
    /// Operators over this instance's sockets only.
    pub(super) fn operators(&self, namespace: &str) -> Result<Operators, HubError> {
        Ok(self.cluster_operators(namespace)?.local())
    }

    /// Operators over the namespace's sockets on every instance (in embedded mode the
    /// same as `operators`).
    pub(super) fn cluster_operators(&self, namespace: &str) -> Result<Operators, HubError> {
        self.check_namespace(namespace)?;
        let op = self
            .io
            .of(namespace)
            .ok_or_else(|| HubError::Unavailable(format!("namespace {namespace:?} is not ready")))?;
        Ok(if self.cluster.is_some() { op } else { op.local() })
    }

    /// The cluster-wide operators a target selects, excluded rooms and sockets applied.
    fn targeted(&self, namespace: &str, target: &Target, o: &PushOptions) -> Result<Operators, HubError> {
        let ops = self.cluster_operators(namespace)?;
        let mut op = match target {
            Target::User(u) => ops.to(user_room(u)),
            Target::Room(r) => ops.to(r.clone()),
            Target::Socket(s) => ops.to(socket_room(s)),
            Target::Everyone => ops,
        };
        if !o.except_rooms.is_empty() {
            op = op.except(o.except_rooms.clone());
        }
        if !o.except_sockets.is_empty() {
            op = op.except(o.except_sockets.iter().map(|s| socket_room(s)).collect::<Vec<_>>());
        }
        if o.volatile {
            op = op.volatile();
        }
        Ok(op)
    }

    /// The local sockets a target selects.
    fn select(&self, namespace: &str, target: &Target) -> Result<Vec<Socket>, HubError> {
        let op = self.operators(namespace)?;
        Ok(match target {
            Target::User(u) => op.within(user_room(u)).sockets(),
            Target::Room(r) => op.within(r.clone()).sockets(),
            Target::Socket(s) => op.get_socket(parse_sid("target.socket_id", s)?).into_iter().collect(),
            Target::Everyone => op.sockets(),
        })
    }

    pub fn validate_push(&self, cmd: &PushCommand) -> Result<(), HubError> {
        // A malformed field is reported before an unconfigured namespace (NOT_FOUND), so
        // a batch is refused whole for it whatever namespace the push names.
        let namespace = self.check_namespace(&cmd.namespace);
        if let Err(e @ HubError::InvalidArgument { .. }) = namespace {
            return Err(e);
        }
        validate_target(&cmd.target, "target")?;
        validate_event(&cmd.event)?;
        let o = &cmd.options;
        validate_rooms(&o.except_rooms, "options.except_rooms")?;
        if o.except_sockets.len() > MAX_LIST_LEN {
            return Err(HubError::invalid("options.except_socket_ids", format!("at most {MAX_LIST_LEN} ids")));
        }
        for s in &o.except_sockets {
            parse_sid("options.except_socket_ids", s)?;
        }
        if let Some(t) = o.ack_timeout
            && (t.is_zero() || t > MAX_ACK_TIMEOUT)
        {
            return Err(HubError::invalid("options.ack_timeout", "must be between 1ms and 300s"));
        }
        if let Some(t) = o.ttl {
            if t.is_zero() || t > MAX_TTL {
                return Err(HubError::invalid("options.ttl", "must be between 1ms and 7 days"));
            }
            if !matches!(cmd.target, Target::User(_)) {
                return Err(HubError::invalid("options.ttl", "only pushes to a user can be kept for offline delivery"));
            }
        }
        namespace
    }

    /// Emits one event and reports who got it (and, with `ack_timeout`, what they answered).
    pub async fn push(&self, cmd: PushCommand) -> Result<DeliveryReport, HubError> {
        let started = Instant::now();
        let door = cmd.door.as_str();
        let _in_flight = self.push_started();
        let result = self.run_push(cmd).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(HubError::InvalidArgument { .. }) => {
                self.metrics.error(ErrorKind::InvalidRequest);
                "invalid"
            }
            Err(HubError::NotFound(_)) => "not_found",
            Err(HubError::Unavailable(_)) => "unavailable",
            Err(HubError::ResourceExhausted(_)) => "exhausted",
        };
        self.metrics.push_requests.with_label_values(&[door, outcome]).inc();
        self.metrics.push_duration.with_label_values(&[door]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn run_push(&self, cmd: PushCommand) -> Result<DeliveryReport, HubError> {
        self.validate_push(&cmd)?;
        if self.is_draining() {
            return Err(HubError::Unavailable("the bridge is shutting down".into()));
        }
        let (_, message_id) = self.router.next_event_id();
        let wire = cmd.payload.wire_args().map_err(|e| HubError::invalid("payload", e.to_string()))?;
        if let Some(cluster) = &self.cluster {
            let report = self.run_cluster_push(cluster, &cmd, message_id, wire).await?;
            self.metrics
                .messages_sent
                .with_label_values(&[cmd.namespace.as_str(), cmd.door.as_str()])
                .inc_by(u64::from(report.sockets_reached));
            return Ok(report);
        }
        let o = &cmd.options;

        let mut sockets = self.select(&cmd.namespace, &cmd.target)?;
        let except_rooms_given = !o.except_rooms.is_empty();
        if except_rooms_given || !o.except_sockets.is_empty() {
            sockets.retain(|s| {
                let id = s.id.to_string();
                let excluded_room =
                    except_rooms_given && s.rooms().iter().any(|r| o.except_rooms.iter().any(|e| e == r));
                !(o.except_sockets.contains(&id) || excluded_room)
            });
        }

        if sockets.is_empty() {
            let stored_offline = match (&cmd.target, o.ttl) {
                (Target::User(user), Some(ttl)) if !self.registry.is_online(user) => {
                    self.offline.store(
                        user,
                        OfflineMessage {
                            namespace: cmd.namespace.clone(),
                            event: cmd.event.clone(),
                            payload: cmd.payload.clone(),
                            expires_at: Instant::now() + ttl,
                        },
                    );
                    self.metrics.offline_stored.inc();
                    true
                }
                _ => false,
            };
            return Ok(DeliveryReport { message_id, stored_offline, ..Default::default() });
        }

        let report = match o.ack_timeout {
            // One encode for the whole selection: socketioxide's broadcast serializes the
            // packet once and hands the same bytes to every socket.
            None if o.except_sockets.is_empty() && !matches!(cmd.target, Target::Socket(_)) => {
                let ops = self.operators(&cmd.namespace)?;
                let mut op = match &cmd.target {
                    Target::User(u) => ops.to(user_room(u)),
                    Target::Room(r) => ops.to(r.clone()),
                    _ => ops,
                };
                if !o.except_rooms.is_empty() {
                    op = op.except(o.except_rooms.clone());
                }
                if o.volatile {
                    op = op.volatile();
                }
                let failed = match op.emit(&cmd.event, &wire).await {
                    Ok(()) => 0,
                    Err(BroadcastError::Socket(errors)) => errors.len(),
                    Err(e) => return Err(HubError::Unavailable(format!("push could not be sent: {e}"))),
                };
                let reached = sockets.len().saturating_sub(failed);
                DeliveryReport {
                    message_id,
                    sockets_reached: u32::try_from(reached).unwrap_or(u32::MAX),
                    ..Default::default()
                }
            }
            None => {
                let mut reached = 0u32;
                for s in &sockets {
                    let sent =
                        if o.volatile { s.volatile().emit(&cmd.event, &wire) } else { s.emit(&cmd.event, &wire) };
                    match sent {
                        Ok(()) => reached += 1,
                        Err(e) => tracing::debug!(socket_id = %s.id, error = %e, "push not handed to socket"),
                    }
                }
                DeliveryReport { message_id, sockets_reached: reached, ..Default::default() }
            }
            Some(timeout) => {
                let waits = sockets.iter().map(|s| {
                    let sent = if o.volatile {
                        s.volatile().timeout(timeout).emit_with_ack::<_, ClientAckArgs>(&cmd.event, &wire)
                    } else {
                        s.timeout(timeout).emit_with_ack::<_, ClientAckArgs>(&cmd.event, &wire)
                    };
                    let socket_id = s.id.to_string();
                    async move {
                        let outcome = match sent {
                            Err(e) => return (socket_id, None, AckOutcome::Failed(e.to_string())),
                            Ok(stream) => match stream.await {
                                Ok(ClientAckArgs(args)) => AckOutcome::Acked(args.into_payload()),
                                Err(socketioxide::AckError::Timeout) => AckOutcome::Timeout,
                                Err(e) => AckOutcome::Failed(e.to_string()),
                            },
                        };
                        (socket_id, Some(()), outcome)
                    }
                });
                let results = join_all(waits).await;
                let reached = results.iter().filter(|(_, sent, _)| sent.is_some()).count();
                let acks = results
                    .into_iter()
                    .map(|(socket_id, _, outcome)| {
                        let label = match outcome {
                            AckOutcome::Acked(_) => "acked",
                            AckOutcome::Timeout => "timeout",
                            AckOutcome::Failed(_) => "failed",
                        };
                        self.metrics.client_acks.with_label_values(&[label]).inc();
                        SocketAck { socket_id, outcome }
                    })
                    .collect();
                DeliveryReport {
                    message_id,
                    sockets_reached: u32::try_from(reached).unwrap_or(u32::MAX),
                    acks,
                    ..Default::default()
                }
            }
        };
        self.metrics
            .messages_sent
            .with_label_values(&[cmd.namespace.as_str(), cmd.door.as_str()])
            .inc_by(u64::from(report.sockets_reached));
        Ok(report)
    }

    /// A push in cluster mode: through the Redis adapter to every instance's sockets.
    /// `sockets_reached` is exact for user and socket targets without exclusions (from
    /// Redis' presence and index) and for pushes with acks (one answer per socket);
    /// otherwise it counts this instance's sockets, since a broadcast does not report
    /// back how many sockets other instances had.
    async fn run_cluster_push(
        &self,
        cluster: &Cluster,
        cmd: &PushCommand,
        message_id: String,
        wire: super::payload::WireArgs,
    ) -> Result<DeliveryReport, HubError> {
        let o = &cmd.options;
        if let (Target::User(user), Some(ttl)) = (&cmd.target, o.ttl) {
            match cluster.store_offline(user, &cmd.namespace, &cmd.event, &cmd.payload, ttl).await {
                Ok(true) => {
                    self.metrics.offline_stored.inc();
                    return Ok(DeliveryReport { message_id, stored_offline: true, ..Default::default() });
                }
                Ok(false) => {}
                // Redis is down: a user connected here still gets it live; for anyone
                // else the bridge cannot know whether they are offline, so it says so.
                Err(e) if !self.registry.is_online(user) => return Err(e),
                Err(_) => {}
            }
        }
        let op = self.targeted(&cmd.namespace, &cmd.target, o)?;
        if let Some(timeout) = o.ack_timeout {
            let stream = op
                .timeout(timeout)
                .emit_with_ack::<_, ClientAckArgs>(&cmd.event, &wire)
                .await
                .map_err(|e| HubError::Unavailable(format!("push could not be sent: {e}")))?;
            let acks: Vec<SocketAck> = stream
                .map(|(sid, result)| {
                    let outcome = match result {
                        Ok(ClientAckArgs(args)) => AckOutcome::Acked(args.into_payload()),
                        Err(socketioxide::AckError::Timeout) => AckOutcome::Timeout,
                        Err(e) => AckOutcome::Failed(e.to_string()),
                    };
                    SocketAck { socket_id: sid.to_string(), outcome }
                })
                .collect()
                .await;
            for a in &acks {
                let label = match a.outcome {
                    AckOutcome::Acked(_) => "acked",
                    AckOutcome::Timeout => "timeout",
                    AckOutcome::Failed(_) => "failed",
                };
                self.metrics.client_acks.with_label_values(&[label]).inc();
            }
            let reached = u32::try_from(acks.len()).unwrap_or(u32::MAX);
            return Ok(DeliveryReport { message_id, sockets_reached: reached, acks, ..Default::default() });
        }
        let no_exclusions = o.except_rooms.is_empty() && o.except_sockets.is_empty();
        let reached = match &cmd.target {
            Target::User(u) if no_exclusions => cluster.user_sockets(u, &cmd.namespace).await.ok(),
            Target::Socket(s) if no_exclusions => cluster.socket_exists(&cmd.namespace, s).await.ok().map(u32::from),
            _ => None,
        };
        let local = op.clone().local().sockets().len();
        match op.emit(&cmd.event, &wire).await {
            Ok(()) | Err(BroadcastError::Socket(_)) => {}
            Err(e) => return Err(HubError::Unavailable(format!("push could not be sent: {e}"))),
        }
        // This instance's own sockets are a floor: Redis' presence can lag behind them
        // (just after Redis came back empty, before this instance re-registered them).
        let local = u32::try_from(local).unwrap_or(u32::MAX);
        let reached = reached.map_or(local, |r| r.max(local));
        Ok(DeliveryReport { message_id, sockets_reached: reached, ..Default::default() })
    }

    /// Many pushes run concurrently, each with its own result. The batch is validated whole
    /// first: one malformed push refuses the batch (naming `pushes[i].field`), so a caller
    /// never has half a batch delivered because of a typo.
    pub async fn push_batch(&self, cmds: Vec<PushCommand>) -> Result<Vec<Result<DeliveryReport, HubError>>, HubError> {
        if cmds.is_empty() || cmds.len() > MAX_BATCH {
            return Err(HubError::invalid("pushes", format!("send 1 to {MAX_BATCH} pushes")));
        }
        for (i, cmd) in cmds.iter().enumerate() {
            if let Err(HubError::InvalidArgument { field, message }) = self.validate_push(cmd) {
                return Err(HubError::invalid(format!("pushes[{i}].{field}"), message));
            }
        }
        Ok(join_all(cmds.into_iter().map(|c| self.push(c))).await)
    }

    pub async fn join_rooms(&self, namespace: &str, target: &Target, rooms: &[String]) -> Result<u32, HubError> {
        self.change_rooms(namespace, target, rooms, RoomChange::Join).await
    }

    pub async fn leave_rooms(&self, namespace: &str, target: &Target, rooms: &[String]) -> Result<u32, HubError> {
        self.change_rooms(namespace, target, rooms, RoomChange::Leave).await
    }

    /// Cluster mode: how many sockets a target selects on every instance.
    async fn count_cluster(&self, op: &Operators) -> Result<u32, HubError> {
        let sockets = op
            .clone()
            .fetch_sockets()
            .await
            .map_err(|e| HubError::Unavailable(format!("other instances did not answer: {e}")))?;
        Ok(u32::try_from(sockets.len()).unwrap_or(u32::MAX))
    }

    async fn change_rooms(
        &self,
        namespace: &str,
        target: &Target,
        rooms: &[String],
        change: RoomChange,
    ) -> Result<u32, HubError> {
        self.check_namespace(namespace)?;
        validate_target(target, "target")?;
        if rooms.is_empty() {
            return Err(HubError::invalid("rooms", "name at least one room"));
        }
        validate_rooms(rooms, "rooms")?;
        if self.cluster.is_some() {
            let op = self.targeted(namespace, target, &PushOptions::default())?;
            let count = self.count_cluster(&op).await?;
            let changed = match change {
                RoomChange::Join => op.join(rooms.to_vec()).await,
                RoomChange::Leave => op.leave(rooms.to_vec()).await,
            };
            changed.map_err(|e| HubError::Unavailable(format!("room change not sent to other instances: {e}")))?;
            return Ok(count);
        }
        let sockets = self.select(namespace, target)?;
        for s in &sockets {
            match change {
                RoomChange::Join => s.join(rooms.to_vec()),
                RoomChange::Leave => s.leave(rooms.to_vec()),
            }
        }
        Ok(u32::try_from(sockets.len()).unwrap_or(u32::MAX))
    }

    /// Closes the selected sockets. Each first gets a `bridge:disconnect` event carrying
    /// the reason, since a Socket.IO disconnect packet has no room for one.
    pub async fn disconnect_sockets(&self, namespace: &str, target: &Target, reason: &str) -> Result<u32, HubError> {
        self.check_namespace(namespace)?;
        validate_target(target, "target")?;
        if reason.len() > MAX_REASON_LEN {
            return Err(HubError::invalid("reason", format!("at most {MAX_REASON_LEN} bytes")));
        }
        if self.cluster.is_some() {
            let op = self.targeted(namespace, target, &PushOptions::default())?;
            let count = self.count_cluster(&op).await?;
            let unavailable = |e: BroadcastError| HubError::Unavailable(format!("disconnect not sent: {e}"));
            match op.clone().emit(DISCONNECT_EVENT, &serde_json::json!({ "reason": reason })).await {
                Ok(()) | Err(BroadcastError::Socket(_)) => {}
                Err(e) => return Err(unavailable(e)),
            }
            match op.disconnect().await {
                Ok(()) | Err(BroadcastError::Socket(_)) => {}
                Err(e) => return Err(unavailable(e)),
            }
            return Ok(count);
        }
        let sockets = self.select(namespace, target)?;
        let count = sockets.len();
        for s in sockets {
            let _ = s.emit(DISCONNECT_EVENT, &serde_json::json!({ "reason": reason }));
            if let Err(e) = s.disconnect() {
                tracing::debug!(error = %e, "socket already gone");
            }
        }
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    /// Delivers what was kept for a user who just connected, oldest first.
    pub(crate) fn deliver_offline(&self, socket: &Socket, user_id: &str) {
        let namespace = socket.ns().to_owned();
        for msg in self.offline.take(user_id, &namespace, Instant::now()) {
            if let Ok(wire) = msg.payload.wire_args()
                && socket.emit(&msg.event, &wire).is_ok()
            {
                self.metrics.offline_delivered.inc();
                self.metrics.messages_sent.with_label_values(&[namespace.as_str(), "offline"]).inc();
            }
        }
    }
}

/// Emits what the cluster kept for a user who just connected, oldest first.
pub(crate) fn emit_kept(metrics: &Metrics, socket: &Socket, messages: Vec<StoredMessage>) {
    let namespace = socket.ns().to_owned();
    for m in messages {
        let payload = Payload::from_trusted_parts(m.args_json, m.attachments);
        if let Ok(wire) = payload.wire_args()
            && socket.emit(&m.event, &wire).is_ok()
        {
            metrics.offline_delivered.inc();
            metrics.messages_sent.with_label_values(&[namespace.as_str(), "offline"]).inc();
        }
    }
}

#[derive(Clone, Copy)]
enum RoomChange {
    Join,
    Leave,
}

/// Event a client receives just before a backend-requested disconnect.
pub const DISCONNECT_EVENT: &str = "bridge:disconnect";
const MAX_REASON_LEN: usize = 512;
