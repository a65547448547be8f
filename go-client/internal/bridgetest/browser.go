package bridgetest

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// WaitTimeout bounds every wait for a browser report.
const WaitTimeout = 10 * time.Second

// Report is one line the driver printed (see the header of tests/js/driver.mjs).
type Report struct {
	Type      string          `json:"type"`
	ID        string          `json:"id"`
	Sid       string          `json:"sid"`
	Transport string          `json:"transport"`
	Message   string          `json:"message"`
	Reason    string          `json:"reason"`
	Event     string          `json:"event"`
	Args      json.RawMessage `json:"args"`
	HasAck    bool            `json:"has_ack"`
	Req       json.RawMessage `json:"req"`
	Error     string          `json:"error"`
	Line      string          `json:"-"`
}

// Browsers is one Node process running stock socket.io-client sockets, each named by a
// caller-chosen id.
type Browsers struct {
	stdin io.WriteCloser

	mu      sync.Mutex
	reports []Report
	taken   []bool
	changed chan struct{} // closed and replaced whenever a report arrives
	done    chan struct{} // closed when the driver's stdout ends
}

// DriverPath is the repository's tests/js/driver.mjs.
func DriverPath() (string, error) {
	dir, err := ModuleDir()
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, "..", "tests", "js", "driver.mjs")
	if _, err := os.Stat(filepath.Join(dir, "..", "tests", "js", "node_modules", "socket.io-client")); err != nil {
		return "", fmt.Errorf("bridgetest: socket.io-client is not installed; run `npm ci --prefix tests/js` in the repository: %w", err)
	}
	return p, nil
}

// NewBrowsers starts the driver; it exits when the test ends.
func NewBrowsers(t testing.TB) *Browsers {
	t.Helper()
	driver, err := DriverPath()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", driver)
	cmd.Dir = filepath.Dir(driver)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = writerFunc(func(p []byte) (int, error) { stderr.WriteLine(p); return len(p), nil })
	if err := cmd.Start(); err != nil {
		t.Fatalf("bridgetest: start node driver: %v", err)
	}
	b := &Browsers{stdin: stdin, changed: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			var r Report
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				r = Report{Type: "unparsable", Message: err.Error()}
			}
			r.Line = sc.Text()
			b.mu.Lock()
			b.reports = append(b.reports, r)
			b.taken = append(b.taken, false)
			close(b.changed)
			b.changed = make(chan struct{})
			b.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_, _ = io.WriteString(stdin, `{"cmd":"exit"}`+"\n")
		_ = stdin.Close()
		select {
		case <-b.done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
		}
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("node driver stderr:\n%s", stderr.String())
		}
	})
	return b
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// Send writes one command to the driver.
func (b *Browsers) Send(t testing.TB, cmd map[string]any) {
	t.Helper()
	line, err := json.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.stdin.Write(append(line, '\n')); err != nil {
		t.Fatalf("bridgetest: write to node driver: %v", err)
	}
}

// Wait returns the first report not returned before that match accepts, waiting up to
// WaitTimeout. A driver "error" report fails the test at once.
func (b *Browsers) Wait(t testing.TB, what string, match func(Report) bool) Report {
	t.Helper()
	r, ok := b.WaitFor(WaitTimeout, match)
	if !ok {
		t.Fatalf("bridgetest: no browser report %s within %v; reports so far:\n%s", what, WaitTimeout, b.dump())
	}
	if r.Type == "error" {
		t.Fatalf("bridgetest: node driver error while waiting for %s: %s", what, r.Line)
	}
	return r
}

// WaitFor is Wait without failing: ok is false when nothing matched within d.
func (b *Browsers) WaitFor(d time.Duration, match func(Report) bool) (Report, bool) {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for next := 0; ; {
		b.mu.Lock()
		for ; next < len(b.reports); next++ {
			r := b.reports[next]
			if !b.taken[next] && (r.Type == "error" || match(r)) {
				b.taken[next] = true
				b.mu.Unlock()
				return r, true
			}
		}
		changed := b.changed
		b.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			return Report{}, false
		}
	}
}

// Is matches reports of a type for a socket id.
func Is(typ, id string) func(Report) bool {
	return func(r Report) bool { return r.Type == typ && r.ID == id }
}

// EventIs matches a socket receiving an event.
func EventIs(id, event string) func(Report) bool {
	return func(r Report) bool { return r.Type == "event" && r.ID == id && r.Event == event }
}

// AckIs matches a socket's ack callback for request req.
func AckIs(id string, req int) func(Report) bool {
	want := fmt.Sprint(req)
	return func(r Report) bool { return r.Type == "ack" && r.ID == id && string(r.Req) == want }
}

func (b *Browsers) dump() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var s strings.Builder
	for _, r := range b.reports {
		s.WriteString(r.Line)
		s.WriteByte('\n')
	}
	return s.String()
}

// Connect opens socket id to url (websocket first, no reconnection) with the given
// Socket.IO auth payload and returns its Socket.IO id once connected.
func (b *Browsers) Connect(t testing.TB, id, url string, auth map[string]any) string {
	t.Helper()
	b.Send(t, map[string]any{"cmd": "connect", "id": id, "url": url, "auth": auth, "transports": []string{"websocket"}})
	r := b.Wait(t, "connect of "+id, func(r Report) bool {
		return r.ID == id && (r.Type == "connect" || r.Type == "connect_error")
	})
	if r.Type != "connect" {
		t.Fatalf("bridgetest: %s could not connect: %s", id, r.Line)
	}
	return r.Sid
}

// Sync waits until the driver has carried out every command sent before it. Commands
// run in order, but what they set up (an ack rule, say) races with traffic from the
// bridge unless the test syncs first. It emits nothing: emit_many with count 0.
func (b *Browsers) Sync(t testing.TB, id string) {
	t.Helper()
	b.Send(t, map[string]any{"cmd": "emit_many", "id": id, "event": "bridgetest:sync", "count": 0})
	b.Wait(t, "sync of "+id, func(r Report) bool { return r.Type == "emitted_many" && r.ID == id })
}

// OnAckReply makes socket id answer event's ack callbacks with reply, in effect when
// it returns.
func (b *Browsers) OnAckReply(t testing.TB, id, event string, reply ...any) {
	t.Helper()
	b.Send(t, map[string]any{"cmd": "on_ack_reply", "id": id, "event": event, "reply": reply})
	b.Sync(t, id)
}

// Emit sends event from socket id; with ack, the callback's answer arrives as an "ack"
// report with this req.
func (b *Browsers) Emit(t testing.TB, id string, req int, event string, ack bool, args ...any) {
	t.Helper()
	if args == nil {
		args = []any{}
	}
	b.Send(t, map[string]any{"cmd": "emit", "id": id, "req": req, "event": event, "args": args, "ack": ack})
}

// Token mints an HS256 JWT for user sub, valid for an hour, signed with [JWTSecret].
func Token(sub string) string {
	enc := base64.RawURLEncoding
	header := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	claims, _ := json.Marshal(map[string]any{"sub": sub, "exp": time.Now().Add(time.Hour).Unix()})
	signing := header + "." + enc.EncodeToString(claims)
	mac := hmac.New(sha256.New, []byte(JWTSecret))
	mac.Write([]byte(signing))
	return signing + "." + enc.EncodeToString(mac.Sum(nil))
}
