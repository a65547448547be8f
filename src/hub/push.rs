//! Pushes, room membership and disconnects requested by the backend (gRPC and REST run
//! exactly this code). Each operation is applied to this instance's sockets
//! ([`Hub::apply_local`]) and carried by the backplane to the other instances that hold
//! targets, which apply it the same way; the answers are merged into one report.

use std::time::{Duration, Instant};

use futures::future::join_all;
use serde::{Deserialize, Serialize};

use super::backplane::{
    EmitOutcome, EmitRequest, Located, NodeReply, NodeRequest, NotWritten, OfflineMessage, OfflineOutcome, Remote, Wait,
};
use super::{Door, ErrorKind, Hub, HubError, MAX_LIST_LEN, Payload, validate_event, validate_room};

/// Most pushes in one batch.
pub const MAX_BATCH: usize = 1000;
/// Longest ack wait a push may ask for.
pub const MAX_ACK_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest a message may be kept for an offline user.
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Which sockets an operation applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AckOutcome {
    Acked(Payload),
    Timeout,
    Failed(String),
}

impl AckOutcome {
    /// The metric label of the outcome.
    pub fn label(&self) -> &'static str {
        match self {
            AckOutcome::Acked(_) => "acked",
            AckOutcome::Timeout => "timeout",
            AckOutcome::Failed(_) => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Sockets of the target the push could not be written to, and why.
    pub not_written: Vec<NotWritten>,
    /// Room and everyone pushes: sockets not written to, counted only.
    pub not_written_uncounted: u32,
}

impl DeliveryReport {
    /// Sockets the push was not handed to, named or counted only.
    pub fn sockets_not_reached(&self) -> u32 {
        u32::try_from(self.not_written.len()).unwrap_or(u32::MAX).saturating_add(self.not_written_uncounted)
    }
}

fn parse_sid(field: &str, id: &str) -> Result<socketioxide::socket::Sid, HubError> {
    id.parse().map_err(|_| {
        HubError::invalid(field, format!("{:?} is not a socket id", id.chars().take(64).collect::<String>()))
    })
}

pub(super) fn socket_id_of(id: &str) -> Option<socketioxide::socket::Sid> {
    id.parse().ok()
}

fn validate_target(target: &Target, field: &str) -> Result<(), HubError> {
    match target {
        Target::User(u) => {
            crate::names::check_user_id(u).map_err(|e| HubError::invalid(format!("{field}.user_id"), e.to_string()))
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
        let PushCommand { target, namespace, event, payload, options: o, door } = cmd;
        let expires_at_ms = o.ttl.map(|ttl| super::wall_ms(super::now_wall()) + ttl.as_millis() as u64);
        if let (Target::User(user), Some(expires_at_ms)) = (&target, expires_at_ms) {
            let kept = OfflineMessage {
                namespace: namespace.clone(),
                event: event.clone(),
                payload: payload.clone(),
                expires_at_ms,
            };
            match self.backplane.store_offline(user, kept).await {
                Ok(OfflineOutcome::Stored) => {
                    self.metrics.offline_stored.inc();
                    return Ok(DeliveryReport { message_id, stored_offline: true, ..Default::default() });
                }
                Ok(OfflineOutcome::Full) => {
                    self.metrics.dropped("offline_full", 1);
                    return Err(HubError::ResourceExhausted(
                        "the user is offline and the messages kept for them fill their share of the offline store; \
                         nothing was kept"
                            .into(),
                    ));
                }
                Ok(OfflineOutcome::Online) => {}
                // Cut off from the other instances: a user connected here still gets it
                // live; for anyone else the bridge cannot know whether they are offline.
                Err(e) if !self.registry.is_online(user) => return Err(e),
                Err(_) => {}
            }
        }
        let request = EmitRequest {
            namespace,
            target,
            event,
            payload,
            volatile: o.volatile,
            except_rooms: o.except_rooms,
            except_sockets: o.except_sockets,
            ack_timeout_ms: o.ack_timeout.map(|t| t.as_millis() as u64),
            ttl_ms: o.ttl.map(|t| t.as_millis() as u64),
            expires_at_ms,
        };
        let labels = [request.namespace.clone(), door.as_str().to_owned()];
        let (outcome, unconfirmed) = self.emit_everywhere(request, o.ack_timeout).await;
        if let Some(why) = unconfirmed
            && outcome.reached == 0
        {
            // A user or socket target held elsewhere that no instance confirmed: "reached 0"
            // would read as "nobody is connected", so the caller is told to retry instead.
            return Err(why);
        }
        self.metrics.messages_sent.with_label_values(&labels).inc_by(u64::from(outcome.reached));
        let EmitOutcome { reached, acks, not_written, not_written_uncounted } = outcome;
        for a in &acks {
            self.metrics.client_acks.with_label_values(&[a.outcome.label()]).inc();
        }
        Ok(DeliveryReport {
            message_id,
            sockets_reached: reached,
            acks,
            not_written,
            not_written_uncounted,
            stored_offline: false,
        })
    }

    /// Applies a push here and on the instances that hold its targets, and merges what
    /// each did. User and socket targets (and every push waiting for acks) wait for the
    /// holders' answers, so the report is exact; room and everyone pushes without acks
    /// are sent on without waiting and count this instance's sockets.
    ///
    /// For a user or socket target, also says why the report may miss sockets: their
    /// instances could not be looked up or reached, or did not answer in time (then the
    /// push may or may not have arrived there).
    async fn emit_everywhere(
        &self,
        request: EmitRequest,
        ack_timeout: Option<Duration>,
    ) -> (EmitOutcome, Option<HubError>) {
        let exact = matches!(request.target, Target::User(_) | Target::Socket(_));
        let mut unconfirmed = None;
        let located = match self.backplane.locate(&request.namespace, &request.target).await {
            Ok(located) => located,
            Err(e) => {
                // Cut off from the others: this instance's sockets still get it.
                tracing::debug!(error = %e, "push targets not located; delivering to this instance's sockets");
                unconfirmed = exact.then(|| {
                    HubError::Unavailable(format!(
                        "the target's sockets on other instances could not be looked up ({e}); \
                         only this instance's sockets were tried"
                    ))
                });
                Located::HERE_ONLY
            }
        };
        let wait = match ack_timeout {
            Some(t) => Wait::Answers { extra: t },
            None if exact => Wait::Answers { extra: Duration::ZERO },
            None => Wait::No,
        };
        let mut total = if located.remote == Remote::None {
            self.emit_local(&request).await
        } else {
            let relayed = self.backplane.relay(located.remote.clone(), NodeRequest::Emit(request.clone()), wait);
            let (mut local, answers) = tokio::join!(self.emit_local(&request), relayed);
            match answers {
                Ok(answers) => {
                    if let Remote::Nodes(nodes) = &located.remote
                        && exact
                        && answers.len() < nodes.len()
                    {
                        unconfirmed = Some(HubError::Unavailable(format!(
                            "{} of the {} instances holding the target did not answer (not listening, or not \
                             within redis.request_timeout_ms); the push may have reached their sockets all the same",
                            nodes.len() - answers.len(),
                            nodes.len()
                        )));
                    }
                    for answer in answers {
                        if let NodeReply::Emitted(remote) = answer {
                            local.merge(remote);
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "push not carried to other instances");
                    unconfirmed = exact.then(|| {
                        HubError::Unavailable(format!(
                            "the push could not be carried to the instances holding the target ({e})"
                        ))
                    });
                }
            }
            local
        };
        total.acks.sort_by(|a, b| a.socket_id.cmp(&b.socket_id));
        (total, unconfirmed)
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
        self.change_rooms(namespace, target, rooms, true).await
    }

    pub async fn leave_rooms(&self, namespace: &str, target: &Target, rooms: &[String]) -> Result<u32, HubError> {
        self.change_rooms(namespace, target, rooms, false).await
    }

    async fn change_rooms(
        &self,
        namespace: &str,
        target: &Target,
        rooms: &[String],
        join: bool,
    ) -> Result<u32, HubError> {
        self.check_namespace(namespace)?;
        validate_target(target, "target")?;
        if rooms.is_empty() {
            return Err(HubError::invalid("rooms", "name at least one room"));
        }
        validate_rooms(rooms, "rooms")?;
        let request = NodeRequest::ChangeRooms {
            namespace: namespace.to_owned(),
            target: target.clone(),
            rooms: rooms.to_vec(),
            join,
        };
        self.apply_everywhere(namespace, target, request).await
    }

    /// Closes the selected sockets. Each first gets a `bridge:disconnect` event carrying
    /// the reason, since a Socket.IO disconnect packet has no room for one.
    pub async fn disconnect_sockets(&self, namespace: &str, target: &Target, reason: &str) -> Result<u32, HubError> {
        self.check_namespace(namespace)?;
        validate_target(target, "target")?;
        if reason.len() > MAX_REASON_LEN {
            return Err(HubError::invalid("reason", format!("at most {MAX_REASON_LEN} bytes")));
        }
        let request = NodeRequest::Disconnect {
            namespace: namespace.to_owned(),
            target: target.clone(),
            reason: reason.to_owned(),
        };
        self.apply_everywhere(namespace, target, request).await
    }

    /// Applies a room change or disconnect here and on every instance holding targets,
    /// waiting for their counts.
    async fn apply_everywhere(&self, namespace: &str, target: &Target, request: NodeRequest) -> Result<u32, HubError> {
        let located = self.backplane.locate(namespace, target).await.unwrap_or(Located::HERE_ONLY);
        let remote = if located.remote == Remote::None {
            Vec::new()
        } else {
            // Cut off from the others: this instance's sockets still change.
            self.backplane
                .relay(located.remote, request.clone(), Wait::Answers { extra: Duration::ZERO })
                .await
                .unwrap_or_else(|e| {
                    tracing::debug!(error = %e, "not carried to other instances");
                    Vec::new()
                })
        };
        let local = self.apply_local(request).await;
        Ok(std::iter::once(local).chain(remote).map(|r| if let NodeReply::Count(n) = r { n } else { 0 }).sum())
    }
}

/// Event a client receives just before a backend-requested disconnect.
pub const DISCONNECT_EVENT: &str = "bridge:disconnect";
const MAX_REASON_LEN: usize = 512;
