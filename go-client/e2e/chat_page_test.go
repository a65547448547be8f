package e2e

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/socketbridge/socket-bridge/go-client/internal/bridgetest"
)

// The chat page itself, in headless Chromium: two people (each in their own browser
// context, so their own cookies) sign in through the form, connect with the session
// cookie the backend set, join a room through the backend, talk, and ask who is here. Then
// one signs out: her other tab is disconnected, and its client is refused when it tries
// again without a session. The Socket.IO client script is the stock npm build, served
// locally because tests have no CDN (go-chat's -client-js flag).
func TestChatPageInBrowser(t *testing.T) {
	browser := bridgetest.StartChromium(t)
	dir, err := bridgetest.ModuleDir()
	if err != nil {
		t.Fatal(err)
	}
	clientJS := filepath.Join(dir, "..", "tests", "js", "node_modules", "socket.io-client", "dist", "socket.io.min.js")
	scripts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, clientJS)
	}))
	defer scripts.Close()

	b := chatBridge(t)
	chat := startChat(t, b, "-client-js", scripts.URL+"/socket.io.min.js")

	connected := func(p *bridgetest.Page, name string) {
		t.Helper()
		p.WaitTrue(`typeof io === "function"`, "the Socket.IO client script")
		p.WaitTrue(`document.getElementById("status").textContent === "Connected as `+name+`."`, name+" connected")
	}
	contexts := map[string]*bridgetest.BrowserContext{}
	tabs := map[string]*bridgetest.Page{}
	for _, name := range []string{"alice", "bob"} {
		contexts[name] = browser.NewContext(t)
		p := contexts[name].Open(t, chat.url)
		// Signed out: the sign-in form, and no connection.
		var hasSocket bool
		p.Eval(`typeof socket !== "undefined"`, &hasSocket)
		if p.Text("login") == "" || hasSocket {
			t.Fatalf("%s's first visit is not the sign-in form", name)
		}
		p.Eval(`document.getElementById("name").value = `+bridgetest.JS(name), nil)
		p.Submit("login")
		connected(p, name)
		p.Eval(`document.getElementById("room").requestSubmit()`, nil) // the room field says "lobby"
		p.WaitTrue(`!document.getElementById("text").disabled`, name+" in the lobby")
		tabs[name] = p
	}
	alice, bob := tabs["alice"], tabs["bob"]
	// The session cookie is HttpOnly: the page's scripts cannot read it.
	var cookies string
	alice.Eval(`document.cookie`, &cookies)
	if strings.Contains(cookies, "gochat_session") {
		t.Errorf("page scripts see the session cookie: %q", cookies)
	}
	logHas := func(text string) string {
		return `[...document.querySelectorAll("#log li")].some((li) => li.textContent === ` + bridgetest.JS(text) + `)`
	}
	alice.WaitTrue(logHas("[lobby] bob joined"), "bob's join notice at alice")

	say := func(p *bridgetest.Page, text string) {
		p.Eval(`document.getElementById("text").value = `+bridgetest.JS(text)+`; document.getElementById("say").requestSubmit()`, nil)
	}
	say(alice, "hello from a real browser")
	bob.WaitTrue(logHas("[lobby] alice: hello from a real browser"), "alice's message at bob")

	// What people type is shown as text, never run as HTML.
	say(bob, `<img src=x onerror="document.title='owned'">`)
	alice.WaitTrue(logHas(`[lobby] bob: <img src=x onerror="document.title='owned'">`), "bob's message at alice")
	var imgs int
	alice.Eval(`document.querySelectorAll("#log img").length`, &imgs)
	if imgs != 0 {
		t.Errorf("a chat message became %d <img> element(s)", imgs)
	}

	// The backend's refusal reaches the page through the ack.
	say(alice, "   ")
	alice.WaitTrue(logHas("the message is empty (invalid_message)"), "the refusal of an empty message")

	// "who" is answered through the ack callback.
	bob.Eval(`document.getElementById("who").click()`, nil)
	bob.WaitTrue(logHas("[lobby] here: alice, bob"), "the answer to who")

	// A second tab of alice's is signed in already (same cookies).
	alice2 := contexts["alice"].Open(t, chat.url)
	connected(alice2, "alice")

	// Alice signs out in her first tab: it shows the sign-in form again, her second tab
	// is disconnected by the backend, and bob sees her go.
	alice.Submit("logout")
	if alice.Text("login") == "" {
		t.Error("after signing out the page is not the sign-in form")
	}
	alice2.WaitTrue(logHas("Disconnected by the server: signed out"), "the sign-out notice in alice's other tab")
	alice2.WaitTrue(`document.getElementById("status").textContent === "Disconnected by the server."`, "alice's other tab disconnected")
	bob.WaitTrue(logHas("alice is offline"), "alice's departure at bob")

	// Her other tab's client tries again: without a session the backend refuses it.
	alice2.Eval(`void socket.connect()`, nil)
	alice2.WaitTrue(`document.getElementById("status").textContent === "Connection refused: sign in first"`, "the refusal without a session")
}
