package bridge_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
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

// eventWait bounds every wait for something a consumer does.
const eventWait = 15 * time.Second

// dial connects to b with the test API key.
func dial(t *testing.T, b *bridgetest.Bridge) *bridge.Client {
	t.Helper()
	c, err := bridge.Dial(b.GRPC, bridge.WithInsecure(), bridge.WithAPIKey(bridgetest.APIKey))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// testLogger sends the consumer's log to the test log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// start runs consumer until the test ends and returns a channel with Run's result.
func start(t *testing.T, consumer *bridge.Consumer) <-chan error {
	t.Helper()
	if consumer.Logger == nil {
		consumer.Logger = testLogger(t)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		done <- consumer.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-finished:
		case <-time.After(eventWait):
			t.Error("Consumer.Run did not return after its context was cancelled")
		}
	})
	return done
}

// recvWithin returns the next value from ch, failing the test after eventWait.
func recvWithin[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(eventWait):
		t.Fatalf("no %s within %v", what, eventWait)
		panic("unreachable")
	}
}

func tokenAuth(user string) map[string]any { return map[string]any{"token": bridgetest.Token(user)} }

// Must show 2: the bridge is killed and restarted; the consumer re-subscribes by itself
// and handles events sent after the restart.
func TestConsumerSurvivesBridgeRestart(t *testing.T) {
	b := bridgetest.Start(t, append(bridgetest.Secure, bridgetest.Fast...)...)
	subscribed := make(chan *pb.Subscribed, 10)
	handled := make(chan string, 10)
	done := start(t, &bridge.Consumer{
		Client:       dial(t, b),
		Group:        "restart",
		Backoff:      bridge.Backoff{Initial: 50 * time.Millisecond, Max: time.Second},
		OnSubscribed: func(s *pb.Subscribed) { subscribed <- s },
		Handler: func(ctx context.Context, ev *pb.ClientEvent) (any, error) {
			var word string
			if err := bridge.DecodeArgs(ev.GetPayload(), &word); err != nil {
				return nil, err
			}
			handled <- word
			return strings.ToUpper(word), nil
		},
	})
	first := recvWithin(t, subscribed, "first subscription")

	browsers := bridgetest.NewBrowsers(t)
	browsers.Send(t, map[string]any{
		"cmd": "connect", "id": "dave", "url": b.URL(), "auth": tokenAuth("dave"),
		"transports": []string{"websocket"}, "reconnection": true, "reconnection_delay_ms": 200,
	})
	browsers.Wait(t, "dave connected", bridgetest.Is("connect", "dave"))
	browsers.Emit(t, "dave", 1, "shout", true, "before")
	if got := browsers.Wait(t, "ack before restart", bridgetest.AckIs("dave", 1)); string(got.Args) != `["BEFORE"]` {
		t.Fatalf("ack before restart: %s", got.Args)
	}
	recvWithin(t, handled, "event before restart")

	// Crash the bridge, leave it down for a while (the consumer's attempts fail), then
	// bring it back on the same ports.
	b.Kill()
	killedAt := time.Now()
	time.Sleep(time.Second)
	select {
	case err := <-done:
		t.Fatalf("Run returned while the bridge was down: %v", err)
	default:
	}
	if err := b.Restart(); err != nil {
		t.Fatal(err)
	}
	again := recvWithin(t, subscribed, "subscription after restart")
	t.Logf("re-subscribed %v after the kill", time.Since(killedAt).Round(time.Millisecond))
	if again.GetInstanceId() == first.GetInstanceId() {
		t.Errorf("re-subscribed to instance %s, want the new process", again.GetInstanceId())
	}
	select {
	case err := <-done:
		t.Fatalf("Run returned during the restart: %v", err)
	default:
	}

	// The browser reconnects on its own too; its next event reaches the consumer.
	browsers.Wait(t, "dave reconnected", bridgetest.Is("connect", "dave"))
	browsers.Emit(t, "dave", 2, "shout", true, "after")
	if got := browsers.Wait(t, "ack after restart", bridgetest.AckIs("dave", 2)); string(got.Args) != `["AFTER"]` {
		t.Fatalf("ack after restart: %s", got.Args)
	}
	if w := recvWithin(t, handled, "event after restart"); w != "after" {
		t.Fatalf("handled %q after the restart, want \"after\"", w)
	}

	// A graceful stop (SIGTERM drains and ends the stream) is survived the same way.
	if !b.Stop() {
		t.Fatal("bridge did not stop gracefully")
	}
	if err := b.Restart(); err != nil {
		t.Fatal(err)
	}
	recvWithin(t, subscribed, "subscription after a graceful restart")
	browsers.Wait(t, "dave reconnected again", bridgetest.Is("connect", "dave"))
	browsers.Emit(t, "dave", 3, "shout", true, "again")
	if got := browsers.Wait(t, "ack after graceful restart", bridgetest.AckIs("dave", 3)); string(got.Args) != `["AGAIN"]` {
		t.Fatalf("ack after graceful restart: %s", got.Args)
	}
}

// The handler's result and errors become the client's ack, as Handler documents.
func TestConsumerAcks(t *testing.T) {
	b := bridgetest.Start(t, append(bridgetest.Secure, bridgetest.Fast...)...)
	start(t, &bridge.Consumer{
		Client: dial(t, b),
		Handler: func(ctx context.Context, ev *pb.ClientEvent) (any, error) {
			switch ev.GetEvent() {
			case "value":
				return map[string]any{"user": ev.GetUserId(), "html": "<ok>"}, nil
			case "args":
				return bridge.Args{"a", 2, nil}, nil
			case "nothing":
				return nil, nil
			case "binary":
				return bridge.MustPayload("file", []byte("\x00\x01bytes")), nil
			case "echo-binary":
				var name string
				var data []byte
				if err := bridge.DecodeArgs(ev.GetPayload(), &name, &data); err != nil {
					return nil, err
				}
				return bridge.Args{name, len(data)}, nil
			case "refuse":
				return nil, fmt.Errorf("wrapped: %w", bridge.AckErrorf("not_allowed", "you may not %s", "refuse"))
			case "fail":
				return nil, errors.New("database password is hunter2")
			case "panic":
				panic("boom")
			case "typed":
				var n int
				if err := bridge.DecodeArgs(ev.GetPayload(), &n); err != nil {
					return nil, err
				}
				return n * 2, nil
			}
			return nil, bridge.AckErrorf("unknown_event", "%s", ev.GetEvent())
		},
	})
	browsers := bridgetest.NewBrowsers(t)
	browsers.Connect(t, "erin", b.URL(), tokenAuth("erin"))

	cases := []struct {
		event string
		args  []any
		want  string
	}{
		{"value", nil, `[{"html":"<ok>","user":"erin"}]`},
		{"args", nil, `["a",2,null]`},
		{"nothing", nil, `[]`},
		{"binary", nil, `["file",{"$binary":"AAFieXRlcw=="}]`},
		{"echo-binary", []any{"f.bin", map[string]any{"$binary": "AAECAw=="}}, `["f.bin",4]`},
		{"refuse", nil, `[{"error":{"code":"not_allowed","message":"you may not refuse"}}]`},
		{"fail", nil, `[{"error":{"code":"internal","message":"internal error"}}]`},
		{"panic", nil, `[{"error":{"code":"internal","message":"internal error"}}]`},
		{"typed", []any{21}, `[42]`},
		{"typed", []any{"x"}, `[{"error":{"code":"invalid_argument","message":"argument 1: json: cannot unmarshal string into Go value of type int"}}]`},
		{"typed", nil, `[{"error":{"code":"invalid_argument","message":"expected 1 argument(s), got 0"}}]`},
	}
	for i, tc := range cases {
		browsers.Emit(t, "erin", i, tc.event, true, tc.args...)
		if got := browsers.Wait(t, "ack of "+tc.event, bridgetest.AckIs("erin", i)); string(got.Args) != tc.want {
			t.Errorf("%s %v: callback got %s, want %s", tc.event, tc.args, got.Args, tc.want)
		}
	}
}

// One socket's events are handled in the order it sent them, while sockets run in
// parallel; lifecycle and presence hooks run around them.
func TestConsumerOrderAndLifecycle(t *testing.T) {
	b := bridgetest.Start(t, append(bridgetest.Secure, bridgetest.Fast...)...)
	var mu sync.Mutex
	seen := map[string][]string{} // socket id -> what happened, in order
	record := func(sid, what string) {
		mu.Lock()
		defer mu.Unlock()
		seen[sid] = append(seen[sid], what)
	}
	presence := make(chan string, 10)
	start(t, &bridge.Consumer{
		Client:  dial(t, b),
		Workers: 4,
		Handler: func(ctx context.Context, ev *pb.ClientEvent) (any, error) {
			var n json.Number
			if err := bridge.DecodeArgs(ev.GetPayload(), &n); err != nil {
				return nil, err
			}
			record(ev.GetSocketId(), n.String())
			return nil, nil
		},
		OnSocketConnected:    func(_ context.Context, c *pb.SocketConnected) { record(c.GetSocketId(), "connected") },
		OnSocketDisconnected: func(_ context.Context, d *pb.SocketDisconnected) { record(d.GetSocketId(), "disconnected") },
		OnUserOnline:         func(_ context.Context, u *pb.UserOnline) { presence <- "online " + u.GetUserId() },
		OnUserOffline:        func(_ context.Context, u *pb.UserOffline) { presence <- "offline " + u.GetUserId() },
	})
	browsers := bridgetest.NewBrowsers(t)
	sids := map[string]string{}
	for _, id := range []string{"f1", "f2", "f3"} {
		sids[id] = browsers.Connect(t, id, b.URL(), tokenAuth("frank"))
	}
	if p := recvWithin(t, presence, "presence"); p != "online frank" {
		t.Fatalf("presence %q, want online frank", p)
	}
	const n = 40
	for _, id := range []string{"f1", "f2", "f3"} {
		browsers.Send(t, map[string]any{"cmd": "emit_many", "id": id, "event": "n", "count": n, "ack": true})
	}
	for _, id := range []string{"f1", "f2", "f3"} {
		for i := range n {
			browsers.Wait(t, "ack", bridgetest.AckIs(id, i))
		}
		browsers.Send(t, map[string]any{"cmd": "disconnect", "id": id})
	}
	if p := recvWithin(t, presence, "presence"); p != "offline frank" {
		t.Fatalf("presence %q, want offline frank", p)
	}
	deadline := time.Now().Add(eventWait)
	for _, id := range []string{"f1", "f2", "f3"} {
		want := []string{"connected"}
		for i := range n {
			want = append(want, fmt.Sprint(i))
		}
		want = append(want, "disconnected")
		for {
			mu.Lock()
			got := strings.Join(seen[sids[id]], ",")
			mu.Unlock()
			if got == strings.Join(want, ",") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("socket %s saw %s, want %s", id, got, strings.Join(want, ","))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// A stopping consumer lets the handler that is running answer before it closes.
func TestConsumerDrainsOnStop(t *testing.T) {
	b := bridgetest.Start(t, append(bridgetest.Secure, bridgetest.Fast...)...)
	running := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	consumer := &bridge.Consumer{
		Client: dial(t, b),
		Logger: testLogger(t),
		Handler: func(ctx context.Context, ev *pb.ClientEvent) (any, error) {
			running <- struct{}{}
			time.Sleep(300 * time.Millisecond) // the backend is stopped meanwhile
			return "finished", nil
		},
	}
	done := make(chan error, 1)
	go func() { done <- consumer.Run(ctx) }()
	browsers := bridgetest.NewBrowsers(t)
	browsers.Connect(t, "gina", b.URL(), tokenAuth("gina"))
	browsers.Emit(t, "gina", 1, "slow", true)
	recvWithin(t, running, "handler start")
	cancel()
	if got := browsers.Wait(t, "ack of slow", bridgetest.AckIs("gina", 1)); string(got.Args) != `["finished"]` {
		t.Errorf("callback got %s, want the handler's answer", got.Args)
	}
	if err := recvWithin(t, done, "Run's return"); !errors.Is(err, context.Canceled) {
		t.Errorf("Run returned %v, want context.Canceled", err)
	}
}

// A refused subscription is not retried: Run returns the bridge's error.
func TestConsumerStopsWhenRefused(t *testing.T) {
	b := bridgetest.Start(t, bridgetest.Secure...)
	c, err := bridge.Dial(b.GRPC, bridge.WithInsecure(), bridge.WithAPIKey("wrong-key-wrong-key"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := start(t, &bridge.Consumer{
		Client:  c,
		Handler: func(context.Context, *pb.ClientEvent) (any, error) { return nil, nil },
	})
	err = recvWithin(t, done, "Run's return")
	if status.Code(err) != codes.Unauthenticated || strings.Contains(err.Error(), "wrong-key") {
		t.Fatalf("Run returned %v, want Unauthenticated without the key", err)
	}
}

func TestDialNeedsATransport(t *testing.T) {
	if _, err := bridge.Dial("127.0.0.1:1"); err == nil {
		t.Error("Dial without WithTLS or WithInsecure succeeded")
	}
	if _, err := bridge.Dial("127.0.0.1:1", bridge.WithTLS(nil), bridge.WithInsecure()); err == nil {
		t.Error("Dial with both WithTLS and WithInsecure succeeded")
	}
	if _, err := bridge.Dial("127.0.0.1:1", bridge.WithInsecure(), bridge.WithAPIKey("has space")); err == nil {
		t.Error("Dial accepted an API key with whitespace")
	}
	key := bridge.APIKey("secret-key-123456", true)
	if s := fmt.Sprintf("%v %+v %#v", key, key, key); strings.Contains(s, "secret") {
		t.Errorf("formatting the credentials shows the key: %s", s)
	}
}

// ConfirmAll on a cluster-mode bridge: a consumer dies while handling a socket's events;
// the next consumer of the group gets every event the first had not finished, with the
// same ids. (Embedded mode keeps nothing across a stream's loss; cluster mode keeps it in
// Redis.)
func TestConsumerConfirmAllRedeliversUnfinishedEvents(t *testing.T) {
	redis := bridgetest.StartRedis(t)
	b := bridgetest.Start(t, append(append(bridgetest.Secure, bridgetest.Fast...), "redis.url="+redis)...)
	client := dial(t, b)

	type seen struct {
		n  int
		id string
	}
	firstSeen := make(chan seen, 100)
	ctx, crash := context.WithCancel(context.Background())
	first := &bridge.Consumer{
		Client:       client,
		Group:        "jobs",
		ConfirmAll:   true,
		DrainTimeout: -1, // a crash: nothing is finished on the way out
		Logger:       testLogger(t),
		Handler: func(hctx context.Context, ev *pb.ClientEvent) (any, error) {
			var n int
			if err := bridge.DecodeArgs(ev.GetPayload(), &n); err != nil {
				return nil, err
			}
			firstSeen <- seen{n, ev.GetId()}
			if n >= 5 {
				<-hctx.Done() // stuck until the consumer dies
				return nil, hctx.Err()
			}
			return nil, nil
		},
	}
	firstDone := make(chan error, 1)
	go func() { firstDone <- first.Run(ctx) }()

	browsers := bridgetest.NewBrowsers(t)
	browsers.Connect(t, "jo", b.URL(), tokenAuth("jo"))
	for i := range 10 {
		browsers.Emit(t, "jo", i, "job", false, i)
	}
	// One socket's events are handled in order: the first consumer sees 0..5 and holds
	// 6..9 queued behind the stuck 5.
	ids := map[int]string{}
	deadline := time.After(eventWait)
	for len(ids) < 6 {
		select {
		case s := <-firstSeen:
			ids[s.n] = s.id
		case <-deadline:
			t.Fatalf("the first consumer saw only %v", ids)
		}
	}
	// Let the confirmations of 0..4 reach the bridge, then crash.
	time.Sleep(300 * time.Millisecond)
	crash()
	recvWithin(t, firstDone, "first consumer's exit")

	secondSeen := make(chan seen, 100)
	start(t, &bridge.Consumer{
		Client:     client,
		Group:      "jobs",
		ConfirmAll: true,
		Handler: func(_ context.Context, ev *pb.ClientEvent) (any, error) {
			var n int
			if err := bridge.DecodeArgs(ev.GetPayload(), &n); err != nil {
				return nil, err
			}
			secondSeen <- seen{n, ev.GetId()}
			return nil, nil
		},
	})
	got := map[int]string{}
	for len(got) < 5 {
		s := recvWithin(t, secondSeen, fmt.Sprintf("redelivery (have %v)", got))
		if s.n < 5 {
			t.Errorf("event %d was confirmed before the crash but came again", s.n)
		}
		got[s.n] = s.id
	}
	for n := 5; n < 10; n++ {
		if _, ok := got[n]; !ok {
			t.Errorf("event %d was not delivered again", n)
		}
		if want, ok := ids[n]; ok && got[n] != want {
			t.Errorf("event %d came back with id %q, first seen as %q", n, got[n], want)
		}
	}
}
