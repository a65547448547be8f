package bridge_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/socketbridge/socket-bridge/go-client/bridge"
	"github.com/socketbridge/socket-bridge/go-client/internal/bridgetest"
	pb "github.com/socketbridge/socket-bridge/go-client/socketbridgev1"
)

// What the bridge's connect_error says when no decision came.
const (
	refusedNoDecider = "no backend is subscribed to decide; retry later"
	refusedGone      = "the backend deciding went away; retry later"
)

// runDecider runs d until the test ends and returns a channel with Run's result.
func runDecider(t *testing.T, d *bridge.Decider) <-chan error {
	t.Helper()
	if d.Logger == nil {
		d.Logger = testLogger(t)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		done <- d.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-finished:
		case <-time.After(eventWait):
			t.Error("Decider.Run did not return after its context was cancelled")
		}
	})
	return done
}

// connectWith opens socket id with a session cookie (none when empty) over one transport
// and returns the driver's connect or connect_error report.
func connectWith(t *testing.T, browsers *bridgetest.Browsers, id, url, transport, cookie string) bridgetest.Report {
	t.Helper()
	cmd := map[string]any{"cmd": "connect", "id": id, "url": url, "transports": []string{transport},
		"auth": map[string]any{"client": id}}
	headers := map[string]string{"authorization": "Bearer not-for-the-decider"}
	if cookie != "" {
		headers["cookie"] = cookie
	}
	cmd["extra_headers"] = headers
	browsers.Send(t, cmd)
	return browsers.Wait(t, "connect or connect_error of "+id, func(r bridgetest.Report) bool {
		return r.ID == id && (r.Type == "connect" || r.Type == "connect_error")
	})
}

// logBuffer collects a component's log for assertions, and shows it in the test log.
type logBuffer struct {
	t  *testing.T
	mu sync.Mutex
	b  strings.Builder
}

func newLogBuffer(t *testing.T) (*logBuffer, *slog.Logger) {
	l := &logBuffer{t: t}
	return l, slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.b.Write(p)
	l.mu.Unlock()
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// waitLogged waits until the log has a line containing every one of parts.
func (l *logBuffer) waitLogged(parts ...string) {
	l.t.Helper()
	deadline := time.Now().Add(eventWait)
	for {
		l.mu.Lock()
		lines := strings.Split(l.b.String(), "\n")
		l.mu.Unlock()
		for _, line := range lines {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(line, p)
			}
			if all {
				return
			}
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("no log line with %q within %v", parts, eventWait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// The backend's decision lets the client in with the user, rooms and data the backend
// chose, over websocket and long-polling; the backend saw the client's cookie, auth object,
// address and transport, and never its Authorization header.
func TestDeciderAllowsWithTheBackendsUserRoomsAndData(t *testing.T) {
	b := bridgetest.Start(t, append(bridgetest.BackendAuth, bridgetest.Fast...)...)
	client := dial(t, b)
	asked := make(chan *pb.ConnectRequest, 10)
	subscribed := make(chan *pb.AuthorizeSubscribed, 1)
	runDecider(t, &bridge.Decider{
		Client:       client,
		OnSubscribed: func(s *pb.AuthorizeSubscribed) { subscribed <- s },
		Connect: func(ctx context.Context, req *pb.ConnectRequest) (bridge.Decision, error) {
			asked <- req
			session, ok := bridge.Cookie(req, "session")
			if !ok {
				return &bridge.Deny{Code: "no_session", Message: "sign in first"}, nil
			}
			return &bridge.Allow{
				UserID: "user-" + session,
				Rooms:  []string{"team-" + session},
				Data:   map[string]any{"plan": "pro", "session": session},
			}, nil
		},
	})
	connected := make(chan *pb.SocketConnected, 10)
	start(t, &bridge.Consumer{
		Client:            client,
		Handler:           func(context.Context, *pb.ClientEvent) (any, error) { return nil, nil },
		OnSocketConnected: func(_ context.Context, c *pb.SocketConnected) { connected <- c },
	})
	if s := recvWithin(t, subscribed, "the decider's subscription"); s.GetDeciderId() == "" || s.GetInstanceId() == "" {
		t.Errorf("subscribed as %v", s)
	}

	browsers := bridgetest.NewBrowsers(t)
	for _, transport := range []string{"websocket", "polling"} {
		session := "s-" + transport
		r := connectWith(t, browsers, transport, b.URL(), transport, "theme=dark; session="+session)
		if r.Type != "connect" {
			t.Fatalf("%s: %s", transport, r.Line)
		}
		q := recvWithin(t, asked, "the connect question")
		if q.GetSocketId() != r.Sid || q.GetNamespace() != "/" || q.GetTransport() != transport ||
			!strings.HasPrefix(q.GetClientAddress(), "127.0.0.1:") || q.GetId() == "" {
			t.Errorf("%s: asked %v, client sid %s", transport, q, r.Sid)
		}
		if got := q.GetHeaders()["cookie"]; got != "theme=dark; session="+session {
			t.Errorf("%s: the decider saw cookie %q", transport, got)
		}
		if _, ok := q.GetHeaders()["authorization"]; ok {
			t.Errorf("%s: the decider saw the Authorization header: %v", transport, q.GetHeaders())
		}
		if q.GetAuthJson() != `{"client":"`+transport+`"}` {
			t.Errorf("%s: the decider saw auth %s", transport, q.GetAuthJson())
		}

		// The backend's identity, rooms and data, in SocketConnected and ListConnections.
		c := recvWithin(t, connected, "SocketConnected")
		wantData := `{"plan":"pro","session":"` + session + `"}`
		if c.GetSocketId() != r.Sid || c.GetUserId() != "user-"+session || !slices.Contains(c.GetRooms(), "team-"+session) || c.GetDataJson() != wantData {
			t.Errorf("%s: SocketConnected %v", transport, c)
		}
		ctx, cancel := context.WithTimeout(context.Background(), eventWait)
		list, err := client.ListConnections(ctx, &pb.ListConnectionsRequest{Filter: &pb.ListConnectionsRequest_UserId{UserId: "user-" + session}})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if n := len(list.GetConnections()); n != 1 || list.GetConnections()[0].GetDataJson() != wantData {
			t.Errorf("%s: ListConnections %v", transport, list.GetConnections())
		}

		// A push to the room the backend granted reaches the socket.
		ctx, cancel = context.WithTimeout(context.Background(), eventWait)
		_, err = client.Push(ctx, &pb.PushRequest{
			Target:  &pb.Target{Kind: &pb.Target_Room{Room: "team-" + session}},
			Event:   "to_team",
			Payload: bridge.MustPayload(transport),
		})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if e := browsers.Wait(t, "the room push", bridgetest.EventIs(transport, "to_team")); string(e.Args) != `["`+transport+`"]` {
			t.Errorf("%s: room push arrived as %s", transport, e.Args)
		}
	}
}

// A deny reaches the client's connect_error with the backend's message; so does a Deny
// returned (or wrapped) as the error. A handler that fails, panics, decides nothing or
// allows with data that does not encode denies with a generic message, and the failure is
// logged. Nothing of the refused sockets reaches Events.
func TestDeciderDeniesWithTheBackendsMessageAndOnEveryFailure(t *testing.T) {
	b := bridgetest.Start(t, append(bridgetest.BackendAuth, bridgetest.Fast...)...)
	client := dial(t, b)
	logs, logger := newLogBuffer(t)
	runDecider(t, &bridge.Decider{
		Client: client,
		Logger: logger,
		Connect: func(ctx context.Context, req *pb.ConnectRequest) (bridge.Decision, error) {
			session, _ := bridge.Cookie(req, "session")
			switch session {
			case "fine":
				return &bridge.Allow{UserID: "fine"}, nil
			case "expired":
				return &bridge.Deny{Code: "session_expired", Message: "Please sign in again", Data: map[string]bool{"retry": false}}, nil
			case "wrapped":
				return nil, fmt.Errorf("looking up the session: %w", bridge.Denyf("banned", "banned until %s", "Monday"))
			case "broken":
				return nil, errors.New("session store unreachable at 10.0.0.7")
			case "panics":
				var m map[string]int
				m["boom"]++
				return &bridge.Allow{UserID: "never"}, nil
			case "undecided":
				return nil, nil
			case "typed-nil":
				var allow *bridge.Allow
				return allow, nil
			case "bad-data":
				return &bridge.Allow{UserID: "never", Data: make(chan int)}, nil
			}
			return &bridge.Deny{}, nil
		},
	})
	connected := make(chan *pb.SocketConnected, 20)
	start(t, &bridge.Consumer{
		Client:            client,
		Handler:           func(context.Context, *pb.ClientEvent) (any, error) { return nil, nil },
		OnSocketConnected: func(_ context.Context, c *pb.SocketConnected) { connected <- c },
	})
	browsers := bridgetest.NewBrowsers(t)
	cases := []struct {
		session, refusal string
		logged           []string // the log line a failure leaves
	}{
		{"expired", "Please sign in again", nil},
		{"wrapped", "banned until Monday", nil},
		{"broken", "internal error", []string{"Decider.Connect failed; denied", "session store unreachable"}},
		{"panics", "internal error", []string{"Decider.Connect panicked; denied", "assignment to entry in nil map", "stack="}},
		{"undecided", "internal error", []string{"Decider.Connect returned no decision; denied", "got <nil>"}},
		{"typed-nil", "internal error", []string{"Decider.Connect returned no decision; denied", "got *bridge.Allow"}},
		{"bad-data", "internal error", []string{"allowed with Data that does not encode; denied", "chan int"}},
		{"", "not allowed", nil},
	}
	for _, tc := range cases {
		for _, transport := range []string{"websocket", "polling"} {
			id := tc.session + "-" + transport
			r := connectWith(t, browsers, id, b.URL(), transport, "session="+tc.session)
			if r.Type != "connect_error" || r.Message != tc.refusal {
				t.Errorf("session %q over %s: %s, want connect_error %q", tc.session, transport, r.Line, tc.refusal)
			}
		}
		if tc.logged != nil {
			logs.waitLogged(tc.logged...)
		}
	}
	// The generic refusals never show the failure to the client, and the log never shows
	// the client's credentials.
	if strings.Contains(logs.String(), "session=") || strings.Contains(logs.String(), "not-for-the-decider") {
		t.Errorf("the decider logged a client's credentials:\n%s", logs.String())
	}
	if r := connectWith(t, browsers, "fine", b.URL(), "websocket", "session=fine"); r.Type != "connect" {
		t.Fatalf("fine: %s", r.Line)
	}
	// Events saw only the allowed socket.
	if c := recvWithin(t, connected, "SocketConnected"); c.GetUserId() != "fine" {
		t.Errorf("SocketConnected of %v, want only the allowed socket", c)
	}
	select {
	case c := <-connected:
		t.Errorf("a refused socket reached Events: %v", c)
	case <-time.After(300 * time.Millisecond):
	}
}

// With auth.backend.decide_joins, the decider answers room joins the patterns do not grant:
// allowed, the socket is in the room; denied, the client's ack gets the reason; a failing
// handler denies.
func TestDeciderDecidesJoins(t *testing.T) {
	b := bridgetest.Start(t, append(append(bridgetest.BackendAuth, bridgetest.Fast...),
		"auth.backend.decide_joins=true", `socketio.client_room_patterns=["open:*"]`)...)
	client := dial(t, b)
	asked := make(chan *pb.JoinRequest, 10)
	logs, logger := newLogBuffer(t)
	runDecider(t, &bridge.Decider{
		Client: client,
		Logger: logger,
		Connect: func(ctx context.Context, req *pb.ConnectRequest) (bridge.Decision, error) {
			return &bridge.Allow{UserID: "jo", Data: json.RawMessage(`{"tier":"gold"}`)}, nil
		},
		Join: func(ctx context.Context, req *pb.JoinRequest) (bridge.Decision, error) {
			asked <- req
			var data struct{ Tier string }
			if err := json.Unmarshal([]byte(req.GetDataJson()), &data); err != nil {
				return nil, err
			}
			switch {
			case req.GetRoom() == "crash":
				panic("join handler bug")
			case req.GetRoom() == "vip" && data.Tier == "gold":
				return &bridge.Allow{}, nil
			}
			return bridge.Denyf("members_only", "%s is for members", req.GetRoom()), nil
		},
	})
	browsers := bridgetest.NewBrowsers(t)
	if r := connectWith(t, browsers, "jo", b.URL(), "websocket", ""); r.Type != "connect" {
		t.Fatalf("jo: %s", r.Line)
	}
	join := func(req int, room string) string {
		t.Helper()
		browsers.Emit(t, "jo", req, "bridge:join", true, room)
		return string(browsers.Wait(t, "join ack", bridgetest.AckIs("jo", req)).Args)
	}
	// A pattern room: granted without asking.
	if got := join(1, "open:1"); got != `[{"ok":true}]` {
		t.Errorf("join open:1: %s", got)
	}
	// Any other room: the decider is asked, with the socket's user and data.
	if got := join(2, "vip"); got != `[{"ok":true}]` {
		t.Errorf("join vip: %s", got)
	}
	q := recvWithin(t, asked, "the join question")
	if q.GetRoom() != "vip" || q.GetUserId() != "jo" || q.GetDataJson() != `{"tier":"gold"}` || q.GetNamespace() != "/" {
		t.Errorf("asked %v", q)
	}
	ctx, cancel := context.WithTimeout(context.Background(), eventWait)
	defer cancel()
	if r, err := client.Push(ctx, &pb.PushRequest{Target: &pb.Target{Kind: &pb.Target_Room{Room: "vip"}}, Event: "in_vip"}); err != nil || r.GetSocketsReached() != 1 {
		t.Fatalf("push to vip: %v %v", r, err)
	}
	browsers.Wait(t, "the push to vip", bridgetest.EventIs("jo", "in_vip"))

	if got := join(3, "secret"); got != `[{"error":{"code":"members_only","message":"secret is for members"}}]` {
		t.Errorf("join secret: %s", got)
	}
	if got := join(4, "crash"); got != `[{"error":{"code":"internal","message":"internal error"}}]` {
		t.Errorf("join crash: %s", got)
	}
	logs.waitLogged("Decider.Join panicked; denied", "room=crash", "join handler bug")
	if r, err := client.Push(ctx, &pb.PushRequest{Target: &pb.Target{Kind: &pb.Target_Room{Room: "secret"}}, Event: "x"}); err != nil || r.GetSocketsReached() != 0 {
		t.Errorf("push to secret: %v %v, want nobody there", r, err)
	}
}

// The decider re-subscribes by itself after the bridge is killed, after it stops
// gracefully, and after the network between them drops; a question it held when its
// stream dropped is refused at once (its handler's context is cancelled), and the next
// clients are decided by the new stream.
func TestDeciderReconnectsAfterRestartsAndDrops(t *testing.T) {
	// The bridge keeps Authorize streams open while it drains, so its graceful stop takes
	// the whole grace period: a short one keeps the test short.
	b := bridgetest.Start(t, append(append(bridgetest.BackendAuth, bridgetest.Fast...), "shutdown.grace_period_ms=2000")...)
	proxy := bridgetest.StartProxy(t, b.GRPC)
	client, err := bridge.Dial(proxy.Addr, bridge.WithInsecure(), bridge.WithAPIKey(bridgetest.APIKey))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	subscribed := make(chan *pb.AuthorizeSubscribed, 10)
	holding := make(chan string, 1)
	released := make(chan error, 1)
	done := runDecider(t, &bridge.Decider{
		Client:       client,
		Backoff:      bridge.Backoff{Initial: 50 * time.Millisecond, Max: time.Second},
		Timeout:      time.Minute, // the held question ends with its stream, not with this
		OnSubscribed: func(s *pb.AuthorizeSubscribed) { subscribed <- s },
		Connect: func(ctx context.Context, req *pb.ConnectRequest) (bridge.Decision, error) {
			session, _ := bridge.Cookie(req, "session")
			if session == "hold" {
				holding <- req.GetSocketId()
				<-ctx.Done()
				released <- ctx.Err()
				return nil, ctx.Err()
			}
			return &bridge.Allow{UserID: session}, nil
		},
	})
	browsers := bridgetest.NewBrowsers(t)
	first := recvWithin(t, subscribed, "the first subscription")
	n := 0
	allowed := func(what string) {
		t.Helper()
		n++
		id := fmt.Sprintf("c%d", n)
		if r := connectWith(t, browsers, id, b.URL(), "websocket", "session="+id); r.Type != "connect" {
			t.Fatalf("%s: %s", what, r.Line)
		}
	}
	allowed("before anything happened")

	// The network drops while a question is held.
	browsers.Send(t, map[string]any{"cmd": "connect", "id": "held", "url": b.URL(), "transports": []string{"websocket"},
		"extra_headers": map[string]string{"cookie": "session=hold"}})
	recvWithin(t, holding, "the held question")
	cutAt := time.Now()
	if proxy.Cut() == 0 {
		t.Fatal("the proxy had no connection to cut")
	}
	r := browsers.Wait(t, "the held client's refusal", func(r bridgetest.Report) bool {
		return r.ID == "held" && (r.Type == "connect" || r.Type == "connect_error")
	})
	if r.Type != "connect_error" || r.Message != refusedGone {
		t.Errorf("the held client got %s, want connect_error %q", r.Line, refusedGone)
	}
	t.Logf("held client refused %v after the cut", time.Since(cutAt).Round(time.Millisecond))
	if err := recvWithin(t, released, "the held handler's context"); !errors.Is(err, context.Canceled) {
		t.Errorf("the held handler's context ended with %v", err)
	}
	if again := recvWithin(t, subscribed, "the subscription after the drop"); again.GetInstanceId() != first.GetInstanceId() {
		t.Errorf("re-subscribed to %s after a drop, want the same bridge %s", again.GetInstanceId(), first.GetInstanceId())
	}
	t.Logf("re-subscribed %v after the cut", time.Since(cutAt).Round(time.Millisecond))
	allowed("after the network dropped")

	// The bridge crashes and comes back on the same ports.
	b.Kill()
	killedAt := time.Now()
	if err := b.Restart(); err != nil {
		t.Fatal(err)
	}
	if again := recvWithin(t, subscribed, "the subscription after the restart"); again.GetInstanceId() == first.GetInstanceId() {
		t.Errorf("re-subscribed to instance %s, want the new process", again.GetInstanceId())
	}
	t.Logf("re-subscribed %v after the kill", time.Since(killedAt).Round(time.Millisecond))
	allowed("after the bridge restarted")

	// A graceful stop (SIGTERM) is survived the same way.
	stopping := time.Now()
	if !b.Stop() {
		t.Fatal("the bridge did not stop gracefully")
	}
	t.Logf("the bridge stopped in %v", time.Since(stopping).Round(time.Millisecond))
	if err := b.Restart(); err != nil {
		t.Fatal(err)
	}
	recvWithin(t, subscribed, "the subscription after a graceful restart")
	allowed("after a graceful restart")
	select {
	case err := <-done:
		t.Fatalf("Run returned: %v", err)
	default:
	}
}

// At most Concurrency handlers run at once: with one, a second client is asked about
// only once the first decision is made.
func TestDeciderRunsAtMostConcurrencyHandlers(t *testing.T) {
	b := bridgetest.Start(t, append(bridgetest.BackendAuth, bridgetest.Fast...)...)
	asked := make(chan string, 10)
	release := make(chan struct{})
	subscribed := make(chan *pb.AuthorizeSubscribed, 1)
	runDecider(t, &bridge.Decider{
		Client:       dial(t, b),
		Concurrency:  1,
		OnSubscribed: func(s *pb.AuthorizeSubscribed) { subscribed <- s },
		Connect: func(ctx context.Context, req *pb.ConnectRequest) (bridge.Decision, error) {
			session, _ := bridge.Cookie(req, "session")
			asked <- session
			<-release
			return &bridge.Allow{UserID: session}, nil
		},
	})
	releaseAll := sync.OnceFunc(func() { close(release) })
	t.Cleanup(releaseAll) // before the decider stops, should the test fail holding one
	recvWithin(t, subscribed, "the subscription")
	browsers := bridgetest.NewBrowsers(t)
	for _, id := range []string{"first", "second"} {
		browsers.Send(t, map[string]any{"cmd": "connect", "id": id, "url": b.URL(), "transports": []string{"websocket"},
			"extra_headers": map[string]string{"cookie": "session=" + id}})
	}
	first := recvWithin(t, asked, "the first question")
	select {
	case second := <-asked:
		t.Fatalf("%s was asked about while %s was being decided", second, first)
	case <-time.After(300 * time.Millisecond):
	}
	releaseAll()
	recvWithin(t, asked, "the second question")
	for _, id := range []string{"first", "second"} {
		r := browsers.Wait(t, "connect of "+id, func(r bridgetest.Report) bool {
			return r.ID == id && (r.Type == "connect" || r.Type == "connect_error")
		})
		if r.Type != "connect" {
			t.Errorf("%s: %s", id, r.Line)
		}
	}
}

// A stopping decider finishes the decision it is making before it closes; the bridge
// then has no decider and refuses new clients.
func TestDeciderDrainsOnStop(t *testing.T) {
	b := bridgetest.Start(t, append(bridgetest.BackendAuth, bridgetest.Fast...)...)
	running := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := &bridge.Decider{
		Client: dial(t, b),
		Logger: testLogger(t),
		Connect: func(ctx context.Context, req *pb.ConnectRequest) (bridge.Decision, error) {
			running <- struct{}{}
			time.Sleep(300 * time.Millisecond) // the backend is stopped meanwhile
			return &bridge.Allow{UserID: "late"}, nil
		},
	}
	subscribed := make(chan *pb.AuthorizeSubscribed, 1)
	d.OnSubscribed = func(s *pb.AuthorizeSubscribed) { subscribed <- s }
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	recvWithin(t, subscribed, "the subscription")
	browsers := bridgetest.NewBrowsers(t)
	browsers.Send(t, map[string]any{"cmd": "connect", "id": "late", "url": b.URL(), "transports": []string{"websocket"}})
	recvWithin(t, running, "the handler's start")
	cancel()
	r := browsers.Wait(t, "late's connect", func(r bridgetest.Report) bool {
		return r.ID == "late" && (r.Type == "connect" || r.Type == "connect_error")
	})
	if r.Type != "connect" {
		t.Errorf("the decision made while stopping did not reach the bridge: %s", r.Line)
	}
	if err := recvWithin(t, done, "Run's return"); !errors.Is(err, context.Canceled) {
		t.Errorf("Run returned %v, want context.Canceled", err)
	}
	if r := connectWith(t, browsers, "after", b.URL(), "websocket", ""); r.Type != "connect_error" || r.Message != refusedNoDecider {
		t.Errorf("a client after the decider stopped got %s, want connect_error %q", r.Line, refusedNoDecider)
	}
}

// What retrying cannot fix ends Run: a refused subscription, or no handler at all.
func TestDeciderStopsWhenRefused(t *testing.T) {
	b := bridgetest.Start(t, bridgetest.BackendAuth...)
	c, err := bridge.Dial(b.GRPC, bridge.WithInsecure(), bridge.WithAPIKey("wrong-key-wrong-key"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	allow := func(context.Context, *pb.ConnectRequest) (bridge.Decision, error) { return &bridge.Allow{}, nil }
	err = recvWithin(t, runDecider(t, &bridge.Decider{Client: c, Connect: allow}), "Run's return")
	if status.Code(err) != codes.Unauthenticated || strings.Contains(err.Error(), "wrong-key") {
		t.Errorf("Run with a wrong key returned %v, want Unauthenticated without the key", err)
	}
	err = recvWithin(t, runDecider(t, &bridge.Decider{Client: dial(t, b), Connect: allow, Namespaces: []string{"/nowhere"}}), "Run's return")
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "/nowhere") {
		t.Errorf("Run for an unknown namespace returned %v, want InvalidArgument naming it", err)
	}
	if err := (&bridge.Decider{Client: dial(t, b)}).Run(context.Background()); err == nil {
		t.Error("Run without a handler succeeded")
	}
}

func TestCookie(t *testing.T) {
	req := &pb.ConnectRequest{Headers: map[string]string{"cookie": `theme=dark; bad cookie; sid="abc"; session=s1`}}
	for name, want := range map[string]string{"session": "s1", "theme": "dark", "sid": "abc"} {
		if got, ok := bridge.Cookie(req, name); !ok || got != want {
			t.Errorf("Cookie(%q) = %q, %v; want %q", name, got, ok, want)
		}
	}
	if got, ok := bridge.Cookie(req, "missing"); ok {
		t.Errorf("Cookie(missing) = %q", got)
	}
	if _, ok := bridge.Cookie(&pb.ConnectRequest{}, "session"); ok {
		t.Error("Cookie found a cookie without a Cookie header")
	}
}
