package bridge

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
)

// Error codes this package puts in [AckError.Code]. Handlers may use any code of 1 to 64
// bytes; the bridge itself answers callbacks with "ack_timeout", "no_backend",
// "backend_unavailable", "backend_overloaded" and "rate_limited".
const (
	// CodeInvalidArgument: the client's arguments did not decode (see [DecodeArgs]).
	CodeInvalidArgument = "invalid_argument"
	// CodeInternal: the handler failed with an error that is not an [*AckError] (for a
	// [Decider], not a [*Deny]), or panicked. The message is generic; the cause goes to
	// the [Consumer]'s or [Decider]'s Logger.
	CodeInternal = "internal"
)

// Limits the bridge enforces on an ack's error; longer values would make it drop the ack.
const (
	maxAckErrorCode    = 64
	maxAckErrorMessage = 1024
)

// AckError is an error the client is meant to see. Returned (or wrapped) by a [Handler],
// it answers the client's callback with `{"error":{"code":Code,"message":Message}}`.
// Any other error answers with code [CodeInternal] and a generic message, so internal
// details never reach browsers.
type AckError struct {
	// Code is a short machine-readable reason, e.g. "not_found" (1 to 64 bytes).
	Code string
	// Message is for humans; at most 1024 bytes are sent.
	Message string
}

// AckErrorf returns an [*AckError] with a formatted message.
func AckErrorf(code, format string, args ...any) *AckError {
	return &AckError{Code: code, Message: fmt.Sprintf(format, args...)}
}

func (e *AckError) Error() string { return e.Code + ": " + e.Message }

// wire returns the error as the bridge accepts it: an empty or over-long code becomes
// CodeInternal and the message is cut at 1024 bytes, on a character boundary.
func (e *AckError) wire() (code, message string) {
	code, message = e.Code, e.Message
	if code == "" || len(code) > maxAckErrorCode {
		code = CodeInternal
	}
	if len(message) > maxAckErrorMessage {
		cut := maxAckErrorMessage
		for cut > 0 && !utf8.RuneStart(message[cut]) {
			cut--
		}
		message = message[:cut]
	}
	return code, message
}

// FieldViolations returns the google.rpc.BadRequest field violations an
// INVALID_ARGUMENT error from the bridge carries (each names the offending request
// field, e.g. "target" or "payload.args_json"), or nil for any other error.
func FieldViolations(err error) []*errdetails.BadRequest_FieldViolation {
	var withStatus interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &withStatus) {
		return nil
	}
	var out []*errdetails.BadRequest_FieldViolation
	for _, d := range withStatus.GRPCStatus().Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			out = append(out, br.GetFieldViolations()...)
		}
	}
	return out
}
