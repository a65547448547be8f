//! The client side of the load generator: thousands of raw Engine.IO v4 / Socket.IO v5
//! websocket clients driven by one `mio` event loop on its own thread.
//!
//! Why not tokio + tungstenite: at a few hundred thousand deliveries a second every
//! wakeup and allocation on the generator core counts. Here a delivery costs one
//! `read(2)` (often less: frames that arrive together are parsed from one read) and no
//! allocation; writes are one `write(2)` per frame (pongs, client events).
//!
//! What a client does: `GET /socket.io/?EIO=4&transport=websocket` upgrade, waits for the
//! Engine.IO open packet `0{...}`, sends `40{"userId":"u<i>"}`, waits for `40{"sid":..}`.
//! Then it answers pings (`2` → `3`), counts events (`42[...]`), records push latency from
//! the `"t":<ns>` field that the backend put in the payload (the intended send time), and
//! records the round trip of its own client events, whose ack id is their intended send
//! time in ns (so an ack `43<id>[...]` needs no lookup).

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use tokio::sync::oneshot;

use crate::clock;

const WAKER: Token = Token(usize::MAX);
const TIMER: Token = Token(usize::MAX - 1);
const READ_BUF: usize = 256 * 1024;

/// Counters the control side may read at any time.
#[derive(Default)]
pub struct Counters {
    pub open: AtomicU64,
    pub events: AtomicU64,
    pub acks: AtomicU64,
    pub ack_errors: AtomicU64,
    pub pongs: AtomicU64,
    pub connect_errors: AtomicU64,
    pub closed: AtomicU64,
    pub emitted: AtomicU64,
    pub emit_blocked: AtomicU64,
}

/// Latency figures in microseconds.
pub struct Stats {
    pub push_latency: Histogram<u64>,
    pub rtt: Histogram<u64>,
    /// TCP connect start to the Socket.IO CONNECT answer (`40{"sid":..}`), per connection.
    pub connect: Histogram<u64>,
}

pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

#[derive(Debug, Clone)]
pub struct ConnectReport {
    #[allow(dead_code)]
    pub opened: usize,
    pub failed: usize,
    pub elapsed: Duration,
}

enum Cmd {
    Connect {
        target: SocketAddr,
        upto: usize,
        inflight: usize,
        deadline: Instant,
        salt: u8,
        reply: oneshot::Sender<ConnectReport>,
    },
    /// Client events with acks at `rate` per second for `duration`, round robin over the
    /// open sockets.
    Emit {
        rate: f64,
        duration: Duration,
        soak: bool,
        reply: oneshot::Sender<()>,
    },
    /// What new connections send as their handshake `auth` (None: `{"userId":"u<i>"}`).
    SetAuth {
        auth: Option<AuthFn>,
    },
    /// Starts counting soak deliveries and acks per (client, sequence number).
    SoakStart {
        rooms: u32,
    },
    SoakTake {
        reply: oneshot::Sender<Option<Box<SoakRx>>>,
    },
    TakeStats {
        reply: oneshot::Sender<Stats>,
    },
    CloseAll {
        reply: oneshot::Sender<()>,
    },
    Stop,
    /// User indices of the sockets open now.
    OpenUsers {
        reply: oneshot::Sender<Vec<u32>>,
    },
}

/// Builds the handshake `auth` object (JSON text) of user `i`.
pub type AuthFn = Arc<dyn Fn(u32) -> String + Send + Sync>;

/// Sequence numbers above this are treated as garbled (bounds the bitmaps).
const MAX_SEQ: u64 = 1 << 28;

/// Marks bit `i`; false when it was already set (a duplicate), None when `i` is absurd.
pub(crate) fn test_set(bits: &mut Vec<u64>, i: u64) -> Option<bool> {
    if i >= MAX_SEQ {
        return None;
    }
    let w = (i / 64) as usize;
    if w >= bits.len() {
        bits.resize((w + 1).next_power_of_two(), 0);
    }
    let m = 1u64 << (i % 64);
    let new = bits[w] & m == 0;
    bits[w] |= m;
    Some(new)
}

/// What the soak's clients received, counted per (client, sequence number), so a
/// duplicate or a delivery to the wrong client never passes for a received message.
///
/// - user pushes `42["soak",{"s":S,"u":U,"t":T}]`: one bit per S (each S has one recipient,
///   user U; arriving anywhere else counts as misrouted);
/// - room pushes `42["soak",{"r":R,"g":G,"t":T}]`: one bit per (client, R); the client must be
///   in room G (user i is in room i % rooms);
/// - acks of the client's own events `43<N>[{"n":N,...}]` (the backend echoes the event's
///   argument): one bit per N; an answer whose N differs from the ack id is a mismatch.
pub struct SoakRx {
    pub rooms: u32,
    pub user_rx: u64,
    pub user_dup: u64,
    pub user_misrouted: u64,
    pub room_rx: u64,
    pub room_dup: u64,
    pub room_misrouted: u64,
    pub acks_ok: u64,
    pub ack_dup: u64,
    pub ack_mismatch: u64,
    pub ack_errors: u64,
    pub ack_error_codes: BTreeMap<String, u64>,
    /// Events other than `soak` (e.g. `bridge:disconnect`), and frames that did not parse.
    pub other_events: u64,
    pub garbled: u64,
    /// Intended send time to receipt, µs: user pushes, room pushes (the last member of a
    /// room gets it after the whole room was written), acks.
    pub push_latency: Histogram<u64>,
    pub room_latency: Histogram<u64>,
    pub rtt: Histogram<u64>,
    user_bits: Vec<u64>,
    ack_bits: Vec<u64>,
    room_bits: Vec<Vec<u64>>,
}

impl SoakRx {
    fn new(rooms: u32) -> Self {
        Self {
            rooms: rooms.max(1),
            user_rx: 0,
            user_dup: 0,
            user_misrouted: 0,
            room_rx: 0,
            room_dup: 0,
            room_misrouted: 0,
            acks_ok: 0,
            ack_dup: 0,
            ack_mismatch: 0,
            ack_errors: 0,
            ack_error_codes: BTreeMap::new(),
            other_events: 0,
            garbled: 0,
            push_latency: new_hist(),
            room_latency: new_hist(),
            rtt: new_hist(),
            user_bits: Vec::new(),
            ack_bits: Vec::new(),
            room_bits: Vec::new(),
        }
    }

    fn field(p: &[u8], name: &[u8]) -> Option<u64> {
        find(p, name).and_then(|i| parse_u64(&p[i + name.len()..]))
    }

    fn latency(h: &mut Histogram<u64>, p: &[u8]) {
        if let Some(t) = Self::field(p, b"\"t\":") {
            let _ = h.record((clock::now_ns().saturating_sub(t) / 1000).max(1));
        }
    }

    /// `p` is an event packet `42[...]` that reached `user`.
    fn on_event(&mut self, user: u32, p: &[u8]) {
        if !p.starts_with(b"42[\"soak\",") {
            self.other_events += 1;
            return;
        }
        if let Some(s) = Self::field(p, b"\"s\":") {
            if Self::field(p, b"\"u\":") != Some(u64::from(user)) {
                self.user_misrouted += 1;
                return;
            }
            match test_set(&mut self.user_bits, s) {
                Some(true) => self.user_rx += 1,
                Some(false) => self.user_dup += 1,
                None => self.garbled += 1,
            }
            Self::latency(&mut self.push_latency, p);
        } else if let Some(r) = Self::field(p, b"\"r\":") {
            if Self::field(p, b"\"g\":") != Some(u64::from(user % self.rooms)) {
                self.room_misrouted += 1;
                return;
            }
            let u = user as usize;
            if u >= self.room_bits.len() {
                self.room_bits.resize_with(u + 1, Vec::new);
            }
            match test_set(&mut self.room_bits[u], r) {
                Some(true) => self.room_rx += 1,
                Some(false) => self.room_dup += 1,
                None => self.garbled += 1,
            }
            Self::latency(&mut self.room_latency, p);
        } else {
            self.garbled += 1;
        }
    }

    /// `p` is an ack packet `43<id>[...]`.
    fn on_ack(&mut self, p: &[u8]) {
        let Some(id) = parse_u64(&p[2..]) else {
            self.garbled += 1;
            return;
        };
        if let Some(i) = find(p, b"\"error\"") {
            self.ack_errors += 1;
            let code = find(&p[i..], b"\"code\":\"")
                .map(|j| {
                    let rest = &p[i + j + 8..];
                    let end = rest.iter().position(|&b| b == b'"').unwrap_or(rest.len()).min(64);
                    String::from_utf8_lossy(&rest[..end]).into_owned()
                })
                .unwrap_or_else(|| "?".into());
            *self.ack_error_codes.entry(code).or_default() += 1;
            return;
        }
        if Self::field(p, b"\"n\":") != Some(id) {
            self.ack_mismatch += 1;
            return;
        }
        match test_set(&mut self.ack_bits, id) {
            Some(true) => self.acks_ok += 1,
            Some(false) => self.ack_dup += 1,
            None => self.garbled += 1,
        }
        Self::latency(&mut self.rtt, p);
    }
}

pub struct Engine {
    tx: mpsc::Sender<Cmd>,
    waker: Arc<Waker>,
    pub counters: Arc<Counters>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Engine {
    pub fn start() -> anyhow::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = mpsc::channel();
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let thread = std::thread::Builder::new().name("clients".into()).spawn(move || {
            let mut lp = Loop::new(poll, rx, c);
            lp.run();
        })?;
        Ok(Self { tx, waker, counters, thread: Some(thread) })
    }

    fn send(&self, cmd: Cmd) {
        let _ = self.tx.send(cmd);
        let _ = self.waker.wake();
    }

    /// Opens connections until `upto` are open (or have failed), at most `inflight`
    /// handshakes at a time.
    pub async fn connect(
        &self,
        target: SocketAddr,
        upto: usize,
        inflight: usize,
        limit: Duration,
        salt: u8,
    ) -> ConnectReport {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Connect { target, upto, inflight, deadline: Instant::now() + limit, salt, reply });
        rx.await.unwrap_or(ConnectReport { opened: 0, failed: upto, elapsed: limit })
    }

    pub async fn emit(&self, rate: f64, duration: Duration) {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Emit { rate, duration, soak: false, reply });
        let _ = rx.await;
    }

    /// Soak client events: `42<N>["soak",{"n":N,"u":<user>,"t":<intended ns>}]` with a
    /// global sequence number N (from 0) as the ack id, round robin over the open sockets.
    pub async fn emit_soak(&self, rate: f64, duration: Duration) {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Emit { rate, duration, soak: true, reply });
        let _ = rx.await;
    }

    /// Sets the handshake `auth` of the connections opened from now on.
    pub fn set_auth(&self, auth: Option<AuthFn>) {
        self.send(Cmd::SetAuth { auth });
    }

    pub fn soak_start(&self, rooms: u32) {
        self.send(Cmd::SoakStart { rooms });
    }

    /// Ends soak counting and returns what was counted.
    pub async fn soak_take(&self) -> Option<Box<SoakRx>> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::SoakTake { reply });
        rx.await.ok().flatten()
    }

    /// Returns the histograms gathered since the last call and starts new ones.
    pub async fn take_stats(&self) -> Stats {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::TakeStats { reply });
        rx.await.unwrap_or_else(|_| Stats { push_latency: new_hist(), rtt: new_hist(), connect: new_hist() })
    }

    /// User indices (`u<i>`) of the connections open now, in the order they opened.
    pub async fn open_users(&self) -> Vec<u32> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::OpenUsers { reply });
        rx.await.unwrap_or_default()
    }

    pub async fn close_all(&self) {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::CloseAll { reply });
        let _ = rx.await;
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.send(Cmd::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(PartialEq, Eq, Clone, Copy, Debug)]
enum State {
    Connecting,
    WaitUpgrade,
    WaitOpen,
    WaitConnect,
    Open,
    Closed,
}

struct Conn {
    sock: TcpStream,
    state: State,
    user: u32,
    /// When the TCP connect began (clock ns).
    started_ns: u64,
    /// Bytes of a frame (or of the HTTP answer) that arrived incomplete.
    rbuf: Vec<u8>,
    /// Bytes the kernel did not take yet.
    wbuf: Vec<u8>,
    want_write: bool,
}

struct ConnectJob {
    target: SocketAddr,
    upto: usize,
    inflight: usize,
    deadline: Instant,
    salt: u8,
    started_at: Instant,
    pending: usize,
    opened: usize,
    failed: usize,
    reply: Option<oneshot::Sender<ConnectReport>>,
}

struct EmitJob {
    rate: f64,
    soak: bool,
    t0_ns: u64,
    end_ns: u64,
    k: u64,
    cursor: usize,
    reply: Option<oneshot::Sender<()>>,
}

struct Loop {
    poll: Poll,
    rx: mpsc::Receiver<Cmd>,
    counters: Arc<Counters>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Tokens of open sockets, in the order they opened.
    open_list: Vec<usize>,
    next_user: u32,
    connect: Option<ConnectJob>,
    emit: Option<EmitJob>,
    push_latency: Histogram<u64>,
    rtt: Histogram<u64>,
    connect_latency: Histogram<u64>,
    buf: Vec<u8>,
    out: Vec<u8>,
    stop: bool,
    /// timerfd for sub-millisecond emit pacing (epoll timeouts are whole milliseconds).
    timer: std::os::fd::OwnedFd,
    auth: Option<AuthFn>,
    soak: Option<Box<SoakRx>>,
}

impl Loop {
    fn new(poll: Poll, rx: mpsc::Receiver<Cmd>, counters: Arc<Counters>) -> Self {
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: timerfd_create returns a new fd that we own.
        let timer = unsafe {
            std::os::fd::OwnedFd::from_raw_fd(libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            ))
        };
        let _ = poll.registry().register(&mut mio::unix::SourceFd(&timer.as_raw_fd()), TIMER, Interest::READABLE);
        Self {
            poll,
            rx,
            counters,
            conns: Vec::new(),
            free: Vec::new(),
            open_list: Vec::new(),
            next_user: 0,
            connect: None,
            emit: None,
            push_latency: new_hist(),
            rtt: new_hist(),
            connect_latency: new_hist(),
            buf: vec![0; READ_BUF],
            out: Vec::with_capacity(256),
            stop: false,
            timer,
            auth: None,
            soak: None,
        }
    }

    /// Arms the timer to fire in `ns` nanoseconds (at least 50 µs).
    fn arm(&self, ns: u64) {
        use std::os::fd::AsRawFd;
        let ns = ns.max(50_000);
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec { tv_sec: (ns / 1_000_000_000) as i64, tv_nsec: (ns % 1_000_000_000) as i64 },
        };
        // SAFETY: valid timerfd and spec.
        unsafe {
            libc::timerfd_settime(self.timer.as_raw_fd(), 0, &spec, std::ptr::null_mut());
        }
    }

    fn clear_timer(&self) {
        use std::os::fd::AsRawFd;
        let mut b = [0u8; 8];
        // SAFETY: reading 8 bytes into our buffer from a non-blocking timerfd.
        unsafe {
            libc::read(self.timer.as_raw_fd(), b.as_mut_ptr().cast(), 8);
        }
    }

    fn run(&mut self) {
        let mut events = Events::with_capacity(4096);
        while !self.stop {
            let timeout = self.timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != ErrorKind::Interrupted
            {
                eprintln!("clients: poll failed: {e}");
                return;
            }
            for ev in events.iter() {
                let token = ev.token();
                if token == WAKER {
                    continue;
                }
                if token == TIMER {
                    self.clear_timer();
                    continue;
                }
                if ev.is_writable() {
                    self.on_writable(token.0);
                }
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    self.on_readable(token.0);
                }
            }
            self.commands();
            self.drive_connect();
            self.drive_emit();
        }
    }

    fn timeout(&self) -> Option<Duration> {
        let mut t = Duration::from_millis(200);
        if self.connect.is_some() {
            t = t.min(Duration::from_millis(20));
        }
        Some(t)
    }

    fn commands(&mut self) {
        while let Ok(cmd) = self.rx.try_recv() {
            match cmd {
                Cmd::Connect { target, upto, inflight, deadline, salt, reply } => {
                    self.connect = Some(ConnectJob {
                        target,
                        upto,
                        inflight,
                        deadline,
                        salt,
                        started_at: Instant::now(),
                        pending: 0,
                        opened: 0,
                        failed: 0,
                        reply: Some(reply),
                    });
                }
                Cmd::Emit { rate, duration, soak, reply } => {
                    let t0 = clock::now_ns();
                    self.emit = Some(EmitJob {
                        rate,
                        soak,
                        t0_ns: t0,
                        end_ns: t0 + duration.as_nanos() as u64,
                        k: 0,
                        cursor: 0,
                        reply: Some(reply),
                    });
                }
                Cmd::TakeStats { reply } => {
                    let stats = Stats {
                        push_latency: std::mem::replace(&mut self.push_latency, new_hist()),
                        rtt: std::mem::replace(&mut self.rtt, new_hist()),
                        connect: std::mem::replace(&mut self.connect_latency, new_hist()),
                    };
                    let _ = reply.send(stats);
                }
                Cmd::OpenUsers { reply } => {
                    let users = self
                        .open_list
                        .iter()
                        .filter_map(|&i| self.conns.get(i).and_then(|c| c.as_ref()).map(|c| c.user))
                        .collect();
                    let _ = reply.send(users);
                }
                Cmd::CloseAll { reply } => {
                    for slot in self.conns.iter_mut() {
                        if let Some(c) = slot.take() {
                            let _ = self.poll.registry().deregister(&mut { c.sock });
                        }
                    }
                    self.conns.clear();
                    self.free.clear();
                    self.open_list.clear();
                    self.counters.open.store(0, Ordering::Relaxed);
                    self.next_user = 0;
                    let _ = reply.send(());
                }
                Cmd::SetAuth { auth } => self.auth = auth,
                Cmd::SoakStart { rooms } => self.soak = Some(Box::new(SoakRx::new(rooms))),
                Cmd::SoakTake { reply } => {
                    let _ = reply.send(self.soak.take());
                }
                Cmd::Stop => self.stop = true,
            }
        }
    }

    fn drive_connect(&mut self) {
        let Some(job) = self.connect.as_mut() else { return };
        let now = Instant::now();
        let done_count = self.open_list.len() + job.failed;
        if done_count >= job.upto && job.pending == 0 || now >= job.deadline {
            let report = ConnectReport { opened: job.opened, failed: job.failed, elapsed: job.started_at.elapsed() };
            if let Some(r) = job.reply.take() {
                let _ = r.send(report);
            }
            self.connect = None;
            return;
        }
        while job.pending < job.inflight && self.open_list.len() + job.pending + job.failed < job.upto {
            let user = self.next_user;
            self.next_user += 1;
            let (target, salt) = (job.target, job.salt);
            match open_socket(target, user, salt) {
                Ok(sock) => {
                    let mut conn = Conn {
                        sock,
                        state: State::Connecting,
                        user,
                        started_ns: clock::now_ns(),
                        rbuf: Vec::new(),
                        wbuf: Vec::new(),
                        want_write: true,
                    };
                    let idx = self.free.pop().unwrap_or_else(|| {
                        self.conns.push(None);
                        self.conns.len() - 1
                    });
                    if self
                        .poll
                        .registry()
                        .register(&mut conn.sock, Token(idx), Interest::READABLE | Interest::WRITABLE)
                        .is_err()
                    {
                        job.failed += 1;
                        self.free.push(idx);
                        continue;
                    }
                    self.conns[idx] = Some(conn);
                    job.pending += 1;
                }
                Err(e) => {
                    if job.failed < 3 {
                        eprintln!("clients: connect failed: {e}");
                    }
                    job.failed += 1;
                    self.counters.connect_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn drive_emit(&mut self) {
        let Some(job) = self.emit.as_mut() else { return };
        let now = clock::now_ns();
        if now >= job.end_ns || self.open_list.is_empty() {
            if let Some(r) = job.reply.take() {
                let _ = r.send(());
            }
            self.emit = None;
            return;
        }
        let interval = 1e9 / job.rate;
        let arm_in;
        loop {
            let due = job.t0_ns + (job.k as f64 * interval) as u64;
            if due >= job.end_ns {
                arm_in = job.end_ns.saturating_sub(now);
                break;
            }
            if due > now {
                // Wake for the next one; batches of at most ~100 µs of sends.
                arm_in = (due - now).max(100_000);
                break;
            }
            let seq = job.k;
            job.k += 1;
            let idx = self.open_list[job.cursor % self.open_list.len()];
            job.cursor += 1;
            self.out.clear();
            if job.soak {
                // 42<seq>["soak",{"n":seq,"u":user,"t":due}]: the backend echoes the argument.
                let user = self.conns.get(idx).and_then(|c| c.as_ref()).map_or(0, |c| c.user);
                let _ = write!(&mut self.out, "42{seq}[\"soak\",{{\"n\":{seq},\"u\":{user},\"t\":{due}}}]");
            } else {
                // 42<ack id>["bench",{"n":k}] where the ack id is the intended send time.
                let _ = write!(&mut self.out, "42{due}[\"bench\",{{\"n\":{}}}]", job.k);
            }
            let frame = ws_frame(&self.out);
            if let Some(Some(conn)) = self.conns.get_mut(idx)
                && conn.state == State::Open
            {
                if !conn.wbuf.is_empty() {
                    self.counters.emit_blocked.fetch_add(1, Ordering::Relaxed);
                }
                write_or_queue(&self.poll, Token(idx), conn, &frame);
                self.counters.emitted.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.arm(arm_in);
    }

    fn on_writable(&mut self, idx: usize) {
        let Some(Some(conn)) = self.conns.get_mut(idx) else { return };
        if conn.state == State::Connecting {
            match conn.sock.take_error() {
                Ok(None) => {}
                _ => return self.fail(idx),
            }
            if conn.sock.peer_addr().is_err() {
                // Not connected yet (spurious wakeup).
                return;
            }
            conn.state = State::WaitUpgrade;
            let _ = conn.sock.set_nodelay(true);
            let req = b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nUser-Agent: socket-bridge-bench\r\n\r\n";
            conn.want_write = false;
            let _ = self.poll.registry().reregister(&mut conn.sock, Token(idx), Interest::READABLE);
            write_or_queue(&self.poll, Token(idx), conn, req);
            return;
        }
        if !conn.wbuf.is_empty() {
            let pending = std::mem::take(&mut conn.wbuf);
            conn.want_write = false;
            let _ = self.poll.registry().reregister(&mut conn.sock, Token(idx), Interest::READABLE);
            write_or_queue(&self.poll, Token(idx), conn, &pending);
        }
    }

    fn fail(&mut self, idx: usize) {
        if let Some(Some(conn)) = self.conns.get_mut(idx) {
            let was = conn.state;
            conn.state = State::Closed;
            let _ = self.poll.registry().deregister(&mut conn.sock);
            if was == State::Open {
                self.counters.open.fetch_sub(1, Ordering::Relaxed);
                self.open_list.retain(|&i| i != idx);
                self.counters.closed.fetch_add(1, Ordering::Relaxed);
            } else if let Some(job) = self.connect.as_mut() {
                job.pending = job.pending.saturating_sub(1);
                job.failed += 1;
                self.counters.connect_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.conns[idx] = None;
        self.free.push(idx);
    }

    fn on_readable(&mut self, idx: usize) {
        loop {
            let Some(Some(conn)) = self.conns.get_mut(idx) else { return };
            if conn.state == State::Connecting {
                return;
            }
            let n = match conn.sock.read(&mut self.buf) {
                Ok(0) => return self.fail(idx),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return self.fail(idx),
            };
            let full = n == self.buf.len();
            // Parse straight from the shared buffer when no leftovers wait, else from the
            // leftovers plus this read; keep what is incomplete.
            let mut data = std::mem::take(&mut conn.rbuf);
            let buf = std::mem::take(&mut self.buf);
            let ok = if data.is_empty() {
                let (consumed, ok) = self.process(idx, &buf[..n]);
                if ok && consumed < n {
                    data.extend_from_slice(&buf[consumed..n]);
                }
                ok
            } else {
                data.extend_from_slice(&buf[..n]);
                let (consumed, ok) = self.process(idx, &data);
                data.drain(..consumed);
                ok
            };
            self.buf = buf;
            if !ok {
                return self.fail(idx);
            }
            if let Some(Some(conn)) = self.conns.get_mut(idx) {
                conn.rbuf = data;
            }
            // Edge-triggered: a short read emptied the socket; new data wakes us again.
            if !full {
                return;
            }
        }
    }

    /// Parses what arrived; returns (bytes consumed, connection still good).
    fn process(&mut self, idx: usize, bytes: &[u8]) -> (usize, bool) {
        let len = bytes.len();
        let mut pos = 0;
        let Some(Some(conn)) = self.conns.get_mut(idx) else { return (len, false) };
        if conn.state == State::WaitUpgrade {
            let Some(end) = find(bytes, b"\r\n\r\n") else { return (0, true) };
            if !bytes.starts_with(b"HTTP/1.1 101") {
                return (len, false);
            }
            conn.state = State::WaitOpen;
            pos = end + 4;
        }
        let mut to_send: Vec<Vec<u8>> = Vec::new();
        let mut became_open = false;
        let mut closed = false;
        while let Some((opcode, payload_start, payload_len)) = parse_frame(&bytes[pos..]) {
            let payload = &bytes[pos + payload_start..pos + payload_start + payload_len];
            pos += payload_start + payload_len;
            match opcode {
                0x1 => match self.on_text(idx, payload) {
                    Reply::None => {}
                    Reply::Send(b) => to_send.push(b),
                    Reply::Opened => became_open = true,
                    Reply::Close => closed = true,
                },
                0x2 | 0x0 | 0xA => {}
                0x8 => closed = true,
                0x9 => to_send.push(ws_frame_op(0xA, payload)),
                _ => closed = true,
            }
            if closed {
                break;
            }
        }
        let Some(Some(conn)) = self.conns.get_mut(idx) else { return (len, false) };
        for frame in &to_send {
            write_or_queue(&self.poll, Token(idx), conn, frame);
        }
        if became_open {
            conn.state = State::Open;
            let us = clock::now_ns().saturating_sub(conn.started_ns) / 1000;
            let _ = self.connect_latency.record(us.max(1));
            self.open_list.push(idx);
            self.counters.open.fetch_add(1, Ordering::Relaxed);
            if let Some(job) = self.connect.as_mut() {
                job.pending = job.pending.saturating_sub(1);
                job.opened += 1;
            }
        }
        (pos, !closed)
    }

    fn on_text(&mut self, idx: usize, p: &[u8]) -> Reply {
        let Some(Some(conn)) = self.conns.get_mut(idx) else { return Reply::Close };
        match p.first() {
            Some(b'2') if p.len() == 1 => {
                self.counters.pongs.fetch_add(1, Ordering::Relaxed);
                Reply::Send(ws_frame(b"3"))
            }
            Some(b'0') if conn.state == State::WaitOpen => {
                conn.state = State::WaitConnect;
                let auth = match &self.auth {
                    Some(f) => format!("40{}", f(conn.user)),
                    None => format!("40{{\"userId\":\"u{}\"}}", conn.user),
                };
                Reply::Send(ws_frame(auth.as_bytes()))
            }
            Some(b'4') if self.soak.is_some() && matches!(p.get(1), Some(b'2' | b'3')) => {
                let user = conn.user;
                let soak = self.soak.as_mut().expect("checked");
                if p[1] == b'2' {
                    self.counters.events.fetch_add(1, Ordering::Relaxed);
                    soak.on_event(user, p);
                } else {
                    self.counters.acks.fetch_add(1, Ordering::Relaxed);
                    if find(p, b"\"error\"").is_some() {
                        self.counters.ack_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    soak.on_ack(p);
                }
                Reply::None
            }
            Some(b'4') => match p.get(1) {
                Some(b'2') => {
                    self.counters.events.fetch_add(1, Ordering::Relaxed);
                    if let Some(t) = find(p, b"\"t\":").and_then(|i| parse_u64(&p[i + 4..])) {
                        let now = clock::now_ns();
                        let us = now.saturating_sub(t) / 1000;
                        let _ = self.push_latency.record(us.max(1));
                    }
                    Reply::None
                }
                Some(b'3') => {
                    self.counters.acks.fetch_add(1, Ordering::Relaxed);
                    if find(p, b"\"error\"").is_some() {
                        self.counters.ack_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(t) = parse_u64(&p[2..]) {
                        let us = clock::now_ns().saturating_sub(t) / 1000;
                        let _ = self.rtt.record(us.max(1));
                    }
                    Reply::None
                }
                Some(b'0') if conn.state == State::WaitConnect => Reply::Opened,
                Some(b'4') => {
                    if conn.state == State::WaitConnect {
                        eprintln!("clients: connect_error {}", String::from_utf8_lossy(p));
                    }
                    Reply::Close
                }
                Some(b'1') => Reply::Close,
                _ => Reply::None,
            },
            Some(b'1') => Reply::Close,
            _ => Reply::None,
        }
    }
}

enum Reply {
    None,
    Send(Vec<u8>),
    Opened,
    Close,
}

fn write_or_queue(poll: &Poll, token: Token, conn: &mut Conn, frame: &[u8]) {
    if !conn.wbuf.is_empty() {
        conn.wbuf.extend_from_slice(frame);
        return;
    }
    let mut off = 0;
    while off < frame.len() {
        match conn.sock.write(&frame[off..]) {
            Ok(n) => off += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if off < frame.len() {
        conn.wbuf.extend_from_slice(&frame[off..]);
        if !conn.want_write {
            conn.want_write = true;
            let _ = poll.registry().reregister(&mut conn.sock, token, Interest::READABLE | Interest::WRITABLE);
        }
    }
}

/// Source address for connection `user`: spread over 127.<1+salt>.x.y so no source
/// address needs more than a handful of ephemeral ports, run after run.
fn source_addr(user: u32, salt: u8) -> Ipv4Addr {
    let x = 1 + (user / 250) % 250;
    let y = 1 + user % 250;
    Ipv4Addr::new(127, 1 + salt % 200, x as u8, y as u8)
}

fn open_socket(target: SocketAddr, user: u32, salt: u8) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_nonblocking(true)?;
    s.bind(&SockAddr::from(SocketAddrV4::new(source_addr(user, salt), 0)))?;
    match s.connect(&SockAddr::from(target)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let std: std::net::TcpStream = s.into();
    Ok(TcpStream::from_std(std))
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub(crate) fn parse_u64(p: &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    let mut any = false;
    for &b in p {
        if b.is_ascii_digit() {
            v = v.wrapping_mul(10).wrapping_add(u64::from(b - b'0'));
            any = true;
        } else {
            break;
        }
    }
    any.then_some(v)
}

/// (opcode, payload offset, payload length) of the first complete frame.
fn parse_frame(b: &[u8]) -> Option<(u8, usize, usize)> {
    if b.len() < 2 {
        return None;
    }
    let opcode = b[0] & 0x0F;
    let masked = b[1] & 0x80 != 0;
    let (len, mut off) = match b[1] & 0x7F {
        126 => {
            if b.len() < 4 {
                return None;
            }
            (u16::from_be_bytes([b[2], b[3]]) as usize, 4)
        }
        127 => {
            if b.len() < 10 {
                return None;
            }
            (u64::from_be_bytes(b[2..10].try_into().ok()?) as usize, 10)
        }
        n => (n as usize, 2),
    };
    if masked {
        off += 4; // servers never mask; tolerated and left unmasked (only counted)
    }
    if b.len() < off + len {
        return None;
    }
    Some((opcode, off, len))
}

/// A masked text frame (mask key 0, which leaves the payload as is; RFC 6455 only requires
/// the mask bit from clients).
pub fn ws_frame(payload: &[u8]) -> Vec<u8> {
    ws_frame_op(0x1, payload)
}

fn ws_frame_op(op: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 14);
    f.push(0x80 | op);
    let n = payload.len();
    if n < 126 {
        f.push(0x80 | n as u8);
    } else if n < 65536 {
        f.push(0x80 | 126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let f = ws_frame(b"42[\"a\"]");
        assert_eq!(parse_frame(&f), Some((1, 6, 7)));
        assert_eq!(parse_frame(&f[..5]), None);
        assert_eq!(parse_u64(b"123[\"x\"]"), Some(123));
    }

    #[test]
    fn soak_counts_each_message_once_and_only_where_it_belongs() {
        let mut rx = SoakRx::new(4);
        // User pushes: user 5 gets #10 twice (one duplicate); #11 for user 5 arrives at user 6.
        rx.on_event(5, br#"42["soak",{"s":10,"u":5,"t":1}]"#);
        rx.on_event(5, br#"42["soak",{"s":10,"u":5,"t":1}]"#);
        rx.on_event(6, br#"42["soak",{"s":11,"u":5,"t":1}]"#);
        // Room push #3 to room 1: users 5 and 9 are members (i % 4 == 1), user 6 is not.
        rx.on_event(5, br#"42["soak",{"r":3,"g":1,"t":1}]"#);
        rx.on_event(9, br#"42["soak",{"r":3,"g":1,"t":1}]"#);
        rx.on_event(6, br#"42["soak",{"r":3,"g":1,"t":1}]"#);
        rx.on_event(5, br#"42["bridge:disconnect",{"reason":"x"}]"#);
        assert_eq!((rx.user_rx, rx.user_dup, rx.user_misrouted), (1, 1, 1));
        assert_eq!((rx.room_rx, rx.room_dup, rx.room_misrouted), (2, 0, 1));
        assert_eq!(rx.other_events, 1);
        // Acks: #7 twice (one duplicate), #8 answered with #9's number, #12 an error.
        rx.on_ack(br#"437[{"n":7,"u":1,"t":1}]"#);
        rx.on_ack(br#"437[{"n":7,"u":1,"t":1}]"#);
        rx.on_ack(br#"438[{"n":9,"u":1,"t":1}]"#);
        rx.on_ack(br#"4312[{"error":{"code":"ack_timeout","message":"no answer"}}]"#);
        assert_eq!((rx.acks_ok, rx.ack_dup, rx.ack_mismatch, rx.ack_errors), (1, 1, 1, 1));
        assert_eq!(rx.ack_error_codes.get("ack_timeout"), Some(&1));
        assert_eq!(rx.garbled, 0);
    }
}
