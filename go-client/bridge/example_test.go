package bridge_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/socketbridge/socket-bridge/go-client/bridge"
	"github.com/socketbridge/socket-bridge/go-client/internal/bridgetest"
	pb "github.com/socketbridge/socket-bridge/go-client/socketbridgev1"
)

// TestMain starts the bridge the examples talk to and exports its address and key the
// way the examples read them.
func TestMain(m *testing.M) {
	b, err := bridgetest.Launch(bridgetest.Secure...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("BRIDGE_GRPC", b.GRPC)
	os.Setenv("API_KEY", bridgetest.APIKey)
	code := m.Run()
	b.Stop()
	os.Exit(code)
}

func ExampleDial() {
	c, err := bridge.Dial(os.Getenv("BRIDGE_GRPC"), bridge.WithInsecure(), bridge.WithAPIKey(os.Getenv("API_KEY")))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.Status(ctx, &pb.StatusRequest{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("connections:", st.GetConnections(), "draining:", st.GetDraining())
	// Output: connections: 0 draining: false
}

func ExampleClient_push() {
	c, err := bridge.Dial(os.Getenv("BRIDGE_GRPC"), bridge.WithInsecure(), bridge.WithAPIKey(os.Getenv("API_KEY")))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// alice is offline: with a ttl the bridge keeps the message and delivers it when she
	// connects, as socket.on("notice", (n) => ...) sees it.
	resp, err := c.Push(ctx, &pb.PushRequest{
		Target:  &pb.Target{Kind: &pb.Target_UserId{UserId: "alice"}},
		Event:   "notice",
		Payload: bridge.MustPayload(map[string]any{"text": "your export is ready"}),
		Options: &pb.PushOptions{Ttl: durationpb.New(time.Minute)},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("reached:", resp.GetSocketsReached(), "kept for later:", resp.GetStoredOffline())
	// Output: reached: 0 kept for later: true
}

func ExampleFieldViolations() {
	c, err := bridge.Dial(os.Getenv("BRIDGE_GRPC"), bridge.WithInsecure(), bridge.WithAPIKey(os.Getenv("API_KEY")))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = c.Push(ctx, &pb.PushRequest{Event: "notice"}) // no target
	for _, v := range bridge.FieldViolations(err) {
		fmt.Printf("%s: %s\n", v.GetField(), v.GetDescription())
	}
	// Output: target: choose one of user_id, room, socket_id, everyone
}

func ExampleNewPayload() {
	p, err := bridge.NewPayload("chat", map[string]any{"text": "<b>hi</b>", "n": 1}, []byte{0xca, 0xfe})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(p.GetArgsJson())
	fmt.Println(len(p.GetAttachments()), "attachment")
	// Output:
	// ["chat",{"n":1,"text":"<b>hi</b>"},{"_placeholder":true,"num":0}]
	// 1 attachment
}

func ExampleDecodeArgs() {
	p := &pb.Payload{ArgsJson: `[{"room":"lobby","text":"hi"},12345678901234567890]`}
	var msg struct {
		Room string `json:"room"`
		Text string `json:"text"`
	}
	var n any
	if err := bridge.DecodeArgs(p, &msg, &n); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s in %s; %v is a %T\n", msg.Text, msg.Room, n, n)

	var count int
	err := bridge.DecodeArgs(&pb.Payload{ArgsJson: `["three"]`}, &count)
	fmt.Println(err)
	// Output:
	// hi in lobby; 12345678901234567890 is a json.Number
	// invalid_argument: argument 1: json: cannot unmarshal string into Go value of type int
}

func ExampleBackoff_Delay() {
	b := bridge.Backoff{Initial: 100 * time.Millisecond, Max: time.Second, Jitter: -1} // no jitter, to print it
	for attempt := range 6 {
		fmt.Print(b.Delay(attempt), " ")
	}
	fmt.Println()
	// Output: 100ms 200ms 400ms 800ms 1s 1s
}

// A chat-like backend: answers "sum" through the client's ack callback, refuses bad
// input with an error the client sees, and follows presence. Run blocks until SIGTERM,
// reconnecting by itself whenever the bridge restarts.
func ExampleConsumer() {
	c, err := bridge.Dial(os.Getenv("BRIDGE_GRPC"), bridge.WithInsecure(), bridge.WithAPIKey(os.Getenv("API_KEY")))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	consumer := &bridge.Consumer{
		Client:        c,
		Group:         "calculator",
		EventPatterns: []string{"sum"},
		// socket.emit("sum", 1, 2, (answer) => ...) gets {"sum":3}.
		Handler: func(ctx context.Context, ev *pb.ClientEvent) (any, error) {
			var a, b float64
			if err := bridge.DecodeArgs(ev.GetPayload(), &a, &b); err != nil {
				return nil, err // {"error":{"code":"invalid_argument",...}}
			}
			return map[string]float64{"sum": a + b}, nil
		},
		OnUserOnline: func(ctx context.Context, u *pb.UserOnline) {
			slog.Info("online", "user", u.GetUserId())
		},
		OnUserOffline: func(ctx context.Context, u *pb.UserOffline) {
			slog.Info("offline", "user", u.GetUserId())
		},
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := consumer.Run(ctx); !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
}

// A backend that decides who connects from its own session store: the session cookie the
// browser sends with the connection names the user. Run the bridge with
// auth.mode = "backend" (and auth.backend.decide_joins for Join). Run blocks until
// SIGTERM, reconnecting by itself whenever the bridge restarts.
func ExampleDecider() {
	c, err := bridge.Dial(os.Getenv("BRIDGE_GRPC"), bridge.WithInsecure(), bridge.WithAPIKey(os.Getenv("API_KEY")))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	sessions := map[string]string{"s3cr3t": "alice"} // session id → user; a database in real life
	decider := &bridge.Decider{
		Client: c,
		// The client's connect_error shows a refusal's message.
		Connect: func(ctx context.Context, req *pb.ConnectRequest) (bridge.Decision, error) {
			id, ok := bridge.Cookie(req, "session")
			if !ok {
				return bridge.Denyf("sign_in_required", "sign in first"), nil
			}
			user, ok := sessions[id]
			if !ok {
				return bridge.Denyf("session_expired", "your session has ended; sign in again"), nil
			}
			// The bridge keeps Data with the socket: SocketConnected, ListConnections and
			// JoinRequest carry it.
			return &bridge.Allow{UserID: user, Rooms: []string{"tenant-acme"}, Data: map[string]string{"tenant": "acme"}}, nil
		},
		// socket.emit("bridge:join", "team-red", (answer) => ...) gets {"ok":true} or the
		// refusal's {"error":{"code","message"}}.
		Join: func(ctx context.Context, req *pb.JoinRequest) (bridge.Decision, error) {
			if strings.HasPrefix(req.GetRoom(), "team-") {
				return &bridge.Allow{}, nil
			}
			return bridge.Denyf("not_your_room", "%s is not one of your teams", req.GetRoom()), nil
		},
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := decider.Run(ctx); !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
}

func ExampleCookie() {
	req := &pb.ConnectRequest{Headers: map[string]string{"cookie": "theme=dark; session=s3cr3t"}}
	id, ok := bridge.Cookie(req, "session")
	fmt.Println(id, ok)
	// Output: s3cr3t true
}
