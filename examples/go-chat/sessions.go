package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"sync"
	"time"
)

// Session is one signed-in browser.
type Session struct {
	// ID is the cookie's value: 32 random bytes, the credential itself. It never leaves
	// this process except in the cookie.
	ID string
	// Ref names the session where others can see it: the bridge keeps it with each of
	// the session's sockets (ConnectAllow data), so signing out can find them.
	Ref     string
	User    string
	Expires time.Time
}

// errTooManySessions refuses a sign-in when the store is full of live sessions.
var errTooManySessions = errors.New("too many signed-in sessions; try again later")

// Sessions is an in-memory session store, bounded in count and age: a sign-in form is
// open to anyone, so without a bound it would let anyone fill this process's memory.
// A real deployment keeps sessions where every backend process can read them (a
// database, Redis); this one is lost when the process restarts.
type Sessions struct {
	mu   sync.Mutex
	byID map[string]*Session
	max  int
	ttl  time.Duration
}

// NewSessions returns a store of at most max sessions, each valid for ttl.
func NewSessions(max int, ttl time.Duration) *Sessions {
	return &Sessions{byID: map[string]*Session{}, max: max, ttl: ttl}
}

// Create signs user in and returns the new session.
func (s *Sessions) Create(user string) (*Session, error) {
	now := time.Now()
	session := &Session{ID: randomID(32), Ref: randomID(9), User: user, Expires: now.Add(s.ttl)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.byID) >= s.max {
		for id, old := range s.byID {
			if !now.Before(old.Expires) {
				delete(s.byID, id)
			}
		}
		if len(s.byID) >= s.max {
			return nil, errTooManySessions
		}
	}
	s.byID[session.ID] = session
	return session, nil
}

// Get returns the live session with this id.
func (s *Sessions) Get(id string) (*Session, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	session, ok := s.byID[id]
	if !ok {
		return nil, false
	}
	if !time.Now().Before(session.Expires) {
		delete(s.byID, id)
		return nil, false
	}
	return session, true
}

// Delete ends the session with this id and returns it, if it was live.
func (s *Sessions) Delete(id string) (*Session, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	session, ok := s.byID[id]
	delete(s.byID, id)
	if !ok || !time.Now().Before(session.Expires) {
		return nil, false
	}
	return session, true
}

// randomID returns n random bytes, URL-safe base64 encoded.
func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return base64.RawURLEncoding.EncodeToString(b)
}
