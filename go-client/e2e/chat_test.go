package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/url"
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
	urls, subscribed := make(chan string, 1), make(chan string, 2)
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
			for _, stream := range []string{"events", "authorize"} {
				if strings.Contains(line, stream+" stream subscribed") {
					select {
					case subscribed <- stream:
					default:
					}
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
			deadline := time.After(10 * time.Second)
			for seen := map[string]bool{}; len(seen) < 2; {
				select {
				case stream := <-subscribed:
					seen[stream] = true
				case <-deadline:
					return false
				}
			}
			return true
		},
	} {
		if !wait() {
			t.Fatalf("go-chat did not start (serve the page, subscribe to events and decide connects) within 10s; log:\n%s", c.logs())
		}
	}
	return c
}

// noRedirects is an HTTP client that shows redirects instead of following them.
var noRedirects = &http.Client{
	Timeout:       10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// post sends a form to the chat site as a browser on its page would (with its Origin),
// plus the given cookie, and returns the response with its body read.
func (c *chatBackend) post(t *testing.T, path string, form url.Values, origin, cookie string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, c.url+path, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", origin)
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	resp, err := noRedirects.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

// signIn signs name in through the form and returns the session cookie ("name=value"),
// checking how it is set.
func (c *chatBackend) signIn(t *testing.T, name string) string {
	t.Helper()
	resp, body := c.post(t, "/login", url.Values{"name": {name}}, c.url, "")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("sign-in of %s: %s %s", name, resp.Status, body)
	}
	for _, cookie := range resp.Cookies() {
		if cookie.Name != "gochat_session" {
			continue
		}
		if !cookie.HttpOnly || cookie.SameSite != http.SameSiteLaxMode || cookie.Path != "/" || len(cookie.Value) < 40 {
			t.Errorf("session cookie set as %q", resp.Header.Get("Set-Cookie"))
		}
		return cookie.Name + "=" + cookie.Value
	}
	t.Fatalf("sign-in of %s set no session cookie: %v", name, resp.Header)
	return ""
}

// page gets the site's page with cookie (none when empty).
func (c *chatBackend) page(t *testing.T, cookie string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, c.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	resp, err := noRedirects.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", c.url, resp.Status)
	}
	return string(body)
}

// chatBridge starts a bridge that lets the backend decide connects, as the example's
// README starts it.
func chatBridge(t *testing.T) *bridgetest.Bridge {
	return bridgetest.Start(t, append([]string{"auth.mode=backend", `grpc.api_keys=["` + bridgetest.APIKey + `"]`}, bridgetest.Fast...)...)
}

// The example: users sign in through the backend's form and connect with its session
// cookie, which the backend checks for each connect; rooms joined through the backend,
// messages validated and broadcast, "who" answered through acks, presence, and signing
// out ending the session's sockets.
func TestChatExample(t *testing.T) {
	b := chatBridge(t)
	chat := startChat(t, b)

	// Signed out, the page is the sign-in form and opens no connection.
	html := chat.page(t, "")
	if !strings.Contains(html, `<form id="login" method="post" action="/login">`) || strings.Contains(html, "io(BRIDGE_URL") {
		t.Fatalf("the signed-out page is not the sign-in form:\n%s", html)
	}
	// Bad names and other sites' forms are refused, and set no cookie.
	if resp, body := chat.post(t, "/login", url.Values{"name": {"<script>"}}, chat.url, ""); resp.StatusCode != http.StatusBadRequest ||
		len(resp.Cookies()) != 0 || !strings.Contains(body, "A name is 1 to 32 letters") || strings.Contains(body, "<script>") {
		t.Errorf("sign-in with a bad name: %s, cookies %v:\n%s", resp.Status, resp.Cookies(), body)
	}
	if resp, _ := chat.post(t, "/login", url.Values{"name": {"mallory"}}, "http://evil.example", ""); resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
		t.Errorf("sign-in from another site: %s, cookies %v", resp.Status, resp.Cookies())
	}

	cookies := map[string]string{}
	for _, name := range []string{"alice", "bob", "carol"} {
		cookies[name] = chat.signIn(t, name)
	}
	// Signed in, the page is the chat: stock client script (pinned by integrity), this
	// bridge's URL, and the cookie sent with the connection (it holds no credential).
	html = chat.page(t, cookies["alice"])
	for _, want := range []string{
		`src="https://cdn.jsdelivr.net/npm/socket.io-client@4.8.4/dist/socket.io.min.js" integrity="sha384-`,
		`const BRIDGE_URL = "http://` + b.HTTP + `";`,
		`Signed in as <b>alice</b>.`,
		`io(BRIDGE_URL, { withCredentials: true })`,
		`emitWithAck(event, arg)`,
	} {
		if !strings.Contains(html, want) {
			t.Fatalf("the signed-in page lacks %s", want)
		}
	}
	if strings.Contains(html, strings.TrimPrefix(cookies["alice"], "gochat_session=")) {
		t.Error("the page shows the session id")
	}

	browsers := bridgetest.NewBrowsers(t)
	connect := func(id, cookie string, headers map[string]string) bridgetest.Report {
		t.Helper()
		h := map[string]string{}
		if cookie != "" {
			h["cookie"] = cookie
		}
		maps.Copy(h, headers)
		browsers.Send(t, map[string]any{"cmd": "connect", "id": id, "url": b.URL(), "transports": []string{"websocket"}, "extra_headers": h})
		return browsers.Wait(t, "connect or connect_error of "+id, func(r bridgetest.Report) bool {
			return r.ID == id && (r.Type == "connect" || r.Type == "connect_error")
		})
	}

	// Without a live session, or from another site's page, the backend refuses.
	for _, tc := range []struct {
		id, cookie string
		headers    map[string]string
		refusal    string
	}{
		{"nobody", "", nil, "sign in first"},
		{"forger", "gochat_session=made-up-session-id", nil, "your session has ended; sign in again"},
		{"other-site", cookies["carol"], map[string]string{"origin": "http://evil.example"}, "connect from the chat page"},
	} {
		if r := connect(tc.id, tc.cookie, tc.headers); r.Type != "connect_error" || r.Message != tc.refusal {
			t.Errorf("%s: %s, want connect_error %q", tc.id, r.Line, tc.refusal)
		}
	}

	// With their session cookies, users connect as themselves (from the page's origin
	// too, as browsers send it).
	for _, name := range []string{"alice", "bob", "carol"} {
		if r := connect(name, cookies[name], map[string]string{"origin": chat.url}); r.Type != "connect" {
			t.Fatalf("%s: %s", name, r.Line)
		}
	}
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

	// Signing out ends the session: its socket is told why and disconnected (presence
	// announces it), and the cookie no longer gets anyone in.
	if resp, body := chat.post(t, "/logout", nil, chat.url, cookies["bob"]); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-out: %s %s", resp.Status, body)
	}
	if r := browsers.Wait(t, "bob's sign-out notice", bridgetest.EventIs("bob", "bridge:disconnect")); !strings.Contains(string(r.Args), `"signed out"`) {
		t.Errorf("bob was told %s", r.Args)
	}
	browsers.Wait(t, "bob's disconnect", bridgetest.Is("disconnect", "bob"))
	browsers.Wait(t, "bob's offline at alice", func(r bridgetest.Report) bool {
		return r.Type == "event" && r.ID == "alice" && r.Event == "presence" && string(r.Args) == `[{"online":false,"user":"bob"}]`
	})
	if r := connect("bob-again", cookies["bob"], nil); r.Type != "connect_error" || r.Message != "your session has ended; sign in again" {
		t.Errorf("the signed-out cookie: %s", r.Line)
	}
	if html := chat.page(t, cookies["bob"]); !strings.Contains(html, `<form id="login"`) {
		t.Error("the signed-out cookie still shows the chat")
	}
	// Other sessions are untouched.
	if got := call("alice", "who", map[string]any{"room": "lobby"}); got != `[{"room":"lobby","users":["alice"]}]` {
		t.Errorf("who after bob signed out answered %s", got)
	}
}
