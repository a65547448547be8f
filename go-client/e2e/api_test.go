// Package e2e tests the generated client, grpcurl and the chat example against the real
// socket-bridge binary, with stock socket.io-client sockets in Node as the browsers.
package e2e

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/socketbridge/socket-bridge/go-client/internal/bridgetest"
	pb "github.com/socketbridge/socket-bridge/go-client/socketbridgev1"
)

// callTimeout bounds every RPC of these tests.
const callTimeout = 10 * time.Second

// generatedClient connects with nothing but the generated stubs and grpc-go: the API
// key goes in as outgoing metadata by hand (see withKey).
func generatedClient(t *testing.T, b *bridgetest.Bridge) (pb.BridgeServiceClient, *grpc.ClientConn) {
	t.Helper()
	conn, err := grpc.NewClient(b.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return pb.NewBridgeServiceClient(conn), conn
}

// withKey returns a bounded context carrying `authorization: Bearer <key>`.
func withKey(t *testing.T, key string) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	t.Cleanup(cancel)
	if key == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
}

func auth(user string) map[string]any { return map[string]any{"token": bridgetest.Token(user)} }

// Must show 1: a push through the generated client reaches a stock socket.io-client.
func TestPushReachesBrowser(t *testing.T) {
	b := bridgetest.Start(t, bridgetest.Secure...)
	client, _ := generatedClient(t, b)
	browsers := bridgetest.NewBrowsers(t)
	sid := browsers.Connect(t, "alice", b.URL(), auth("alice"))

	resp, err := client.Push(withKey(t, bridgetest.APIKey), &pb.PushRequest{
		Target:  &pb.Target{Kind: &pb.Target_UserId{UserId: "alice"}},
		Event:   "hello",
		Payload: &pb.Payload{ArgsJson: `[{"text":"hi","big":12345678901234567890},2]`},
	})
	if err != nil {
		t.Fatalf("Push: %v", err)
	}
	if resp.GetSocketsReached() != 1 || resp.GetMessageId() == "" {
		t.Fatalf("Push reported %v, want 1 socket reached and a message id", resp)
	}
	got := browsers.Wait(t, "hello at alice", bridgetest.EventIs("alice", "hello"))
	// The bridge forwards args_json as text; only JavaScript rounds the big integer.
	if want := `[{"text":"hi","big":12345678901234567000},2]`; string(got.Args) != want {
		t.Fatalf("alice got %s, want %s", got.Args, want)
	}

	// A push with ack_timeout returns the browser's answer.
	browsers.OnAckReply(t, "alice", "question", "yes", 42)
	resp, err = client.Push(withKey(t, bridgetest.APIKey), &pb.PushRequest{
		Target:  &pb.Target{Kind: &pb.Target_SocketId{SocketId: sid}},
		Event:   "question",
		Payload: &pb.Payload{ArgsJson: `["ready?"]`},
		Options: &pb.PushOptions{AckTimeout: durationpb.New(5 * time.Second)},
	})
	if err != nil {
		t.Fatalf("Push with ack: %v", err)
	}
	if len(resp.GetAcks()) != 1 || resp.GetAcks()[0].GetStatus() != pb.AckStatus_ACK_STATUS_ACKED ||
		resp.GetAcks()[0].GetPayload().GetArgsJson() != `["yes",42]` || resp.GetAcks()[0].GetSocketId() != sid {
		t.Fatalf("Push with ack reported %v, want alice's answer [\"yes\",42]", resp)
	}
}

// Must show 1: Status through the generated client.
func TestStatus(t *testing.T) {
	b := bridgetest.Start(t, bridgetest.Secure...)
	client, _ := generatedClient(t, b)
	browsers := bridgetest.NewBrowsers(t)
	browsers.Connect(t, "a1", b.URL(), auth("alice"))
	browsers.Connect(t, "a2", b.URL(), auth("alice"))
	browsers.Connect(t, "b1", b.URL(), auth("bob"))

	// An Events subscriber shows up under its group.
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	stream, err := client.Events(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+bridgetest.APIKey))
	if err != nil {
		t.Fatal(err)
	}
	subscribe(t, stream, &pb.Subscribe{Group: "status-test"})

	st, err := client.Status(withKey(t, bridgetest.APIKey), &pb.StatusRequest{})
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if st.GetConnections() != 3 || st.GetUniqueUsers() != 2 {
		t.Errorf("Status counts %d connections of %d users, want 3 of 2", st.GetConnections(), st.GetUniqueUsers())
	}
	if st.GetInstanceId() == "" || st.GetVersion() == "" || st.GetUptime().AsDuration() <= 0 || st.GetDraining() {
		t.Errorf("Status identity/uptime/draining look wrong: %v", st)
	}
	i := slices.IndexFunc(st.GetBackendGroups(), func(g *pb.BackendGroup) bool { return g.GetGroup() == "status-test" })
	if i < 0 || st.GetBackendGroups()[i].GetStreams() != 1 {
		t.Errorf("Status backend groups %v, want status-test with 1 stream", st.GetBackendGroups())
	}
	if len(st.GetNodes()) != 1 || st.GetNodes()[0].GetInstanceId() != st.GetInstanceId() {
		t.Errorf("Status nodes %v, want this instance", st.GetNodes())
	}
}

// Must show 1: ListConnections pages, with a page size smaller than the result.
func TestListConnectionsPages(t *testing.T) {
	b := bridgetest.Start(t, bridgetest.Secure...)
	client, _ := generatedClient(t, b)
	browsers := bridgetest.NewBrowsers(t)
	want := map[string]string{} // socket id -> user
	for _, user := range []string{"u1", "u2", "u3", "u4", "u5"} {
		want[browsers.Connect(t, user, b.URL(), auth(user))] = user
	}

	got := map[string]string{}
	var pages []int
	token := ""
	for range 10 { // bound: 5 connections in pages of 2 take 3 pages
		resp, err := client.ListConnections(withKey(t, bridgetest.APIKey), &pb.ListConnectionsRequest{PageSize: 2, PageToken: token})
		if err != nil {
			t.Fatalf("ListConnections: %v", err)
		}
		pages = append(pages, len(resp.GetConnections()))
		for _, c := range resp.GetConnections() {
			if _, dup := got[c.GetSocketId()]; dup {
				t.Errorf("socket %s listed twice", c.GetSocketId())
			}
			got[c.GetSocketId()] = c.GetUserId()
			if c.GetNamespace() != "/" || c.GetConnectedAt() == nil || c.GetHandshake().GetTransport() != "websocket" {
				t.Errorf("connection %v lacks namespace, connect time or transport", c)
			}
			if strings.Contains(c.GetHandshake().GetAuthJson(), "token") {
				t.Errorf("handshake auth_json leaks the token: %s", c.GetHandshake().GetAuthJson())
			}
		}
		token = resp.GetNextPageToken()
		if token == "" {
			break
		}
	}
	if !slices.Equal(pages, []int{2, 2, 1}) {
		t.Errorf("page sizes %v, want [2 2 1]", pages)
	}
	if len(got) != len(want) {
		t.Fatalf("listed %v, want %v", got, want)
	}
	for sid, user := range want {
		if got[sid] != user {
			t.Errorf("socket %s listed as user %q, want %q", sid, got[sid], user)
		}
	}

	// The user filter narrows the listing.
	resp, err := client.ListConnections(withKey(t, bridgetest.APIKey), &pb.ListConnectionsRequest{Filter: &pb.ListConnectionsRequest_UserId{UserId: "u3"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetConnections()) != 1 || resp.GetConnections()[0].GetUserId() != "u3" {
		t.Errorf("user filter u3 listed %v", resp.GetConnections())
	}
}

// subscribe sends Subscribe and waits for Subscribed.
func subscribe(t *testing.T, stream pb.BridgeService_EventsClient, sub *pb.Subscribe) *pb.Subscribed {
	t.Helper()
	if err := stream.Send(&pb.EventsRequest{Kind: &pb.EventsRequest_Subscribe{Subscribe: sub}}); err != nil {
		t.Fatalf("send Subscribe: %v", err)
	}
	m, err := stream.Recv()
	if err != nil {
		t.Fatalf("receive Subscribed: %v", err)
	}
	if m.GetSubscribed().GetSubscriberId() == "" {
		t.Fatalf("first Events message is %v, want Subscribed", m)
	}
	return m.GetSubscribed()
}

// Must show 1: client events arrive on Events and the acks sent back reach the client.
func TestEventsAcksReachBrowser(t *testing.T) {
	b := bridgetest.Start(t, append(bridgetest.Secure, bridgetest.Fast...)...)
	client, _ := generatedClient(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := client.Events(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+bridgetest.APIKey))
	if err != nil {
		t.Fatal(err)
	}
	subscribe(t, stream, &pb.Subscribe{Group: "acks", WantsLifecycle: true})

	browsers := bridgetest.NewBrowsers(t)
	sid := browsers.Connect(t, "carol", b.URL(), auth("carol"))

	// recv returns the next message of the wanted kind, skipping others (bounded by ctx).
	recv := func(kind string, is func(*pb.EventsResponse) bool) *pb.EventsResponse {
		t.Helper()
		for {
			m, err := stream.Recv()
			if err != nil {
				t.Fatalf("Events ended while waiting for %s: %v", kind, err)
			}
			if is(m) {
				return m
			}
		}
	}
	connected := func(m *pb.EventsResponse) bool { return m.GetSocketConnected() != nil }
	disconnected := func(m *pb.EventsResponse) bool { return m.GetSocketDisconnected() != nil }
	online := func(m *pb.EventsResponse) bool { return m.GetUserOnline() != nil }
	offline := func(m *pb.EventsResponse) bool { return m.GetUserOffline() != nil }
	clientEvent := func(m *pb.EventsResponse) bool { return m.GetClientEvent() != nil }

	// The bridge announces the user before the socket.
	if u := recv("user_online", online).GetUserOnline(); u.GetUserId() != "carol" {
		t.Errorf("UserOnline %v, want carol", u)
	}
	conn := recv("socket_connected", connected).GetSocketConnected()
	if conn.GetSocketId() != sid || conn.GetUserId() != "carol" || conn.GetHandshake().GetTransport() != "websocket" {
		t.Errorf("SocketConnected %v, want carol's socket %s", conn, sid)
	}

	// An event with an ack callback: answered with a payload.
	browsers.Emit(t, "carol", 1, "sum", true, 1, 2)
	ev := recv("client_event", clientEvent).GetClientEvent()
	if ev.GetEvent() != "sum" || ev.GetSocketId() != sid || ev.GetUserId() != "carol" || ev.GetNamespace() != "/" ||
		ev.GetPayload().GetArgsJson() != "[1,2]" || !ev.GetWantsAck() || ev.GetId() == "" || ev.GetReceivedAt() == nil {
		t.Fatalf("ClientEvent %v, want sum [1,2] from carol wanting an ack", ev)
	}
	sendAck(t, stream, &pb.Ack{EventId: ev.GetId(), Result: &pb.Ack_Payload{Payload: &pb.Payload{ArgsJson: `[{"sum":3},"ok"]`}}})
	if got := browsers.Wait(t, "ack of sum", bridgetest.AckIs("carol", 1)); string(got.Args) != `[{"sum":3},"ok"]` {
		t.Errorf("carol's callback got %s, want [{\"sum\":3},\"ok\"]", got.Args)
	}

	// Answered with an error: the callback gets one {"error":{code,message}} argument.
	browsers.Emit(t, "carol", 2, "divide", true, 1, 0)
	ev = recv("client_event", clientEvent).GetClientEvent()
	sendAck(t, stream, &pb.Ack{EventId: ev.GetId(), Result: &pb.Ack_Error{Error: &pb.AckError{Code: "division_by_zero", Message: "cannot divide by 0"}}})
	got := browsers.Wait(t, "ack of divide", bridgetest.AckIs("carol", 2))
	var args []map[string]map[string]string
	if err := json.Unmarshal(got.Args, &args); err != nil || len(args) != 1 ||
		args[0]["error"]["code"] != "division_by_zero" || args[0]["error"]["message"] != "cannot divide by 0" {
		t.Errorf("carol's callback got %s, want one error object", got.Args)
	}

	// Without a callback: wants_ack is false.
	browsers.Emit(t, "carol", 3, "typing", false, map[string]any{"room": "r1"})
	if ev = recv("client_event", clientEvent).GetClientEvent(); ev.GetEvent() != "typing" || ev.GetWantsAck() {
		t.Errorf("ClientEvent %v, want typing without ack", ev)
	}

	// Disconnect and presence.
	browsers.Send(t, map[string]any{"cmd": "disconnect", "id": "carol"})
	if d := recv("socket_disconnected", disconnected).GetSocketDisconnected(); d.GetSocketId() != sid || d.GetReason() == "" {
		t.Errorf("SocketDisconnected %v, want carol's socket with a reason", d)
	}
	if off := recv("user_offline", offline).GetUserOffline(); off.GetUserId() != "carol" {
		t.Errorf("UserOffline %v, want carol", off)
	}
}

func sendAck(t *testing.T, stream pb.BridgeService_EventsClient, ack *pb.Ack) {
	t.Helper()
	if err := stream.Send(&pb.EventsRequest{Kind: &pb.EventsRequest_Ack{Ack: ack}}); err != nil {
		t.Fatalf("send Ack: %v", err)
	}
}

// Must show 3: without (or with a wrong) API key the bridge answers Unauthenticated and
// does not echo the key; health stays open.
func TestUnauthenticatedWithoutKey(t *testing.T) {
	b := bridgetest.Start(t, bridgetest.Secure...)
	client, conn := generatedClient(t, b)

	_, err := client.Status(withKey(t, ""), &pb.StatusRequest{})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Status without a key: %v, want Unauthenticated", err)
	}
	const wrong = "not-the-key-but-long-enough"
	_, err = client.Push(withKey(t, wrong), &pb.PushRequest{Target: &pb.Target{Kind: &pb.Target_Everyone{Everyone: true}}, Event: "x"})
	if status.Code(err) != codes.Unauthenticated || strings.Contains(err.Error(), wrong) {
		t.Fatalf("Push with a wrong key: %v, want Unauthenticated without the key in it", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	stream, err := client.Events(ctx)
	if err == nil {
		_ = stream.Send(&pb.EventsRequest{Kind: &pb.EventsRequest_Subscribe{Subscribe: &pb.Subscribe{}}})
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Events without a key: %v, want Unauthenticated", err)
	}

	health, err := healthpb.NewHealthClient(conn).Check(withKey(t, ""), &healthpb.HealthCheckRequest{})
	if err != nil || health.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health without a key: %v %v, want SERVING", health, err)
	}
}

// Must show 3: INVALID_ARGUMENT names the offending field in a google.rpc.BadRequest
// that status.FromError exposes.
func TestInvalidArgumentNamesField(t *testing.T) {
	b := bridgetest.Start(t, bridgetest.Secure...)
	client, _ := generatedClient(t, b)

	cases := []struct {
		name  string
		req   *pb.PushRequest
		field string
	}{
		{"no target", &pb.PushRequest{Event: "hello"}, "target"},
		{"args not an array", &pb.PushRequest{Target: &pb.Target{Kind: &pb.Target_UserId{UserId: "alice"}}, Event: "hello", Payload: &pb.Payload{ArgsJson: `{"not":"an array"}`}}, "payload.args_json"},
		{"reserved event", &pb.PushRequest{Target: &pb.Target{Kind: &pb.Target_UserId{UserId: "alice"}}, Event: "connect"}, "event"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := client.Push(withKey(t, bridgetest.APIKey), tc.req)
			st, ok := status.FromError(err)
			if !ok || st.Code() != codes.InvalidArgument {
				t.Fatalf("Push: %v, want InvalidArgument", err)
			}
			var fields []string
			for _, d := range st.Details() {
				if br, ok := d.(*errdetails.BadRequest); ok {
					for _, v := range br.GetFieldViolations() {
						fields = append(fields, v.GetField())
						if v.GetDescription() == "" {
							t.Errorf("violation of %s has no description", v.GetField())
						}
					}
				}
			}
			if !slices.Equal(fields, []string{tc.field}) {
				t.Fatalf("field violations %v (details %v), want [%s]", fields, st.Details(), tc.field)
			}
		})
	}
}
