//! Cluster mode over Redis: pushes, rooms, listings and status across instances; presence
//! when sockets race; client events through Redis Streams and their redelivery; offline
//! delivery; Redis loss and recovery; long-polling through nginx. Three real bridges (the
//! binary) share one real `redis-server`, a fresh one per test, and every test runs again
//! on a real Redis Cluster of three masters with a replica each (`redis_cluster::*`,
//! `redis+cluster://` URLs); browsers are stock
//! `socket.io-client` sockets in Node; the nginx test puts Debian's nginx, configured from
//! `examples/nginx/socket-bridge.conf`, in front of two instances. Propagation is awaited by
//! polling with generous deadlines, never by sleeping; "exactly once" means the expected
//! deliveries arrived and nothing more within `QUIET`.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use common::cluster::*;
use common::redis_server::{TestRedis, Topology, free_port};
use common::*;
use serde_json::{Value, json};
use socket_bridge::proto;
use socket_bridge::proto::events_response::Kind as K;
use socket_bridge::proto::target::Kind as T;
use tokio::time::Instant;

/// After the expected deliveries, nothing more may arrive within this.
const QUIET: Duration = Duration::from_millis(500);

// ---- harness ------------------------------------------------------------------------------------

/// Waits until every given instance's `Status.nodes` lists exactly the given instances;
/// returns their instance ids, in the order given.
async fn wait_for_cluster(bridges: &[&Bridge]) -> Vec<String> {
    let mut ids = Vec::new();
    for bridge in bridges {
        ids.push(instance_id(bridge).await);
    }
    let want: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(want.len(), ids.len(), "every instance has its own instance_id: {ids:?}");
    for (i, bridge) in bridges.iter().enumerate() {
        let client = bridge.client().await;
        eventually(&format!("Status.nodes of instance {} = {want:?}", ids[i]), PROPAGATION, || {
            let (mut client, want) = (client.clone(), want.clone());
            async move {
                let s = client.status(proto::StatusRequest {}).await.map_err(|e| e.to_string())?.into_inner();
                let got: Vec<&str> = s.nodes.iter().map(|n| n.instance_id.as_str()).collect();
                let set: BTreeSet<String> = got.iter().map(|s| s.to_string()).collect();
                if set == want && got.len() == want.len() { Ok(()) } else { Err(format!("nodes {got:?}")) }
            }
        })
        .await;
    }
    ids
}

/// Every page of ListConnections (two per page, so paging crosses instances).
async fn all_connections(
    client: &Client,
    filter: Option<proto::list_connections_request::Filter>,
) -> Result<Vec<proto::Connection>, String> {
    let mut client = client.clone();
    let (mut out, mut token) = (Vec::new(), String::new());
    for _ in 0..100 {
        let page = client
            .list_connections(proto::ListConnectionsRequest {
                filter: filter.clone(),
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        out.extend(page.connections);
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        token = page.next_page_token;
    }
    Err(format!("more than 100 pages; so far {} connections", out.len()))
}

/// Socket ids of every page of ListConnections; an id listed twice is an error.
async fn listed_sockets(
    client: &Client,
    filter: Option<proto::list_connections_request::Filter>,
) -> Result<BTreeSet<String>, String> {
    let connections = all_connections(client, filter).await?;
    let ids: BTreeSet<String> = connections.iter().map(|c| c.socket_id.clone()).collect();
    if ids.len() != connections.len() {
        return Err(format!(
            "a socket is listed twice: {:?}",
            connections.iter().map(|c| &c.socket_id).collect::<Vec<_>>()
        ));
    }
    Ok(ids)
}

/// Every page of ListRooms, as name → members.
async fn all_rooms(client: &Client, include_internal: bool) -> Result<BTreeMap<String, u32>, String> {
    let mut client = client.clone();
    let (mut out, mut token) = (BTreeMap::new(), String::new());
    for _ in 0..100 {
        let page = client
            .list_rooms(proto::ListRoomsRequest {
                page_size: 2,
                page_token: token.clone(),
                include_internal,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        for room in page.rooms {
            if out.insert(room.name.clone(), room.members).is_some() {
                return Err(format!("room {} listed twice", room.name));
            }
        }
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        token = page.next_page_token;
    }
    Err(format!("more than 100 pages; so far {out:?}"))
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn target(kind: T) -> Option<proto::Target> {
    Some(proto::Target { kind: Some(kind) })
}

/// No further `event` reaches any of the driver sockets `ids` within `QUIET`.
async fn assert_no_more(d: &mut Driver, ids: &[&str], event: &str) {
    let extra = d
        .try_expect(|v| v["type"] == "event" && v["event"] == event && ids.iter().any(|id| v["id"] == *id), QUIET)
        .await;
    assert!(extra.is_none(), "`{event}` arrived more often than expected (or somewhere unexpected): {extra:?}");
}

/// `event` reaches exactly the driver sockets `ids`, once each, with `args`; none of
/// `others` gets it.
async fn delivered_exactly(d: &mut Driver, ids: &[&str], others: &[&str], event: &str, args: Value) {
    for id in ids {
        let got = d.event(id, event).await;
        assert_eq!(got["args"], args, "`{event}` on {id}: {got}");
    }
    let all: Vec<&str> = ids.iter().chain(others).copied().collect();
    assert_no_more(d, &all, event).await;
}

/// The value of the `socket_bridge_redis_up` gauge on `/metrics`.
async fn redis_up_gauge(bridge: &Bridge) -> Result<f64, String> {
    metric_sample(&bridge.metrics().await?, "socket_bridge_redis_up")
        .ok_or_else(|| "no socket_bridge_redis_up sample on /metrics".to_string())
}

/// Waits until every bridge's `/ready` answers 200 with `redis` = `state` and the gauge
/// `socket_bridge_redis_up` is `gauge`.
async fn wait_for_redis_state(bridges: &[&Bridge], state: &str, gauge: f64) {
    let want = json!({"ready": true, "draining": false, "redis": state});
    for (i, bridge) in bridges.iter().enumerate() {
        eventually(
            &format!("instance #{i}: GET /ready = 200 {want} and socket_bridge_redis_up {gauge}"),
            PROPAGATION,
            || {
                let want = want.clone();
                async move {
                    let (status, body) = bridge.readiness().await?;
                    let up = redis_up_gauge(bridge).await?;
                    if status == 200 && body == want && up == gauge {
                        Ok(())
                    } else {
                        Err(format!("/ready {status} {body}, socket_bridge_redis_up {up}"))
                    }
                }
            },
        )
        .await;
    }
}

// ---- backend helpers ----------------------------------------------------------------------------

/// The next ClientEvent within `limit` (lifecycle messages skipped); None when nothing came
/// or the stream ended.
async fn next_event_within(backend: &mut Backend, limit: Duration) -> Option<proto::ClientEvent> {
    let deadline = Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, backend.rx.message()).await {
            Ok(Ok(Some(proto::EventsResponse { kind: Some(K::ClientEvent(e)) }))) => return Some(e),
            Ok(Ok(Some(_))) => continue,
            _ => return None,
        }
    }
}

/// The label a test put in an event's arguments: `["p", 3]` is "p3".
fn label(e: &proto::ClientEvent) -> String {
    let args: Value = e.payload.as_ref().and_then(|p| serde_json::from_str(&p.args_json).ok()).unwrap_or(Value::Null);
    format!("{}{}", args[0].as_str().unwrap_or("?"), args[1])
}

/// Sends `Ack{event_id}` with no result (allowed for events that do not want an ack).
async fn confirm(backend: &Backend, event_id: &str) {
    let ack = proto::Ack { event_id: event_id.into(), result: None };
    backend.tx.send(proto::EventsRequest { kind: Some(proto::events_request::Kind::Ack(ack)) }).await.unwrap();
}

/// Reads events until every label of `owed` has arrived (or `limit` passed), then for
/// `QUIET` more; returns every arrival in order.
async fn collect_events(backend: &mut Backend, owed: &BTreeSet<String>, limit: Duration) -> Vec<proto::ClientEvent> {
    let deadline = Instant::now() + limit;
    let mut got: Vec<proto::ClientEvent> = Vec::new();
    while !owed.iter().all(|l| got.iter().any(|e| label(e) == *l)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_event_within(backend, left).await {
            Some(e) => got.push(e),
            None => break,
        }
    }
    while let Some(e) = next_event_within(backend, QUIET).await {
        got.push(e);
    }
    got
}

/// Checks a redelivery: every owed label arrived once, with the id it had when first
/// delivered (when it had been), and nothing of `not_again` came back.
fn check_redelivery(
    what: &str,
    got: &[proto::ClientEvent],
    owed: &BTreeSet<String>,
    not_again: &BTreeSet<String>,
    first_ids: &HashMap<String, String>,
) {
    let labels: Vec<String> = got.iter().map(label).collect();
    let missing: Vec<&String> = owed.iter().filter(|l| !labels.contains(l)).collect();
    assert!(missing.is_empty(), "{what}: never delivered again: {missing:?}; arrived: {labels:?}");
    let again: Vec<&String> = labels.iter().filter(|l| not_again.contains(*l)).collect();
    assert!(again.is_empty(), "{what}: already confirmed before the kill, yet delivered again: {again:?}");
    let mut seen = BTreeSet::new();
    let twice: Vec<&String> = labels.iter().filter(|l| !seen.insert(l.as_str())).collect();
    assert!(twice.is_empty(), "{what}: delivered more than once to the new stream: {twice:?}; arrived: {labels:?}");
    let strangers: Vec<&String> = labels.iter().filter(|l| !owed.contains(*l)).collect();
    assert!(strangers.is_empty(), "{what}: events nobody sent in this phase: {strangers:?}");
    for e in got {
        if let Some(first) = first_ids.get(&label(e)) {
            assert_eq!(&e.id, first, "{what}: {} came back with another ClientEvent.id", label(e));
        }
    }
}

// ---- pushes, rooms, listings, status ------------------------------------------------------------

async fn push_via_a_reaches_user_on_c_room_across_three_gets_exactly_once_listings_and_status_are_cluster_wide(
    topology: Topology,
) {
    let redis = TestRedis::start(topology).await;
    let nodes = start_instances(&redis.url(), &[&[], &[], &[]]).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let ids = wait_for_cluster(&[a, b, c]).await;
    let (mut ca, mut cb, mut cc) = (a.client().await, b.client().await, c.client().await);
    let mut d = Driver::spawn().await;
    let user = |u: &str| json!({ "userId": u });
    let alice_c = d.connect("alice@C", &c.url(), user("alice"), WS).await;
    let alice_b = d.connect("alice@B", &b.url(), user("alice"), WS).await;
    let bob_a = d.connect("bob@A", &a.url(), user("bob"), WS).await;
    let carol_b = d.connect("carol@B", &b.url(), user("carol"), WS).await;
    let dave_c = d.connect("dave@C", &c.url(), user("dave"), WS).await;
    let everybody = ["alice@C", "alice@B", "bob@A", "carol@B", "dave@C"];
    let but = |ids: &[&str]| everybody.iter().copied().filter(|s| !ids.contains(s)).collect::<Vec<_>>();

    // To a user, via A: alice's sockets on C and B, once each; the count is cluster-wide.
    let r =
        call("Push via A to alice", ca.push(push_request(T::UserId("alice".into()), "to_alice", r#"[{"n":1}]"#))).await;
    assert_eq!(r.sockets_reached, 2, "alice has a socket on B and one on C: {r:?}");
    delivered_exactly(&mut d, &["alice@C", "alice@B"], &but(&["alice@C", "alice@B"]), "to_alice", json!([{"n": 1}]))
        .await;

    // To one socket on another instance.
    let r =
        call("Push via A to carol's socket", ca.push(push_request(T::SocketId(carol_b.clone()), "to_carol", "[2]")))
            .await;
    assert_eq!(r.sockets_reached, 1, "carol's socket is on B: {r:?}");
    delivered_exactly(&mut d, &["carol@B"], &but(&["carol@B"]), "to_carol", json!([2])).await;

    // Room members on all three instances, each put there through another instance.
    for (client, who) in [(&mut cb, "bob"), (&mut cc, "carol"), (&mut ca, "dave")] {
        let req = proto::JoinRoomsRequest {
            target: target(T::UserId(who.into())),
            rooms: vec!["team".into()],
            ..Default::default()
        };
        call(&format!("JoinRooms team for {who}"), client.join_rooms(req)).await;
    }
    let team = set(&[&bob_a, &carol_b, &dave_c]);
    let by_room = |room: &str| Some(proto::list_connections_request::Filter::Room(room.into()));
    for (name, client) in [("A", &ca), ("B", &cb), ("C", &cc)] {
        eventually(&format!("ListConnections(room team) via {name} = bob, carol, dave"), PROPAGATION, || async {
            let got = listed_sockets(client, by_room("team")).await?;
            if got == team { Ok(()) } else { Err(format!("{got:?}")) }
        })
        .await;
    }
    call("Push via B to room team", cb.push(push_request(T::Room("team".into()), "to_team", r#"["t"]"#))).await;
    let members = ["bob@A", "carol@B", "dave@C"];
    delivered_exactly(&mut d, &members, &but(&members), "to_team", json!(["t"])).await;

    // Everyone except the room (members on three instances) and except alice's socket on C.
    let mut req = push_request(T::Everyone(true), "to_rest", "[3]");
    req.options = Some(proto::PushOptions {
        except_rooms: vec!["team".into()],
        except_socket_ids: vec![alice_c.clone()],
        ..Default::default()
    });
    call("Push via C to everyone except team and alice@C", cc.push(req)).await;
    delivered_exactly(&mut d, &["alice@B"], &but(&["alice@B"]), "to_rest", json!([3])).await;

    // PushBatch via B: a user and a socket elsewhere, exact counts.
    let batch = proto::PushBatchRequest {
        pushes: vec![
            push_request(T::UserId("alice".into()), "batch_user", "[4]"),
            push_request(T::SocketId(dave_c.clone()), "batch_socket", "[5]"),
        ],
    };
    let results = call("PushBatch via B", cb.push_batch(batch)).await.results;
    let reached: Vec<Option<u32>> = results
        .iter()
        .map(|r| match &r.outcome {
            Some(proto::push_batch_result::Outcome::Response(p)) => Some(p.sockets_reached),
            _ => None,
        })
        .collect();
    assert_eq!(reached, [Some(2), Some(1)], "PushBatch results: {results:?}");
    delivered_exactly(&mut d, &["alice@C", "alice@B"], &but(&["alice@C", "alice@B"]), "batch_user", json!([4])).await;
    delivered_exactly(&mut d, &["dave@C"], &but(&["dave@C"]), "batch_socket", json!([5])).await;

    // REST via C: to bob on A, and to the room.
    let (status, _, body) = c
        .rest(
            "POST",
            "/api/v1/push",
            Some(API_KEY),
            Some(&json!({"userId": "bob", "event": "rest_user", "payload": {"k": "v"}})),
        )
        .await;
    assert_eq!((status, &body["socketsReached"]), (200, &json!(1)), "REST push via C to bob on A: {body}");
    delivered_exactly(&mut d, &["bob@A"], &but(&["bob@A"]), "rest_user", json!([{"k": "v"}])).await;
    let (status, _, body) = c
        .rest(
            "POST",
            "/api/v1/push",
            Some(API_KEY),
            Some(&json!({"roomId": "team", "event": "rest_room", "payload": 6})),
        )
        .await;
    assert_eq!(status, 200, "REST push via C to room team: {body}");
    delivered_exactly(&mut d, &members, &but(&members), "rest_room", json!([6])).await;

    // Listings: the same on every instance, paged two at a time across instances.
    let all = set(&[&alice_c, &alice_b, &bob_a, &carol_b, &dave_c]);
    for (name, client) in [("A", &ca), ("B", &cb), ("C", &cc)] {
        let got = listed_sockets(client, None).await.unwrap_or_else(|e| panic!("ListConnections via {name}: {e}"));
        assert_eq!(got, all, "ListConnections via {name} lists every socket of the cluster once");
        let by_user = Some(proto::list_connections_request::Filter::UserId("alice".into()));
        let got =
            listed_sockets(client, by_user).await.unwrap_or_else(|e| panic!("ListConnections(alice) via {name}: {e}"));
        assert_eq!(got, set(&[&alice_c, &alice_b]), "ListConnections(user alice) via {name}");
        let rooms = all_rooms(client, true).await.unwrap_or_else(|e| panic!("ListRooms via {name}: {e}"));
        assert_eq!(rooms.get("team"), Some(&3), "ListRooms via {name}: team has bob, carol and dave: {rooms:?}");
        assert_eq!(rooms.get("user:alice"), Some(&2), "ListRooms via {name}: alice has two sockets: {rooms:?}");
        let public = all_rooms(client, false).await.unwrap_or_else(|e| panic!("ListRooms via {name}: {e}"));
        assert!(public.keys().all(|r| !r.starts_with("user:")), "internal rooms only on request: {public:?}");
    }
    let connections = all_connections(&ca, None).await.unwrap();
    let users: BTreeMap<&str, &str> = connections.iter().map(|c| (c.socket_id.as_str(), c.user_id.as_str())).collect();
    assert_eq!(users[bob_a.as_str()], "bob", "{connections:?}");
    assert_eq!(users[dave_c.as_str()], "dave", "{connections:?}");

    // Status: one node per instance, with its own connections, seen lately, on every instance.
    let want: BTreeMap<String, u64> = [(ids[0].clone(), 1), (ids[1].clone(), 2), (ids[2].clone(), 2)].into();
    let status_clients = [ca.clone(), cb.clone(), cc.clone()];
    let check_nodes = |want: BTreeMap<String, u64>| {
        let clients = status_clients.clone();
        async move {
            for mut client in clients {
                let s = client.status(proto::StatusRequest {}).await.map_err(|e| e.to_string())?.into_inner();
                let got: BTreeMap<String, u64> =
                    s.nodes.iter().map(|n| (n.instance_id.clone(), n.connections)).collect();
                if got != want || s.nodes.len() != want.len() {
                    return Err(format!("Status of {}: nodes {got:?}", s.instance_id));
                }
                let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
                for n in &s.nodes {
                    let seen = n.last_seen.as_ref().map(|t| t.seconds).unwrap_or(0);
                    if (now - seen).abs() > 60 {
                        return Err(format!(
                            "Status of {}: node {} last_seen {seen}, now {now}",
                            s.instance_id, n.instance_id
                        ));
                    }
                }
            }
            Ok(())
        }
    };
    eventually(&format!("Status.nodes on A, B and C = {want:?} (instance → connections)"), PROPAGATION, || {
        check_nodes(want.clone())
    })
    .await;

    // LeaveRooms via A for carol's socket on B: the room pushes skip her from then on.
    let req = proto::LeaveRoomsRequest {
        target: target(T::SocketId(carol_b.clone())),
        rooms: vec!["team".into()],
        ..Default::default()
    };
    call("LeaveRooms via A for carol@B", ca.leave_rooms(req)).await;
    let team = set(&[&bob_a, &dave_c]);
    for (name, client) in [("A", &ca), ("B", &cb), ("C", &cc)] {
        eventually(&format!("ListConnections(room team) via {name} = bob, dave"), PROPAGATION, || async {
            let got = listed_sockets(client, by_room("team")).await?;
            if got == team { Ok(()) } else { Err(format!("{got:?}")) }
        })
        .await;
    }
    call("Push via C to room team", cc.push(push_request(T::Room("team".into()), "to_team_2", "[7]"))).await;
    delivered_exactly(&mut d, &["bob@A", "dave@C"], &but(&["bob@A", "dave@C"]), "to_team_2", json!([7])).await;

    // DisconnectSockets via B for dave on C: he is told why, then disconnected.
    let req = proto::DisconnectSocketsRequest {
        target: target(T::UserId("dave".into())),
        reason: "maintenance".into(),
        ..Default::default()
    };
    call("DisconnectSockets via B for dave", cb.disconnect_sockets(req)).await;
    let told = d.event("dave@C", "bridge:disconnect").await;
    assert_eq!(told["args"][0]["reason"], "maintenance", "{told}");
    d.expect("dave@C disconnected", |v| v["type"] == "disconnect" && v["id"] == "dave@C").await;
    let all = set(&[&alice_c, &alice_b, &bob_a, &carol_b]);
    eventually("ListConnections via A without dave", PROPAGATION, || async {
        let got = listed_sockets(&ca, None).await?;
        if got == all { Ok(()) } else { Err(format!("{got:?}")) }
    })
    .await;
    let want: BTreeMap<String, u64> = [(ids[0].clone(), 1), (ids[1].clone(), 2), (ids[2].clone(), 1)].into();
    eventually(&format!("Status.nodes after dave left = {want:?}"), PROPAGATION, || check_nodes(want.clone())).await;
    let gone = d.try_expect(|v| v["type"] == "disconnect" && v["id"] != "dave@C", QUIET).await;
    assert!(gone.is_none(), "only dave was disconnected: {gone:?}");
    d.exit().await;
}

// ---- presence -----------------------------------------------------------------------------------

/// One backend group's view of the lifecycle, in arrival order.
struct Watcher {
    name: &'static str,
    backend: Backend,
    seen: Vec<String>,
}

impl Watcher {
    /// Reads until every label of `expect` has been seen (deadline `PROPAGATION`), then for
    /// `QUIET` more, so that duplicates show.
    async fn settle(&mut self, expect: &[String]) {
        let Watcher { name, backend, seen } = self;
        let more =
            read_lifecycle(backend, PROPAGATION, QUIET, |s| expect.iter().all(|l| seen.contains(l) || s.contains(l)))
                .await;
        seen.extend(more);
        let missing: Vec<&String> = expect.iter().filter(|l| !seen.contains(l)).collect();
        assert!(missing.is_empty(), "{name}: missing {missing:?}; seen so far: {seen:?}");
    }

    fn count(&self, label: &str) -> usize {
        self.seen.iter().filter(|l| *l == label).count()
    }

    fn assert_count(&self, label: &str, want: usize, when: &str) {
        assert_eq!(self.count(label), want, "{}: {label} {when}; seen: {:?}", self.name, self.seen);
    }
}

async fn presence_fires_once_per_user_even_when_last_two_leave_at_once(topology: Topology) {
    let redis = TestRedis::start(topology).await;
    let nodes = start_instances(&redis.url(), &[&[], &[], &[]]).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    wait_for_cluster(&[a, b, c]).await;
    // Two groups on two instances: each must see every transition exactly once.
    let mut watchers = [
        Watcher { name: "group p1 on A", backend: backend_on(a, subscribe_all("p1", true)).await, seen: vec![] },
        Watcher { name: "group p2 on C", backend: backend_on(c, subscribe_all("p2", true)).await, seen: vec![] },
    ];
    let mut d = Driver::spawn().await;
    let user = |u: &str| json!({ "userId": u });
    let conn = |sid: &str| format!("connected:{sid}");
    let disc = |sid: &str| format!("disconnected:{sid}");

    // pat's first socket, on B: online, then connected.
    let p1 = d.connect("pat@B", &b.url(), user("pat"), WS).await;
    for w in &mut watchers {
        w.settle(&["online:pat".into(), conn(&p1)]).await;
        let online = w.seen.iter().position(|l| l == "online:pat").unwrap();
        let connected = w.seen.iter().position(|l| *l == conn(&p1)).unwrap();
        assert!(online < connected, "{}: UserOnline comes before the first SocketConnected: {:?}", w.name, w.seen);
        w.assert_count("online:pat", 1, "after the first socket");
    }
    // Two more sockets on C and A: no new UserOnline.
    let p2 = d.connect("pat@C", &c.url(), user("pat"), WS).await;
    let p3 = d.connect("pat@A", &a.url(), user("pat"), WS).await;
    for w in &mut watchers {
        w.settle(&[conn(&p2), conn(&p3)]).await;
        w.assert_count("online:pat", 1, "with three sockets on three instances");
    }
    // The one on B leaves: two remain, no UserOffline.
    d.send(json!({"cmd": "disconnect", "id": "pat@B"})).await;
    for w in &mut watchers {
        w.settle(&[disc(&p1)]).await;
        w.assert_count("offline:pat", 0, "while sockets remain on A and C");
    }
    // The last two leave at once, on two instances: one UserOffline.
    d.send(json!({"cmd": "disconnect", "id": "pat@C"})).await;
    d.send(json!({"cmd": "disconnect", "id": "pat@A"})).await;
    for w in &mut watchers {
        w.settle(&[disc(&p2), disc(&p3), "offline:pat".into()]).await;
        w.assert_count("offline:pat", 1, "after the last two left at once");
        w.assert_count("online:pat", 1, "in total");
        for sid in [&p1, &p2, &p3] {
            w.assert_count(&conn(sid), 1, "in total");
            w.assert_count(&disc(sid), 1, "in total");
        }
    }

    // Four users, each with a socket on A and one on C, all arriving at once and all
    // leaving at once: one UserOnline and one UserOffline each.
    let users = ["r0", "r1", "r2", "r3"];
    let ids: Vec<(String, String, &str)> =
        users.iter().flat_map(|u| [(format!("{u}@A"), a.url(), *u), (format!("{u}@C"), c.url(), *u)]).collect();
    let plan: Vec<(&str, &str, &str)> = ids.iter().map(|(id, url, u)| (id.as_str(), url.as_str(), *u)).collect();
    let sids = d.connect_all(&plan).await;
    let mut expect: Vec<String> = users.iter().map(|u| format!("online:{u}")).collect();
    expect.extend(sids.values().map(|s| conn(s)));
    for w in &mut watchers {
        w.settle(&expect).await;
        for u in users {
            w.assert_count(&format!("online:{u}"), 1, "after its two sockets arrived at once on A and C");
        }
    }
    for (id, _, _) in &plan {
        d.send(json!({"cmd": "disconnect", "id": id})).await;
    }
    let mut expect: Vec<String> = users.iter().map(|u| format!("offline:{u}")).collect();
    expect.extend(sids.values().map(|s| disc(s)));
    for w in &mut watchers {
        w.settle(&expect).await;
        for u in users {
            w.assert_count(&format!("offline:{u}"), 1, "after its two sockets left at once from A and C");
            w.assert_count(&format!("online:{u}"), 1, "in total");
        }
        for sid in sids.values() {
            w.assert_count(&conn(sid), 1, "in total");
            w.assert_count(&disc(sid), 1, "in total");
        }
    }
    d.exit().await;
}

// ---- client events through Redis Streams, redelivery --------------------------------------------

async fn events_from_c_reach_backend_on_a_and_unacked_ones_are_redelivered_after_backend_restart(topology: Topology) {
    let redis = TestRedis::start(topology).await;
    // A takes over nothing within the test (claim after 60 s): what A delivers again can only
    // come from its own pending events, the "same instance, immediately" path. B and C take
    // over another instance's unacknowledged events after 2 s.
    let common = ["socketio.ack_timeout_ms=20000", "socketio.events_per_second=1000", "socketio.event_burst=1000"];
    let a_args = [&common[..], &["redis.claim_idle_ms=60000"]].concat();
    let bc_args = [&common[..], &["redis.claim_idle_ms=2000"]].concat();
    let nodes = start_instances(&redis.url(), &[&a_args[..], &bc_args[..], &bc_args[..]]).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    wait_for_cluster(&[a, b, c]).await;
    let mut d = Driver::spawn().await;
    let plain =
        |id: &str, event: &str, tag: &str, i: u64| json!({"cmd": "emit", "id": id, "event": event, "args": [tag, i]});
    let asking = |id: &str, event: &str, tag: &str, i: u64, req: u64| json!({"cmd": "emit", "id": id, "event": event, "args": [tag, i], "req": req, "ack": true});

    // ---- Part 1: confirm_all, plain events from carl on C, backend on A, which comes back on A.
    let carl = d.connect("carl", &c.url(), json!({"userId": "carl"}), WS).await;
    let mut first = backend_on(a, subscription("all", &["a.*"], true)).await;
    for i in 0..10 {
        d.send(plain("carl", "a.plain", "p", i)).await;
    }
    d.send(asking("carl", "a.ask", "w", 0, 100)).await;
    let mut first_ids: HashMap<String, String> = HashMap::new();
    let expected: Vec<String> = (0..10).map(|i| format!("p{i}")).chain(["w0".to_string()]).collect();
    for want in &expected {
        let e = next_event_within(&mut first, WAIT).await.unwrap_or_else(|| {
            panic!("backend on A: expected {want} from carl on C; got nothing more after {:?}", first_ids.keys())
        });
        assert_eq!(&label(&e), want, "events of one socket arrive in the order it sent them: {e:?}");
        let event = if want.starts_with('w') { "a.ask" } else { "a.plain" };
        assert_eq!((e.socket_id.as_str(), e.user_id.as_str(), e.event.as_str()), (carl.as_str(), "carl", event));
        assert_eq!(e.wants_ack, want.starts_with('w'), "{e:?}");
        first_ids.insert(label(&e), e.id.clone());
    }
    for i in 0..5 {
        confirm(&first, &first_ids[&format!("p{i}")]).await;
    }
    // Answering w0 last makes its arrival at carl's callback the sign that A has taken in
    // the confirmations before it.
    first.ack(&first_ids["w0"], r#"["ok-w0"]"#, vec![]).await;
    let answer = d.ack("carl", 100).await;
    assert_eq!(answer["args"], json!(["ok-w0"]), "the Ack sent to A reaches carl's callback on C");
    // Ten more; the backend reads five of them, confirms none, and dies with the rest in flight.
    for i in 10..20 {
        d.send(plain("carl", "a.plain", "p", i)).await;
    }
    for i in 10..15 {
        let e = next_event_within(&mut first, WAIT).await.unwrap_or_else(|| panic!("backend on A: expected p{i}"));
        assert_eq!(label(&e), format!("p{i}"), "in order: {e:?}");
        first_ids.insert(label(&e), e.id.clone());
    }
    drop(first);
    let confirmed: BTreeSet<String> = (0..5).map(|i| format!("p{i}")).chain(["w0".to_string()]).collect();
    let owed: BTreeSet<String> = (5..20).map(|i| format!("p{i}")).collect();
    let mut second = backend_on(a, subscription("all", &["a.*"], true)).await;
    let got = collect_events(&mut second, &owed, Duration::from_secs(15)).await;
    check_redelivery("confirm_all, backend back on the same instance A", &got, &owed, &confirmed, &first_ids);
    // Confirm everything, then once more kill and come back: nothing is owed any more.
    for e in &got {
        confirm(&second, &e.id).await;
    }
    d.send(asking("carl", "a.ask", "w", 1, 101)).await;
    let e = next_event_within(&mut second, WAIT).await.expect("w1 reaches the backend on A");
    assert_eq!(label(&e), "w1");
    second.ack(&e.id, r#"["ok-w1"]"#, vec![]).await;
    assert_eq!(d.ack("carl", 101).await["args"], json!(["ok-w1"]));
    drop(second);
    let mut third = backend_on(a, subscription("all", &["a.*"], true)).await;
    let extra = next_event_within(&mut third, Duration::from_millis(1500)).await;
    assert!(extra.is_none(), "every event was confirmed, yet one came back: {extra:?}");
    drop(third);

    // ---- Part 2: wants_ack events (confirm_all = false) from dora on A, backend on B, back on C.
    d.connect("dora", &a.url(), json!({"userId": "dora"}), WS).await;
    let mut fourth = backend_on(b, subscription("acks", &["b.*"], false)).await;
    for i in 0..5 {
        d.send(asking("dora", "b.ask", "a", i, i)).await;
    }
    for i in 0..5 {
        d.send(plain("dora", "b.plain", "q", i)).await;
    }
    for i in 5..10 {
        d.send(asking("dora", "b.ask", "a", i, i)).await;
    }
    let mut first_ids: HashMap<String, String> = HashMap::new();
    let expected: Vec<String> = (0..5)
        .map(|i| format!("a{i}"))
        .chain((0..5).map(|i| format!("q{i}")))
        .chain((5..10).map(|i| format!("a{i}")))
        .collect();
    for want in &expected {
        let e = next_event_within(&mut fourth, WAIT).await.unwrap_or_else(|| {
            panic!("backend on B: expected {want} from dora on A; got nothing more after {:?}", first_ids.keys())
        });
        assert_eq!(&label(&e), want, "events of one socket arrive in the order it sent them: {e:?}");
        assert_eq!(e.wants_ack, want.starts_with('a'), "{e:?}");
        first_ids.insert(label(&e), e.id.clone());
    }
    for i in 0..5 {
        fourth.ack(&first_ids[&format!("a{i}")], &format!(r#"["ok-a{i}"]"#), vec![]).await;
    }
    for i in 0..5 {
        let answer = d.ack("dora", i).await;
        assert_eq!(answer["args"], json!([format!("ok-a{i}")]), "the Ack sent to B reaches dora's callback on A");
    }
    for i in 10..15 {
        d.send(asking("dora", "b.ask", "a", i, i)).await;
    }
    for i in 10..13 {
        let e = next_event_within(&mut fourth, WAIT).await.unwrap_or_else(|| panic!("backend on B: expected a{i}"));
        assert_eq!(label(&e), format!("a{i}"), "in order: {e:?}");
        first_ids.insert(label(&e), e.id.clone());
    }
    drop(fourth);
    // Acked ones and plain ones (delivered once written to the stream) are done.
    let done: BTreeSet<String> = (0..5).flat_map(|i| [format!("a{i}"), format!("q{i}")]).collect();
    let owed: BTreeSet<String> = (5..15).map(|i| format!("a{i}")).collect();
    let mut fifth = backend_on(c, subscription("acks", &["b.*"], false)).await;
    let got = collect_events(&mut fifth, &owed, PROPAGATION).await;
    check_redelivery("wants_ack, backend back on another instance C", &got, &owed, &done, &first_ids);
    for e in &got {
        fifth.ack(&e.id, &format!(r#"["late-{}"]"#, label(e)), vec![]).await;
    }
    // Every callback of dora's gets one answer: the late one, or an error object if the
    // bridge gave up on it meanwhile.
    for i in 5..15u64 {
        let answer = d
            .try_expect(|v| v["type"] == "ack" && v["id"] == "dora" && v["req"] == i, PROPAGATION)
            .await
            .unwrap_or_else(|| panic!("dora's callback for a{i} never answered"));
        let late = answer["args"] == json!([format!("late-a{i}")]);
        let error = answer["args"][0]["error"]["code"].is_string();
        assert!(late || error, "dora's callback for a{i}: {answer}");
    }
    d.exit().await;
}

/// Pushes stored for an offline user and dropped at expiry, unread.
const OFFLINE_EXPIRED: &str = "socket_bridge_dropped_messages_total{reason=\"offline_expired\"}";

// ---- offline delivery ---------------------------------------------------------------------------

async fn offline_pushes_arrive_in_order_on_another_instance_and_expired_ones_do_not(topology: Topology) {
    let redis = TestRedis::start(topology).await;
    let extra: &[&str] = &["redis.node_timeout_ms=3000"];
    let mut nodes = start_instances(&redis.url(), &[extra, extra, extra]).await;
    wait_for_cluster(&[&nodes[0], &nodes[1], &nodes[2]]).await;
    let mut clients = Vec::new();
    for node in &nodes {
        clients.push(node.client().await);
    }
    // olga has no socket anywhere. Pushes through all three instances, one expiring soon.
    let plan: [(usize, &str, &str, i32); 6] = [
        (0, "note", "[1]", 600_000),
        (1, "note", "[2]", 600_000),
        (1, "short", r#"["gone"]"#, 1_000),
        (0, "note", "[3]", 600_000),
        (2, "note", "[4]", 600_000),
        (0, "note", "[5]", 600_000),
    ];
    let mut short_stored_at = Instant::now();
    for (via, event, args, ms) in plan {
        let mut req = push_request(T::UserId("olga".into()), event, args);
        req.options = ttl_options(ms);
        if event == "short" {
            short_stored_at = Instant::now();
        }
        let r = call(&format!("Push {event} {args} via instance #{via}"), clients[via].push(req)).await;
        assert!(r.stored_offline && r.sockets_reached == 0, "olga is offline everywhere: {event} {args}: {r:?}");
    }
    // A took most of them: without A they must still be there (kept in Redis, not in A).
    drop(clients.remove(0));
    drop(nodes.remove(0));
    let (b, c) = (&nodes[0], &nodes[1]);
    wait_for_cluster(&[b, c]).await;
    // Let the short one expire (this waits for the TTL; it asserts nothing by itself).
    tokio::time::sleep_until(short_stored_at + Duration::from_millis(2500)).await;

    let mut d = Driver::spawn().await;
    d.connect("olga@C", &c.url(), json!({"userId": "olga"}), WS).await;
    let mut order = Vec::new();
    for _ in 0..5 {
        order.push(d.event("olga@C", "note").await["args"].clone());
    }
    assert_eq!(
        order,
        [json!([1]), json!([2]), json!([3]), json!([4]), json!([5])],
        "stored pushes arrive in push order"
    );
    assert_no_more(&mut d, &["olga@C"], "note").await;
    assert!(d.no_event("olga@C", "short", Duration::from_millis(10)).await, "the expired push is not delivered");
    // ...and it is counted where it was dropped.
    let metrics = c.metrics().await.expect("GET /metrics on C");
    let expired = metric_sample(&metrics, OFFLINE_EXPIRED);
    assert_eq!(expired, Some(1.0), "the expired push is counted once on C");

    // Online now (on C): a push with ttl via B reaches her at once and is not stored.
    let mut req = push_request(T::UserId("olga".into()), "live", "[6]");
    req.options = ttl_options(600_000);
    let r = call("Push live via B", clients[0].push(req)).await;
    assert!(!r.stored_offline && r.sockets_reached == 1, "olga is online on C: {r:?}");
    assert_eq!(d.event("olga@C", "live").await["args"], json!([6]));

    // Delivered once: her next connect, elsewhere, gets nothing stored.
    d.send(json!({"cmd": "disconnect", "id": "olga@C"})).await;
    d.expect("olga@C disconnected", |v| v["type"] == "disconnect" && v["id"] == "olga@C").await;
    d.connect("olga@B", &b.url(), json!({"userId": "olga"}), WS).await;
    let again = d
        .try_expect(
            |v| {
                v["type"] == "event"
                    && v["id"] == "olga@B"
                    && ["note", "short", "live"].contains(&v["event"].as_str().unwrap_or(""))
            },
            QUIET,
        )
        .await;
    assert!(again.is_none(), "stored pushes are delivered once: {again:?}");

    // A push for a user who never comes back is dropped at expiry and counted once, by
    // whichever instance sweeps it.
    let expired_total = || async {
        let mut total = 0.0;
        for node in [b, c] {
            total += node.metric(OFFLINE_EXPIRED).await;
        }
        total
    };
    let before = expired_total().await;
    let mut req = push_request(T::UserId("zed".into()), "note", "[0]");
    req.options = ttl_options(500);
    assert!(call("Push to zed via B", clients[0].push(req)).await.stored_offline);
    eventually("the unread expired push is counted", Duration::from_secs(15), || async {
        let now = expired_total().await;
        (now == before + 1.0).then_some(()).ok_or(format!("expired count {before} -> {now}"))
    })
    .await;
    d.exit().await;
}

// ---- Redis loss and recovery --------------------------------------------------------------------

async fn redis_restart_local_pushes_keep_working_readiness_shows_loss_and_cross_delivery_resumes(topology: Topology) {
    // Without redis.url, readiness says Redis is not used.
    {
        let solo = Bridge::start(&[]).await;
        let (status, body) = solo.readiness().await.expect("GET /ready");
        assert_eq!((status, body), (200, json!({"ready": true, "draining": false, "redis": "disabled"})));
    }
    let mut redis = TestRedis::start(topology).await;
    let nodes = start_instances(&redis.url(), &[&[], &[], &[]]).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let all = [a, b, c];
    wait_for_cluster(&all).await;
    wait_for_redis_state(&all, "up", 1.0).await;
    let (mut ca, mut cb, cc) = (a.client().await, b.client().await, c.client().await);
    let mut backend = backend_on(a, subscription("g5", &["e.*"], false)).await;
    let mut d = Driver::spawn().await;
    let una = d.connect("una@A", &a.url(), json!({"userId": "una"}), WS).await;
    let ben = d.connect("ben@B", &b.url(), json!({"userId": "ben"}), WS).await;
    d.connect("cyd@C", &c.url(), json!({"userId": "cyd"}), WS).await;

    // Before: across instances both ways.
    let r = call("Push via A to ben on B", ca.push(push_request(T::UserId("ben".into()), "before", "[0]"))).await;
    assert_eq!(r.sockets_reached, 1, "{r:?}");
    d.event("ben@B", "before").await;
    d.send(json!({"cmd": "emit", "id": "cyd@C", "event": "e.before", "args": ["x", 0]})).await;
    let e = next_event_within(&mut backend, WAIT).await.expect("cyd's event from C reaches the backend on A");
    assert_eq!(e.event, "e.before");

    // Redis dies.
    redis.stop().await;
    wait_for_redis_state(&all, "down", 0.0).await;
    // Pushes to sockets on the instance that takes them keep working, and never hang.
    for (client, name, who, sid) in [(&mut ca, "A", "una", &una), (&mut cb, "B", "ben", &ben)] {
        let id = format!("{who}@{name}");
        call(
            &format!("Push via {name} to {who} (local) while Redis is down"),
            client.push(push_request(T::UserId(who.into()), "during_user", "[1]")),
        )
        .await;
        assert_eq!(d.event(&id, "during_user").await["args"], json!([1]));
        call(
            &format!("Push via {name} to {who}'s socket while Redis is down"),
            client.push(push_request(T::SocketId(sid.clone()), "during_socket", "[2]")),
        )
        .await;
        assert_eq!(d.event(&id, "during_socket").await["args"], json!([2]));
    }

    // Redis comes back, empty, on the same port.
    redis.restart().await;
    let back_at = Instant::now();
    wait_for_redis_state(&all, "up", 1.0).await;
    wait_for_cluster(&all).await;
    // Pushes cross instances again: via A to ben on B, retried until one arrives.
    let deadline = Instant::now() + PROPAGATION;
    for n in 0.. {
        let req = push_request(T::UserId("ben".into()), "after", &format!("[{n}]"));
        let _ = tokio::time::timeout(Duration::from_secs(5), ca.push(req)).await;
        let arrived = d
            .try_expect(|v| v["type"] == "event" && v["id"] == "ben@B" && v["event"] == "after", Duration::from_secs(1))
            .await;
        if arrived.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "a push via A to ben on B never arrived after Redis came back");
    }
    eprintln!("cross-instance push delivered {:?} after Redis answered again", back_at.elapsed());
    // ... with exact counts again.
    eventually("Push via C to ben on B reports sockets_reached 1", PROPAGATION, || {
        let mut cc = cc.clone();
        async move {
            let r = cc
                .push(push_request(T::UserId("ben".into()), "exact", "[3]"))
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            if r.sockets_reached == 1 { Ok(()) } else { Err(format!("{r:?}")) }
        }
    })
    .await;
    d.event("ben@B", "exact").await;
    // Client events from C reach the backend on A again (its stream stayed open).
    let deadline = Instant::now() + PROPAGATION;
    for n in 0.. {
        d.send(json!({"cmd": "emit", "id": "cyd@C", "event": "e.after", "args": ["x", n]})).await;
        if let Some(e) = next_event_within(&mut backend, Duration::from_secs(1)).await
            && e.event == "e.after"
        {
            break;
        }
        assert!(Instant::now() < deadline, "no client event from C reached the backend on A after Redis came back");
    }
    eprintln!("cross-instance client events delivered {:?} after Redis answered again", back_at.elapsed());
    d.exit().await;
}

// ---- nginx in front of two instances ------------------------------------------------------------

const NGINX_EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/nginx/socket-bridge.conf");

/// The example with the test's addresses: the `upstream socket_bridge` server lines replaced
/// by `upstreams` and the `listen` line by a loopback port. Checks the example still has
/// what this replaces, and that it is sticky.
fn render_example(example: &str, upstreams: &[SocketAddr], port: u16) -> String {
    let (mut out, mut in_upstream, mut servers, mut listens, mut sticky) = (String::new(), false, 0, 0, false);
    for line in example.lines() {
        let t = line.trim();
        if t.starts_with("upstream socket_bridge") {
            in_upstream = true;
        } else if in_upstream && t == "}" {
            in_upstream = false;
            for u in upstreams {
                out.push_str(&format!("    server {u};\n"));
            }
        } else if in_upstream && t.starts_with("server ") {
            servers += 1;
            continue;
        } else if in_upstream && t == "ip_hash;" {
            sticky = true;
        } else if !in_upstream && t.starts_with("listen ") {
            listens += 1;
            out.push_str(&format!("    listen 127.0.0.1:{port};\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    assert!(sticky, "{NGINX_EXAMPLE}: `upstream socket_bridge` must use ip_hash (long-polling needs sticky sessions)");
    assert!(servers >= 1, "{NGINX_EXAMPLE}: no `server` line in `upstream socket_bridge`");
    assert_eq!(listens, 1, "{NGINX_EXAMPLE}: expected one `listen` line");
    out
}

/// Debian's nginx running the example in the foreground, everything under a temp folder.
struct Nginx {
    child: tokio::process::Child,
    dir: PathBuf,
    port: u16,
}

impl Nginx {
    async fn start(upstreams: &[SocketAddr]) -> Nginx {
        let example = std::fs::read_to_string(NGINX_EXAMPLE).expect("read the nginx example");
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("socket-bridge-nginx-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("nginx temp folder");
        let site = dir.join("socket-bridge.conf");
        std::fs::write(&site, render_example(&example, upstreams, port)).unwrap();
        let p = dir.display();
        let main = format!(
            "worker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log {p}/access.log;\n  client_body_temp_path {p}/client_body;\n  proxy_temp_path {p}/proxy;\n  \
             fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n  include {};\n}}\n",
            site.display()
        );
        std::fs::write(dir.join("nginx.conf"), main).unwrap();
        let binary = if Path::new("/usr/sbin/nginx").exists() { "/usr/sbin/nginx" } else { "nginx" };
        let mut cmd = tokio::process::Command::new(binary);
        cmd.arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, so dropping it also ends the worker process.
            .process_group(0);
        let child = cmd.spawn().expect("spawn nginx (install Debian's nginx)");
        let mut nginx = Nginx { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(15);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                panic!("nginx exited with {status}:\n{}", nginx.error_log());
            }
            assert!(Instant::now() < deadline, "nginx did not listen on {port} within 15 s:\n{}", nginx.error_log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        nginx
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: signalling the process group this test created.
            unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
        }
        if std::thread::panicking() {
            eprintln!("nginx error log:\n{}", self.error_log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn long_polling_through_nginx_with_two_instances(topology: Topology) {
    let redis = TestRedis::start(topology).await;
    let nodes = start_instances(&redis.url(), &[&[], &[]]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let ids = wait_for_cluster(&[a, b]).await;
    let nginx = Nginx::start(&[a.http, b.http]).await;
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let mut backend = backend_on(b, subscription("app", &[], false)).await;
    let mut d = Driver::spawn().await;
    let polling = Some(&["polling"][..]);
    // Two long-polling clients, one websocket-only and one that starts on polling and upgrades.
    let clients = [("polly", polling), ("quinn", polling), ("wes", WS), ("dee", Some(&["polling", "websocket"][..]))];
    for (user, transports) in clients {
        d.connect(user, &nginx.url(), json!({"userId": user}), transports).await;
    }

    // Pushes through either instance reach every client, round after round, spread over
    // several heartbeats so that each polling session makes many requests through nginx.
    for round in 0..6u32 {
        let (client, via) = if round % 2 == 0 { (&mut ca, "A") } else { (&mut cb, "B") };
        for (user, _) in clients {
            let req = push_request(T::UserId(user.into()), "tick", &format!("[{round}]"));
            let r = call(&format!("round {round}: Push via {via} to {user}"), client.push(req)).await;
            assert_eq!(r.sockets_reached, 1, "round {round}: Push via {via} to {user}: {r:?}");
            let got = d.event(user, "tick").await;
            assert_eq!(got["args"], json!([round]), "round {round}: {user} through nginx: {got}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let users: Vec<&str> = clients.iter().map(|(u, _)| *u).collect();
    assert_no_more(&mut d, &users, "tick").await;

    // A polling client's event, with its ack, through nginx to the backend and back.
    d.send(json!({"cmd": "emit", "id": "polly", "event": "hello", "req": 1, "ack": true, "args": ["hi"]})).await;
    let e = next_event_within(&mut backend, WAIT).await.expect("polly's event reaches the backend on B");
    assert_eq!((e.event.as_str(), e.user_id.as_str()), ("hello", "polly"));
    backend.ack(&e.id, r#"["hello, polly"]"#, vec![]).await;
    assert_eq!(d.ack("polly", 1).await["args"], json!(["hello, polly"]));

    // ip_hash: every client of one address is on the same instance, and the listing (on
    // either instance) shows the polling sessions as such.
    let conns = all_connections(&ca, None).await.expect("ListConnections via A");
    assert_eq!(conns.len(), 4, "{conns:?}");
    let polly = conns.iter().find(|c| c.user_id == "polly").expect("polly listed");
    assert_eq!(polly.handshake.as_ref().map(|h| h.transport.as_str()), Some("polling"), "{polly:?}");
    eventually("Status.nodes: all four clients on one instance (ip_hash), none on the other", PROPAGATION, || {
        let (mut ca, ids) = (ca.clone(), ids.clone());
        async move {
            let s = ca.status(proto::StatusRequest {}).await.map_err(|e| e.to_string())?.into_inner();
            let mut counts: Vec<u64> = s.nodes.iter().map(|n| n.connections).collect();
            counts.sort();
            if counts == [0, 4] && s.nodes.iter().all(|n| ids.contains(&n.instance_id)) {
                Ok(())
            } else {
                Err(format!("{:?}", s.nodes))
            }
        }
    })
    .await;
    let dropped = d.try_expect(|v| v["type"] == "disconnect" || v["type"] == "connect_error", QUIET).await;
    assert!(dropped.is_none(), "no client lost its session behind nginx: {dropped:?}");
    d.exit().await;
}

crate::on_each_topology!(
    push_via_a_reaches_user_on_c_room_across_three_gets_exactly_once_listings_and_status_are_cluster_wide,
    presence_fires_once_per_user_even_when_last_two_leave_at_once,
    events_from_c_reach_backend_on_a_and_unacked_ones_are_redelivered_after_backend_restart,
    offline_pushes_arrive_in_order_on_another_instance_and_expired_ones_do_not,
    redis_restart_local_pushes_keep_working_readiness_shows_loss_and_cross_delivery_resumes,
    long_polling_through_nginx_with_two_instances,
);
