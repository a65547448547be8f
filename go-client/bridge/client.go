package bridge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	pb "github.com/socketbridge/socket-bridge/go-client/socketbridgev1"
)

// Client is a connection to a bridge's gRPC API. It embeds the generated
// [pb.BridgeServiceClient], so every RPC is a method on it:
//
//	c.Push(ctx, &pb.PushRequest{...})
//
// A Client is safe for concurrent use; create one per bridge address and share it.
type Client struct {
	pb.BridgeServiceClient
	conn *grpc.ClientConn
}

// Option configures [Dial].
type Option func(*dialConfig) error

type dialConfig struct {
	apiKey   string
	tls      *tls.Config
	useTLS   bool
	insecure bool
	extra    []grpc.DialOption
}

// WithAPIKey sends `authorization: Bearer <key>` with every call. The bridge requires it
// on every BridgeService RPC unless it runs in dev mode without keys; health and
// reflection never need it.
func WithAPIKey(key string) Option {
	return func(c *dialConfig) error {
		if key == "" || strings.ContainsAny(key, " \t\r\n") {
			return errors.New("bridge: the API key must be non-empty and contain no whitespace")
		}
		c.apiKey = key
		return nil
	}
}

// WithTLS connects over TLS. A nil config verifies the bridge against the system roots;
// pass a config with RootCAs (and Certificates, for mTLS) to do otherwise.
func WithTLS(cfg *tls.Config) Option {
	return func(c *dialConfig) error {
		c.useTLS = true
		if cfg != nil {
			c.tls = cfg.Clone()
		}
		return nil
	}
}

// WithInsecure connects in plaintext, for a bridge on loopback or behind a TLS-terminating
// proxy or mesh. An API key given with [WithAPIKey] then travels in plaintext too.
func WithInsecure() Option {
	return func(c *dialConfig) error {
		c.insecure = true
		return nil
	}
}

// WithDialOptions appends raw gRPC dial options (interceptors, stats handlers, a custom
// resolver). They are applied after the package's defaults, so they win over them.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(c *dialConfig) error {
		c.extra = append(c.extra, opts...)
		return nil
	}
}

// Dial prepares a [Client] for the bridge at target ("host:port", or any gRPC target
// such as "dns:///bridge.internal:50051"). Like [grpc.NewClient] it does not wait for
// the connection: the first call connects, and a broken connection is re-established
// in the background.
//
// Exactly one of [WithTLS] and [WithInsecure] must be given: the transport is never
// chosen silently.
//
// Defaults, each overridable with [WithDialOptions]: keepalive pings every 30s, so a
// vanished bridge is noticed on an idle Events stream; reconnect attempts back off from
// 250ms to at most 10s (gRPC's own default grows to 2 minutes).
func Dial(target string, opts ...Option) (*Client, error) {
	var cfg dialConfig
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	if cfg.useTLS == cfg.insecure {
		return nil, errors.New("bridge: choose exactly one of WithTLS and WithInsecure")
	}

	dialOpts := []grpc.DialOption{
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 250 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 10 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		}),
	}
	if cfg.useTLS {
		tc := cfg.tls
		if tc == nil {
			tc = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		dialOpts = append(dialOpts, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	} else {
		dialOpts = append(dialOpts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if cfg.apiKey != "" {
		dialOpts = append(dialOpts, grpc.WithPerRPCCredentials(APIKey(cfg.apiKey, cfg.useTLS)))
	}
	dialOpts = append(dialOpts, cfg.extra...)

	conn, err := grpc.NewClient(target, dialOpts...)
	if err != nil {
		return nil, fmt.Errorf("bridge: dial %s: %w", target, err)
	}
	return &Client{BridgeServiceClient: pb.NewBridgeServiceClient(conn), conn: conn}, nil
}

// Conn returns the underlying connection, for other services on the same port (for
// example grpc_health_v1.NewHealthClient(c.Conn())).
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Close closes the connection; calls in flight fail with codes.Canceled.
func (c *Client) Close() error { return c.conn.Close() }

// APIKey returns per-RPC credentials that send `authorization: Bearer <key>`, for callers
// who build their own [grpc.ClientConn]. With requireTLS, gRPC refuses to send the key
// over a plaintext connection.
func APIKey(key string, requireTLS bool) credentials.PerRPCCredentials {
	return apiKey{header: "Bearer " + key, requireTLS: requireTLS}
}

type apiKey struct {
	header     string
	requireTLS bool
}

func (k apiKey) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": k.header}, nil
}

func (k apiKey) RequireTransportSecurity() bool { return k.requireTLS }

// String keeps the key out of logs and %v output.
func (k apiKey) String() string { return "bridge.APIKey(<redacted>)" }

// GoString keeps the key out of %#v output.
func (k apiKey) GoString() string { return k.String() }
