package bridge_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/socketbridge/socket-bridge/go-client/bridge"
	pb "github.com/socketbridge/socket-bridge/go-client/socketbridgev1"
)

func TestNewPayload(t *testing.T) {
	cases := []struct {
		name        string
		args        []any
		json        string
		attachments int
	}{
		{"no arguments", nil, `[]`, 0},
		{"scalars", []any{"a", 1, true, nil, 2.5}, `["a",1,true,null,2.5]`, 0},
		{"html is not escaped", []any{"<a href='x'>&</a>"}, `["<a href='x'>&</a>"]`, 0},
		{"raw json is kept", []any{json.RawMessage(`{"z":1,"a":12345678901234567890}`)}, `[{"z":1,"a":12345678901234567890}]`, 0},
		{"binary", []any{[]byte("x"), "mid", []byte("y")}, `[{"_placeholder":true,"num":0},"mid",{"_placeholder":true,"num":1}]`, 2},
		{"struct", []any{struct {
			Room string `json:"room"`
		}{"lobby"}}, `[{"room":"lobby"}]`, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := bridge.NewPayload(tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if p.GetArgsJson() != tc.json || len(p.GetAttachments()) != tc.attachments {
				t.Errorf("got %s with %d attachments, want %s with %d", p.GetArgsJson(), len(p.GetAttachments()), tc.json, tc.attachments)
			}
		})
	}
	if _, err := bridge.NewPayload(func() {}); err == nil {
		t.Error("NewPayload encoded a func")
	}
}

func TestDecodeArgs(t *testing.T) {
	p := &pb.Payload{
		ArgsJson:    `["skip",{"_placeholder":true,"num":1},12345678901234567890,{"_placeholder":true,"num":0}]`,
		Attachments: [][]byte{[]byte("zero"), []byte("one")},
	}
	var first, last []byte
	var big any
	if err := bridge.DecodeArgs(p, nil, &first, &big, &last); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, []byte("one")) || !bytes.Equal(last, []byte("zero")) {
		t.Errorf("attachments decoded as %q and %q", first, last)
	}
	if n, ok := big.(json.Number); !ok || n.String() != "12345678901234567890" {
		t.Errorf("big integer decoded as %#v", big)
	}

	// Round trip through NewPayload.
	type msg struct {
		Room string `json:"room"`
		N    int    `json:"n"`
	}
	rt, err := bridge.NewPayload(msg{"r", 3}, []byte{1, 2})
	if err != nil {
		t.Fatal(err)
	}
	var m msg
	var bin []byte
	if err := bridge.DecodeArgs(rt, &m, &bin); err != nil || m != (msg{"r", 3}) || !bytes.Equal(bin, []byte{1, 2}) {
		t.Errorf("round trip gave %v %v %v", m, bin, err)
	}

	// Errors are AckErrors the client can read.
	for _, tc := range []struct {
		p   *pb.Payload
		dst []any
	}{
		{&pb.Payload{ArgsJson: `{"not":"array"}`}, []any{new(int)}},
		{&pb.Payload{ArgsJson: `[]`}, []any{new(int)}},
		{&pb.Payload{ArgsJson: `["x"]`}, []any{new(int)}},
		{&pb.Payload{ArgsJson: `[{"_placeholder":true,"num":3}]`}, []any{new([]byte)}},
	} {
		err := bridge.DecodeArgs(tc.p, tc.dst...)
		var ackErr *bridge.AckError
		if !errors.As(err, &ackErr) || ackErr.Code != bridge.CodeInvalidArgument || ackErr.Message == "" {
			t.Errorf("DecodeArgs(%s) = %v, want an invalid_argument AckError", tc.p.GetArgsJson(), err)
		}
	}

	// A nil payload or an empty args_json has no arguments.
	if raw, err := bridge.RawArgs(nil); raw != nil || err != nil {
		t.Errorf("RawArgs(nil) = %v, %v", raw, err)
	}
}
