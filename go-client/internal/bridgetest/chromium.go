package bridgetest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// Chromium is a headless Chromium driven over the DevTools protocol, for tests of real
// pages. Only what the tests need: open pages and evaluate JavaScript in them.
type Chromium struct {
	http    string // the DevTools HTTP endpoint, "127.0.0.1:port"
	browser string // the browser-wide DevTools websocket URL

	mu       sync.Mutex
	contexts *devtools // the browser-wide session, opened for NewContext
}

// ChromiumPath finds a Chromium or Chrome binary: $CHROMIUM_BIN, else the usual names on
// PATH. ok is false when there is none.
func ChromiumPath() (string, bool) {
	if p := os.Getenv("CHROMIUM_BIN"); p != "" {
		return p, true
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, true
		}
	}
	return "", false
}

// StartChromium starts a headless browser with a fresh profile; it is stopped when the
// test ends. The test is skipped when no browser is installed.
func StartChromium(t testing.TB) *Chromium {
	t.Helper()
	bin, ok := ChromiumPath()
	if !ok {
		t.Skip("no Chromium on this machine (set CHROMIUM_BIN): the page is not tested in a browser")
	}
	cmd := exec.Command(bin, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--disable-extensions", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
		"--remote-allow-origins=*", "--user-data-dir="+t.TempDir(), "about:blank")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	exited := make(chan struct{})
	var logs syncBuffer
	listening := regexp.MustCompile(`DevTools listening on (ws://([^/]+)/\S+)`)
	endpoint := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs.WriteLine(sc.Bytes())
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				endpoint <- m
			}
		}
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
		}
	})
	select {
	case m := <-endpoint:
		c := &Chromium{http: m[2], browser: m[1]}
		t.Cleanup(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.contexts != nil {
				_ = c.contexts.conn.Close()
			}
		})
		return c
	case <-exited:
		t.Fatalf("Chromium exited at start:\n%s", logs.String())
	case <-time.After(StartTimeout):
		t.Fatalf("Chromium not listening within %v:\n%s", StartTimeout, logs.String())
	}
	return nil
}

// devtools is one DevTools protocol session (a tab's, or the browser's).
type devtools struct {
	conn *websocket.Conn
	mu   sync.Mutex
	next int
}

func dialDevtools(t testing.TB, url string) *devtools {
	t.Helper()
	cfg, err := websocket.NewConfig(url, "http://127.0.0.1/")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Dialer = &net.Dialer{Timeout: 10 * time.Second}
	conn, err := websocket.DialConfig(cfg)
	if err != nil {
		t.Fatalf("attach to %s: %v", url, err)
	}
	conn.MaxPayloadBytes = 64 << 20
	return &devtools{conn: conn}
}

// try sends one DevTools command and returns its result, skipping events.
func (d *devtools) try(method string, params map[string]any) (json.RawMessage, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.next++
	id := d.next
	if err := websocket.JSON.Send(d.conn, map[string]any{"id": id, "method": method, "params": params}); err != nil {
		return nil, fmt.Errorf("DevTools %s: %w", method, err)
	}
	_ = d.conn.SetReadDeadline(time.Now().Add(WaitTimeout))
	for {
		var msg struct {
			ID     int             `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := websocket.JSON.Receive(d.conn, &msg); err != nil {
			return nil, fmt.Errorf("DevTools %s: %w", method, err)
		}
		if msg.ID != id {
			continue // an event
		}
		if msg.Error != nil {
			return nil, fmt.Errorf("DevTools %s: %s", method, msg.Error.Message)
		}
		return msg.Result, nil
	}
}

// Page is one browser tab.
type Page struct {
	t  testing.TB
	dt *devtools
}

// Open creates a tab showing url and waits until it has loaded. Tabs opened here share
// the browser's default context (its cookies); see [Chromium.NewContext].
func (c *Chromium) Open(t testing.TB, url string) *Page {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, "http://"+c.http+"/json/new?about:blank", nil)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("open a tab: %v", err)
	}
	var target struct {
		WebSocketDebuggerURL string `json:"webSocketDebuggerUrl"`
	}
	err = json.NewDecoder(resp.Body).Decode(&target)
	resp.Body.Close()
	if err != nil || target.WebSocketDebuggerURL == "" {
		t.Fatalf("open a tab: %v %v", resp.Status, err)
	}
	return attach(t, target.WebSocketDebuggerURL, url)
}

// BrowserContext is a set of tabs with their own cookies and storage, like a private
// window: each stands for another person at another computer.
type BrowserContext struct {
	c  *Chromium
	id string
}

// NewContext creates a browser context with no cookies.
func (c *Chromium) NewContext(t testing.TB) *BrowserContext {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.contexts == nil {
		c.contexts = dialDevtools(t, c.browser)
	}
	raw, err := c.contexts.try("Target.createBrowserContext", map[string]any{})
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		BrowserContextID string `json:"browserContextId"`
	}
	if err := json.Unmarshal(raw, &res); err != nil || res.BrowserContextID == "" {
		t.Fatalf("Target.createBrowserContext returned %s: %v", raw, err)
	}
	return &BrowserContext{c: c, id: res.BrowserContextID}
}

// Open creates a tab of this context showing url and waits until it has loaded.
func (bc *BrowserContext) Open(t testing.TB, url string) *Page {
	t.Helper()
	bc.c.mu.Lock()
	raw, err := bc.c.contexts.try("Target.createTarget", map[string]any{"url": "about:blank", "browserContextId": bc.id})
	bc.c.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		TargetID string `json:"targetId"`
	}
	if err := json.Unmarshal(raw, &res); err != nil || res.TargetID == "" {
		t.Fatalf("Target.createTarget returned %s: %v", raw, err)
	}
	return attach(t, "ws://"+bc.c.http+"/devtools/page/"+res.TargetID, url)
}

// attach opens a DevTools session to a tab and navigates it to url.
func attach(t testing.TB, wsURL, url string) *Page {
	t.Helper()
	dt := dialDevtools(t, wsURL)
	t.Cleanup(func() { _ = dt.conn.Close() })
	p := &Page{t: t, dt: dt}
	p.call("Page.navigate", map[string]any{"url": url})
	p.WaitTrue(`document.readyState === "complete"`, "the page to load")
	return p
}

// call sends one DevTools command and returns its result; a failure fails the test.
func (p *Page) call(method string, params map[string]any) json.RawMessage {
	p.t.Helper()
	raw, err := p.dt.try(method, params)
	if err != nil {
		p.t.Fatal(err)
	}
	return raw
}

// Submit submits the form with this id, as its button would, and waits until the page
// the answer leads to has loaded.
func (p *Page) Submit(formID string) {
	p.t.Helper()
	p.Eval(`window.__bridgetestLeft = true; document.getElementById(`+JS(formID)+`).requestSubmit()`, nil)
	// The new page has a new window, without the mark. While the tab navigates an
	// evaluation may fail (its context is being replaced): that is polled over.
	cond := `Boolean(!window.__bridgetestLeft && document.readyState === "complete")`
	deadline := time.Now().Add(WaitTimeout)
	for {
		raw, err := p.dt.try("Runtime.evaluate", map[string]any{"expression": cond, "returnByValue": true})
		var res struct {
			Result struct {
				Value bool `json:"value"`
			} `json:"result"`
		}
		if err == nil && json.Unmarshal(raw, &res) == nil && res.Result.Value {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("submitting form %s: no new page loaded within %v (last error: %v)", formID, WaitTimeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Eval evaluates a JavaScript expression (awaiting a promise) and decodes its value into
// out, which may be nil. A thrown exception fails the test.
func (p *Page) Eval(expr string, out any) {
	p.t.Helper()
	raw := p.call("Runtime.evaluate", map[string]any{"expression": expr, "awaitPromise": true, "returnByValue": true})
	var res struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		Exception *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		p.t.Fatal(err)
	}
	if res.Exception != nil {
		p.t.Fatalf("JavaScript %q threw: %s %s", expr, res.Exception.Text, res.Exception.Exception.Description)
	}
	if out != nil && len(res.Result.Value) > 0 {
		if err := json.Unmarshal(res.Result.Value, out); err != nil {
			p.t.Fatalf("JavaScript %q returned %s: %v", expr, res.Result.Value, err)
		}
	}
}

// WaitTrue polls a JavaScript condition until it is true, for at most WaitTimeout.
func (p *Page) WaitTrue(cond, what string) {
	p.t.Helper()
	deadline := time.Now().Add(WaitTimeout)
	for {
		var ok bool
		p.Eval("Boolean("+cond+")", &ok)
		if ok {
			return
		}
		if time.Now().After(deadline) {
			var text string
			p.Eval(`document.body ? document.body.innerText : ""`, &text)
			p.t.Fatalf("waited %v for %s (%s); the page shows:\n%s", WaitTimeout, what, cond, text)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// JS quotes s as a JavaScript string literal.
func JS(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// Text is the page's visible text of the element with this id.
func (p *Page) Text(id string) string {
	p.t.Helper()
	var s string
	p.Eval(fmt.Sprintf(`document.getElementById(%s).innerText`, JS(id)), &s)
	return strings.TrimSpace(s)
}
