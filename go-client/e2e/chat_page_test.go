package e2e

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/socketbridge/socket-bridge/go-client/internal/bridgetest"
)

// The chat page itself, in headless Chromium: two tabs connect, join a room through the
// backend, talk, and ask who is here. The Socket.IO client script is the stock npm build,
// served locally because tests have no CDN (go-chat's -client-js flag).
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

	b := bridgetest.Start(t, append([]string{`grpc.api_keys=["` + bridgetest.APIKey + `"]`}, bridgetest.Fast...)...)
	chat := startChat(t, b, "-client-js", scripts.URL+"/socket.io.min.js")

	tabs := map[string]*bridgetest.Page{}
	for _, name := range []string{"alice", "bob"} {
		p := browser.Open(t, chat.url)
		p.WaitTrue(`typeof io === "function"`, "the Socket.IO client script")
		p.Eval(`document.getElementById("name").value = `+bridgetest.JS(name)+`; document.getElementById("connect").requestSubmit()`, nil)
		p.WaitTrue(`document.getElementById("status").textContent === "Connected as `+name+`."`, name+" connected")
		p.Eval(`document.getElementById("room").requestSubmit()`, nil) // the room field says "lobby"
		p.WaitTrue(`!document.getElementById("text").disabled`, name+" in the lobby")
		tabs[name] = p
	}
	alice, bob := tabs["alice"], tabs["bob"]
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
}
