// Package bridge is the Go backend's side of socket-bridge: it dials the bridge's gRPC
// API, encodes and decodes Socket.IO arguments, runs the Events subscription that
// answers what browsers emit, and runs the Authorize subscription that decides who
// connects.
//
// Browsers connect to the bridge with the stock Socket.IO client. The backend never
// speaks Socket.IO: it calls the typed API in package socketbridgev1 (generated from
// proto/socketbridge/v1/bridge.proto) to push events, manage rooms and read status, and
// holds one Events stream over which the bridge forwards client events and the backend
// answers their acknowledgement callbacks. This package adds what every backend would
// otherwise write by hand around those stubs.
//
// # Connecting
//
// [Dial] returns a [*Client] that embeds the generated BridgeServiceClient, so every RPC
// is a method on it. Choose the transport explicitly and give the API key the bridge
// was configured with:
//
//	c, err := bridge.Dial("bridge.internal:50051",
//		bridge.WithTLS(nil), // or bridge.WithInsecure() on loopback
//		bridge.WithAPIKey(os.Getenv("BRIDGE_API_KEY")))
//
// # Arguments
//
// A Socket.IO event carries a list of arguments; the API carries it as a JSON array in
// Payload.args_json plus binary attachments. [NewPayload] encodes Go values into a
// payload (one argument per value, []byte as binary) and [DecodeArgs] decodes a
// payload's arguments into Go values.
//
// # Events
//
// A [Consumer] subscribes, calls a [Handler] for each client event and turns its result
// into the client's ack (an [*AckError] becomes the `{"error":{code,message}}` object the
// callback receives), reports connects, disconnects and presence changes to its hooks,
// and re-subscribes with exponential backoff and jitter whenever the stream drops. One
// socket's events are handled in the order the client sent them.
//
// # Deciding who connects
//
// With auth.mode = "backend" the bridge lets a client connect only when a backend says so.
// A [Decider] holds the Authorize stream: for each connecting client its [ConnectHandler]
// gets what the client presented (auth object, cookie and other headers, address) and
// returns an [*Allow] (user id, rooms, data kept with the socket) or a [*Deny] (code and
// message for the client's connect_error); a [JoinHandler] likewise decides room joins
// the bridge's patterns do not grant. A handler's error or panic denies, never allows.
// [Cookie] reads a cookie from the question. The Decider reconnects like a Consumer and
// finishes the decisions it is making when it stops.
//
// # Errors
//
// RPCs fail with standard gRPC status codes. INVALID_ARGUMENT carries a
// google.rpc.BadRequest naming the offending field; [FieldViolations] extracts it.
// UNAUTHENTICATED means the API key is missing or unknown.
//
// The examples below run against a bridge whose gRPC address is in $BRIDGE_GRPC and
// whose API key is in $API_KEY (the package's tests start one).
package bridge
