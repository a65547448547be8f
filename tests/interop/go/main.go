// Command go-client runs the interop scenario (see tests/interop/scenario.mjs) with the
// stock Go client github.com/zishang520/socket.io/clients/socket/v3. Settings come from the
// environment (INTEROP_URL, INTEROP_TRANSPORT, INTEROP_TOKEN, INTEROP_TOKEN_BYE,
// INTEROP_BAD_TOKEN, INTEROP_WAIT_MS); every check prints one JSON line {"check",
// "observed"} or {"check", "error"}.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/zishang520/socket.io/clients/engine/v3/transports"
	"github.com/zishang520/socket.io/clients/socket/v3"
	"github.com/zishang520/socket.io/v3/pkg/types"
)

const text = "héllo ✓"

var wait time.Duration

// item is what a socket received: its name and arguments.
type item struct {
	name string
	args []any
}

type inbox chan item

func (in inbox) next(name string) ([]any, error) {
	deadline := time.After(wait)
	var seen []string
	for {
		select {
		case it := <-in:
			if it.name == name {
				return it.args, nil
			}
			seen = append(seen, it.name)
		case <-deadline:
			return nil, fmt.Errorf("no %s within %d ms; got %v", name, wait.Milliseconds(), seen)
		}
	}
}

func env(name string) string {
	v, ok := os.LookupEnv(name)
	if !ok {
		fmt.Fprintf(os.Stderr, "%s is not set\n", name)
		os.Exit(2)
	}
	return v
}

// bytesOf returns n bytes where byte i is i mod 256: every value, 0x1e included.
func bytesOf(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

// plain turns what the client hands over into JSON values, binaries as digests.
func plain(v any) any {
	switch x := v.(type) {
	case []byte:
		sum := sha256.Sum256(x)
		return map[string]any{"$binary": "sha256:" + hex.EncodeToString(sum[:]), "length": len(x)}
	case types.BufferInterface:
		return plain(x.Bytes())
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = plain(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = plain(e)
		}
		return out
	default:
		return v
	}
}

func report(check string, observed any, err error) {
	line := map[string]any{"check": check}
	if err != nil {
		line["error"] = err.Error()
	} else {
		line["observed"] = plain(observed)
	}
	out, _ := json.Marshal(line)
	fmt.Println(string(out))
}

func connect(auth map[string]any) (*socket.Socket, inbox) {
	opts := socket.DefaultOptions()
	opts.SetForceNew(true)
	opts.SetReconnection(false)
	opts.SetAuth(auth)
	// Connect only once the listeners below are in place, or "connect" can come first.
	opts.SetAutoConnect(false)
	switch env("INTEROP_TRANSPORT") {
	case "websocket":
		opts.SetTransports(types.NewSet(transports.WebSocket))
	case "polling":
		opts.SetTransports(types.NewSet(transports.Polling))
	}
	in := make(inbox, 64)
	s, err := socket.Connect(env("INTEROP_URL"), opts)
	if err != nil {
		report("connect", nil, err)
		os.Exit(1)
	}
	s.OnAny(func(args ...any) {
		if len(args) > 0 {
			name, _ := args[0].(string)
			in <- item{name, args[1:]}
		}
	})
	for _, ev := range []string{"connect", "disconnect", "connect_error"} {
		s.On(types.EventName(ev), func(args ...any) { in <- item{ev, args} })
	}
	s.Connect()
	return s, in
}

// payload is what every payload kind sends (the same in every client of the suite).
func payload(kind string) []any {
	switch kind {
	case "text":
		return []any{text, map[string]any{"n": 42, "list": []any{1, "two", nil, true}}}
	case "binary":
		return []any{bytesOf(1000)}
	case "binary_mixed":
		return []any{"label", bytesOf(300), map[string]any{"k": 1}}
	default:
		return []any{bytesOf(200000)}
	}
}

// failedConnects counts connection attempts that never connected (reported as the check
// "connect_retries").
var failedConnects int

// connectRetrying connects a socket with auth: up to three attempts, each waiting for
// "connect".
func connectRetrying(auth map[string]any) (sock *socket.Socket, in inbox, err error) {
	for attempt := 0; attempt < 3; attempt++ {
		sock, in = connect(auth)
		if _, err = in.next("connect"); err == nil {
			return sock, in, nil
		}
		failedConnects++
		sock.Close()
	}
	return sock, in, err
}

// openMain connects the main user's socket; with auth, it also waits for its "auth" event.
func openMain(auth bool) (*socket.Socket, inbox, []any, error) {
	sock, in, err := connectRetrying(map[string]any{"token": env("INTEROP_TOKEN"), "locale": "fr", "note": "ünïcödé ✓"})
	if err != nil || !auth {
		return sock, in, nil, err
	}
	first, err := in.next("auth")
	return sock, in, first, err
}

func main() {
	ms, err := strconv.Atoi(env("INTEROP_WAIT_MS"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "INTEROP_WAIT_MS:", err)
		os.Exit(2)
	}
	wait = time.Duration(ms) * time.Millisecond

	sock, in, first, err := openMain(true)
	report("connect_auth", first, err)
	if err != nil {
		return
	}
	// Each check runs on a new socket, so that a client bug that breaks a session (or
	// garbles it) shows in its own check only.
	check := func(name string, body func() (any, error)) {
		sock.Close()
		var err error
		if sock, in, _, err = openMain(false); err != nil {
			report(name, nil, fmt.Errorf("connect: %w", err))
			return
		}
		observed, err := body()
		report(name, observed, err)
	}
	for _, kind := range []string{"text", "binary", "binary_mixed"} {
		check("push_"+kind, func() (any, error) {
			_ = sock.Emit("push-me:" + kind)
			return in.next("pushed:" + kind)
		})
	}
	for _, kind := range []string{"text", "binary", "binary_mixed", "binary_large"} {
		check("emit_"+kind, func() (any, error) {
			_ = sock.Emit("echo:"+kind, payload(kind)...)
			return in.next("echo-back:" + kind)
		})
	}
	for _, kind := range []string{"text", "binary", "binary_mixed"} {
		check("ack_"+kind, func() (any, error) {
			name := "$ack:" + kind
			acks := in
			sock.EmitWithAck("ask:"+kind, payload(kind)...)(func(args []any, err error) {
				if err == nil {
					acks <- item{name, args}
				}
			})
			return in.next(name)
		})
	}
	check("server_disconnect", func() (any, error) {
		_ = sock.Emit("disconnect-me")
		notice, err := in.next("bridge:disconnect")
		if err != nil {
			return nil, err
		}
		gone, err := in.next("disconnect")
		if err != nil {
			return nil, err
		}
		return map[string]any{"notice": notice, "reason": gone[0]}, nil
	})
	sock.Close()

	func() {
		bye, byeIn, err := connectRetrying(map[string]any{"token": env("INTEROP_TOKEN_BYE")})
		if err != nil {
			report("client_disconnect", nil, err)
			return
		}
		bye.Disconnect()
		gone, err := byeIn.next("disconnect")
		if err != nil {
			report("client_disconnect", nil, err)
			return
		}
		report("client_disconnect", map[string]any{"reason": gone[0]}, nil)
	}()

	bad, badIn := connect(map[string]any{"token": env("INTEROP_BAD_TOKEN")})
	func() {
		args, err := badIn.next("connect_error")
		if err != nil {
			report("connect_refused", nil, err)
			return
		}
		message := fmt.Sprint(args[0])
		if e, ok := args[0].(error); ok {
			message = e.Error()
		}
		report("connect_refused", map[string]any{"message": message}, nil)
	}()
	bad.Close()
	report("connect_retries", failedConnects, nil)
}
