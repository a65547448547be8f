//! Writes BENCHMARKS.md (medians over runs, ratios to each peer, the targets) and SVG
//! plots from `results.json`.

use std::fmt::Write as _;
use std::path::Path;

use crate::Results;
use crate::backend::{Door, Kind};
use crate::suite::RunResult;

const KINDS: [Kind; 5] = [Kind::Bridge, Kind::Sioxide, Kind::Node, Kind::NodeFwd, Kind::Floor];

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

fn runs_of(r: &Results, k: Kind) -> Vec<&RunResult> {
    r.runs.iter().filter(|x| x.server == k).collect()
}

/// Median over runs of `f(run)`.
fn med(r: &Results, k: Kind, f: impl Fn(&RunResult) -> Option<f64>) -> Option<f64> {
    median(runs_of(r, k).into_iter().filter_map(f).collect())
}

fn key(x: f64) -> i64 {
    x.round() as i64
}

fn fmt_num(x: Option<f64>) -> String {
    match x {
        None => "–".into(),
        Some(v) if v.abs() >= 100_000.0 => format!("{:.0}k", v / 1000.0),
        Some(v) if v.abs() >= 1000.0 => format!("{:.0}", v),
        Some(v) if v.abs() >= 100.0 => format!("{:.0}", v),
        Some(v) if v.abs() >= 10.0 => format!("{:.1}", v),
        Some(v) => format!("{:.2}", v),
    }
}

fn fmt_ms(us: Option<f64>) -> String {
    match us {
        None => "–".into(),
        Some(v) if v >= 100_000.0 => format!("{:.0} ms", v / 1000.0),
        Some(v) if v >= 10_000.0 => format!("{:.1} ms", v / 1000.0),
        Some(v) => format!("{:.2} ms", v / 1000.0),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 && a / b < 1.0 => format!("{:.3}x", a / b),
        (Some(a), Some(b)) if b != 0.0 => format!("{:.2}x", a / b),
        _ => "–".into(),
    }
}

fn rate_label(x: f64) -> String {
    if x >= 1000.0 { format!("{}k", fmt_num(Some(x / 1000.0))) } else { format!("{x:.0}") }
}

/// Deliveries per second of server CPU at the point that delivered most: the per-core
/// capacity, robust to other processes taking part of the server core.
fn fanout_per_cpu_s(run: &RunResult) -> Option<f64> {
    let best = run
        .fanout
        .iter()
        .max_by(|a, b| a.delivered_per_s.partial_cmp(&b.delivered_per_s).unwrap_or(std::cmp::Ordering::Equal))?;
    (best.cpu_ms_per_1000 > 0.0).then(|| 1e6 / best.cpu_ms_per_1000)
}

fn tier_value(run: &RunResult, n: usize, f: impl Fn(&crate::suite::TierResult) -> f64) -> Option<f64> {
    run.tiers.iter().find(|t| t.n == n).map(f)
}

fn latency_at(run: &RunResult, rate: f64, door: Door) -> Option<&crate::suite::LatencyPoint> {
    run.latency.iter().find(|p| key(p.rate) == key(rate) && p.door == door)
}

/// Net server CPU (less the idle ping background of the run) in ms per second.
fn net_cpu_ms_per_s(run: &RunResult, server_cpu_pct: f64) -> f64 {
    ((server_cpu_pct - run.idle_cpu_pct) * 10.0).max(0.0)
}

fn door_default(k: Kind) -> Door {
    if k == Kind::Bridge { Door::Grpc } else { Door::Rest }
}

fn door_name(k: Kind, d: Door) -> &'static str {
    match (k, d) {
        (Kind::Bridge, Door::Grpc) => "gRPC",
        (Kind::Bridge, Door::Rest) => "REST",
        _ => "HTTP",
    }
}

/// Server CPU µs per delivery at the moderate point, net of the ping background.
fn moderate_us(run: &RunResult, room: usize, rate: f64) -> Option<f64> {
    let p = run.fanout.iter().find(|p| p.moderate && p.room == room && key(p.offered) == key(rate))?;
    (p.delivered_per_s > 0.0).then(|| net_cpu_ms_per_s(run, p.server_cpu_pct) * 1000.0 / p.delivered_per_s)
}

/// Server CPU µs per push, net of the ping background.
fn push_us(run: &RunResult, rate: f64, door: Door) -> Option<f64> {
    let p = latency_at(run, rate, door)?;
    (!p.saturated).then(|| net_cpu_ms_per_s(run, p.server_cpu_pct) * 1000.0 / rate)
}

/// The round-trip point with the highest answered rate holding p99 < 10 ms, no errors.
fn rtt_best_point(run: &RunResult) -> Option<&crate::suite::RttPoint> {
    run.rtt
        .iter()
        .filter(|p| p.p99_us < 10_000 && p.ack_errors == 0 && p.acked_per_s >= 0.95 * p.rate && p.server_cpu_pct > 0.0)
        .max_by(|a, b| a.acked_per_s.partial_cmp(&b.acked_per_s).unwrap_or(std::cmp::Ordering::Equal))
}

/// Round trips per server CPU-second at the best point.
fn rtt_per_cpu_s(run: &RunResult) -> Option<f64> {
    rtt_best_point(run).map(|p| p.acked_per_s / (p.server_cpu_pct / 100.0))
}

fn x_of(a: Option<f64>, b: Option<f64>) -> String {
    ratio(a, b)
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "**holds**",
        Some(false) => "**does not hold**",
        None => "not measured",
    }
}

fn both(x: Option<bool>, y: Option<bool>) -> Option<bool> {
    match (x, y) {
        (Some(x), Some(y)) => Some(x && y),
        (Some(false), None) | (None, Some(false)) => Some(false),
        _ => None,
    }
}

fn le(a: Option<f64>, b: Option<f64>, k: f64) -> Option<bool> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a <= k * b),
        _ => None,
    }
}

fn ge(a: Option<f64>, b: Option<f64>, k: f64) -> Option<bool> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a >= k * b),
        _ => None,
    }
}

fn pct_s(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0}%")).unwrap_or_else(|| "–".into())
}

pub fn write(results: &Results, out: &Path, md_path: &Path) -> anyhow::Result<()> {
    let r = results;
    let m = &r.meta;
    let p = &r.plan;
    let mut md = String::new();
    let present: Vec<Kind> = KINDS.iter().copied().filter(|k| !runs_of(r, *k).is_empty()).collect();
    let n_runs = |k: Kind| runs_of(r, k).len();
    let (b, s, n, nf, f) = (Kind::Bridge, Kind::Sioxide, Kind::Node, Kind::NodeFwd, Kind::Floor);
    // Servers with the full set of scenarios (node-forward runs the event path only).
    let full: Vec<Kind> = present.iter().copied().filter(|k| *k != nf).collect();

    writeln!(md, "# Benchmarks: socket-bridge vs Node.js Socket.IO vs bare socketioxide vs the floor\n")?;
    writeln!(
        md,
        "Generated by `bash bench/run.sh{}` on {} (suite took {:.0} s). socket-bridge commit `{}`. \
         Every figure is the median of {} run(s) per server, all measured in this one invocation; \
         ratios are socket-bridge ÷ peer.\n",
        if m.quick { " --quick" } else { "" },
        m.date,
        m.suite_secs,
        if m.bridge_commit.is_empty() { "unknown" } else { &m.bridge_commit },
        present.iter().map(|k| n_runs(*k)).min().unwrap_or(0),
    )?;
    if m.quick {
        writeln!(
            md,
            "> **Quick smoke run** (`--quick`): fewer tiers (so no 10k/19k figures), one run, short windows, on a \
             machine shared with other builds. It shows that every scenario runs; its figures are noisy and not for quoting.\n"
        )?;
    }

    // ---------- sizing ----------
    let max_tier = p.tiers.iter().copied().max().unwrap_or(0);
    let mem_at = |k: Kind, t: usize| med(r, k, |x| tier_value(x, t, |tt| tt.kb_per_conn));
    let mem_big = |k: Kind| mem_at(k, max_tier);
    let fan = |k| med(r, k, fanout_per_cpu_s);
    let (mroom, mrate) = p.moderate_fanout.first().copied().unwrap_or((1000, 20_000.0));
    let mod_us = |k| med(r, k, |x| moderate_us(x, mroom, mrate));
    let push_rate = p.latency_rates.iter().copied().find(|&x| key(x) == 5000).or(p.latency_rates.last().copied());
    let pus = |k: Kind, d: Door| push_rate.and_then(|rate| med(r, k, |x| push_us(x, rate, d)));
    let rtt_cpu = |k| med(r, k, rtt_per_cpu_s);
    writeln!(md, "## How to read these figures (sizing a deployment)\n")?;
    writeln!(
        md,
        "Each server ran on **one core** of the machine below, so every rate here is per core. For a deployment, \
         with headroom for bursts and the kernel's share (leave 30–50%):\n"
    )?;
    writeln!(md, "| what | socket-bridge | Node peer | how it was measured |")?;
    writeln!(md, "|---|---|---|---|")?;
    let per_gib = |kb: Option<f64>| kb.map(|kb| fmt_num(Some(1024.0 * 1024.0 / kb)));
    writeln!(
        md,
        "| idle connections per GiB of RAM | {} | {} | 1 GiB ÷ idle memory per connection at {} connections |",
        per_gib(mem_big(b)).unwrap_or("–".into()),
        per_gib(mem_big(n)).unwrap_or("–".into()),
        max_tier
    )?;
    let inv = |us: Option<f64>| us.filter(|v| *v > 0.0).map(|v| 1e6 / v);
    writeln!(
        md,
        "| room deliveries per core, everyday rates | {} | {} | 1 s ÷ CPU per delivery at {} deliveries/s to a room of {} (ping background removed) |",
        fmt_num(inv(mod_us(b))),
        fmt_num(inv(mod_us(n))),
        rate_label(mrate),
        mroom
    )?;
    writeln!(
        md,
        "| room deliveries per core, at saturation | {} | {} | deliveries ÷ server CPU-seconds at the fan-out peak (large rooms: one encode, many writes) |",
        fmt_num(fan(b)),
        fmt_num(fan(n))
    )?;
    writeln!(
        md,
        "| one-to-one pushes per core | {} (gRPC), {} (REST) | {} | 1 s ÷ CPU per push at {} pushes/s |",
        fmt_num(inv(pus(b, Door::Grpc))),
        fmt_num(inv(pus(b, Door::Rest))),
        fmt_num(inv(pus(n, Door::Rest))),
        push_rate.map(rate_label).unwrap_or_default()
    )?;
    writeln!(
        md,
        "| client event → backend → ack round trips per core | {} | {} (forwarding over HTTP) | round trips ÷ server CPU-seconds at the highest rate with p99 < 10 ms |",
        fmt_num(rtt_cpu(b)),
        fmt_num(rtt_cpu(nf))
    )?;
    let decided = |mode: &str| median(r.auth.iter().filter(|a| a.mode == mode).map(|a| a.cpu_us_per_connect).collect());
    writeln!(
        md,
        "| connects per core (backend-decided / JWT / dev) | {} / {} / {} | – | 1 s ÷ CPU per connect, 64 handshakes at a time |",
        fmt_num(inv(decided("backend"))),
        fmt_num(inv(decided("jwt"))),
        fmt_num(inv(decided("dev")))
    )?;
    writeln!(
        md,
        "\nThe costs add up: a core spending half its time on 10,000 pushes/s has the other half for deliveries \
         and events. Memory grows with connections only (a connection's buffers grow while a burst is being written \
         to it and shrink back). The backend's own CPU (answering events, deciding connects) is not in these figures.\n"
    )?;

    // ---------- targets ----------
    writeln!(md, "## Targets\n")?;
    writeln!(md, "| target | socket-bridge | reference | ratio | verdict |")?;
    writeln!(md, "|---|---|---|---|---|")?;
    let rb = rtt_cpu(b);
    writeln!(
        md,
        "| event round trips per server CPU-second (highest rate with p99 < 10 ms) ≥ 0.8x bare socketioxide, ≥ 4x the forwarding Node peer | {} | socketioxide {}, node-forward {} | {}, {} | {} |",
        fmt_num(rb),
        fmt_num(rtt_cpu(s)),
        fmt_num(rtt_cpu(nf)),
        x_of(rb, rtt_cpu(s)),
        x_of(rb, rtt_cpu(nf)),
        verdict(both(ge(rb, rtt_cpu(s), 0.8), ge(rb, rtt_cpu(nf), 4.0)))
    )?;
    for t in [10000usize, 19000] {
        if !p.tiers.contains(&t) {
            continue;
        }
        writeln!(
            md,
            "| idle memory per connection at {t} connections ≤ Node's | {} KB | Node {} KB | {} | {} |",
            fmt_num(mem_at(b, t)),
            fmt_num(mem_at(n, t)),
            x_of(mem_at(b, t), mem_at(n, t)),
            verdict(le(mem_at(b, t), mem_at(n, t), 1.0))
        )?;
    }
    let hs_tier = |k: Kind, t: usize| med(r, k, |x| tier_value(x, t, |tt| tt.cpu_us_per_handshake));
    let worst_hs = p
        .tiers
        .iter()
        .filter_map(|&t| match (hs_tier(b, t), hs_tier(s, t)) {
            (Some(x), Some(y)) if y > 0.0 => Some((t, x / y)),
            _ => None,
        })
        .max_by(|a, c| a.1.partial_cmp(&c.1).unwrap_or(std::cmp::Ordering::Equal));
    writeln!(
        md,
        "| CPU per handshake ≤ 1.05x bare socketioxide at every tier | {} | (worst tier{}) | {} | {} |",
        p.tiers.iter().map(|&t| fmt_num(hs_tier(b, t))).collect::<Vec<_>>().join(" / ") + " µs",
        worst_hs.map(|(t, _)| format!(": {t}")).unwrap_or_default(),
        worst_hs.map(|(_, x)| format!("{x:.2}x")).unwrap_or("–".into()),
        verdict(worst_hs.map(|(_, x)| x <= 1.05))
    )?;
    writeln!(
        md,
        "| fan-out per core at the peak ≥ 6x Node, ≥ 0.85x bare socketioxide | {} | Node {}, socketioxide {} | {}, {} | {} |",
        fmt_num(fan(b)),
        fmt_num(fan(n)),
        fmt_num(fan(s)),
        x_of(fan(b), fan(n)),
        x_of(fan(b), fan(s)),
        verdict(both(ge(fan(b), fan(n), 6.0), ge(fan(b), fan(s), 0.85)))
    )?;
    let p99_at = |k: Kind, rate: f64, d: Door| med(r, k, |x| latency_at(x, rate, d).map(|pp| pp.p99_us as f64));
    if p.latency_rates.iter().any(|&x| key(x) == 10000) {
        writeln!(
            md,
            "| push p99 at 10,000/s ≤ 5 ms (gRPC) | {} | socketioxide {}, Node {} | – | {} |",
            fmt_ms(p99_at(b, 10000.0, Door::Grpc)),
            fmt_ms(p99_at(s, 10000.0, Door::Rest)),
            fmt_ms(p99_at(n, 10000.0, Door::Rest)),
            verdict(p99_at(b, 10000.0, Door::Grpc).map(|v| v <= 5000.0))
        )?;
    }
    writeln!(
        md,
        "| CPU per delivery at {} deliveries/s to a room of {}: ≤ 1.3x the floor, ≤ 0.5x Node | {} µs | floor {} µs, Node {} µs, socketioxide {} µs | {} floor, {} Node | {} |",
        rate_label(mrate),
        mroom,
        fmt_num(mod_us(b)),
        fmt_num(mod_us(f)),
        fmt_num(mod_us(n)),
        fmt_num(mod_us(s)),
        x_of(mod_us(b), mod_us(f)),
        x_of(mod_us(b), mod_us(n)),
        verdict(both(le(mod_us(b), mod_us(f), 1.3), le(mod_us(b), mod_us(n), 0.5)))
    )?;
    for &rate in p.latency_rates.iter().filter(|&&x| key(x) == 2000 || key(x) == 5000) {
        for d in [Door::Grpc, Door::Rest] {
            let bu = med(r, b, |x| push_us(x, rate, d));
            let fu = med(r, f, |x| push_us(x, rate, Door::Rest));
            let nu = med(r, n, |x| push_us(x, rate, Door::Rest));
            writeln!(
                md,
                "| CPU per push at {} pushes/s ({}): ≤ 1.3x the floor, ≤ 0.5x Node | {} µs | floor {} µs, Node {} µs | {} floor, {} Node | {} |",
                rate_label(rate),
                door_name(b, d),
                fmt_num(bu),
                fmt_num(fu),
                fmt_num(nu),
                x_of(bu, fu),
                x_of(bu, nu),
                verdict(both(le(bu, fu, 1.3), le(bu, nu, 0.5)))
            )?;
        }
    }
    writeln!(
        md,
        "\nCPU figures for the moderate rates are net of each server's idle background (the pings of all its \
         connections, measured in a quiet window of the same run: see the Method).\n"
    )?;

    // ---------- machine ----------
    writeln!(md, "## Machine and versions\n")?;
    writeln!(md, "| | |\n|---|---|")?;
    writeln!(md, "| CPU | {} ({} cores visible) |", m.cpu, m.cores)?;
    writeln!(md, "| memory | {:.1} GiB |", m.memory_gib)?;
    writeln!(md, "| kernel | {} |", m.kernel)?;
    writeln!(md, "| Rust | {} |", m.rustc)?;
    writeln!(
        md,
        "| Node.js | {} (socket.io {}, express {}, undici {}, bufferutil {}) |",
        m.node, m.socketio, m.express, m.undici, m.bufferutil
    )?;
    writeln!(md, "| socketioxide (peer) | {} |", m.socketioxide)?;
    writeln!(md, "| Redis (cluster scenario) | {} |", if m.redis.is_empty() { "–" } else { &m.redis })?;
    writeln!(
        md,
        "| socket-bridge | commit `{}` (release build) |",
        if m.bridge_commit.is_empty() { "unknown" } else { &m.bridge_commit }
    )?;
    writeln!(md, "| server core / generator cores | {} / {:?} |", m.server_core, m.generator_cores)?;
    writeln!(md, "| open-files limit (per process) | {} |", m.nofile)?;
    if !m.bridge_sets.is_empty() {
        writeln!(md, "| extra socket-bridge settings | `{}` |", m.bridge_sets.join("`, `"))?;
    }
    writeln!(md)?;

    // ---------- method ----------
    writeln!(md, "## Method\n")?;
    writeln!(
        md,
        "- One server process at a time, pinned to core {} with `taskset`; the load generator (this harness, \
         `bench/src`) runs pinned to the other core, with the backend each server talks to (the gRPC client and \
         `Events`/`Authorize` streams for socket-bridge, HTTP clients for the peers, the HTTP backend the forwarding \
         Node peer calls).",
        m.server_core
    )?;
    writeln!(
        md,
        "- Servers: **socket-bridge** (release build, default config plus `socketio.ping_interval_ms`/`ping_timeout_ms`, \
         the per-socket event rate and the REST request rate limits lifted, `log.level=warn`); **Node** \
         (`bench/node-peer/server.js`: Socket.IO 4.8 + Express push endpoint + connection manager, `bufferutil` \
         installed; the event handler answers the ack itself); **node-forward** (the same server with `--forward`: each \
         client event goes to the backend as an HTTP POST over an undici keep-alive pool, and the client's ack gets \
         the backend's answer: the original design's event path); **socketioxide** (`bench/src/bin/sioxide_peer.rs`: \
         bare socketioxide with the bridge's engine settings, answering acks itself); **floor** \
         (`bench/src/bin/floor_peer.rs`: the same handshake, pings and frames with no Socket.IO logic, each push's \
         frame encoded once and written to every recipient, on one thread)."
    )?;
    writeln!(
        md,
        "- Clients: raw Engine.IO v4 / Socket.IO v5 websocket clients on one `mio` event loop, each bound to its own \
         127.x.y.z address; each authenticates with `{{\"userId\":\"u<i>\"}}` and every server puts it in room \
         `user:u<i>`. Handshakes run at most {} at a time. Pings every {} ms (timeout {} ms) on every server, so that \
         every socket has answered a ping before its memory is read; the throughput scenarios report CPU also net \
         of that background (ping interval 25 s in production makes it about 8x smaller).",
        p.connect_inflight, p.ping_interval_ms, p.ping_timeout_ms
    )?;
    writeln!(
        md,
        "- Connections grow in tiers {:?}. At each tier: server CPU over the tier's handshakes (less the ping \
         background) ÷ handshakes; then every socket answers one more ping, and idle memory = (RSS − RSS before the \
         first connection) ÷ connections (the Node peer collects garbage first). After measuring, every socket joins \
         room `r<tier>`. Then {} ms with no traffic: the idle background.",
        p.tiers, p.idle_ms
    )?;
    writeln!(
        md,
        "- Room fan-out: the backend pushes a 1-argument event `{{\"t\":…}}` to a room, open loop at a fixed offered \
         rate of deliveries (at most {} pushes in flight), {} ms warm-up then {} ms measured. First the everyday point \
         ({} deliveries/s to the room of {}), then the sweep {:?} on the room of {} (stopping at the first rate \
         delivering < 80% of the offer), then {} deliveries/s to rooms {:?}.",
        p.fanout_inflight,
        p.warm_ms,
        p.measure_ms,
        rate_label(mrate),
        mroom,
        p.fanout_rates.iter().map(|x| rate_label(*x)).collect::<Vec<_>>(),
        p.fanout_sweep_room,
        rate_label(p.fanout_room_rate),
        p.fanout_rooms
    )?;
    writeln!(
        md,
        "- Pushes: one push per user (round robin over the connected users) at fixed rates {:?}, at most {} requests \
         in flight; latency from the intended send time (queueing in front of a slow server counts) to the client's \
         receipt; pushes never delivered count at the time they had waited (the percentile is then a lower bound, \
         marked ≥). socket-bridge is measured through gRPC `Push` and through the REST `POST /api/v1/push`; the peers \
         through their HTTP push endpoints (keep-alive pool).",
        p.latency_rates.iter().map(|x| rate_label(*x)).collect::<Vec<_>>(),
        p.latency_inflight
    )?;
    writeln!(
        md,
        "- Client event round trip: clients emit `bench` with an ack at fixed total rates {:?} (round robin over all \
         sockets); RTT from the intended emit time to the ack. socket-bridge's acks come from a tonic `Events` stream \
         in the generator (answering `[{{\"ok\":true}}]`), node-forward's from an HTTP backend in the generator.",
        p.rtt_rates.iter().map(|x| rate_label(*x)).collect::<Vec<_>>()
    )?;
    writeln!(
        md,
        "- Server CPU is the sum of the server threads' run time (`/proc/PID/task/*/schedstat`), which includes the \
         kernel's network work done on those threads; `foreign` is what other processes took on the server core in \
         the window (this machine is shared). Ranges of the runs are in `bench/results/results.json`, server logs in \
         `bench/results/raw/`.\n"
    )?;

    // ---------- memory and handshakes ----------
    writeln!(md, "## Idle memory and handshakes\n")?;
    writeln!(
        md,
        "![idle memory per connection](bench/results/memory.svg) ![CPU per handshake](bench/results/handshake.svg)\n"
    )?;
    let cols: Vec<Kind> = full.clone();
    let head: Vec<&str> = cols.iter().map(|k| k.name()).collect();
    writeln!(
        md,
        "| connections | KB/conn {} | bridge÷Node | bridge÷sioxide | bridge÷floor | bridge − sioxide (KB) | µs CPU/handshake {} | bridge÷sioxide | bridge÷floor | handshakes/s {} |",
        head.join(" / "),
        head.join(" / "),
        head.join(" / ")
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|")?;
    for &t in &p.tiers {
        let mem = |k: Kind| mem_at(k, t);
        let hs = |k: Kind| hs_tier(k, t);
        let cps = |k: Kind| med(r, k, |x| tier_value(x, t, |tt| tt.conn_per_s));
        writeln!(
            md,
            "| {t} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cols.iter().map(|&k| fmt_num(mem(k))).collect::<Vec<_>>().join(" / "),
            ratio(mem(b), mem(n)),
            ratio(mem(b), mem(s)),
            ratio(mem(b), mem(f)),
            match (mem(b), mem(s)) {
                (Some(x), Some(y)) => format!("{:.1}", x - y),
                _ => "–".into(),
            },
            cols.iter().map(|&k| fmt_num(hs(k))).collect::<Vec<_>>().join(" / "),
            ratio(hs(b), hs(s)),
            ratio(hs(b), hs(f)),
            cols.iter().map(|&k| fmt_num(cps(k))).collect::<Vec<_>>().join(" / "),
        )?;
    }
    writeln!(
        md,
        "\n`bridge − sioxide` is socket-bridge's own per-connection state (both run the same Socket.IO layer with the \
         same settings); `cargo bench --bench conn_state` itemizes it.\n"
    )?;

    // ---------- fan-out ----------
    writeln!(md, "## Room fan-out\n")?;
    writeln!(md, "### Everyday rate\n")?;
    writeln!(
        md,
        "| room | offered deliveries/s | server | delivered/s | server CPU | idle background | net µs per delivery | ÷ floor | bridge ÷ this |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|")?;
    for &(room, rate) in &p.moderate_fanout {
        for &k in &full {
            let pt = |g: &dyn Fn(&crate::suite::FanoutPoint) -> f64| {
                med(r, k, |x| {
                    x.fanout.iter().find(|pp| pp.moderate && pp.room == room && key(pp.offered) == key(rate)).map(g)
                })
            };
            let us = med(r, k, |x| moderate_us(x, room, rate));
            let fus = med(r, f, |x| moderate_us(x, room, rate));
            let bus = med(r, b, |x| moderate_us(x, room, rate));
            writeln!(
                md,
                "| {room} | {} | {} | {} | {} | {} | {} | {} | {} |",
                rate_label(rate),
                k.name(),
                fmt_num(pt(&|pp| pp.delivered_per_s)),
                pct_s(pt(&|pp| pp.server_cpu_pct)),
                pct_s(med(r, k, |x| Some(x.idle_cpu_pct))),
                fmt_num(us),
                ratio(us, fus),
                if k == b { "–".into() } else { ratio(bus, us) },
            )?;
        }
    }
    writeln!(md, "\n### Sweep\n")?;
    writeln!(
        md,
        "![fan-out deliveries per second](bench/results/fanout.svg) ![CPU per 1000 deliveries](bench/results/fanout_cpu.svg)\n"
    )?;
    writeln!(
        md,
        "| room | offered deliveries/s | delivered/s {} | bridge÷Node | bridge÷sioxide | CPU-ms/1000 {} | bridge÷floor | foreign CPU |",
        head.join(" / "),
        head.join(" / ")
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|")?;
    let mut fan_points: Vec<(usize, i64)> = r
        .runs
        .iter()
        .flat_map(|x| x.fanout.iter().filter(|pp| !pp.moderate).map(|pp| (pp.room, key(pp.offered))))
        .collect();
    fan_points.sort();
    fan_points.dedup();
    for (room, offered) in fan_points {
        let d = |k| {
            med(r, k, |x| {
                x.fanout
                    .iter()
                    .find(|pp| !pp.moderate && pp.room == room && key(pp.offered) == offered)
                    .map(|pp| pp.delivered_per_s)
            })
        };
        let c = |k| {
            med(r, k, |x| {
                x.fanout
                    .iter()
                    .find(|pp| !pp.moderate && pp.room == room && key(pp.offered) == offered)
                    .map(|pp| pp.cpu_ms_per_1000)
            })
        };
        let fo = |k| {
            med(r, k, |x| {
                x.fanout
                    .iter()
                    .find(|pp| !pp.moderate && pp.room == room && key(pp.offered) == offered)
                    .map(|pp| pp.foreign_pct)
            })
            .map(|v| format!("{v:.0}%"))
            .unwrap_or("–".into())
        };
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            room,
            rate_label(offered as f64),
            cols.iter().map(|&k| fmt_num(d(k))).collect::<Vec<_>>().join(" / "),
            ratio(d(b), d(n)),
            ratio(d(b), d(s)),
            cols.iter().map(|&k| fmt_num(c(k))).collect::<Vec<_>>().join(" / "),
            ratio(c(b), c(f)),
            cols.iter().map(|&k| fo(k)).collect::<Vec<_>>().join("/"),
        )?;
    }
    writeln!(md, "\n– : not run (the sweep stops once a server delivers < 80% of the offer).\n")?;

    // ---------- pushes ----------
    writeln!(md, "## One-to-one pushes (backend call → client)\n")?;
    writeln!(md, "![push latency p99](bench/results/latency.svg)\n")?;
    writeln!(
        md,
        "| pushes/s | server | door | delivered | p50 | p99 | p99.9 | max | server CPU | net µs per push | ÷ floor | bridge (same door) ÷ this | foreign CPU |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|---|")?;
    for &rate in &p.latency_rates {
        for &k in &full {
            let doors: &[Door] = if k == b { &[Door::Grpc, Door::Rest] } else { &[Door::Rest] };
            for &d in doors {
                let g = |h: &dyn Fn(&crate::suite::LatencyPoint) -> f64| med(r, k, |x| latency_at(x, rate, d).map(h));
                if g(&|pp| pp.rate).is_none() {
                    continue;
                }
                let sat = runs_of(r, k).iter().any(|x| latency_at(x, rate, d).is_some_and(|pp| pp.saturated));
                let lb = if sat { "≥ " } else { "" };
                let delivered = match (g(&|pp| pp.delivered as f64), g(&|pp| pp.offered as f64)) {
                    (Some(dd), Some(o)) if o > 0.0 => format!("{:.1}%", 100.0 * dd / o),
                    _ => "–".into(),
                };
                let us = med(r, k, |x| push_us(x, rate, d));
                let fus = med(r, f, |x| push_us(x, rate, Door::Rest));
                let bus = med(r, b, |x| push_us(x, rate, if k == b { d } else { Door::Grpc }));
                let bus_rest = med(r, b, |x| push_us(x, rate, Door::Rest));
                writeln!(
                    md,
                    "| {} | {} | {} | {} | {lb}{} | {lb}{} | {lb}{} | {lb}{} | {} | {} | {} | {} | {} |",
                    rate_label(rate),
                    k.name(),
                    door_name(k, d),
                    delivered,
                    fmt_ms(g(&|pp| pp.p50_us as f64)),
                    fmt_ms(g(&|pp| pp.p99_us as f64)),
                    fmt_ms(g(&|pp| pp.p999_us as f64)),
                    fmt_ms(g(&|pp| pp.max_us as f64)),
                    pct_s(g(&|pp| pp.server_cpu_pct)),
                    fmt_num(us),
                    ratio(us, fus),
                    if k == b { "–".into() } else { format!("{} / {}", ratio(bus, us), ratio(bus_rest, us)) },
                    pct_s(g(&|pp| pp.foreign_pct)),
                )?;
            }
        }
    }
    writeln!(md, "\n`bridge ÷ this` for a peer: socket-bridge over gRPC / over REST.\n")?;

    // ---------- rtt ----------
    writeln!(md, "## Client event → backend → ack round trip\n")?;
    writeln!(md, "![event round trip p99](bench/results/rtt.svg)\n")?;
    writeln!(
        md,
        "socket-bridge and node-forward carry each event to a backend and its answer back; socketioxide, Node and the \
         floor answer the ack themselves (they do strictly less work).\n"
    )?;
    writeln!(
        md,
        "| events/s offered | server | answered/s | error answers | p50 | p99 | p99.9 | max | server CPU | round trips per CPU-second | foreign CPU |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|")?;
    for &rate in &p.rtt_rates {
        for k in present.iter().copied() {
            let g = |h: &dyn Fn(&crate::suite::RttPoint) -> f64| {
                med(r, k, |x| x.rtt.iter().find(|pp| key(pp.rate) == key(rate)).map(h))
            };
            if g(&|pp| pp.acked_per_s).is_none() {
                continue;
            }
            writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                rate_label(rate),
                k.name(),
                fmt_num(g(&|pp| pp.acked_per_s)),
                fmt_num(g(&|pp| pp.ack_errors as f64)),
                fmt_ms(g(&|pp| pp.p50_us as f64)),
                fmt_ms(g(&|pp| pp.p99_us as f64)),
                fmt_ms(g(&|pp| pp.p999_us as f64)),
                fmt_ms(g(&|pp| pp.max_us as f64)),
                pct_s(g(&|pp| pp.server_cpu_pct)),
                fmt_num(g(&|pp| if pp.server_cpu_pct > 0.0 {
                    pp.acked_per_s / (pp.server_cpu_pct / 100.0)
                } else {
                    f64::NAN
                })),
                pct_s(g(&|pp| pp.foreign_pct)),
            )?;
        }
    }
    writeln!(md, "\nAt the highest rate with p99 < 10 ms and no error answers:\n")?;
    writeln!(md, "| server | answered/s | round trips per CPU-second | bridge ÷ this | ÷ floor |")?;
    writeln!(md, "|---|---|---|---|---|")?;
    for k in present.iter().copied() {
        writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            k.name(),
            fmt_num(med(r, k, |x| rtt_best_point(x).map(|pp| pp.acked_per_s))),
            fmt_num(rtt_cpu(k)),
            if k == b { "–".into() } else { ratio(rtt_cpu(b), rtt_cpu(k)) },
            ratio(rtt_cpu(k), rtt_cpu(f)),
        )?;
    }
    writeln!(md)?;

    // ---------- decided connects ----------
    if !r.auth.is_empty() {
        writeln!(md, "## Connects through the backend's decision\n")?;
        writeln!(
            md,
            "socket-bridge only, one process per mode: `dev` (user id from the auth object, unchecked), `jwt` (HS256 \
             token verified by the bridge), `backend` (the `Authorize` stream: a decider in the generator allows each \
             connect with the auth object's user id, as a session lookup would), `jwt+backend` (token verified, then \
             decided). Latency: {} connections {} at a time, TCP connect to the Socket.IO CONNECT answer. Throughput \
             and CPU: {} more, {} at a time. The decider's own CPU is the generator's, not in these figures.\n",
            p.auth.latency_conns, p.auth.latency_inflight, p.auth.throughput_conns, p.auth.throughput_inflight
        )?;
        writeln!(
            md,
            "| mode | handshake p50 | p99 | added p50 / p99 vs dev | connects/s | p50 / p99 at that load | µs CPU per connect | ÷ dev | ÷ jwt |"
        )?;
        writeln!(md, "|---|---|---|---|---|---|---|---|---|")?;
        let am = |mode: &str, g: &dyn Fn(&crate::authbench::AuthResult) -> f64| {
            median(r.auth.iter().filter(|a| a.mode == mode).map(g).collect())
        };
        for mode in &p.auth.modes {
            if am(mode, &|a| a.conn_per_s).is_none() {
                continue;
            }
            let add = |g: &dyn Fn(&crate::authbench::AuthResult) -> f64| match (am(mode, g), am("dev", g)) {
                (Some(x), Some(y)) => Some(x - y),
                _ => None,
            };
            writeln!(
                md,
                "| {mode} | {} | {} | {} / {} | {} | {} / {} | {} | {} | {} |",
                fmt_ms(am(mode, &|a| a.p50_us as f64)),
                fmt_ms(am(mode, &|a| a.p99_us as f64)),
                fmt_ms(add(&|a| a.p50_us as f64)),
                fmt_ms(add(&|a| a.p99_us as f64)),
                fmt_num(am(mode, &|a| a.conn_per_s)),
                fmt_ms(am(mode, &|a| a.loaded_p50_us as f64)),
                fmt_ms(am(mode, &|a| a.loaded_p99_us as f64)),
                fmt_num(am(mode, &|a| a.cpu_us_per_connect)),
                ratio(am(mode, &|a| a.cpu_us_per_connect), am("dev", &|a| a.cpu_us_per_connect)),
                ratio(am(mode, &|a| a.cpu_us_per_connect), am("jwt", &|a| a.cpu_us_per_connect)),
            )?;
        }
        writeln!(md)?;
    }

    // ---------- cluster ----------
    writeln!(md, "## Cluster: user pushes across instances\n")?;
    if r.cluster.is_empty() {
        writeln!(md, "Not run in this invocation.\n")?;
    } else {
        writeln!(
            md,
            "N socket-bridge instances and Redis, all on the server core; {} users connected to instance B (A itself \
             with one instance); gRPC pushes to one user each, round robin, through instance A. CPU µs per push of \
             each process, less its idle background. Redis: {:?}.\n",
            p.cluster.users, p.cluster.topologies
        )?;
        writeln!(
            md,
            "| topology | instances | pushes/s | delivered/s | p50 | p99 | µs/push sender (A) | holder (B) | each other instance | Redis | total | total ÷ one instance's |"
        )?;
        writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|")?;
        let mut keys: Vec<(String, usize, i64)> =
            r.cluster.iter().map(|c| (c.topology.clone(), c.instances, key(c.rate))).collect();
        keys.sort();
        keys.dedup();
        for (topo, inst, rate) in keys {
            let g = |t: &str, i: usize, h: &dyn Fn(&crate::cluster::ClusterPoint) -> f64| {
                median(
                    r.cluster
                        .iter()
                        .filter(|c| c.topology == t && c.instances == i && key(c.rate) == rate)
                        .map(h)
                        .collect(),
                )
            };
            let total = g(&topo, inst, &|c| c.total_us);
            let one = g(&topo, 1, &|c| c.total_us);
            let others = g(&topo, inst, &|c| {
                if c.others_us.is_empty() {
                    f64::NAN
                } else {
                    c.others_us.iter().sum::<f64>() / c.others_us.len() as f64
                }
            });
            writeln!(
                md,
                "| {topo} | {inst} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                rate_label(rate as f64),
                fmt_num(g(&topo, inst, &|c| c.delivered_per_s)),
                fmt_ms(g(&topo, inst, &|c| c.p50_us as f64)),
                fmt_ms(g(&topo, inst, &|c| c.p99_us as f64)),
                fmt_num(g(&topo, inst, &|c| c.sender_us)),
                if inst > 1 { fmt_num(g(&topo, inst, &|c| c.holder_us)) } else { "(= sender)".into() },
                if inst > 2 { fmt_num(others) } else { "–".into() },
                fmt_num(g(&topo, inst, &|c| c.redis_us)),
                fmt_num(total),
                ratio(total, one),
            )?;
        }
        writeln!(
            md,
            "\nRows with topology `cluster` are a Redis Cluster of three masters with a replica each \
             (`--cluster-topologies single,cluster`); when none are above, that variant was not part of this run \
             (see the analysis below for its separate run).\n"
        )?;
    }

    // ---------- generator check and notes ----------
    writeln!(md, "## Is the generator the bottleneck?\n")?;
    writeln!(md, "Generator CPU (its one core) at each server's highest fan-out point:\n")?;
    writeln!(md, "| server | peak fan-out delivered/s | server CPU there | generator CPU there |")?;
    writeln!(md, "|---|---|---|---|")?;
    for k in full.iter().copied() {
        let best = |x: &RunResult| {
            x.fanout
                .iter()
                .max_by(|a, c| a.delivered_per_s.partial_cmp(&c.delivered_per_s).unwrap_or(std::cmp::Ordering::Equal))
                .cloned()
        };
        writeln!(
            md,
            "| {} | {} | {} | {} |",
            k.name(),
            fmt_num(med(r, k, |x| best(x).map(|pp| pp.delivered_per_s))),
            pct_s(med(r, k, |x| best(x).map(|pp| pp.server_cpu_pct))),
            pct_s(med(r, k, |x| best(x).map(|pp| pp.gen_cpu_pct))),
        )?;
    }
    writeln!(md)?;
    let mut notes: Vec<String> = r
        .runs
        .iter()
        .flat_map(|x| x.notes.iter().map(move |nn| format!("- {} run {}: {nn}", x.server.name(), x.run + 1)))
        .collect();
    notes.extend(r.notes.iter().map(|nn| format!("- {nn}")));
    if !notes.is_empty() {
        writeln!(md, "Notes from the runs:\n\n{}\n", notes.join("\n"))?;
    }
    if let Ok(extra) = std::fs::read_to_string(out.join("ANALYSIS.md")) {
        writeln!(md, "{}", extra.trim_end())?;
        writeln!(md)?;
    }
    std::fs::write(md_path, md)?;
    let _ = s;

    // ---------- plots ----------
    let colors = |k: Kind| match k {
        Kind::Bridge => "#d62728",
        Kind::Sioxide => "#1f77b4",
        Kind::Node => "#2ca02c",
        Kind::NodeFwd => "#98df8a",
        Kind::Floor => "#7f7f7f",
    };
    let series = |f: &dyn Fn(Kind) -> Vec<(f64, f64)>| -> Vec<Series> {
        present
            .iter()
            .map(|&k| Series { name: k.name().into(), color: colors(k).into(), dash: false, points: f(k) })
            .collect()
    };
    let tiers = p.tiers.clone();
    let mem = series(&|k| {
        tiers
            .iter()
            .filter_map(|&t| med(r, k, |x| tier_value(x, t, |tt| tt.kb_per_conn)).map(|v| (t as f64, v)))
            .collect()
    });
    std::fs::write(
        out.join("memory.svg"),
        chart("Idle memory per connection", "connections", "KB per connection", &mem, false, false),
    )?;
    let hsd = series(&|k| {
        tiers
            .iter()
            .filter_map(|&t| med(r, k, |x| tier_value(x, t, |tt| tt.cpu_us_per_handshake)).map(|v| (t as f64, v)))
            .collect()
    });
    std::fs::write(
        out.join("handshake.svg"),
        chart("Server CPU per handshake", "connections", "µs CPU per handshake", &hsd, false, false),
    )?;
    let sweep_room = p.fanout_sweep_room;
    let rates = p.fanout_rates.clone();
    let fan_pts = |k: Kind, f: &dyn Fn(&crate::suite::FanoutPoint) -> f64| -> Vec<(f64, f64)> {
        rates
            .iter()
            .filter_map(|&o| {
                med(r, k, |x| x.fanout.iter().find(|pp| pp.room == sweep_room && key(pp.offered) == key(o)).map(f))
                    .map(|v| (o, v))
            })
            .collect()
    };
    let mut fs = series(&|k| fan_pts(k, &|pp| pp.delivered_per_s));
    fs.push(Series {
        name: "offered".into(),
        color: "#999".into(),
        dash: true,
        points: rates.iter().map(|&o| (o, o)).collect(),
    });
    std::fs::write(
        out.join("fanout.svg"),
        chart(&format!("Room fan-out, room of {sweep_room}"), "offered deliveries/s", "delivered/s", &fs, true, true),
    )?;
    let fc = series(&|k| fan_pts(k, &|pp| pp.cpu_ms_per_1000));
    std::fs::write(
        out.join("fanout_cpu.svg"),
        chart(
            &format!("Server CPU per 1,000 deliveries, room of {sweep_room}"),
            "offered deliveries/s",
            "CPU-ms per 1,000",
            &fc,
            true,
            true,
        ),
    )?;
    let lrates = p.latency_rates.clone();
    let mut ls = series(&|k| {
        lrates
            .iter()
            .filter_map(|&x| {
                med(r, k, |y| latency_at(y, x, door_default(k)).map(|pp| pp.p99_us as f64 / 1000.0)).map(|v| (x, v))
            })
            .collect()
    });
    for sr in ls.iter_mut() {
        sr.name = format!("{} p99", sr.name);
    }
    let mut l50 = series(&|k| {
        lrates
            .iter()
            .filter_map(|&x| {
                med(r, k, |y| latency_at(y, x, door_default(k)).map(|pp| pp.p50_us as f64 / 1000.0)).map(|v| (x, v))
            })
            .collect()
    });
    for sr in l50.iter_mut() {
        sr.name = format!("{} p50", sr.name);
        sr.dash = true;
    }
    ls.extend(l50);
    std::fs::write(out.join("latency.svg"), chart("One-to-one push latency", "pushes/s", "ms (log)", &ls, true, true))?;
    let rrates = p.rtt_rates.clone();
    let rs = series(&|k| {
        rrates
            .iter()
            .filter_map(|&x| {
                med(r, k, |y| y.rtt.iter().find(|pp| key(pp.rate) == key(x)).map(|pp| pp.p99_us as f64 / 1000.0))
                    .map(|v| (x, v))
            })
            .collect()
    });
    std::fs::write(
        out.join("rtt.svg"),
        chart("Client event → ack round trip, p99", "events/s offered", "ms (log)", &rs, true, true),
    )?;
    Ok(())
}

pub struct Series {
    pub name: String,
    pub color: String,
    pub dash: bool,
    pub points: Vec<(f64, f64)>,
}

fn nice_ticks(lo: f64, hi: f64, log: bool) -> Vec<f64> {
    if log {
        let mut t = Vec::new();
        let mut d = 10f64.powf(lo.log10().floor());
        while d <= hi * 1.0001 {
            for m in [1.0, 2.0, 5.0] {
                let v = d * m;
                if v >= lo * 0.9999 && v <= hi * 1.0001 {
                    t.push(v);
                }
            }
            d *= 10.0;
        }
        t
    } else {
        let span = (hi - lo).max(1e-9);
        let raw = span / 5.0;
        let mag = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| span / s <= 6.0).unwrap_or(mag * 10.0);
        let mut v = (lo / step).ceil() * step;
        let mut t = Vec::new();
        while v <= hi + 1e-9 {
            t.push(v);
            v += step;
        }
        t
    }
}

fn tick_label(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{}k", v / 1e3)
    } else if v >= 1.0 || v == 0.0 {
        format!("{v}")
    } else {
        format!("{v:.2}")
    }
}

/// A small line chart as SVG.
pub fn chart(title: &str, xl: &str, yl: &str, series: &[Series], log_x: bool, log_y: bool) -> String {
    let (w, h) = (640.0, 400.0);
    let (ml, mr, mt, mb) = (70.0, 170.0, 40.0, 50.0);
    let pts: Vec<(f64, f64)> =
        series.iter().flat_map(|s| s.points.iter().copied()).filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
        (ml + w - mr) / 2.0,
        esc(title)
    );
    if pts.is_empty() {
        svg.push_str("<text x=\"200\" y=\"200\">no data</text></svg>\n");
        return svg;
    }
    let fx = |v: f64| if log_x { v.max(1e-9).log10() } else { v };
    let fy = |v: f64| if log_y { v.max(1e-9).log10() } else { v };
    let (mut x0, mut x1) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (mut y0, mut y1) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    if !log_y {
        y0 = 0.0;
        y1 *= 1.1;
    } else {
        y0 = y0.max(1e-3) / 1.5;
        y1 *= 1.5;
    }
    if !log_x {
        x0 = 0.0;
        x1 *= 1.05;
    } else {
        x0 /= 1.2;
        x1 *= 1.2;
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    let px = |v: f64| ml + (fx(v) - fx(x0)) / (fx(x1) - fx(x0)) * (w - ml - mr);
    let py = |v: f64| h - mb - (fy(v) - fy(y0)) / (fy(y1) - fy(y0)) * (h - mt - mb);
    let _ = writeln!(
        svg,
        "<rect x=\"{ml}\" y=\"{mt}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#333\"/>",
        w - ml - mr,
        h - mt - mb
    );
    for t in nice_ticks(y0, y1, log_y) {
        let y = py(t);
        let _ = writeln!(
            svg,
            "<line x1=\"{ml}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            w - mr,
            ml - 5.0,
            y + 4.0,
            tick_label(t)
        );
    }
    let xticks = if log_x {
        let mut xs: Vec<f64> = pts.iter().map(|p| p.0).collect();
        xs.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        xs.dedup();
        xs
    } else {
        nice_ticks(x0, x1, false)
    };
    for t in xticks {
        let x = px(t);
        let _ = writeln!(
            svg,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{mt}\" y2=\"{}\" stroke=\"#eee\"/><text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            h - mb,
            h - mb + 16.0,
            tick_label(t)
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
        (ml + w - mr) / 2.0,
        h - 12.0,
        esc(xl)
    );
    let _ = writeln!(
        svg,
        "<text transform=\"translate(16,{}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        (mt + h - mb) / 2.0,
        esc(yl)
    );
    for (i, s) in series.iter().enumerate() {
        let path: Vec<String> = s.points.iter().map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y))).collect();
        let dash = if s.dash { " stroke-dasharray=\"5,4\"" } else { "" };
        if !path.is_empty() {
            let _ = writeln!(
                svg,
                "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{dash} points=\"{}\"/>",
                s.color,
                path.join(" ")
            );
            for &(x, y) in &s.points {
                let _ = writeln!(svg, "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{}\"/>", px(x), py(y), s.color);
            }
        }
        let ly = mt + 10.0 + i as f64 * 18.0;
        let lx = w - mr + 10.0;
        let _ = writeln!(
            svg,
            "<line x1=\"{lx}\" x2=\"{}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{}\" stroke-width=\"2\"{dash}/><text x=\"{}\" y=\"{}\">{}</text>",
            lx + 20.0,
            s.color,
            lx + 25.0,
            ly + 4.0,
            esc(&s.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
