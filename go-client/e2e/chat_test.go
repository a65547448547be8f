package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/socketbridge/socket-bridge/go-client/internal/bridgetest"
)

// chatBackend is the examples/go-chat binary, running.
type chatBackend struct {
	url    string // where it serves the page
	mu     sync.Mutex
	log    strings.Builder
	exited chan struct{}
	cmd    *exec.Cmd
}

func (c *chatBackend) logs() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.log.String()
}

// startChat builds examples/go-chat and runs it against b, as its quickstart does but on
// free ports.
func startChat(t *testing.T, b *bridgetest.Bridge, args ...string) *chatBackend {
	t.Helper()
	dir, err := bridgetest.ModuleDir()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "go-chat")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	build.Dir = filepath.Join(dir, "..", "examples", "go-chat")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build examples/go-chat: %v\n%s", err, out)
	}

	cmd := exec.Command(bin, append([]string{"-bridge", b.GRPC, "-bridge-url", b.URL(), "-listen", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(os.Environ(), "API_KEY="+bridgetest.APIKey)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &chatBackend{cmd: cmd, exited: make(chan struct{})}
	serving := regexp.MustCompile(`msg="serving the chat page" url=(\S+)`)
	urls, subscribed := make(chan string, 1), make(chan struct{}, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			c.mu.Lock()
			c.log.WriteString(line + "\n")
			c.mu.Unlock()
			if m := serving.FindStringSubmatch(line); m != nil {
				urls <- m[1]
			}
			if strings.Contains(line, "events stream subscribed") {
				select {
				case subscribed <- struct{}{}:
				default:
				}
			}
		}
		_ = cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			t.Error("go-chat did not stop within 10s of SIGTERM")
		}
		if t.Failed() {
			t.Logf("go-chat log:\n%s", c.logs())
		}
	})
	for _, wait := range []func() bool{
		func() bool {
			select {
			case c.url = <-urls:
				return true
			case <-time.After(10 * time.Second):
				return false
			}
		},
		func() bool {
			select {
			case <-subscribed:
				return true
			case <-time.After(10 * time.Second):
				return false
			}
		},
	} {
		if !wait() {
			t.Fatalf("go-chat did not start (serve the page and subscribe) within 10s; log:\n%s", c.logs())
		}
	}
	return c
}

// The example: rooms joined through the backend, messages validated and broadcast, "who"
// answered through acks, presence, and the page it serves.
func TestChatExample(t *testing.T) {
	b := bridgetest.Start(t, append([]string{`grpc.api_keys=["` + bridgetest.APIKey + `"]`}, bridgetest.Fast...)...)
	chat := startChat(t, b)

	// The page: stock client script (pinned by integrity) and this bridge's URL.
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(chat.url)
	if err != nil {
		t.Fatal(err)
	}
	html, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`src="https://cdn.jsdelivr.net/npm/socket.io-client@4.8.4/dist/socket.io.min.js" integrity="sha384-`,
		`const BRIDGE_URL = "http://` + b.HTTP + `";`,
		`emitWithAck(event, arg)`,
	} {
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(html), want) {
			t.Fatalf("GET %s: %s, page lacks %s", chat.url, resp.Status, want)
		}
	}

	browsers := bridgetest.NewBrowsers(t)
	// Dev auth: the page passes the chosen name as auth.userId.
	browsers.Connect(t, "alice", b.URL(), map[string]any{"userId": "alice"})
	browsers.Connect(t, "bob", b.URL(), map[string]any{"userId": "bob"})
	browsers.Connect(t, "carol", b.URL(), map[string]any{"userId": "carol"})
	if r := browsers.Wait(t, "bob's presence at alice", func(r bridgetest.Report) bool {
		return r.Type == "event" && r.ID == "alice" && r.Event == "presence" && strings.Contains(string(r.Args), `"bob"`)
	}); string(r.Args) != `[{"online":true,"user":"bob"}]` {
		t.Errorf("presence %s", r.Args)
	}

	req := 0
	call := func(id, event string, arg any) string {
		t.Helper()
		req++
		browsers.Emit(t, id, req, event, true, arg)
		return string(browsers.Wait(t, event+" ack for "+id, bridgetest.AckIs(id, req)).Args)
	}
	errorCode := func(ack string) string {
		var args []struct {
			Error struct{ Code string } `json:"error"`
		}
		_ = json.Unmarshal([]byte(ack), &args)
		if len(args) != 1 {
			return ""
		}
		return args[0].Error.Code
	}

	// Writing before joining, and bad rooms, are refused with readable errors.
	if got := call("alice", "message", map[string]any{"room": "lobby", "text": "hi"}); errorCode(got) != "not_in_room" {
		t.Errorf("message before join answered %s", got)
	}
	if got := call("alice", "join", map[string]any{"room": "Bad Room!"}); errorCode(got) != "invalid_room" {
		t.Errorf("join of a bad room answered %s", got)
	}
	if got := call("alice", "join", "lobby"); errorCode(got) != "invalid_argument" {
		t.Errorf("join with a string answered %s", got)
	}

	// Joining goes through the backend's JoinRooms.
	for _, id := range []string{"alice", "bob"} {
		if got := call(id, "join", map[string]any{"room": "lobby"}); got != `[{"room":"lobby"}]` {
			t.Fatalf("%s's join answered %s", id, got)
		}
	}
	browsers.Wait(t, "bob joined notice at alice", func(r bridgetest.Report) bool {
		return r.Type == "event" && r.ID == "alice" && r.Event == "system" && string(r.Args) == `[{"room":"lobby","text":"bob joined"}]`
	})

	// A message is validated, then pushed to the room: bob gets it, carol (not in the
	// room) does not.
	if got := call("alice", "message", map[string]any{"room": "lobby", "text": "   "}); errorCode(got) != "invalid_message" {
		t.Errorf("empty message answered %s", got)
	}
	if got := call("alice", "message", map[string]any{"room": "lobby", "text": strings.Repeat("x", 501)}); errorCode(got) != "invalid_message" {
		t.Errorf("long message answered %s", got)
	}
	got := call("alice", "message", map[string]any{"room": "lobby", "text": "  hello <b>bob</b>  "})
	if !regexp.MustCompile(`^\[\{"id":"[^"]+"\}\]$`).MatchString(got) {
		t.Fatalf("message answered %s, want its id", got)
	}
	for _, id := range []string{"bob", "alice"} {
		r := browsers.Wait(t, "the message at "+id, bridgetest.EventIs(id, "message"))
		var msgs []map[string]string
		if err := json.Unmarshal(r.Args, &msgs); err != nil || len(msgs) != 1 ||
			msgs[0]["from"] != "alice" || msgs[0]["text"] != "hello <b>bob</b>" || msgs[0]["room"] != "lobby" || msgs[0]["at"] == "" {
			t.Errorf("%s got message %s", id, r.Args)
		}
	}
	if r, ok := browsers.WaitFor(500*time.Millisecond, bridgetest.EventIs("carol", "message")); ok {
		t.Errorf("carol, not in the room, got %s", r.Line)
	}

	// "who" is an RPC answered through the ack.
	if got := call("carol", "who", map[string]any{"room": "lobby"}); got != `[{"room":"lobby","users":["alice","bob"]}]` {
		t.Errorf("who answered %s", got)
	}

	// Leaving, then writing, is refused again.
	if got := call("bob", "leave", map[string]any{"room": "lobby"}); got != `[{"room":"lobby"}]` {
		t.Errorf("leave answered %s", got)
	}
	if got := call("bob", "message", map[string]any{"room": "lobby", "text": "still here?"}); errorCode(got) != "not_in_room" {
		t.Errorf("message after leave answered %s", got)
	}

	// Presence: bob going away is announced.
	browsers.Send(t, map[string]any{"cmd": "disconnect", "id": "bob"})
	browsers.Wait(t, "bob's offline at alice", func(r bridgetest.Report) bool {
		return r.Type == "event" && r.ID == "alice" && r.Event == "presence" && string(r.Args) == `[{"online":false,"user":"bob"}]`
	})
}
