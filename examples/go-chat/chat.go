package main

import (
	"context"
	"errors"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/socketbridge/socket-bridge/go-client/bridge"
	pb "github.com/socketbridge/socket-bridge/go-client/socketbridgev1"
)

// The events browsers emit to this backend. Each one wants an ack callback; its answer is
// the callback's single argument, or {"error":{"code","message"}}.
//
//	join    {room}        → {room}                  the backend puts the socket in the room
//	leave   {room}        → {room}
//	message {room, text}  → {id}                    pushed to the room as "message"
//	who     {room}        → {room, users: [...]}    an RPC answered through the ack
//
// Pushed to browsers: "message" {id, room, from, text, at}, "system" {room, text} and
// "presence" {user, online}.
var chatEvents = []string{"join", "leave", "message", "who"}

// roomName is what a room may be called: short, lower case, no ':' (so never the bridge's
// internal "user:" rooms).
var roomName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

// maxText bounds a message, in characters.
const maxText = 500

// Chat is the backend: it keeps no state of its own. Room membership lives in the bridge
// (JoinRooms puts sockets in rooms, ListConnections says who is where), so any number of
// these processes can share the "go-chat" group and a restart loses nothing.
type Chat struct {
	api pb.BridgeServiceClient
	log *slog.Logger
}

// Consumer returns the Events subscription that serves the chat.
func (c *Chat) Consumer() *bridge.Consumer {
	return &bridge.Consumer{
		Client:        c.api,
		Group:         "go-chat",
		EventPatterns: chatEvents,
		Handler:       c.Handle,
		OnUserOnline:  func(ctx context.Context, u *pb.UserOnline) { c.presence(ctx, u.GetUserId(), true) },
		OnUserOffline: func(ctx context.Context, u *pb.UserOffline) { c.presence(ctx, u.GetUserId(), false) },
		Logger:        c.log,
	}
}

// roomArg is the argument of join, leave and who.
type roomArg struct {
	Room string `json:"room"`
}

// messageArg is the argument of message.
type messageArg struct {
	Room string `json:"room"`
	Text string `json:"text"`
}

// Handle answers one client event; see chatEvents.
func (c *Chat) Handle(ctx context.Context, ev *pb.ClientEvent) (any, error) {
	if ev.GetUserId() == "" {
		return nil, bridge.AckErrorf("sign_in_required", "sign in first")
	}
	switch ev.GetEvent() {
	case "join":
		return c.join(ctx, ev)
	case "leave":
		return c.leave(ctx, ev)
	case "message":
		return c.message(ctx, ev)
	case "who":
		return c.who(ctx, ev)
	}
	return nil, bridge.AckErrorf("unknown_event", "this backend does not handle %q", ev.GetEvent())
}

func (c *Chat) join(ctx context.Context, ev *pb.ClientEvent) (any, error) {
	room, err := roomOf(ev)
	if err != nil {
		return nil, err
	}
	if _, err := c.api.JoinRooms(ctx, &pb.JoinRoomsRequest{
		Target:    &pb.Target{Kind: &pb.Target_SocketId{SocketId: ev.GetSocketId()}},
		Namespace: ev.GetNamespace(),
		Rooms:     []string{room},
	}); err != nil {
		return nil, err
	}
	c.system(ctx, ev.GetNamespace(), room, ev.GetUserId()+" joined")
	return roomArg{Room: room}, nil
}

func (c *Chat) leave(ctx context.Context, ev *pb.ClientEvent) (any, error) {
	room, err := roomOf(ev)
	if err != nil {
		return nil, err
	}
	if _, err := c.api.LeaveRooms(ctx, &pb.LeaveRoomsRequest{
		Target:    &pb.Target{Kind: &pb.Target_SocketId{SocketId: ev.GetSocketId()}},
		Namespace: ev.GetNamespace(),
		Rooms:     []string{room},
	}); err != nil {
		return nil, err
	}
	c.system(ctx, ev.GetNamespace(), room, ev.GetUserId()+" left")
	return roomArg{Room: room}, nil
}

func (c *Chat) message(ctx context.Context, ev *pb.ClientEvent) (any, error) {
	var m messageArg
	if err := bridge.DecodeArgs(ev.GetPayload(), &m); err != nil {
		return nil, err
	}
	text := strings.TrimSpace(m.Text)
	switch {
	case text == "":
		return nil, bridge.AckErrorf("invalid_message", "the message is empty")
	case utf8.RuneCountInString(text) > maxText:
		return nil, bridge.AckErrorf("invalid_message", "the message is longer than %d characters", maxText)
	case strings.ContainsFunc(text, func(r rune) bool { return unicode.IsControl(r) && r != '\n' }):
		return nil, bridge.AckErrorf("invalid_message", "the message contains control characters")
	}
	in, err := c.inRoom(ctx, ev, m.Room)
	if err != nil {
		return nil, err
	}
	if !in {
		return nil, bridge.AckErrorf("not_in_room", "join %q before writing to it", m.Room)
	}
	resp, err := c.api.Push(ctx, &pb.PushRequest{
		Target:    &pb.Target{Kind: &pb.Target_Room{Room: m.Room}},
		Namespace: ev.GetNamespace(),
		Event:     "message",
		Payload: bridge.MustPayload(map[string]any{
			"room": m.Room, "from": ev.GetUserId(), "text": text,
			"at": time.Now().UTC().Format(time.RFC3339Nano),
		}),
	})
	if err != nil {
		return nil, err
	}
	return map[string]string{"id": resp.GetMessageId()}, nil
}

// who lists the users in a room: the RPC-style event, answered through the ack.
func (c *Chat) who(ctx context.Context, ev *pb.ClientEvent) (any, error) {
	room, err := roomOf(ev)
	if err != nil {
		return nil, err
	}
	users := []string{}
	token := ""
	for {
		page, err := c.api.ListConnections(ctx, &pb.ListConnectionsRequest{
			Namespace: ev.GetNamespace(),
			Filter:    &pb.ListConnectionsRequest_Room{Room: room},
			PageToken: token,
		})
		if err != nil {
			return nil, err
		}
		for _, conn := range page.GetConnections() {
			if u := conn.GetUserId(); u != "" && !slices.Contains(users, u) {
				users = append(users, u)
			}
		}
		if token = page.GetNextPageToken(); token == "" {
			break
		}
	}
	slices.Sort(users)
	return map[string]any{"room": room, "users": users}, nil
}

// inRoom asks the bridge whether the event's socket is in room. A user has few sockets,
// so listing them is cheap whatever the size of the room.
func (c *Chat) inRoom(ctx context.Context, ev *pb.ClientEvent, room string) (bool, error) {
	if !roomName.MatchString(room) {
		return false, nil
	}
	page, err := c.api.ListConnections(ctx, &pb.ListConnectionsRequest{
		Namespace: ev.GetNamespace(),
		Filter:    &pb.ListConnectionsRequest_UserId{UserId: ev.GetUserId()},
		PageSize:  1000,
	})
	if err != nil {
		return false, err
	}
	for _, conn := range page.GetConnections() {
		if conn.GetSocketId() == ev.GetSocketId() {
			return slices.Contains(conn.GetRooms(), room), nil
		}
	}
	return false, nil
}

// roomOf decodes and checks the {room} argument.
func roomOf(ev *pb.ClientEvent) (string, error) {
	var arg roomArg
	if err := bridge.DecodeArgs(ev.GetPayload(), &arg); err != nil {
		return "", err
	}
	if !roomName.MatchString(arg.Room) {
		return "", bridge.AckErrorf("invalid_room", "a room name is 1 to 32 of a-z, 0-9, '-' and '_', starting with a letter or digit")
	}
	return arg.Room, nil
}

// system tells a room what happened in it. Best effort: a failed notice is logged.
func (c *Chat) system(ctx context.Context, namespace, room, text string) {
	_, err := c.api.Push(ctx, &pb.PushRequest{
		Target:    &pb.Target{Kind: &pb.Target_Room{Room: room}},
		Namespace: namespace,
		Event:     "system",
		Payload:   bridge.MustPayload(map[string]string{"room": room, "text": text}),
	})
	if err != nil {
		c.log.Warn("system notice not sent", "room", room, "error", err)
	}
}

// presence tells everyone that a user came or went.
func (c *Chat) presence(ctx context.Context, user string, online bool) {
	_, err := c.api.Push(ctx, &pb.PushRequest{
		Target:  &pb.Target{Kind: &pb.Target_Everyone{Everyone: true}},
		Event:   "presence",
		Payload: bridge.MustPayload(map[string]any{"user": user, "online": online}),
		// Not volatile: a volatile push keeps only the latest one per socket, so two users
		// arriving together would lose a notice.
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		c.log.Warn("presence notice not sent", "user", user, "error", err)
	}
}
