package bridge

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/socketbridge/socket-bridge/go-client/socketbridgev1"
)

// Handler answers one client event. Its result becomes the client's acknowledgement
// when the client asked for one (ev.WantsAck):
//
//   - nil: the callback runs with no arguments;
//   - an [Args]: the callback gets each element as one argument;
//   - a *[pb.Payload]: sent as it is (for binary attachments or pre-encoded JSON);
//   - any other value: encoded with encoding/json as the callback's single argument.
//
// A non-nil error answers `{"error":{"code","message"}}` instead: an [*AckError] (or an
// error wrapping one) as it is, any other error as code [CodeInternal] with a generic
// message (the error itself is logged). Without WantsAck the result is dropped and an
// error is only logged.
//
// ctx is cancelled when the stream the event came on ends, because an answer can no
// longer be delivered then; return promptly when it is, since the consumer waits for
// running handlers before it re-subscribes.
type Handler func(ctx context.Context, ev *pb.ClientEvent) (any, error)

// Consumer holds a backend's Events subscription: it subscribes, hands each client
// event to Handler and sends the result back as the ack, reports lifecycle and presence
// changes to the On* hooks, and re-subscribes with exponential backoff and jitter
// whenever the stream drops (a bridge restart, a network failure, a bridge draining for
// shutdown). Set the fields, then call Run.
//
// Events of one socket are handled one at a time, in the order the client sent them,
// together with that socket's connect and disconnect; events of different sockets are
// handled concurrently by Workers goroutines. A slow handler delays the sockets that
// share its worker, and once a worker's queue is full the consumer stops reading the
// stream: the bridge then fails new events for this stream fast with
// "backend_overloaded" instead of queueing them without bound.
//
// Running the same Consumer in several goroutines (or processes) opens several streams
// in the same group; the bridge spreads sockets over them.
type Consumer struct {
	// Client is the bridge to subscribe to, usually a [*Client]. Required.
	Client pb.BridgeServiceClient

	// Group names the subscription: streams in one group share the events, every group
	// gets its own copy. Empty means "default".
	Group string
	// EventPatterns selects events by name (`*` matches any run of characters). Empty
	// means every event.
	EventPatterns []string
	// Namespaces selects Socket.IO namespaces. Empty means every namespace.
	Namespaces []string

	// Handler answers client events. Required.
	Handler Handler

	// ConfirmAll asks for at-least-once delivery of every event in cluster mode (the
	// bridge runs with redis.url): each event is confirmed only after Handler returns, so
	// events a crash or a dropped stream interrupts are delivered again, with the same
	// id, when a stream of the group comes back. Handlers must then tolerate seeing an
	// event twice (ev.Id identifies it). Without it only events with WantsAck are held
	// until answered. The embedded (single instance) bridge ignores it.
	ConfirmAll bool

	// The lifecycle hooks. Setting any of them subscribes with wants_lifecycle, so the
	// bridge sends all four kinds; the ones left nil are ignored.

	// OnSocketConnected runs when a socket joins a namespace, before its first event.
	OnSocketConnected func(context.Context, *pb.SocketConnected)
	// OnSocketDisconnected runs when a socket leaves, after its last event.
	OnSocketDisconnected func(context.Context, *pb.SocketDisconnected)
	// OnUserOnline runs when a user's first socket connects.
	OnUserOnline func(context.Context, *pb.UserOnline)
	// OnUserOffline runs when a user's last socket disconnects.
	OnUserOffline func(context.Context, *pb.UserOffline)

	// OnSubscribed runs each time a stream is subscribed, the first time and after every
	// reconnect. Lifecycle events that happened while the stream was down are not
	// replayed: a backend that tracks presence should resynchronise here (for example
	// with ListConnections).
	OnSubscribed func(*pb.Subscribed)

	// Workers is how many goroutines run handlers. Default 16.
	Workers int
	// Backoff paces re-subscribing after the stream drops. The wait starts over once a
	// stream has been subscribed again.
	Backoff Backoff
	// DrainTimeout bounds how long Run, once its context is done, waits for handlers
	// already running or queued so their acks still reach the clients. Default 5s;
	// negative means no draining.
	DrainTimeout time.Duration
	// Logger receives stream drops, reconnects and handler failures. Default
	// slog.Default().
	Logger *slog.Logger
}

// errStreamEnded is what a stream the bridge ended without an error status reports (the
// bridge does so when it drains for shutdown).
var errStreamEnded = errors.New("the bridge ended the events stream")

// Run subscribes and serves events until ctx is done, re-subscribing whenever the stream
// drops. It returns ctx's error after draining (see DrainTimeout) and after every
// running handler has returned, or earlier with an error that retrying cannot fix: a
// missing field on the Consumer, or the bridge refusing the subscription
// (Unauthenticated, PermissionDenied, InvalidArgument, Unimplemented).
func (c *Consumer) Run(ctx context.Context) error {
	if c.Client == nil {
		return errors.New("bridge: Consumer.Client is nil")
	}
	if c.Handler == nil {
		return errors.New("bridge: Consumer.Handler is nil")
	}
	log := c.Logger
	if log == nil {
		log = slog.Default()
	}
	attempt := 0
	for {
		subscribed, err := c.serve(ctx, log)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if isPermanent(err) {
			return fmt.Errorf("bridge: events subscription refused: %w", err)
		}
		if subscribed {
			attempt = 0
		}
		delay := c.Backoff.Delay(attempt)
		attempt++
		log.Warn("socket-bridge events stream down; retrying", "error", err, "attempt", attempt, "delay", delay)
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
	}
}

// isPermanent reports errors that another attempt would only repeat.
func isPermanent(err error) bool {
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied, codes.InvalidArgument, codes.Unimplemented:
		return true
	}
	return false
}

// serve runs one stream from Subscribe to its end. subscribed reports whether the
// bridge confirmed the subscription, which resets the backoff.
func (c *Consumer) serve(ctx context.Context, log *slog.Logger) (subscribed bool, err error) {
	// The stream is not bound to ctx: when ctx ends, handlers already running or queued
	// may still answer (DrainTimeout). cancel ends it on every path out of serve.
	streamCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()

	stream, err := c.Client.Events(streamCtx)
	if err != nil {
		return false, err
	}
	sub := &pb.Subscribe{
		Group:          c.Group,
		EventPatterns:  c.EventPatterns,
		Namespaces:     c.Namespaces,
		WantsLifecycle: c.OnSocketConnected != nil || c.OnSocketDisconnected != nil || c.OnUserOnline != nil || c.OnUserOffline != nil,
		ConfirmAll:     c.ConfirmAll,
	}
	if err := stream.Send(&pb.EventsRequest{Kind: &pb.EventsRequest_Subscribe{Subscribe: sub}}); err != nil {
		// Send reports io.EOF when the bridge has ended the stream; Recv says why.
		if _, rerr := stream.Recv(); rerr != nil && rerr != io.EOF {
			return false, rerr
		}
		return false, err
	}

	// One goroutine reads the stream, so the loop below can also watch ctx.
	msgs, recvErr := receive(streamCtx, stream.Recv, errStreamEnded)

	select {
	case m := <-msgs:
		s := m.GetSubscribed()
		if s == nil {
			return false, fmt.Errorf("bridge: expected Subscribed as the first message, got %T", m.GetKind())
		}
		log.Info("socket-bridge events stream subscribed", "subscriber", s.GetSubscriberId(), "instance", s.GetInstanceId(), "group", c.Group)
		if c.OnSubscribed != nil {
			c.OnSubscribed(s)
		}
	case err := <-recvErr:
		return false, err
	case <-ctx.Done():
		return false, ctx.Err()
	}

	var sendMu sync.Mutex // a gRPC stream allows one Send at a time
	send := func(req *pb.EventsRequest) {
		sendMu.Lock()
		defer sendMu.Unlock()
		if err := stream.Send(req); err != nil {
			// The reading goroutine reports the stream's end; this ack is lost with it.
			log.Debug("socket-bridge ack not sent", "error", err)
		}
	}
	pool := newWorkers(streamCtx, c.Workers)

	stopping := false
loop:
	for {
		select {
		case m := <-msgs:
			key, job := c.job(m, send, log)
			if job == nil {
				continue
			}
			select {
			case pool.queue(key) <- job:
			case err = <-recvErr:
				break loop
			case <-ctx.Done():
				stopping = true
				break loop
			}
		case err = <-recvErr:
			break loop
		case <-ctx.Done():
			stopping = true
			break loop
		}
	}

	pool.close()
	if stopping {
		err = ctx.Err()
		drain := c.DrainTimeout
		if drain == 0 {
			drain = 5 * time.Second
		}
		if drain > 0 && !pool.waitFor(drain) {
			log.Warn("socket-bridge consumer stopped before every handler answered", "drain_timeout", drain)
		}
		sendMu.Lock()
		_ = stream.CloseSend()
		sendMu.Unlock()
		// Wait (briefly) for the bridge to end its side, so the acks just sent are flushed
		// before the stream is cancelled. Events still arriving are dropped: the bridge
		// fails their acks once the subscription is gone.
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
	// The stream is over (or being closed): queued jobs are skipped, running handlers
	// see their context cancelled. Waiting for them keeps one socket's events in order
	// across a reconnect, so a handler that ignores its context delays the reconnect.
	cancel()
	pool.wait()
	return true, err
}

// job turns one stream message into work for the socket's (or user's) worker.
func (c *Consumer) job(m *pb.EventsResponse, send func(*pb.EventsRequest), log *slog.Logger) (string, func(context.Context)) {
	switch k := m.GetKind().(type) {
	case *pb.EventsResponse_ClientEvent:
		ev := k.ClientEvent
		return ev.GetSocketId(), func(ctx context.Context) { c.handle(ctx, ev, send, log) }
	case *pb.EventsResponse_SocketConnected:
		if c.OnSocketConnected == nil {
			return "", nil
		}
		ev := k.SocketConnected
		return ev.GetSocketId(), func(ctx context.Context) {
			guard(log, "OnSocketConnected", func() { c.OnSocketConnected(ctx, ev) })
		}
	case *pb.EventsResponse_SocketDisconnected:
		if c.OnSocketDisconnected == nil {
			return "", nil
		}
		ev := k.SocketDisconnected
		return ev.GetSocketId(), func(ctx context.Context) {
			guard(log, "OnSocketDisconnected", func() { c.OnSocketDisconnected(ctx, ev) })
		}
	case *pb.EventsResponse_UserOnline:
		if c.OnUserOnline == nil {
			return "", nil
		}
		ev := k.UserOnline
		// Keyed by user, so one user's online and offline stay in order.
		return "user\x00" + ev.GetUserId(), func(ctx context.Context) {
			guard(log, "OnUserOnline", func() { c.OnUserOnline(ctx, ev) })
		}
	case *pb.EventsResponse_UserOffline:
		if c.OnUserOffline == nil {
			return "", nil
		}
		ev := k.UserOffline
		return "user\x00" + ev.GetUserId(), func(ctx context.Context) {
			guard(log, "OnUserOffline", func() { c.OnUserOffline(ctx, ev) })
		}
	default:
		log.Debug("socket-bridge message ignored", "kind", fmt.Sprintf("%T", k))
		return "", nil
	}
}

// handle runs the Handler for one event and sends its ack when the client wants one.
func (c *Consumer) handle(ctx context.Context, ev *pb.ClientEvent, send func(*pb.EventsRequest), log *slog.Logger) {
	var result any
	var err error
	var ackErr *AckError
	switch recovered := guard(log, "Handler", func() { result, err = c.Handler(ctx, ev) }); {
	case recovered != nil:
		err = fmt.Errorf("handler panicked: %v", recovered) // guard has logged it with the stack
	case err != nil && !errors.As(err, &ackErr):
		// AckErrors are answers meant for the client; anything else is the backend's fault.
		log.Error("socket-bridge handler failed", "event", ev.GetEvent(), "socket", ev.GetSocketId(), "user", ev.GetUserId(), "error", err)
	}
	if !ev.GetWantsAck() {
		if c.ConfirmAll {
			// A bare Ack: "handled", with no answer for a client that asked for none.
			send(&pb.EventsRequest{Kind: &pb.EventsRequest_Ack{Ack: &pb.Ack{EventId: ev.GetId()}}})
		}
		return
	}
	ack, encErr := newAck(ev.GetId(), result, err)
	if encErr != nil {
		log.Error("socket-bridge handler result not encodable", "event", ev.GetEvent(), "socket", ev.GetSocketId(), "error", encErr)
	}
	send(&pb.EventsRequest{Kind: &pb.EventsRequest_Ack{Ack: ack}})
}

// newAck builds the answer to event id from a handler's result (see [Handler]). A result
// that does not encode answers CodeInternal, and the encoding error is returned to log.
func newAck(id string, result any, err error) (*pb.Ack, error) {
	ack := &pb.Ack{EventId: id}
	if err != nil {
		ackErr := &AckError{Code: CodeInternal, Message: "internal error"}
		errors.As(err, &ackErr)
		code, message := ackErr.wire()
		ack.Result = &pb.Ack_Error{Error: &pb.AckError{Code: code, Message: message}}
		return ack, nil
	}
	var p *pb.Payload
	var encErr error
	switch r := result.(type) {
	case nil:
		p = &pb.Payload{ArgsJson: "[]"}
	case *pb.Payload:
		p = r
	case Args:
		p, encErr = NewPayload(r...)
	default:
		p, encErr = NewPayload(r)
	}
	if encErr != nil {
		ack.Result = &pb.Ack_Error{Error: &pb.AckError{Code: CodeInternal, Message: "internal error"}}
		return ack, encErr
	}
	ack.Result = &pb.Ack_Payload{Payload: p}
	return ack, nil
}

// guard runs fn, turning a panic into a logged error so one bad event cannot take the
// consumer down; it returns the panic's value, or nil.
func guard(log *slog.Logger, what string, fn func()) (recovered any) {
	defer func() {
		if recovered = recover(); recovered != nil {
			log.Error("socket-bridge "+what+" panicked", "panic", recovered, "stack", string(debug.Stack()))
		}
	}()
	fn()
	return nil
}

// workers is a fixed set of goroutines, each with its own queue; a key always maps to
// the same queue, which keeps one socket's work in order.
type workers struct {
	queues []chan func(context.Context)
	wg     sync.WaitGroup
}

// queueLen bounds the work buffered per worker before the consumer stops reading.
const queueLen = 64

func newWorkers(ctx context.Context, n int) *workers {
	if n <= 0 {
		n = 16
	}
	w := &workers{queues: make([]chan func(context.Context), n)}
	for i := range w.queues {
		q := make(chan func(context.Context), queueLen)
		w.queues[i] = q
		w.wg.Go(func() {
			for job := range q {
				if ctx.Err() == nil {
					job(ctx)
				}
			}
		})
	}
	return w
}

func (w *workers) queue(key string) chan<- func(context.Context) {
	h := fnv.New32a()
	h.Write([]byte(key))
	return w.queues[h.Sum32()%uint32(len(w.queues))]
}

// close lets each worker finish its queue and exit.
func (w *workers) close() {
	for _, q := range w.queues {
		close(q)
	}
}

func (w *workers) wait() { w.wg.Wait() }

// waitFor waits for the workers to finish, at most d; it reports whether they did.
func (w *workers) waitFor(d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		w.wg.Wait()
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
