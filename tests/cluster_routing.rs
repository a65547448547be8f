//! Where cluster operations travel: a push to a user, a socket or a room reaches only the
//! instances holding its targets (counted by each instance's
//! `socket_bridge_cluster_requests_received_total`), and a socket joining a room while
//! pushes to it are in flight gets each of them at most once, and every one made after the
//! join returned. Three instances on a real `redis-server`, and again on a real Redis
//! Cluster of three masters with a replica each.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::cluster::{PROPAGATION, start_instances};
use common::redis_server::{TestRedis, Topology};
use common::*;
use serde_json::json;
use socket_bridge::proto;
use socket_bridge::proto::target::Kind as T;

const RECEIVED: &str = "socket_bridge_cluster_requests_received_total";

/// Each instance's count of operations received from the others.
async fn received(nodes: &[Bridge]) -> Vec<f64> {
    let mut out = Vec::new();
    for n in nodes {
        out.push(n.metric(RECEIVED).await);
    }
    out
}

/// How many requests each instance received while `f` ran, once the counts settle.
async fn received_during<F: std::future::Future<Output = ()>>(nodes: &[Bridge], f: F) -> Vec<f64> {
    let before = received(nodes).await;
    f.await;
    // Requests are applied as they arrive; a push answered means its holders got it. For
    // fire-and-forget ones (room pushes), wait until two reads a little apart agree.
    let mut last = received(nodes).await;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = received(nodes).await;
        if now == last {
            return now.iter().zip(&before).map(|(a, b)| a - b).collect();
        }
        last = now;
    }
}

async fn pushes_travel_only_to_the_instances_that_hold_their_targets(topology: Topology) {
    let redis = TestRedis::start(topology).await;
    let nodes = start_instances(&redis.url(), &[&[], &[], &[]]).await;
    let mut a = nodes[0].client().await;
    let mut d = Driver::spawn().await;
    eventually("three instances listed", PROPAGATION, || async {
        let s = call("Status", nodes[0].client().await.status(proto::StatusRequest {})).await;
        if s.nodes.len() == 3 { Ok(()) } else { Err(format!("{} listed", s.nodes.len())) }
    })
    .await;
    let bob_b = d.connect("bob@B", &nodes[1].url(), json!({"userId": "bob"}), WS).await;
    d.connect("cat@C", &nodes[2].url(), json!({"userId": "cat"}), WS).await;
    let join = proto::JoinRoomsRequest {
        target: Some(proto::Target { kind: Some(T::UserId("bob".into())) }),
        rooms: vec!["b-only".into()],
        ..Default::default()
    };
    call("JoinRooms b-only for bob via A", a.join_rooms(join)).await;

    let mut figures = BTreeMap::new();
    let to_bob = received_during(&nodes, async {
        for i in 0..20 {
            let r =
                call("push to bob", a.push(push_request(T::UserId("bob".into()), "to_bob", &format!("[{i}]")))).await;
            assert_eq!(r.sockets_reached, 1);
        }
    })
    .await;
    figures.insert("20 pushes via A to a user on B", to_bob.clone());
    assert_eq!(to_bob, [0.0, 20.0, 0.0], "only B hears pushes to bob");

    let to_socket = received_during(&nodes, async {
        let r = call("push to bob's socket", a.push(push_request(T::SocketId(bob_b.clone()), "to_sid", "[1]"))).await;
        assert_eq!(r.sockets_reached, 1);
    })
    .await;
    figures.insert("1 push via A to a socket on B", to_socket.clone());
    assert_eq!(to_socket, [0.0, 1.0, 0.0], "only B hears pushes to bob's socket");

    let to_nobody = received_during(&nodes, async {
        let r = call("push to nobody", a.push(push_request(T::UserId("nobody".into()), "x", "[]"))).await;
        assert_eq!(r.sockets_reached, 0);
    })
    .await;
    figures.insert("1 push via A to a user with no socket", to_nobody.clone());
    assert_eq!(to_nobody, [0.0, 0.0, 0.0], "nobody hears a push to a user with no socket");

    let to_room = received_during(&nodes, async {
        for _ in 0..10 {
            call("push to b-only", a.push(push_request(T::Room("b-only".into()), "to_room", "[2]"))).await;
        }
    })
    .await;
    figures.insert("10 pushes via A to a room with members on B only", to_room.clone());
    assert_eq!(to_room, [0.0, 10.0, 0.0], "only B hears pushes to a room whose members are on B");

    let to_all = received_during(&nodes, async {
        call("push to everyone", a.push(push_request(T::Everyone(true), "to_all", "[3]"))).await;
    })
    .await;
    figures.insert("1 push via A to everyone", to_all.clone());
    assert_eq!(to_all, [0.0, 1.0, 1.0], "everyone: every other instance");
    for _ in 0..20 {
        d.event("bob@B", "to_bob").await;
    }
    d.event("bob@B", "to_sid").await;
    for _ in 0..10 {
        d.event("bob@B", "to_room").await;
    }
    d.event("cat@C", "to_all").await;
    assert!(d.no_event("cat@C", "to_room", Duration::from_millis(300)).await);
    eprintln!("requests received by A, B, C: {figures:#?}");
    d.exit().await;
}

/// A socket on B joins a room (through C) while A pushes to that room as fast as it can:
/// each push reaches the socket at most once, and every push made after the join returned
/// reaches it.
async fn a_room_join_racing_pushes_to_the_room_gets_each_push_at_most_once(topology: Topology) {
    let redis = TestRedis::start(topology).await;
    let nodes = start_instances(&redis.url(), &[&[], &[], &[]]).await;
    let (mut a, mut c) = (nodes[0].client().await, nodes[2].client().await);
    let mut d = Driver::spawn().await;
    d.connect("dan@B", &nodes[1].url(), json!({"userId": "dan"}), WS).await;
    let mut rounds = Vec::new();
    for round in 0..5 {
        let room = format!("race-{round}");
        let pusher = {
            let (mut a, room) = (a.clone(), room.clone());
            tokio::spawn(async move {
                let mut sent = Vec::new();
                for i in 0..200u32 {
                    let push = push_request(T::Room(room.clone()), "race", &format!("[{round},{i}]"));
                    // When the push was made: one whose call began before the join returned
                    // may have been published before the socket's instance subscribed.
                    let made = std::time::Instant::now();
                    a.push(push).await.expect("push");
                    sent.push((i, made));
                }
                sent
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await; // let some pushes go out before the join
        let join = proto::JoinRoomsRequest {
            target: Some(proto::Target { kind: Some(T::UserId("dan".into())) }),
            rooms: vec![room.clone()],
            ..Default::default()
        };
        call("JoinRooms via C", c.join_rooms(join)).await;
        let joined_at = std::time::Instant::now();
        let sent = pusher.await.expect("pusher");
        let after_join: Vec<u32> = sent.iter().filter(|(_, at)| *at > joined_at).map(|(i, _)| *i).collect();
        let mut got: BTreeMap<u32, u32> = BTreeMap::new();
        while let Some(v) =
            d.try_expect(|v| v["type"] == "event" && v["event"] == "race", Duration::from_millis(500)).await
        {
            if v["args"][0] == round {
                *got.entry(v["args"][1].as_u64().unwrap() as u32).or_default() += 1;
            }
        }
        let twice: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "round {round}: pushes received more than once: {twice:?}");
        let missed: Vec<_> = after_join.iter().filter(|i| !got.contains_key(i)).collect();
        assert!(missed.is_empty(), "round {round}: pushes made after the join returned never arrived: {missed:?}");
        rounds.push((got.len(), after_join.len()));
        let leave = proto::LeaveRoomsRequest {
            target: Some(proto::Target { kind: Some(T::UserId("dan".into())) }),
            rooms: vec![room],
            ..Default::default()
        };
        call("LeaveRooms via A", a.leave_rooms(leave)).await;
    }
    eprintln!("per round (received of 200, of which made after the join returned): {rounds:?}");
    d.exit().await;
}

crate::on_each_topology!(
    pushes_travel_only_to_the_instances_that_hold_their_targets,
    a_room_join_racing_pushes_to_the_room_gets_each_push_at_most_once,
);
