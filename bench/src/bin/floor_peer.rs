//! The "floor" peer: the least a server can do for the benchmark's clients. It accepts the
//! same websocket upgrade and Engine.IO / Socket.IO handshake, sends the same pings, and
//! writes the same frames, with no Socket.IO logic: no packet parser, no namespaces, no
//! adapter, no per-socket tasks for writing. Every frame a push delivers is encoded once
//! and the same bytes are written to each recipient. What a real server costs above this
//! figure is what its Socket.IO layer (and, for socket-bridge, the bridge) adds over the
//! kernel's own work.
//!
//! - one thread, one tokio current-thread runtime;
//! - websocket clients (`GET /socket.io/?EIO=4&transport=websocket`): open packet, CONNECT
//!   answered with a sid, `auth.userId` remembered; pings every `--ping-interval-ms`
//!   (spread over the interval), pongs read and ignored; a client event with an ack id
//!   `42<id>[...]` is answered at once with `43<id>[{"ok":true}]`;
//! - HTTP/1.1 keep-alive on the same port: `POST /push` with the generator's body
//!   `{"userId"|"roomId":"…","event":"…","payload":…}` (located by position, not parsed as
//!   JSON: that is all the generator sends), `POST /join {"room":"…"}` (every connected
//!   socket joins), `GET /health`.
//!
//! Usage: floor-peer --listen 127.0.0.1:PORT --ping-interval-ms N --ping-timeout-ms N

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use base64::Engine as _;
use sha1::{Digest, Sha1};
use tokio::net::{TcpListener, TcpStream};

/// A client whose unsent bytes exceed this is dropped (bounds the memory a slow client holds).
const MAX_PENDING: usize = 8 << 20;
const READ_CHUNK: usize = 4096;
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

struct Conn {
    stream: TcpStream,
    /// Bytes the kernel did not take yet; a flush task owns the writable wait while set.
    pending: RefCell<Vec<u8>>,
    closed: Cell<bool>,
}

impl Conn {
    /// Writes now what the kernel takes, keeps the rest for the flush task.
    fn send(self: &Rc<Self>, bytes: &[u8]) {
        if self.closed.get() {
            return;
        }
        let mut pending = self.pending.borrow_mut();
        if !pending.is_empty() {
            if pending.len() + bytes.len() > MAX_PENDING {
                self.closed.set(true);
                return;
            }
            pending.extend_from_slice(bytes);
            return;
        }
        let mut off = 0;
        while off < bytes.len() {
            match self.stream.try_write(&bytes[off..]) {
                Ok(n) => off += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.closed.set(true);
                    return;
                }
            }
        }
        if off < bytes.len() {
            pending.extend_from_slice(&bytes[off..]);
            let me = self.clone();
            tokio::task::spawn_local(async move { me.flush().await });
        }
    }

    async fn flush(self: Rc<Self>) {
        loop {
            if self.stream.writable().await.is_err() {
                self.closed.set(true);
                return;
            }
            let mut pending = self.pending.borrow_mut();
            while !pending.is_empty() {
                match self.stream.try_write(&pending) {
                    Ok(n) => {
                        pending.drain(..n);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        self.closed.set(true);
                        pending.clear();
                        return;
                    }
                }
            }
            if pending.is_empty() {
                return;
            }
        }
    }
}

#[derive(Default)]
struct State {
    conns: Vec<Option<Rc<Conn>>>,
    users: HashMap<String, Vec<usize>>,
    rooms: HashMap<String, Vec<usize>>,
    next_sid: u64,
}

type Shared = Rc<RefCell<State>>;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned()).unwrap_or_else(|| default.to_owned())
}

fn main() -> anyhow::Result<()> {
    let listen: SocketAddr = arg("--listen", "127.0.0.1:3300").parse()?;
    let ping_interval: u64 = arg("--ping-interval-ms", "25000").parse()?;
    let ping_timeout: u64 = arg("--ping-timeout-ms", "20000").parse()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = TcpListener::bind(listen).await?;
        let state: Shared = Rc::default();
        tokio::task::spawn_local(pinger(state.clone(), ping_interval));
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let state = state.clone();
            tokio::task::spawn_local(async move { serve(stream, state, ping_interval, ping_timeout).await });
        }
    })
}

/// Sends every socket a ping once per interval, a tenth of the sockets every tenth of it.
async fn pinger(state: Shared, interval_ms: u64) {
    const SLICES: usize = 10;
    let ping: &[u8] = &[0x81, 0x01, b'2'];
    let mut tick = tokio::time::interval(Duration::from_millis((interval_ms / SLICES as u64).max(1)));
    let mut slice = 0usize;
    loop {
        tick.tick().await;
        let conns: Vec<Rc<Conn>> = {
            let s = state.borrow();
            s.conns.iter().enumerate().filter(|(i, _)| i % SLICES == slice).filter_map(|(_, c)| c.clone()).collect()
        };
        for c in conns {
            c.send(ping);
        }
        slice = (slice + 1) % SLICES;
    }
}

/// Reads more bytes into `buf`; false at EOF or on an error.
async fn read_more(stream: &TcpStream, buf: &mut Vec<u8>) -> bool {
    loop {
        if stream.readable().await.is_err() {
            return false;
        }
        let len = buf.len();
        buf.resize(len + READ_CHUNK, 0);
        match stream.try_read(&mut buf[len..]) {
            Ok(0) => {
                buf.truncate(len);
                return false;
            }
            Ok(n) => {
                buf.truncate(len + n);
                return true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => buf.truncate(len),
            Err(_) => {
                buf.truncate(len);
                return false;
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The header's value (case-insensitive name) in a request head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn serve(stream: TcpStream, state: Shared, ping_interval: u64, ping_timeout: u64) {
    let mut buf = Vec::with_capacity(READ_CHUNK);
    loop {
        let Some(end) = find(&buf, b"\r\n\r\n") else {
            if buf.len() > 64 * 1024 || !read_more(&stream, &mut buf).await {
                return;
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        if head.starts_with("GET /socket.io/") {
            let Some(key) = header(&head, "sec-websocket-key") else { return };
            let accept = base64::engine::general_purpose::STANDARD.encode(Sha1::digest(format!("{key}{WS_GUID}")));
            buf.drain(..end + 4);
            let conn = Rc::new(Conn { stream, pending: RefCell::new(Vec::new()), closed: Cell::new(false) });
            conn.send(
                format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                )
                .as_bytes(),
            );
            return websocket(conn, buf, state, ping_interval, ping_timeout).await;
        }
        // HTTP/1.1 request with a body of Content-Length bytes.
        let length: usize = header(&head, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        while buf.len() < end + 4 + length {
            if !read_more(&stream, &mut buf).await {
                return;
            }
        }
        let body = buf[end + 4..end + 4 + length].to_vec();
        buf.drain(..end + 4 + length);
        let path = head.split_whitespace().nth(1).unwrap_or("");
        let answer = match path {
            "/push" => push(&state, &body),
            "/join" => join(&state, &body),
            _ => "{}".to_owned(),
        };
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        let mut off = 0;
        let bytes = resp.as_bytes();
        while off < bytes.len() {
            if stream.writable().await.is_err() {
                return;
            }
            match stream.try_write(&bytes[off..]) {
                Ok(n) => off += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    }
}

/// The string value of `"name":"…"` in `body` (no escapes: ids and room names only).
fn string_field<'a>(body: &'a [u8], name: &str) -> Option<&'a str> {
    let key = format!("\"{name}\":\"");
    let start = find(body, key.as_bytes())? + key.len();
    let len = body[start..].iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&body[start..start + len]).ok()
}

/// A server text frame (unmasked) around `payload`.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 10);
    f.push(0x81);
    let n = payload.len();
    if n < 126 {
        f.push(n as u8);
    } else if n < 65536 {
        f.push(126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        f.push(127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    f.extend_from_slice(payload);
    f
}

/// Encodes `42["event",payload]` once and writes it to every target socket.
fn push(state: &Shared, body: &[u8]) -> String {
    let Some(event) = string_field(body, "event") else { return "{\"error\":\"event\"}".into() };
    // The payload is the last field of the generator's body: from after `"payload":` to
    // the closing brace.
    let Some(at) = find(body, b"\"payload\":") else { return "{\"error\":\"payload\"}".into() };
    let payload = &body[at + 10..body.len().saturating_sub(1)];
    let mut packet = Vec::with_capacity(payload.len() + event.len() + 8);
    packet.extend_from_slice(b"42[\"");
    packet.extend_from_slice(event.as_bytes());
    packet.extend_from_slice(b"\",");
    packet.extend_from_slice(payload);
    packet.push(b']');
    let f = frame(&packet);
    let targets: Vec<Rc<Conn>> = {
        let s = state.borrow();
        let ids = if let Some(user) = string_field(body, "userId") {
            s.users.get(user)
        } else if let Some(room) = string_field(body, "roomId") {
            s.rooms.get(room)
        } else {
            None
        };
        ids.map(|ids| ids.iter().filter_map(|&i| s.conns.get(i).cloned().flatten()).collect()).unwrap_or_default()
    };
    for c in &targets {
        c.send(&f);
    }
    format!("{{\"delivered\":{}}}", targets.len())
}

fn join(state: &Shared, body: &[u8]) -> String {
    let Some(room) = string_field(body, "room") else { return "{\"error\":\"room\"}".into() };
    let mut s = state.borrow_mut();
    let members: Vec<usize> = s.conns.iter().enumerate().filter(|(_, c)| c.is_some()).map(|(i, _)| i).collect();
    let n = members.len();
    s.rooms.insert(room.to_owned(), members);
    format!("{{\"sockets\":{n}}}")
}

/// (opcode, payload start, payload length, masked) of the first complete frame.
fn parse_frame(b: &[u8]) -> Option<(u8, usize, usize, bool)> {
    if b.len() < 2 {
        return None;
    }
    let opcode = b[0] & 0x0F;
    let masked = b[1] & 0x80 != 0;
    let (len, mut off) = match b[1] & 0x7F {
        126 => (u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize, 4),
        127 => (u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize, 10),
        n => (n as usize, 2),
    };
    if masked {
        off += 4;
    }
    if b.len() < off + len {
        return None;
    }
    Some((opcode, off, len, masked))
}

async fn websocket(conn: Rc<Conn>, mut buf: Vec<u8>, state: Shared, ping_interval: u64, ping_timeout: u64) {
    let sid = {
        let mut s = state.borrow_mut();
        s.next_sid += 1;
        format!("floor{:015}", s.next_sid)
    };
    conn.send(&frame(
        format!(
            "0{{\"sid\":\"{sid}\",\"upgrades\":[],\"pingInterval\":{ping_interval},\"pingTimeout\":{ping_timeout},\"maxPayload\":1000000}}"
        )
        .as_bytes(),
    ));
    let mut slot: Option<(usize, Option<String>)> = None;
    let mut out = Vec::with_capacity(64);
    'read: loop {
        while let Some((opcode, start, len, masked)) = parse_frame(&buf) {
            if masked {
                let key = [buf[start - 4], buf[start - 3], buf[start - 2], buf[start - 1]];
                for (i, b) in buf[start..start + len].iter_mut().enumerate() {
                    *b ^= key[i % 4];
                }
            }
            let p = &buf[start..start + len];
            match opcode {
                0x1 => {
                    if p.starts_with(b"42") {
                        // 42<ack id>[...]: answer the ack at once.
                        let digits = p[2..].iter().take_while(|b| b.is_ascii_digit()).count();
                        if digits > 0 {
                            out.clear();
                            out.extend_from_slice(b"43");
                            out.extend_from_slice(&p[2..2 + digits]);
                            out.extend_from_slice(b"[{\"ok\":true}]");
                            conn.send(&frame(&out));
                        }
                    } else if p.starts_with(b"40") && slot.is_none() {
                        let user = string_field(p, "userId").map(str::to_owned);
                        let mut s = state.borrow_mut();
                        // Slots are never reused, so room lists need no cleanup.
                        s.conns.push(Some(conn.clone()));
                        let i = s.conns.len() - 1;
                        if let Some(u) = &user {
                            s.users.entry(u.clone()).or_default().push(i);
                        }
                        drop(s);
                        slot = Some((i, user));
                        conn.send(&frame(format!("40{{\"sid\":\"{sid}\"}}").as_bytes()));
                    } else if p.starts_with(b"41") || p.starts_with(b"1") {
                        break 'read;
                    }
                }
                0x8 => break 'read,
                _ => {}
            }
            buf.drain(..start + len);
        }
        if conn.closed.get() || !read_more(&conn.stream, &mut buf).await {
            break;
        }
    }
    conn.closed.set(true);
    if let Some((i, user)) = slot {
        let mut s = state.borrow_mut();
        s.conns[i] = None;
        if let Some(u) = user
            && let Some(v) = s.users.get_mut(&u)
        {
            v.retain(|&x| x != i);
            if v.is_empty() {
                s.users.remove(&u);
            }
        }
    }
}
