// Package bridgetest runs the real socket-bridge binary and stock Socket.IO clients for
// this module's tests. Every wait is bounded; every process is stopped at cleanup.
//
// The binary comes from $SOCKET_BRIDGE_BIN, by default ../target/debug/socket-bridge
// relative to the go-client module (the project's test command builds it). The Socket.IO
// clients run in Node with the repository's tests/js/driver.mjs.
package bridgetest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// StartTimeout bounds how long the bridge may take to log that it is ready.
const StartTimeout = 20 * time.Second

// StopTimeout bounds a graceful stop before the bridge is killed.
const StopTimeout = 15 * time.Second

// APIKey and JWTSecret are the credentials [Secure] configures.
const (
	APIKey    = "go-client-test-api-key-0123456789"
	JWTSecret = "go-client-test-jwt-secret-0123456789abcdef"
)

// Fast are settings that make disconnects show up quickly.
var Fast = []string{"socketio.ping_interval_ms=300", "socketio.ping_timeout_ms=200"}

// Secure are settings for JWT auth with one API key, like a production bridge.
var Secure = []string{"auth.mode=jwt", "auth.jwt.secret=" + JWTSecret, `grpc.api_keys=["` + APIKey + `"]`}

// BackendAuth are settings for backend-decided connects (a decider on the Authorize
// stream lets each client in) with one API key. Decisions are awaited 1.5s.
var BackendAuth = []string{"auth.mode=backend", "auth.backend.timeout_ms=1500", `grpc.api_keys=["` + APIKey + `"]`}

// Bridge is one running socket-bridge process.
type Bridge struct {
	// HTTP and GRPC are the bound addresses ("127.0.0.1:port").
	HTTP, GRPC string

	settings []string
	cmd      *exec.Cmd
	exited   chan struct{}
	logs     *syncBuffer
}

// ModuleDir is the go-client module's directory (found from the working directory).
func ModuleDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
			bytes.Contains(b, []byte("module github.com/socketbridge/socket-bridge/go-client\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("bridgetest: not inside the go-client module")
		}
		dir = parent
	}
}

// BinaryPath is the socket-bridge binary the tests run.
func BinaryPath() (string, error) {
	if p := os.Getenv("SOCKET_BRIDGE_BIN"); p != "" {
		return filepath.Abs(p)
	}
	dir, err := ModuleDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "..", "target", "debug", "socket-bridge"), nil
}

// Start runs a bridge on free loopback ports with log.format=json and the given settings
// ("key=value", passed as --set). It is stopped when the test ends; its log is printed
// if the test failed.
func Start(t testing.TB, settings ...string) *Bridge {
	t.Helper()
	b, err := Launch(settings...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.Stop()
		if t.Failed() {
			t.Logf("bridge log:\n%s", b.Logs())
		}
	})
	return b
}

// Launch is [Start] without a testing.TB, for TestMain; the caller must Stop it.
func Launch(settings ...string) (*Bridge, error) {
	b := &Bridge{settings: settings, logs: &syncBuffer{}}
	if err := b.run("127.0.0.1:0", "127.0.0.1:0"); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *Bridge) run(httpAddr, grpcAddr string) error {
	bin, err := BinaryPath()
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("bridgetest: socket-bridge binary not found at %s (build it with `cargo build`, or set SOCKET_BRIDGE_BIN): %w", bin, err)
	}
	args := []string{"--http-listen", httpAddr, "--grpc-listen", grpcAddr, "--set", "log.format=json"}
	for _, s := range b.settings {
		args = append(args, "--set", s)
	}
	cmd := exec.Command(bin, args...)
	// log.level decides, not the caller's shell: RUST_LOG would win over it, and the ready
	// line must be logged.
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "RUST_LOG=") })
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("bridgetest: start %s: %w", bin, err)
	}
	b.cmd = cmd
	b.exited = make(chan struct{})

	ready := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			b.logs.WriteLine(line)
			var rec struct {
				Message string `json:"message"`
				HTTP    string `json:"http"`
				GRPC    string `json:"grpc"`
			}
			if json.Unmarshal(line, &rec) == nil && rec.Message == "socket-bridge ready" {
				select {
				case ready <- [2]string{rec.HTTP, rec.GRPC}:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		_ = cmd.Wait()
		close(b.exited)
	}()

	select {
	case addrs := <-ready:
		b.HTTP, b.GRPC = addrs[0], addrs[1]
		return nil
	case <-b.exited:
		return fmt.Errorf("bridgetest: socket-bridge exited before it was ready (%v); log:\n%s", cmd.ProcessState, b.Logs())
	case <-time.After(StartTimeout):
		b.Kill()
		return fmt.Errorf("bridgetest: socket-bridge not ready within %v; log:\n%s", StartTimeout, b.Logs())
	}
}

// URL is the bridge's Socket.IO base URL ("http://127.0.0.1:port").
func (b *Bridge) URL() string { return "http://" + b.HTTP }

// Stop sends SIGTERM and waits for a graceful exit, killing the process after
// StopTimeout. It reports whether the exit was graceful; stopping twice is harmless.
func (b *Bridge) Stop() bool {
	if b.cmd == nil {
		return true
	}
	select {
	case <-b.exited:
		return b.cmd.ProcessState.Success()
	default:
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.exited:
		return b.cmd.ProcessState.Success()
	case <-time.After(StopTimeout):
		b.Kill()
		return false
	}
}

// Kill ends the bridge at once (SIGKILL), as a crash would, and waits for it to go.
func (b *Bridge) Kill() {
	if b.cmd == nil {
		return
	}
	_ = b.cmd.Process.Kill()
	select {
	case <-b.exited:
	case <-time.After(StopTimeout):
	}
}

// Restart starts the bridge again on the same ports and settings after it was killed or
// stopped; clients and backends that reconnect to the old addresses find it there.
func (b *Bridge) Restart() error {
	var err error
	// The ports were just released; retry briefly in case the kernel holds them.
	for deadline := time.Now().Add(5 * time.Second); ; {
		if err = b.run(b.HTTP, b.GRPC); err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Logs returns everything the bridge logged so far (all runs).
func (b *Bridge) Logs() string { return b.logs.String() }

// syncBuffer collects log lines from the reader goroutine.
type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (s *syncBuffer) WriteLine(line []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Write(line)
	s.buf.WriteByte('\n')
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}
