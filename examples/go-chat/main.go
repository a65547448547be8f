// Command go-chat is a small chat backend for socket-bridge, written with the go-client
// package: browsers connect to the bridge with the stock Socket.IO client, and this
// process answers their events over gRPC. It signs users in with a session cookie, and
// decides on the bridge's Authorize stream which browsers may connect (those with a live
// session, as its user). It joins sockets to rooms with JoinRooms, validates messages and
// pushes them to the room, answers "who" through the client's ack callback, and announces
// presence. It also serves the chat page and its sign-in form.
//
// With a bridge whose connects this backend decides:
//
//	export API_KEY=$(openssl rand -hex 24)
//	cargo run -- --set auth.mode=backend --set "grpc.api_keys=[\"$API_KEY\"]"
//	go run .
//
// then open http://127.0.0.1:8080 in two browsers (or a private window), sign in with two
// names, and talk. Settings (flag, or environment):
//
//	-bridge      BRIDGE_GRPC  the bridge's gRPC address (127.0.0.1:50051)
//	-bridge-url  BRIDGE_URL   the bridge's Socket.IO URL for browsers (http://127.0.0.1:3000)
//	-listen      LISTEN       where to serve the page (127.0.0.1:8080)
//	-origin      ORIGIN       the page's origin as browsers see it (http://<listen address>)
//	-client-js   CLIENT_JS    the Socket.IO client script's URL (a CDN, pinned with SRI)
//	             API_KEY      a key from the bridge's grpc.api_keys
//
// The API key is read from the environment only, so it never shows in `ps`.
package main

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/socketbridge/socket-bridge/go-client/bridge"
)

//go:embed index.html
var pageSource string

var page = template.Must(template.New("index.html").Parse(pageSource))

// defaultClientJS is socket.io-client 4.8.4 from a CDN that serves npm files as they are
// published, so the integrity hash below (of dist/socket.io.min.js) pins the exact file.
const (
	defaultClientJS        = "https://cdn.jsdelivr.net/npm/socket.io-client@4.8.4/dist/socket.io.min.js"
	defaultClientIntegrity = "sha384-fBrXvbDtHoeKWJ/hcA6M+YGueiDW+h45I7V6F2kD1S8bOkrF9rZYPLVkCR6BLR/1"
)

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

func main() {
	grpcAddr := flag.String("bridge", envOr("BRIDGE_GRPC", "127.0.0.1:50051"), "the bridge's gRPC address")
	bridgeURL := flag.String("bridge-url", envOr("BRIDGE_URL", "http://127.0.0.1:3000"), "the bridge's Socket.IO URL, as browsers reach it")
	listen := flag.String("listen", envOr("LISTEN", "127.0.0.1:8080"), "address to serve the chat page on")
	origin := flag.String("origin", os.Getenv("ORIGIN"), "the page's origin as browsers see it (default: http:// and the listen address)")
	clientJS := flag.String("client-js", envOr("CLIENT_JS", defaultClientJS), "URL of the Socket.IO client script")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log, *grpcAddr, *bridgeURL, *listen, *origin, *clientJS); err != nil {
		log.Error("go-chat stopped", "error", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger, grpcAddr, bridgeURL, listen, origin, clientJS string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	opts := []bridge.Option{bridge.WithInsecure()} // loopback; use bridge.WithTLS(nil) across a network
	if key := os.Getenv("API_KEY"); key != "" {
		opts = append(opts, bridge.WithAPIKey(key))
	}
	client, err := bridge.Dial(grpcAddr, opts...)
	if err != nil {
		return err
	}
	defer client.Close()

	integrity := ""
	if clientJS == defaultClientJS {
		integrity = defaultClientIntegrity
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	if origin == "" {
		origin = "http://" + ln.Addr().String()
	}
	site := &Site{
		api:       client,
		log:       log,
		sessions:  NewSessions(maxSessions, sessionTTL),
		page:      page,
		origin:    origin,
		bridgeURL: bridgeURL,
		clientJS:  clientJS,
		integrity: integrity,
	}
	srv := &http.Server{Handler: site.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("page server failed", "error", err)
			stop()
		}
	}()
	log.Info("serving the chat page", "url", origin, "listen", ln.Addr().String(), "bridge", grpcAddr)

	// Both subscriptions run until SIGINT/SIGTERM and reconnect by themselves; one that
	// fails for good (a wrong API key, say) stops the other.
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	chat := &Chat{api: client, log: log}
	done := make(chan error, 2)
	go func() { done <- chat.Consumer().Run(runCtx) }()
	go func() { done <- site.Decider().Run(runCtx) }()
	err = errOrCanceled(<-done)
	cancel()
	if second := errOrCanceled(<-done); err == nil {
		err = second
	}

	shutdownCtx, cancelShutdown := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelShutdown()
	_ = srv.Shutdown(shutdownCtx)
	if err == nil {
		log.Info("go-chat stopped")
	}
	return err
}
