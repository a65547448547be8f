//! `BridgeService`: each RPC decodes its request, calls the hub, and encodes the answer.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::convert::{self, status_from};
use crate::hub::{ConnectionFilter, Hub, HubError};
use crate::proto as pb;
use crate::proto::bridge_service_server::BridgeService;

pub struct Bridge {
    hub: Arc<Hub>,
}

impl Bridge {
    pub fn new(hub: Arc<Hub>) -> Self {
        Self { hub }
    }
}

#[tonic::async_trait]
impl BridgeService for Bridge {
    async fn push(&self, request: Request<pb::PushRequest>) -> Result<Response<pb::PushResponse>, Status> {
        let limits = self.hub.settings().payload_limits;
        let cmd = convert::push_command(request.into_inner(), limits).map_err(status_from)?;
        let report = self.hub.push(cmd).await.map_err(status_from)?;
        Ok(Response::new(convert::push_response(report)))
    }

    async fn push_batch(
        &self,
        request: Request<pb::PushBatchRequest>,
    ) -> Result<Response<pb::PushBatchResponse>, Status> {
        let limits = self.hub.settings().payload_limits;
        let cmds = request
            .into_inner()
            .pushes
            .into_iter()
            .enumerate()
            .map(|(i, p)| convert::push_command(p, limits).map_err(|e| in_batch(i, e)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(status_from)?;
        let results = self.hub.push_batch(cmds).await.map_err(status_from)?;
        let results = results
            .into_iter()
            .map(|outcome| pb::PushBatchResult {
                outcome: Some(match outcome {
                    Ok(report) => pb::push_batch_result::Outcome::Response(convert::push_response(report)),
                    Err(e) => pb::push_batch_result::Outcome::Failure(pb::PushFailure {
                        code: convert::code_name(&e).into(),
                        field: match &e {
                            HubError::InvalidArgument { field, .. } => field.clone(),
                            _ => String::new(),
                        },
                        message: e.to_string(),
                    }),
                }),
            })
            .collect();
        Ok(Response::new(pb::PushBatchResponse { results }))
    }

    async fn join_rooms(
        &self,
        request: Request<pb::JoinRoomsRequest>,
    ) -> Result<Response<pb::JoinRoomsResponse>, Status> {
        let r = request.into_inner();
        let target = convert::target(r.target, "target").map_err(status_from)?;
        let n = self.hub.join_rooms(&convert::namespace(r.namespace), &target, &r.rooms).await.map_err(status_from)?;
        Ok(Response::new(pb::JoinRoomsResponse { sockets_affected: n }))
    }

    async fn leave_rooms(
        &self,
        request: Request<pb::LeaveRoomsRequest>,
    ) -> Result<Response<pb::LeaveRoomsResponse>, Status> {
        let r = request.into_inner();
        let target = convert::target(r.target, "target").map_err(status_from)?;
        let n = self.hub.leave_rooms(&convert::namespace(r.namespace), &target, &r.rooms).await.map_err(status_from)?;
        Ok(Response::new(pb::LeaveRoomsResponse { sockets_affected: n }))
    }

    async fn disconnect_sockets(
        &self,
        request: Request<pb::DisconnectSocketsRequest>,
    ) -> Result<Response<pb::DisconnectSocketsResponse>, Status> {
        let r = request.into_inner();
        let target = convert::target(r.target, "target").map_err(status_from)?;
        let n = self
            .hub
            .disconnect_sockets(&convert::namespace(r.namespace), &target, &r.reason)
            .await
            .map_err(status_from)?;
        Ok(Response::new(pb::DisconnectSocketsResponse { sockets_disconnected: n }))
    }

    async fn status(&self, _request: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let s = self.hub.status().await;
        Ok(Response::new(pb::StatusResponse {
            instance_id: s.instance_id.clone(),
            version: s.version.into(),
            uptime: prost_types::Duration::try_from(s.uptime).ok(),
            connections: s.connections,
            unique_users: s.unique_users,
            rooms: s.rooms,
            messages_in_per_second: s.messages_in_per_second,
            messages_out_per_second: s.messages_out_per_second,
            errors_per_second: s.errors_per_second,
            messages_in_total: s.messages_in_total,
            messages_out_total: s.messages_out_total,
            errors_total: s.errors_total,
            rss_bytes: s.rss_bytes,
            backend_groups: s
                .backend_groups
                .into_iter()
                .map(|g| pb::BackendGroup { group: g.group, streams: g.streams, queued_events: g.queued_events })
                .collect(),
            nodes: s
                .nodes
                .into_iter()
                .map(|n| pb::ClusterNode {
                    instance_id: n.instance_id,
                    connections: n.connections,
                    last_seen: Some(prost_types::Timestamp::from(n.last_seen)),
                })
                .collect(),
            undelivered_events: s.undelivered_events,
            draining: s.draining,
        }))
    }

    async fn list_rooms(
        &self,
        request: Request<pb::ListRoomsRequest>,
    ) -> Result<Response<pb::ListRoomsResponse>, Status> {
        let r = request.into_inner();
        let page = self
            .hub
            .list_rooms(&convert::namespace(r.namespace), r.page_size, &r.page_token, r.include_internal)
            .await
            .map_err(status_from)?;
        Ok(Response::new(pb::ListRoomsResponse {
            rooms: page.items.into_iter().map(|r| pb::RoomInfo { name: r.name, members: r.members }).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn list_connections(
        &self,
        request: Request<pb::ListConnectionsRequest>,
    ) -> Result<Response<pb::ListConnectionsResponse>, Status> {
        let r = request.into_inner();
        let filter = match r.filter {
            Some(pb::list_connections_request::Filter::UserId(u)) => ConnectionFilter::User(u),
            Some(pb::list_connections_request::Filter::Room(room)) => ConnectionFilter::Room(room),
            None => ConnectionFilter::All,
        };
        let page = self
            .hub
            .list_connections(&convert::namespace(r.namespace), &filter, r.page_size, &r.page_token)
            .await
            .map_err(status_from)?;
        Ok(Response::new(pb::ListConnectionsResponse {
            connections: page
                .items
                .into_iter()
                .map(|c| pb::Connection {
                    connected_at: Some(prost_types::Timestamp::from(
                        std::time::UNIX_EPOCH + std::time::Duration::from_millis(c.connected_at_ms),
                    )),
                    handshake: Some(convert::handshake(&c.handshake)),
                    socket_id: c.socket_id,
                    user_id: c.user_id.unwrap_or_default(),
                    namespace: c.namespace,
                    rooms: c.rooms,
                    data_json: c.data_json,
                })
                .collect(),
            next_page_token: page.next_page_token,
        }))
    }

    type AuthorizeStream = Pin<Box<dyn Stream<Item = Result<pb::AuthorizeResponse, Status>> + Send + 'static>>;

    async fn authorize(
        &self,
        request: Request<Streaming<pb::AuthorizeRequest>>,
    ) -> Result<Response<Self::AuthorizeStream>, Status> {
        super::authorize::open(self.hub.clone(), request.into_inner()).await.map(Response::new)
    }

    type EventsStream = Pin<Box<dyn Stream<Item = Result<pb::EventsResponse, Status>> + Send + 'static>>;

    async fn events(
        &self,
        request: Request<Streaming<pb::EventsRequest>>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        super::events::open(self.hub.clone(), request.into_inner()).await.map(Response::new)
    }
}

/// Names a batch item's field as `pushes[i].field`.
fn in_batch(i: usize, e: HubError) -> HubError {
    match e {
        HubError::InvalidArgument { field, message } => HubError::invalid(format!("pushes[{i}].{field}"), message),
        other => other,
    }
}
