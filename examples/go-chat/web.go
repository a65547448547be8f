package main

import (
	"context"
	"encoding/json"
	"errors"
	"html/template"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/socketbridge/socket-bridge/go-client/bridge"
	pb "github.com/socketbridge/socket-bridge/go-client/socketbridgev1"
)

// sessionCookie is the cookie that carries the session id. The browser sends it to the
// bridge too (same site), and the bridge hands it to Decide with each connect.
const sessionCookie = "gochat_session"

// Sessions last 12 hours, and at most 10,000 are held (a few MB).
const (
	sessionTTL  = 12 * time.Hour
	maxSessions = 10_000
)

// userName is what a user may be called on the sign-in form.
var userName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$`)

// Site serves the page, signs users in and out, and decides who may connect to the
// bridge: a browser gets in with a live session cookie, as the session's user.
type Site struct {
	api      pb.BridgeServiceClient
	log      *slog.Logger
	sessions *Sessions
	page     *template.Template
	// origin is the page's origin as browsers see it ("http://127.0.0.1:8080"): sign-ins
	// and browser connects from any other origin are refused.
	origin string
	// pageData is what every render of the page gets besides the user.
	bridgeURL, clientJS, integrity string
}

// pageView is what the page template renders.
type pageView struct {
	User                           string
	Error                          string
	BridgeURL, ClientJS, Integrity string
}

// Handler routes the site's requests.
func (s *Site) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.home)
	mux.HandleFunc("POST /login", s.login)
	mux.HandleFunc("POST /logout", s.logout)
	return mux
}

// render writes the page: the chat for a signed-in user, the sign-in form otherwise.
func (s *Site) render(w http.ResponseWriter, status int, user, problem string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store") // it names the signed-in user
	w.WriteHeader(status)
	_ = s.page.Execute(w, pageView{User: user, Error: problem, BridgeURL: s.bridgeURL, ClientJS: s.clientJS, Integrity: s.integrity})
}

// session returns the live session the request's cookie names.
func (s *Site) session(r *http.Request) (*Session, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil, false
	}
	return s.sessions.Get(c.Value)
}

func (s *Site) home(w http.ResponseWriter, r *http.Request) {
	if session, ok := s.session(r); ok {
		s.render(w, http.StatusOK, session.User, "")
		return
	}
	s.render(w, http.StatusOK, "", "")
}

// sameOrigin refuses form posts from other sites (login CSRF). Browsers send Origin with
// every POST; a request without one is not from a browser page.
func (s *Site) sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	return o == "" || o == s.origin
}

func (s *Site) login(w http.ResponseWriter, r *http.Request) {
	if !s.sameOrigin(r) {
		http.Error(w, "sign-in from another site refused", http.StatusForbidden)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	name := strings.TrimSpace(r.PostFormValue("name"))
	// A real site checks a password (or an identity provider) here; the demo takes the
	// name, so anyone may be anyone, but only through a session this backend issued.
	if !userName.MatchString(name) {
		s.render(w, http.StatusBadRequest, "", "A name is 1 to 32 letters, digits, '.', '_' or '-', starting with a letter or digit.")
		return
	}
	session, err := s.sessions.Create(name)
	if err != nil {
		s.render(w, http.StatusServiceUnavailable, "", err.Error())
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name:     sessionCookie,
		Value:    session.ID,
		Path:     "/",
		MaxAge:   int(sessionTTL / time.Second),
		HttpOnly: true,                 // page scripts never see it
		SameSite: http.SameSiteLaxMode, // other sites' pages cannot connect with it
		Secure:   strings.HasPrefix(s.origin, "https://"),
	})
	s.log.Info("signed in", "user", name, "session", session.Ref)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (s *Site) logout(w http.ResponseWriter, r *http.Request) {
	if !s.sameOrigin(r) {
		http.Error(w, "sign-out from another site refused", http.StatusForbidden)
		return
	}
	if c, err := r.Cookie(sessionCookie); err == nil {
		if session, ok := s.sessions.Delete(c.Value); ok {
			s.log.Info("signed out", "user", session.User, "session", session.Ref)
			// The session's sockets end too: a signed-out browser keeps no live connection.
			ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
			s.disconnectSession(ctx, session)
			cancel()
		}
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// connectData is what the bridge keeps with each socket Decide lets in.
type connectData struct {
	Session string `json:"session"` // Session.Ref, never the session id
}

// disconnectSession ends every socket its user opened with this session (found by the
// data Decide attached to them).
func (s *Site) disconnectSession(ctx context.Context, session *Session) {
	token := ""
	for {
		page, err := s.api.ListConnections(ctx, &pb.ListConnectionsRequest{
			Filter:    &pb.ListConnectionsRequest_UserId{UserId: session.User},
			PageSize:  1000,
			PageToken: token,
		})
		if err != nil {
			s.log.Warn("the signed-out session's sockets were not listed", "session", session.Ref, "error", err)
			return
		}
		for _, conn := range page.GetConnections() {
			var data connectData
			if json.Unmarshal([]byte(conn.GetDataJson()), &data) != nil || data.Session != session.Ref {
				continue
			}
			_, err := s.api.DisconnectSockets(ctx, &pb.DisconnectSocketsRequest{
				Target:    &pb.Target{Kind: &pb.Target_SocketId{SocketId: conn.GetSocketId()}},
				Namespace: conn.GetNamespace(),
				Reason:    "signed out",
			})
			if err != nil {
				s.log.Warn("a signed-out session's socket was not disconnected", "session", session.Ref, "socket", conn.GetSocketId(), "error", err)
			}
		}
		if token = page.GetNextPageToken(); token == "" {
			return
		}
	}
}

// Decider returns the Authorize subscription that decides who connects.
func (s *Site) Decider() *bridge.Decider {
	return &bridge.Decider{Client: s.api, Connect: s.Decide, Logger: s.log}
}

// Decide lets a client connect when its cookie names a live session, as that session's
// user. The client's connect_error shows the message of a refusal.
func (s *Site) Decide(_ context.Context, req *pb.ConnectRequest) (bridge.Decision, error) {
	// A browser always sends Origin; another site's page (which could not read the
	// cookie, but whose requests would carry it if it were not SameSite) is refused.
	if o, ok := req.GetHeaders()["origin"]; ok && o != s.origin {
		return bridge.Denyf("wrong_origin", "connect from the chat page"), nil
	}
	id, ok := bridge.Cookie(req, sessionCookie)
	if !ok {
		return bridge.Denyf("sign_in_required", "sign in first"), nil
	}
	session, ok := s.sessions.Get(id)
	if !ok {
		return bridge.Denyf("session_expired", "your session has ended; sign in again"), nil
	}
	return &bridge.Allow{UserID: session.User, Data: connectData{Session: session.Ref}}, nil
}

// errOrCanceled is err unless it only says the context ended.
func errOrCanceled(err error) error {
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
