//! The backplane contract: the same cases run against the embedded backplane (one
//! instance, in memory) and against the Redis backplane (two instances on a real
//! `redis-server`, and two on a real Redis Cluster of three masters with a replica each).
//! Each case names its instances `nodes[i % n]`, so with one instance every role falls on
//! it and with two the roles are split; the assertions are the same.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis_server::{TestRedis, Topology};
use socket_bridge::config::Config;
use socket_bridge::hub::backplane::{Backplane, NodeReply, NodeRequest, OfflineMessage, OfflineOutcome, Remote, Wait};
use socket_bridge::hub::registry::{Connection, Handshake};
use socket_bridge::hub::router::{AckReply, AckWaiter, BackendMessage, ClientEvent, Queued, SubscribeRequest};
use socket_bridge::hub::{Hub, HubSettings, Payload, Target};
use socket_bridge::shutdown::{self, ShutdownTrigger};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

/// Instances sharing one backplane kind, with what keeps them running.
struct Nodes {
    hubs: Vec<Arc<Hub>>,
    _stop: Vec<ShutdownTrigger>,
    _redis: Option<TestRedis>,
}

impl Nodes {
    fn node(&self, i: usize) -> &Arc<Hub> {
        &self.hubs[i % self.hubs.len()]
    }

    fn backplane(&self, i: usize) -> &Arc<dyn Backplane> {
        self.node(i).backplane()
    }
}

fn config(extra: &[&str]) -> Config {
    let mut text = String::from("[offline]\nmax_messages_per_user = 3\n");
    for line in extra {
        text.push_str(line);
        text.push('\n');
    }
    Config::from_toml(&text).expect("test config")
}

fn hub_on(config: &Config, backplane: Arc<dyn Backplane>) -> (Arc<Hub>, ShutdownTrigger) {
    let authenticator = socket_bridge::hub::auth::Authenticator::from_config(&config.auth).expect("dev auth");
    let (_layer, io) = socket_bridge::socketio::build(config);
    let hub = Hub::new(HubSettings::from_config(config), authenticator, backplane, io.clone());
    socket_bridge::socketio::register_namespaces(&io, &hub, &config.socketio.namespaces, config.summary_interval());
    let (trigger, shutdown) = shutdown::channel();
    hub.start_tasks(shutdown);
    (hub, trigger)
}

async fn embedded() -> Nodes {
    let config = config(&[]);
    let backplane =
        Arc::new(socket_bridge::hub::embedded::EmbeddedBackplane::new(socket_bridge::hub::offline::OfflineLimits {
            max_messages_per_user: config.offline.max_messages_per_user,
            max_bytes_per_user: config.offline.max_bytes_per_user,
            max_bytes: config.offline.max_bytes,
        }));
    let (hub, stop) = hub_on(&config, backplane);
    Nodes { hubs: vec![hub], _stop: vec![stop], _redis: None }
}

async fn redis(instances: usize, topology: Topology) -> Nodes {
    let server = TestRedis::start(topology).await;
    let config = config(&["[redis]", &format!("url = \"{}\"", server.url()), "claim_idle_ms = 1000"]);
    let mut hubs = Vec::new();
    let mut stops = Vec::new();
    for _ in 0..instances {
        let settings = socket_bridge::cluster::ClusterSettings::from_config(&config);
        let backplane = socket_bridge::cluster::RedisBackplane::new(&server.url(), settings).expect("redis url");
        let (hub, stop) = hub_on(&config, backplane);
        hubs.push(hub);
        stops.push(stop);
    }
    let nodes = Nodes { hubs, _stop: stops, _redis: Some(server) };
    // Every instance sees every other one before a case starts.
    for hub in &nodes.hubs {
        eventually("every instance listed", || async {
            let listed = hub.backplane().nodes().await.map(|n| n.len()).unwrap_or(0);
            (listed == instances).then_some(())
        })
        .await;
    }
    nodes
}

async fn eventually<T, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = attempt().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn conn(socket_id: &str, user: Option<&str>) -> Arc<Connection> {
    Arc::new(Connection::new(socket_id.into(), "/".into(), user.map(Into::into), Handshake::default(), 100.0, 100))
}

/// Registers a socket on `hub` as the Socket.IO door does, and announces it.
async fn connect(hub: &Hub, conn: &Arc<Connection>) {
    let local = hub.registry().register(conn.clone());
    hub.backplane().socket_connected(conn.clone(), Vec::new(), local).await;
}

fn disconnect(hub: &Hub, conn: &Connection) {
    if let Some((conn, local)) = hub.registry().unregister(&conn.namespace, &conn.socket_id) {
        hub.backplane().socket_disconnected(conn, "transport close", local);
    }
}

async fn subscribe(hub: &Hub, group: &str, lifecycle: bool) -> mpsc::Receiver<Queued> {
    let request = SubscribeRequest {
        group: group.into(),
        wants_lifecycle: lifecycle,
        event_patterns: if lifecycle { vec!["none.*".into()] } else { Vec::new() },
        ..Default::default()
    };
    let (_, _, rx) = hub.subscribe_backend(request).await.expect("subscribe");
    rx
}

/// Lifecycle and event labels a stream receives until `until` has arrived (or times out).
async fn read_until(rx: &mut mpsc::Receiver<Queued>, until: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !seen.iter().any(|s| s == until) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(q)) => seen.extend(label(&q.message)),
            _ => panic!("stream ended or timed out before {until}; saw {seen:?}"),
        }
    }
    seen
}

fn label(m: &BackendMessage) -> Option<String> {
    Some(match m {
        BackendMessage::UserOnline(u) => format!("online:{u}"),
        BackendMessage::UserOffline(u) => format!("offline:{u}"),
        BackendMessage::SocketConnected(c) => format!("connected:{}", c.socket_id),
        BackendMessage::SocketDisconnected(d) => format!("disconnected:{}", d.socket_id),
        BackendMessage::ClientEvent(e) => format!("event:{}", e.event),
        BackendMessage::Subscribed { .. } => return None,
    })
}

fn offline_message(event: &str, ttl: Duration) -> OfflineMessage {
    let now = socket_bridge::hub::wall_ms(std::time::SystemTime::now());
    OfflineMessage {
        namespace: "/".into(),
        event: event.into(),
        payload: Payload::default(),
        expires_at_ms: now + ttl.as_millis() as u64,
    }
}

// ---- the cases -------------------------------------------------------------------------

/// UserOnline once when a user's first socket arrives anywhere, UserOffline once when the
/// last leaves; each socket's connect and disconnect reported once.
async fn presence_changes_are_reported_once_per_transition(nodes: Nodes) {
    let mut backend = subscribe(nodes.node(0), "life", true).await;
    let (s1, s2) = (conn("AAAAAAAAAAAAAAA1", Some("ann")), conn("AAAAAAAAAAAAAAA2", Some("ann")));
    connect(nodes.node(0), &s1).await;
    connect(nodes.node(1), &s2).await;
    // Each instance writes its news once the socket is recorded: the second's may come
    // first.
    let mut seen = read_until(&mut backend, "connected:AAAAAAAAAAAAAAA1").await;
    if !seen.iter().any(|s| s == "connected:AAAAAAAAAAAAAAA2") {
        seen.extend(read_until(&mut backend, "connected:AAAAAAAAAAAAAAA2").await);
    }
    disconnect(nodes.node(0), &s1);
    disconnect(nodes.node(1), &s2);
    // Two instances write their news independently: one's SocketDisconnected may follow
    // the other's UserOffline, so read until all three are in.
    for last in ["offline:ann", "disconnected:AAAAAAAAAAAAAAA1", "disconnected:AAAAAAAAAAAAAAA2"] {
        if !seen.iter().any(|s| s == last) {
            seen.extend(read_until(&mut backend, last).await);
        }
    }
    let count = |l: &str| seen.iter().filter(|s| *s == l).count();
    assert_eq!((count("online:ann"), count("offline:ann")), (1, 1), "presence: {seen:?}");
    // The instance whose socket brought the user online reports that before the socket;
    // another instance's news about its own socket may come in between.
    let at = |l: &str| seen.iter().position(|s| s == l);
    assert!(at("online:ann") < at("connected:AAAAAAAAAAAAAAA1"), "online before its socket: {seen:?}");
    for s in ["AAAAAAAAAAAAAAA1", "AAAAAAAAAAAAAAA2"] {
        assert_eq!((count(&format!("connected:{s}")), count(&format!("disconnected:{s}"))), (1, 1), "{seen:?}");
    }
}

/// `locate` names the other instances holding a user's or a socket's sockets, and counts
/// them; what is here plus what is elsewhere is everything.
async fn locate_names_the_instances_that_hold_targets(nodes: Nodes) {
    let (s1, s2) = (conn("BBBBBBBBBBBBBBB1", Some("bob")), conn("BBBBBBBBBBBBBBB2", Some("bob")));
    connect(nodes.node(0), &s1).await;
    connect(nodes.node(1), &s2).await;
    for i in 0..nodes.hubs.len() {
        let hub = nodes.node(i);
        let located = hub.backplane().locate("/", &Target::User("bob".into())).await.expect("locate user");
        let here = hub.registry().all().iter().filter(|c| c.user_id.as_deref() == Some("bob")).count() as u32;
        assert_eq!(here + located.remote_sockets.unwrap_or(0), 2, "instance {i}: {located:?}");
        let elsewhere = match &located.remote {
            Remote::None => 0,
            Remote::Nodes(n) => {
                assert!(!n.iter().any(|id| id == hub.instance_id()), "never names itself: {n:?}");
                n.len()
            }
            Remote::All | Remote::Room { .. } => panic!("a user is located exactly"),
        };
        assert_eq!(elsewhere, usize::from(here < 2), "instance {i}: {located:?}");
        let socket = hub.backplane().locate("/", &Target::Socket("BBBBBBBBBBBBBBB2".into())).await.expect("socket");
        let on_this = hub.registry().get("/", "BBBBBBBBBBBBBBB2").is_some();
        assert_eq!(socket.remote_sockets, Some(u32::from(!on_this)), "instance {i}: {socket:?}");
    }
    let gone = nodes.backplane(0).locate("/", &Target::User("nobody".into())).await.expect("locate");
    assert_eq!((gone.remote, gone.remote_sockets), (Remote::None, Some(0)));
}

/// Offline messages: kept only while the user has no socket anywhere, refused when the
/// user's share is full (never dropping older ones), taken once, in order, after the
/// user's next connect; expired ones are not delivered.
async fn offline_messages_are_kept_refused_and_taken_in_order(nodes: Nodes) {
    let store = |i: usize, event: &str, ttl: Duration| {
        let b = nodes.backplane(i).clone();
        let m = offline_message(event, ttl);
        async move { b.store_offline("cid", m).await.expect("store") }
    };
    let long = Duration::from_secs(60);
    assert_eq!(store(0, "one", long).await, OfflineOutcome::Stored);
    assert_eq!(store(1, "short", Duration::from_millis(1)).await, OfflineOutcome::Stored);
    assert_eq!(store(0, "two", long).await, OfflineOutcome::Stored);
    assert_eq!(store(1, "three", long).await, OfflineOutcome::Full, "3 per user: the fourth is refused");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let c = conn("CCCCCCCCCCCCCCC1", Some("cid"));
    connect(nodes.node(1), &c).await;
    assert_eq!(store(0, "live", long).await, OfflineOutcome::Online, "online somewhere: deliver live");
    let taken: Vec<String> = nodes.backplane(1).take_offline(&c).await.into_iter().map(|m| m.event).collect();
    assert_eq!(taken, ["one", "two"], "in order, the expired one left out");
    assert!(nodes.backplane(0).take_offline(&c).await.is_empty(), "taken once");
    let kept = nodes.backplane(0).keep_undelivered("cid", offline_message("missed", long)).await;
    assert_eq!(kept, OfflineOutcome::Stored, "kept for an online user when it could not be written");
    disconnect(nodes.node(1), &c);
}

/// Client events from any instance reach a group's stream in the order they were sent,
/// and a backend's answer reaches the instance whose client waits for it.
async fn events_reach_the_group_in_order_and_answers_come_back(nodes: Nodes) {
    let mut backend = subscribe(nodes.node(0), "work", false).await;
    let sender = nodes.node(1);
    let c = conn("DDDDDDDDDDDDDDD1", Some("dan"));
    connect(sender, &c).await;
    let mut last = String::new();
    let (answer_tx, answer) = tokio::sync::oneshot::channel();
    let mut answer_tx = Some(answer_tx);
    for i in 0..100 {
        let (seq, id) = sender.router().next_event_id();
        last.clone_from(&id);
        if i == 99 {
            sender.router().await_ack(seq, AckWaiter::Reply(answer_tx.take().expect("one waiter")));
        }
        let event = Arc::new(ClientEvent {
            id,
            socket_id: c.socket_id.clone(),
            user_id: c.user_id.clone(),
            namespace: "/".into(),
            event: format!("e{i}"),
            payload: Payload::default(),
            wants_ack: i == 99,
            received_at: std::time::SystemTime::now(),
            charge: socket_bridge::hub::budget::Charge::none(),
        });
        sender.backplane().send_event(seq, event).expect("accepted");
    }
    let seen: Vec<String> = read_until(&mut backend, "event:e99").await;
    let expected: Vec<String> = (0..100).map(|i| format!("event:e{i}")).collect();
    assert_eq!(seen, expected, "every event once, in order");
    // The last one asked for an answer: the backend answers where its stream is, and the
    // answer reaches the instance whose client waits.
    nodes.node(0).backend_ack("work", &last, AckReply::error("done", "answered")).expect("answer taken");
    let got = tokio::time::timeout(WAIT, answer).await.expect("answer in time").expect("answer");
    assert_eq!(got, AckReply::error("done", "answered"));
    disconnect(sender, &c);
}

/// Requests reach the other instances and each answers once; requests addressed to no
/// other instance are not sent anywhere.
async fn requests_reach_every_other_instance_and_each_answers(nodes: Nodes) {
    let others = nodes.hubs.len() - 1;
    let wait = Wait::Answers { extra: Duration::ZERO };
    let list = NodeRequest::ListRooms { namespace: "/".into() };
    let answers = nodes.backplane(0).relay(Remote::All, list.clone(), wait).await.expect("relay");
    assert_eq!(answers.len(), others, "one answer per other instance: {answers:?}");
    assert!(answers.iter().all(|a| matches!(a, NodeReply::Rooms(_))), "{answers:?}");
    let ids: BTreeSet<String> = nodes.hubs.iter().skip(1).map(|h| h.instance_id().to_owned()).collect();
    if !ids.is_empty() {
        let to = Remote::Nodes(ids.into_iter().collect());
        let answers = nodes.backplane(0).relay(to, list.clone(), wait).await.expect("relay");
        assert_eq!(answers.len(), others);
    }
    let none = nodes.backplane(0).relay(Remote::None, list, wait).await.expect("relay");
    assert!(none.is_empty());
}

/// A room's requests reach exactly the other instances that joined the room.
async fn room_requests_reach_only_the_instances_with_members(nodes: Nodes) {
    let others = nodes.hubs.len() - 1;
    nodes.backplane(1).rooms_joined("/", &["lobby".to_owned()]).await;
    let wait = Wait::Answers { extra: Duration::ZERO };
    let room = |room: &str| Remote::Room { namespace: "/".into(), room: room.into() };
    let list = NodeRequest::ListRooms { namespace: "/".into() };
    let answers = nodes.backplane(0).relay(room("lobby"), list.clone(), wait).await.expect("relay");
    assert_eq!(answers.len(), others, "the instance holding members answers: {answers:?}");
    let answers = nodes.backplane(0).relay(room("empty"), list, wait).await.expect("relay");
    assert!(answers.is_empty(), "nobody holds members of an empty room: {answers:?}");
}

/// Status lists every instance, each once.
async fn nodes_lists_every_instance(nodes: Nodes) {
    let listed: BTreeSet<String> =
        nodes.backplane(0).nodes().await.expect("nodes").into_iter().map(|n| n.instance_id).collect();
    let all: BTreeSet<String> = nodes.hubs.iter().map(|h| h.instance_id().to_owned()).collect();
    assert_eq!(listed, all);
}

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod embedded_backplane {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                super::$case(super::embedded().await).await;
            })*
        }
        mod redis_backplane {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                super::$case(super::redis(2, super::Topology::Single).await).await;
            })*
        }
        mod redis_cluster_backplane {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                super::$case(super::redis(2, super::Topology::Cluster).await).await;
            })*
        }
    };
}

contract!(
    presence_changes_are_reported_once_per_transition,
    locate_names_the_instances_that_hold_targets,
    offline_messages_are_kept_refused_and_taken_in_order,
    events_reach_the_group_in_order_and_answers_come_back,
    requests_reach_every_other_instance_and_each_answers,
    room_requests_reach_only_the_instances_with_members,
    nodes_lists_every_instance,
);
