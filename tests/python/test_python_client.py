"""The stock Python Socket.IO client (python-socketio from PyPI) against the real bridge.

A Node harness (harness.mjs) starts the bridge in JWT mode with a gRPC backend on the Events
stream; the backend answers acks by echoing the arguments and pushes "welcome" on connect.
Each case runs with transports ["websocket"], ["polling"] and the client's default.
"""

import base64
import hashlib
import hmac
import json
import os
import queue
import subprocess
import threading
import time
from pathlib import Path

import pytest
import socketio

HERE = Path(__file__).resolve().parent
WAIT = 10.0
TRANSPORTS = {"websocket": ["websocket"], "polling": ["polling"], "default": None}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_jwt(claims: dict, secret: str) -> str:
    """HS256 JWT (RFC 7519) with the standard library."""
    now = int(time.time())
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64url(json.dumps({"iat": now, "exp": now + 3600, **claims}).encode())
    sig = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(sig)}"


class Harness:
    """The Node process that runs the bridge and the backend; JSON lines over stdio."""

    def __init__(self):
        self.proc = subprocess.Popen(
            ["node", str(HERE / "harness.mjs")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.lines: "queue.Queue[dict]" = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        ready = self._next(30.0)
        assert ready.get("ready"), ready
        self.url = ready["url"]
        self.jwt_secret = ready["jwt_secret"]
        self.next_id = 0

    def _read(self):
        for line in self.proc.stdout:
            line = line.strip()
            if line:
                self.lines.put(json.loads(line))

    def _next(self, timeout: float) -> dict:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"harness said nothing within {timeout} s (exit code {self.proc.poll()})")

    def call(self, cmd: str, **kw):
        self.next_id += 1
        self.proc.stdin.write(json.dumps({"id": self.next_id, "cmd": cmd, **kw}) + "\n")
        self.proc.stdin.flush()
        reply = self._next(WAIT)
        assert reply.get("id") == self.next_id, reply
        assert reply.get("ok"), reply
        return reply["result"]

    def close(self):
        try:
            self.call("exit")
        except Exception:  # noqa: BLE001 - best effort, the kill below is the guarantee
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


@pytest.fixture(scope="module")
def harness():
    h = Harness()
    try:
        yield h
    finally:
        h.close()


class Inbox:
    """Collects the events a client receives; get() waits for one, bounded."""

    def __init__(self):
        self.q: "queue.Queue[tuple]" = queue.Queue()

    def put(self, event, args):
        self.q.put((event, args))

    def get(self, event: str, timeout: float = WAIT):
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {event!r} event within {timeout} s; got {seen}")
            try:
                ev, args = self.q.get(timeout=left)
            except queue.Empty:
                continue
            if ev == event:
                return args
            seen.append(ev)


def make_client():
    sio = socketio.Client(reconnection=False)
    inbox = Inbox()

    @sio.on("*")
    def any_event(event, *args):
        inbox.put(event, list(args))

    return sio, inbox


@pytest.mark.parametrize("variant", list(TRANSPORTS))
def test_python_client_connects_with_jwt_receives_pushes_and_gets_ack_answers(harness, variant):
    user = f"python-{variant}"
    sio, inbox = make_client()
    token = sign_jwt({"sub": user}, harness.jwt_secret)
    kwargs = {"transports": TRANSPORTS[variant]} if TRANSPORTS[variant] else {}
    sio.connect(harness.url, auth={"token": token}, wait_timeout=WAIT, **kwargs)
    try:
        assert sio.connected
        if TRANSPORTS[variant]:
            assert sio.transport() == TRANSPORTS[variant][0]

        # The push the backend sends on SocketConnected.
        assert inbox.get("welcome") == [{"user": user, "namespace": "/"}]

        # A push the backend sends to the user, with a binary attachment.
        result = harness.call(
            "push",
            user_id=user,
            event="news",
            args_json='[{"text":"hello from the backend"},{"_placeholder":true,"num":0}]',
            attachments_b64=[base64.b64encode(b"\x00\x01\xfe\xff").decode()],
        )
        assert result["sockets_reached"] == 1
        assert inbox.get("news") == [{"text": "hello from the backend"}, b"\x00\x01\xfe\xff"]

        # An emit with an ack: the backend's Ack carries the same arguments back.
        answer = sio.call("with-ack", {"x": 1, "s": "été", "n": [1, 2, 3]}, timeout=WAIT)
        assert answer == {"x": 1, "s": "été", "n": [1, 2, 3]}
        binary_answer = sio.call("with-ack", b"\x00binary\xff", timeout=WAIT)
        assert binary_answer == b"\x00binary\xff"

        seen = harness.call("client_events", user_id=user)
        assert [(e["event"], e["wants_ack"]) for e in seen] == [("with-ack", True), ("with-ack", True)]
        assert json.loads(seen[0]["args_json"]) == [{"x": 1, "s": "été", "n": [1, 2, 3]}]
        assert base64.b64decode(seen[1]["attachments_b64"][0]) == b"\x00binary\xff"
    finally:
        sio.disconnect()


@pytest.mark.parametrize("variant", list(TRANSPORTS))
def test_python_client_with_a_bad_token_gets_a_connect_error(harness, variant):
    sio, _ = make_client()
    errors: "queue.Queue" = queue.Queue()

    @sio.event
    def connect_error(data):
        errors.put(data)

    kwargs = {"transports": TRANSPORTS[variant]} if TRANSPORTS[variant] else {}
    with pytest.raises(socketio.exceptions.ConnectionError):
        sio.connect(harness.url, auth={"token": "not-a-jwt"}, wait_timeout=WAIT, **kwargs)
    assert errors.get(timeout=WAIT) == {"message": "token is malformed"}
    assert not sio.connected
    sio.disconnect()


@pytest.mark.xfail(
    os.environ.get("KNOWN_BRIDGE_BUGS") == "todo",
    reason="known difference: engineioxide's early first ping races python-engineio's close (README)",
    strict=False,
)
def test_python_client_refused_over_polling_returns_at_once_every_time(harness):
    """A refused connect must not wait for the server's next ping (ping interval 5 s here).

    Seen against the bridge: about 2 in 5 refused polling connects of python-socketio return
    only when the next ping arrives (25 s with the default ping interval); against the
    reference Node server they all return within milliseconds. The connect_error leaves the
    bridge at once, together with engineioxide's immediate first ping; the client's pong POST
    is then in flight when it gives up, and python-engineio drops the CLOSE it queued
    meanwhile, so its pending GET waits for the next ping (README, "Known differences").
    """
    durations = []
    for _ in range(6):
        good, _ = make_client()
        good.connect(harness.url, auth={"token": sign_jwt({"sub": "python-race"}, harness.jwt_secret)}, transports=["polling"], wait_timeout=WAIT)
        assert good.call("with-ack", 1, timeout=WAIT) == 1
        good.disconnect()
        bad, _ = make_client()
        started = time.monotonic()
        with pytest.raises(socketio.exceptions.ConnectionError):
            bad.connect(harness.url, auth={"token": "not-a-jwt"}, transports=["polling"], wait_timeout=WAIT)
        durations.append(round(time.monotonic() - started, 3))
        bad.disconnect()
    assert all(d < 2.0 for d in durations), f"refused connect durations (s): {durations}"
