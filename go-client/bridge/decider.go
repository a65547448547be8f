package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	pb "github.com/socketbridge/socket-bridge/go-client/socketbridgev1"
)

// Decision is a backend's answer to a connect or join question: an [*Allow] or a [*Deny].
type Decision interface {
	isDecision()
}

// Allow lets a client connect, or a socket join the room it asked for.
//
// For a join only the verdict counts: the socket joins the room it asked for and the
// fields are not used.
type Allow struct {
	// UserID is the connecting socket's user: 1 to 128 printable characters, or empty
	// for an anonymous socket. Pushes to this user reach the socket.
	UserID string
	// Rooms the socket joins as it connects (at most 64; never the bridge's internal
	// "user:" and "socket:" rooms).
	Rooms []string
	// Data is kept with the socket and returned in SocketConnected, ListConnections and
	// every JoinRequest of the socket. It is encoded with encoding/json (a
	// json.RawMessage is sent as it is); nil sends nothing. At most
	// socketio.max_auth_bytes (8 KiB by default) once encoded.
	//
	// Events subscribers see it: never put a credential in it.
	Data any
}

// Deny refuses a connect or a join. It is also an error, so code deep in a handler can
// return one (or an error wrapping one) and the client still gets its reason.
type Deny struct {
	// Code is a machine-readable reason, e.g. "session_expired" (1 to 64 bytes; empty
	// sends [CodeDenied]). A refused join's ack gets it; a refused connect does not
	// show it to the client yet (see Data).
	Code string
	// Message is for humans: a refused connect's `connect_error` message, or a refused
	// join's ack error message. At most 1024 bytes are sent; empty sends "not allowed".
	Message string
	// Data is optional JSON detail for a refused connect (encoded like [Allow.Data]).
	// Browsers do not receive it yet: the bridge's Socket.IO layer sends connect_error
	// with a message only. Joins ignore it.
	Data any
}

func (*Allow) isDecision() {}
func (*Deny) isDecision()  {}

func (d *Deny) Error() string { return d.Code + ": " + d.Message }

// Denyf returns a [*Deny] with a formatted message.
func Denyf(code, format string, args ...any) *Deny {
	return &Deny{Code: code, Message: fmt.Sprintf(format, args...)}
}

// CodeDenied is the code of a [*Deny] that gave none.
const CodeDenied = "denied"

// ConnectHandler decides whether a client may connect. req carries what the client
// presented: its auth object (req.AuthJson), the request headers that matter for auth
// (req.Headers, lower-case names: cookie, origin, user-agent and the bridge's
// auth.backend.forward_headers), its address and transport, and with
// auth.backend.require_jwt the verified token's claims.
//
// Return an [*Allow] or a [*Deny]. Anything else denies: an error (a [*Deny], or an error
// wrapping one, denies with its code and message; any other error with code
// [CodeInternal] and a generic message, and is logged), a nil decision, or a panic
// (logged with its stack). A handler's failure never lets a client in.
//
// req holds the client's credentials (cookies, tokens): never log it as it is.
type ConnectHandler func(ctx context.Context, req *pb.ConnectRequest) (Decision, error)

// JoinHandler decides whether a socket may join the room it asked for with
// `bridge:join` (one socketio.client_room_patterns does not grant). req carries the
// socket's user and the data its connect was allowed with. Return an [*Allow] (its
// fields are not used) or a [*Deny]; failures deny as for [ConnectHandler].
type JoinHandler func(ctx context.Context, req *pb.JoinRequest) (Decision, error)

// Cookie returns the value of the named cookie a connecting client sent, and whether it
// sent one. Malformed cookies in the header are skipped.
func Cookie(req *pb.ConnectRequest, name string) (string, bool) {
	header := req.GetHeaders()["cookie"]
	if header == "" {
		return "", false
	}
	c, err := (&http.Request{Header: http.Header{"Cookie": {header}}}).Cookie(name)
	if err != nil {
		return "", false
	}
	return c.Value, true
}

// Decider holds a backend's Authorize stream: the bridge asks it whether each client may
// connect (the bridge runs with auth.mode = "backend") and, with
// auth.backend.decide_joins, whether a socket may join a room. It calls Connect or Join
// for each question, sends the decision back, and re-subscribes with exponential backoff
// and jitter whenever the stream drops (a bridge restart, a network failure, a bridge
// draining for shutdown). Set the fields, then call Run.
//
// Questions are answered concurrently, up to Concurrency at a time. The bridge refuses a
// client whose question is not answered within its auth.backend.timeout_ms, and refuses at
// once the questions a stream held when it ends; with no decider subscribed it refuses
// every connect. Running several Deciders (goroutines or processes) shares the questions
// among them, and keeps clients getting in while one restarts.
type Decider struct {
	// Client is the bridge to subscribe to, usually a [*Client]. Required.
	Client pb.BridgeServiceClient

	// Connect decides connects; nil leaves them to other deciders.
	Connect ConnectHandler
	// Join decides room joins; nil leaves them to other deciders. At least one of
	// Connect and Join is required.
	Join JoinHandler
	// Namespaces to decide for; empty means every namespace the bridge serves.
	Namespaces []string

	// Concurrency is how many handlers may run at once. Default 64. While all are busy
	// the decider stops reading questions; the bridge then queues them (a bounded
	// number, past which it refuses clients with decider_overloaded).
	Concurrency int
	// Timeout bounds each handler's context. Default 2s, the bridge's default
	// auth.backend.timeout_ms: a decision later than the bridge waits is thrown away,
	// so set it to the bridge's setting.
	Timeout time.Duration

	// OnSubscribed runs each time a stream is subscribed, the first time and after every
	// reconnect.
	OnSubscribed func(*pb.AuthorizeSubscribed)

	// Backoff paces re-subscribing after the stream drops. The wait starts over once a
	// stream has been subscribed again.
	Backoff Backoff
	// DrainTimeout bounds how long Run, once its context is done, waits for running
	// handlers so their decisions still reach the bridge. Default 5s; negative means no
	// draining.
	DrainTimeout time.Duration
	// Logger receives stream drops, reconnects and handler failures (never the
	// questions' headers or auth objects). Default slog.Default().
	Logger *slog.Logger
}

// errAuthorizeEnded is what a stream the bridge ended without an error status reports.
var errAuthorizeEnded = errors.New("the bridge ended the authorize stream")

// Run subscribes and decides until ctx is done, re-subscribing whenever the stream drops.
// Once ctx is done it drains: it takes no more questions, waits for running handlers
// (see DrainTimeout) and sends their decisions, then closes the stream, which makes the
// bridge refuse at once any question it still held for this decider. It returns ctx's
// error after every handler has returned, or earlier with an error that retrying cannot
// fix: a missing field on the Decider, or the bridge refusing the subscription
// (Unauthenticated, PermissionDenied, InvalidArgument, Unimplemented).
func (d *Decider) Run(ctx context.Context) error {
	if d.Client == nil {
		return errors.New("bridge: Decider.Client is nil")
	}
	if d.Connect == nil && d.Join == nil {
		return errors.New("bridge: Decider needs a Connect or a Join handler")
	}
	log := d.Logger
	if log == nil {
		log = slog.Default()
	}
	n := d.Concurrency
	if n <= 0 {
		n = 64
	}
	// Shared by every stream of this Run: handlers of a stream that dropped still count
	// until they return, so a reconnect never runs more than Concurrency at once.
	slots := make(chan struct{}, n)
	var handlers sync.WaitGroup
	defer handlers.Wait()

	attempt := 0
	for {
		subscribed, err := d.serve(ctx, log, slots, &handlers)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if isPermanent(err) {
			return fmt.Errorf("bridge: authorize subscription refused: %w", err)
		}
		if subscribed {
			attempt = 0
		}
		delay := d.Backoff.Delay(attempt)
		attempt++
		log.Warn("socket-bridge authorize stream down; retrying", "error", err, "attempt", attempt, "delay", delay)
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
	}
}

// serve runs one stream from subscribe to its end. subscribed reports whether the bridge
// confirmed the subscription, which resets the backoff.
func (d *Decider) serve(ctx context.Context, log *slog.Logger, slots chan struct{}, handlers *sync.WaitGroup) (subscribed bool, err error) {
	// The stream is not bound to ctx: once ctx ends, running handlers may still answer
	// (DrainTimeout). cancel ends it, and the handlers' contexts, on every path out.
	streamCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()

	stream, err := d.Client.Authorize(streamCtx)
	if err != nil {
		return false, err
	}
	sub := &pb.AuthorizeSubscribe{Connects: d.Connect != nil, Joins: d.Join != nil, Namespaces: d.Namespaces}
	if err := stream.Send(&pb.AuthorizeRequest{Kind: &pb.AuthorizeRequest_Subscribe{Subscribe: sub}}); err != nil {
		// Send reports io.EOF when the bridge has ended the stream; Recv says why.
		if _, rerr := stream.Recv(); rerr != nil && rerr != io.EOF {
			return false, rerr
		}
		return false, err
	}

	msgs, recvErr := receive(streamCtx, stream.Recv, errAuthorizeEnded)

	select {
	case m := <-msgs:
		s := m.GetSubscribed()
		if s == nil {
			return false, fmt.Errorf("bridge: expected AuthorizeSubscribed as the first message, got %T", m.GetKind())
		}
		log.Info("socket-bridge authorize stream subscribed", "decider", s.GetDeciderId(), "instance", s.GetInstanceId(),
			"connects", sub.Connects, "joins", sub.Joins)
		if d.OnSubscribed != nil {
			d.OnSubscribed(s)
		}
	case err := <-recvErr:
		return false, err
	case <-ctx.Done():
		return false, ctx.Err()
	}

	var sendMu sync.Mutex // a gRPC stream allows one Send at a time
	send := func(req *pb.AuthorizeRequest) {
		sendMu.Lock()
		defer sendMu.Unlock()
		if err := stream.Send(req); err != nil {
			// The reading goroutine reports the stream's end; the bridge has already
			// refused this question then.
			log.Debug("socket-bridge decision not sent", "error", err)
		}
	}
	var running sync.WaitGroup // this stream's handlers
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}

	stopping := false
loop:
	for {
		select {
		case m := <-msgs:
			select {
			case slots <- struct{}{}:
			case err = <-recvErr:
				break loop
			case <-ctx.Done():
				stopping = true
				break loop
			}
			running.Add(1)
			handlers.Add(1)
			go func() {
				defer func() { <-slots; running.Done(); handlers.Done() }()
				hctx, hcancel := context.WithTimeout(streamCtx, timeout)
				defer hcancel()
				if answer := d.answer(hctx, m, log); answer != nil {
					send(answer)
				}
			}()
		case err = <-recvErr:
			break loop
		case <-ctx.Done():
			stopping = true
			break loop
		}
	}

	if stopping {
		err = ctx.Err()
		drain := d.DrainTimeout
		if drain == 0 {
			drain = 5 * time.Second
		}
		if drain > 0 && !waitFor(&running, drain) {
			log.Warn("socket-bridge decider stopped before every handler decided", "drain_timeout", drain)
		}
		sendMu.Lock()
		_ = stream.CloseSend()
		sendMu.Unlock()
		// The bridge unsubscribes this decider when it reads the end of the stream, then
		// ends its side: waiting for that (briefly) lets the decisions just sent be
		// flushed before the stream is cancelled. Questions still arriving are dropped:
		// the bridge refuses them once the decider is gone.
		timer := time.NewTimer(time.Second)
		for waiting := true; waiting; {
			select {
			case <-msgs:
			case <-recvErr:
				waiting = false
			case <-timer.C:
				waiting = false
			}
		}
		timer.Stop()
	}
	return true, err
}

// answer runs the handler for one question and returns the decision to send, or nil for
// a message that is not a question.
func (d *Decider) answer(ctx context.Context, m *pb.AuthorizeResponse, log *slog.Logger) *pb.AuthorizeRequest {
	switch k := m.GetKind().(type) {
	case *pb.AuthorizeResponse_Connect:
		q := k.Connect
		attrs := []any{"socket", q.GetSocketId(), "namespace", q.GetNamespace(), "transport", q.GetTransport()}
		var run func() (Decision, error)
		if d.Connect != nil {
			run = func() (Decision, error) { return d.Connect(ctx, q) }
		}
		allow, deny := verdict(log, "Connect", attrs, run)
		return &pb.AuthorizeRequest{Kind: &pb.AuthorizeRequest_Connect{Connect: connectDecision(q.GetId(), allow, deny, log, attrs)}}
	case *pb.AuthorizeResponse_Join:
		q := k.Join
		attrs := []any{"socket", q.GetSocketId(), "user", q.GetUserId(), "namespace", q.GetNamespace(), "room", q.GetRoom()}
		var run func() (Decision, error)
		if d.Join != nil {
			run = func() (Decision, error) { return d.Join(ctx, q) }
		}
		allow, deny := verdict(log, "Join", attrs, run)
		if allow != nil {
			return &pb.AuthorizeRequest{Kind: &pb.AuthorizeRequest_Join{Join: &pb.JoinDecision{Id: q.GetId(), Allow: true}}}
		}
		code, message := deny.wire()
		return &pb.AuthorizeRequest{Kind: &pb.AuthorizeRequest_Join{Join: &pb.JoinDecision{Id: q.GetId(), Code: code, Message: message}}}
	default:
		log.Debug("socket-bridge authorize message ignored", "kind", fmt.Sprintf("%T", k))
		return nil
	}
}

// internalDeny is what a client gets when the backend failed to decide: nothing of the
// failure itself, which is logged instead.
func internalDeny() *Deny { return &Deny{Code: CodeInternal, Message: "internal error"} }

// verdict runs a handler and reduces its result to an allow or a deny: whatever is not a
// clean allow denies. A failure that is the backend's fault (an error that is not a
// [*Deny], no decision, a panic, no handler) is logged and denied with a generic reason.
func verdict(log *slog.Logger, handler string, attrs []any, run func() (Decision, error)) (allow *Allow, deny *Deny) {
	failed := func(what string, cause any, extra ...any) (*Allow, *Deny) {
		log.Error("socket-bridge Decider."+handler+" "+what+"; denied", append(append(attrs, "error", cause), extra...)...)
		return nil, internalDeny()
	}
	if run == nil {
		return failed("is not set", "the bridge asked a question this decider did not subscribe to")
	}
	var decision Decision
	var err error
	panicked, stack := func() (recovered any, stack []byte) {
		defer func() {
			if recovered = recover(); recovered != nil {
				stack = debug.Stack()
			}
		}()
		decision, err = run()
		return nil, nil
	}()
	if panicked != nil {
		return failed("panicked", panicked, "stack", string(stack))
	}
	if err != nil {
		var d *Deny
		if errors.As(err, &d) && d != nil {
			return nil, d
		}
		return failed("failed", err)
	}
	switch v := decision.(type) {
	case *Allow:
		if v != nil {
			return v, nil
		}
	case *Deny:
		if v != nil {
			return nil, v
		}
	}
	return failed("returned no decision", fmt.Sprintf("got %T, want *Allow or *Deny", decision))
}

func connectDecision(id string, allow *Allow, deny *Deny, log *slog.Logger, attrs []any) *pb.ConnectDecision {
	if allow != nil {
		data, err := encodeData(allow.Data)
		if err == nil {
			return &pb.ConnectDecision{Id: id, Result: &pb.ConnectDecision_Allow{Allow: &pb.ConnectAllow{
				UserId: allow.UserID, Rooms: allow.Rooms, DataJson: data,
			}}}
		}
		log.Error("socket-bridge Decider.Connect allowed with Data that does not encode; denied", append(attrs, "error", err)...)
		deny = internalDeny()
	}
	code, message := deny.wire()
	data, err := encodeData(deny.Data)
	if err != nil {
		log.Error("socket-bridge Decider.Connect denied with Data that does not encode; denied without it", append(attrs, "error", err)...)
		data = ""
	}
	return &pb.ConnectDecision{Id: id, Result: &pb.ConnectDecision_Deny{Deny: &pb.ConnectDeny{
		Code: code, Message: message, DataJson: data,
	}}}
}

// wire returns the deny's code and message within the bounds an ack error has.
func (d *Deny) wire() (code, message string) {
	code, message = d.Code, d.Message
	if code == "" {
		code = CodeDenied
	}
	if message == "" {
		message = "not allowed"
	}
	return (&AckError{Code: code, Message: message}).wire()
}

// encodeData encodes Allow.Data or Deny.Data; nil encodes as nothing.
func encodeData(v any) (string, error) {
	if v == nil {
		return "", nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// waitFor waits for wg, at most d; it reports whether it finished.
func waitFor(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-done:
		return true
	case <-timer.C:
		return false
	}
}
