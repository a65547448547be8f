// Package socketbridgev1 is the generated Go code for socket-bridge's gRPC API,
// proto/socketbridge/v1/bridge.proto (protobuf package socketbridge.v1): the messages
// and the BridgeService client and server stubs.
//
// Every file here except this one is written by ./generate.sh (protoc-gen-go and
// protoc-gen-go-grpc at pinned versions) and must not be edited; check.sh fails when
// they differ from what the proto produces. For dialing with an API key, argument
// encoding and a reconnecting Events consumer, see package bridge.
package socketbridgev1
