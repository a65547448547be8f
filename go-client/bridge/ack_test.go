package bridge

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestNewAckErrorsFitTheBridgeLimits(t *testing.T) {
	long := strings.Repeat("é", 600) // 1200 bytes
	ack, err := newAck("e1", nil, &AckError{Code: strings.Repeat("c", 65), Message: long})
	if err != nil {
		t.Fatal(err)
	}
	e := ack.GetError()
	if e.GetCode() != CodeInternal || len(e.GetMessage()) > maxAckErrorMessage || !utf8.ValidString(e.GetMessage()) {
		t.Errorf("error sent as code %q and a %d-byte message", e.GetCode(), len(e.GetMessage()))
	}

	ack, _ = newAck("e2", nil, errors.New("secret detail"))
	if ack.GetError().GetCode() != CodeInternal || strings.Contains(ack.GetError().GetMessage(), "secret") {
		t.Errorf("plain error sent as %v", ack.GetError())
	}

	ack, err = newAck("e3", make(chan int), nil)
	if err == nil || ack.GetError().GetCode() != CodeInternal || ack.GetEventId() != "e3" {
		t.Errorf("unencodable result sent as %v (%v)", ack, err)
	}
}
