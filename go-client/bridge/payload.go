package bridge

import (
	"bytes"
	"encoding/json"
	"fmt"

	pb "github.com/socketbridge/socket-bridge/go-client/socketbridgev1"
)

// Args is a list of Socket.IO arguments. Returned from a [Handler] it becomes the whole
// argument list of the client's ack callback (`cb(args[0], args[1], ...)`); any other
// value is sent as the callback's single argument.
type Args []any

// NewPayload encodes Socket.IO arguments, one per value, into a [pb.Payload].
//
// Each value is encoded with encoding/json (HTML characters are not escaped), except
// []byte values, which travel as binary attachments: the client receives them as an
// ArrayBuffer (a Buffer in Node). Binary data nested inside a value is encoded by
// encoding/json as base64 text; make it a top-level argument to send it as binary.
// A [json.RawMessage] is forwarded as it is, so big integers and key order survive.
func NewPayload(args ...any) (*pb.Payload, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	p := &pb.Payload{}
	buf.WriteByte('[')
	for i, arg := range args {
		if i > 0 {
			buf.WriteByte(',')
		}
		if b, ok := arg.([]byte); ok {
			fmt.Fprintf(&buf, `{"_placeholder":true,"num":%d}`, len(p.Attachments))
			p.Attachments = append(p.Attachments, b)
			continue
		}
		if err := enc.Encode(arg); err != nil {
			return nil, fmt.Errorf("bridge: argument %d: %w", i, err)
		}
		buf.Truncate(buf.Len() - 1) // Encode ends every value with a newline
	}
	buf.WriteByte(']')
	p.ArgsJson = buf.String()
	return p, nil
}

// MustPayload is [NewPayload] for arguments that cannot fail to encode (strings, numbers,
// maps and structs of those); it panics on an encoding error.
func MustPayload(args ...any) *pb.Payload {
	p, err := NewPayload(args...)
	if err != nil {
		panic(err)
	}
	return p
}

// RawArgs splits a payload into its arguments, undecoded. A nil payload or an empty
// args_json has no arguments.
func RawArgs(p *pb.Payload) ([]json.RawMessage, error) {
	if p.GetArgsJson() == "" {
		return nil, nil
	}
	var raw []json.RawMessage
	if err := json.Unmarshal([]byte(p.GetArgsJson()), &raw); err != nil {
		return nil, fmt.Errorf("bridge: args_json is not a JSON array: %w", err)
	}
	return raw, nil
}

// DecodeArgs decodes a payload's arguments into dst, in order: the first argument into
// dst[0], and so on. A nil entry skips its argument; arguments beyond len(dst) are
// ignored. Numbers decoded into an `any` become [json.Number], so big integers survive.
// A *[]byte receives a binary attachment (or, as encoding/json does, base64 text).
//
// Errors are [*AckError]s with code "invalid_argument", so a [Handler] can return them as
// they are and the client learns which argument was wrong:
//
//	var msg struct{ Room, Text string }
//	if err := bridge.DecodeArgs(ev.GetPayload(), &msg); err != nil {
//		return nil, err
//	}
func DecodeArgs(p *pb.Payload, dst ...any) error {
	raw, err := RawArgs(p)
	if err != nil {
		return &AckError{Code: CodeInvalidArgument, Message: err.Error()}
	}
	if len(raw) < len(dst) {
		return &AckError{Code: CodeInvalidArgument, Message: fmt.Sprintf("expected %d argument(s), got %d", len(dst), len(raw))}
	}
	for i, d := range dst {
		if d == nil {
			continue
		}
		if b, ok := d.(*[]byte); ok {
			if n, isPlaceholder := placeholder(raw[i]); isPlaceholder {
				if n < 0 || n >= len(p.GetAttachments()) {
					return &AckError{Code: CodeInvalidArgument, Message: fmt.Sprintf("argument %d: attachment %d is missing", i+1, n)}
				}
				*b = p.GetAttachments()[n]
				continue
			}
		}
		dec := json.NewDecoder(bytes.NewReader(raw[i]))
		dec.UseNumber()
		if err := dec.Decode(d); err != nil {
			return &AckError{Code: CodeInvalidArgument, Message: fmt.Sprintf("argument %d: %v", i+1, err)}
		}
	}
	return nil
}

// placeholder reports whether raw is a Socket.IO binary placeholder, and its number.
func placeholder(raw json.RawMessage) (int, bool) {
	var ph struct {
		Placeholder bool `json:"_placeholder"`
		Num         *int `json:"num"`
	}
	if len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &ph) != nil || !ph.Placeholder || ph.Num == nil {
		return 0, false
	}
	return *ph.Num, true
}
