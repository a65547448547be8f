package interop;

import io.socket.client.Ack;
import io.socket.client.IO;
import io.socket.client.Socket;
import io.socket.engineio.client.transports.Polling;
import io.socket.engineio.client.transports.WebSocket;
import java.net.URI;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import org.json.JSONArray;
import org.json.JSONObject;

/**
 * The interop scenario (see tests/interop/scenario.mjs) with the stock Java client
 * io.socket:socket.io-client. Settings come from the environment (INTEROP_URL,
 * INTEROP_TRANSPORT, INTEROP_TOKEN, INTEROP_TOKEN_BYE, INTEROP_BAD_TOKEN, INTEROP_WAIT_MS);
 * every check prints one JSON line {"check", "observed"} or {"check", "error"}.
 */
public final class JavaClient {
  private static final String TEXT = "h\u00e9llo \u2713";
  private static long waitMs;

  /** What a socket received, in order: [name, args...]; name "$disconnect" for disconnects. */
  private static final class Inbox {
    final LinkedBlockingQueue<Object[]> queue = new LinkedBlockingQueue<>();

    Object[] next(String name) throws InterruptedException {
      long deadline = System.currentTimeMillis() + waitMs;
      List<String> seen = new ArrayList<>();
      while (true) {
        long left = deadline - System.currentTimeMillis();
        Object[] item = left > 0 ? queue.poll(left, TimeUnit.MILLISECONDS) : null;
        if (item == null) {
          throw new IllegalStateException("no " + name + " within " + waitMs + " ms; got " + seen);
        }
        if (name.equals(item[0])) {
          return item;
        }
        seen.add(String.valueOf(item[0]));
      }
    }
  }

  public static void main(String[] argv) throws Exception {
    waitMs = Long.parseLong(env("INTEROP_WAIT_MS"));
    try {
      run();
    } finally {
      // OkHttp's threads would keep the JVM alive.
      System.out.flush();
      System.exit(0);
    }
  }

  /** The main user's socket and what it received; replaced before each check. */
  private static Socket sock;
  private static Inbox inbox;

  /** Connection attempts that never connected (the check "connect_retries"). */
  private static int failedConnects;

  /** A socket connected with {@code auth}: up to three attempts, each waiting for connect. */
  private static Socket connectRetrying(Map<String, String> auth, Inbox into) throws Exception {
    for (int attempt = 1; ; attempt++) {
      Socket socket = socket(auth, into);
      socket.connect();
      try {
        into.next(Socket.EVENT_CONNECT);
        return socket;
      } catch (IllegalStateException e) {
        failedConnects++;
        socket.close();
        if (attempt == 3) {
          throw e;
        }
      }
    }
  }

  /** Connects the main user's socket; with {@code auth}, returns its "auth" event's arguments. */
  private static String openMain(boolean auth) throws Exception {
    Map<String, String> credentials = new HashMap<>();
    credentials.put("token", env("INTEROP_TOKEN"));
    credentials.put("locale", "fr");
    credentials.put("note", "\u00fcn\u00efc\u00f6d\u00e9 \u2713");
    inbox = new Inbox();
    sock = connectRetrying(credentials, inbox);
    return auth ? args(inbox.next("auth")) : null;
  }

  private static void run() throws Exception {
    if (!check("connect_auth", () -> openMain(true))) {
      return;
    }
    for (String kind : new String[] {"text", "binary", "binary_mixed"}) {
      check("push_" + kind, () -> {
        sock.emit("push-me:" + kind);
        return args(inbox.next("pushed:" + kind));
      });
    }
    for (String kind : new String[] {"text", "binary", "binary_mixed", "binary_large"}) {
      check("emit_" + kind, () -> {
        sock.emit("echo:" + kind, payload(kind));
        return args(inbox.next("echo-back:" + kind));
      });
    }
    for (String kind : new String[] {"text", "binary", "binary_mixed"}) {
      check("ack_" + kind, () -> {
        Inbox acks = inbox;
        sock.emit("ask:" + kind, payload(kind), (Ack) (Object... reply) -> acks.queue.add(prepend("$ack:" + kind, reply)));
        return args(inbox.next("$ack:" + kind));
      });
    }
    check("server_disconnect", () -> {
      sock.emit("disconnect-me");
      Object notice = args(inbox.next("bridge:disconnect"));
      Object[] gone = inbox.next(Socket.EVENT_DISCONNECT);
      return "{\"notice\":" + notice + ",\"reason\":" + json(gone[1]) + "}";
    });
    sock.close();

    Map<String, String> byeAuth = new HashMap<>();
    byeAuth.put("token", env("INTEROP_TOKEN_BYE"));
    Inbox byeInbox = new Inbox();
    check("client_disconnect", () -> {
      Socket bye = connectRetrying(byeAuth, byeInbox);
      bye.disconnect();
      Object[] gone = byeInbox.next(Socket.EVENT_DISCONNECT);
      return "{\"reason\":" + json(gone[1]) + "}";
    });

    Map<String, String> badAuth = new HashMap<>();
    badAuth.put("token", env("INTEROP_BAD_TOKEN"));
    Inbox badInbox = new Inbox();
    Socket bad = socket(badAuth, badInbox);
    bad.connect();
    check("connect_refused", () -> {
      Object[] error = badInbox.next(Socket.EVENT_CONNECT_ERROR);
      Object data = error.length > 1 ? error[1] : null;
      String message = data instanceof JSONObject ? ((JSONObject) data).optString("message") : String.valueOf(data);
      return "{\"message\":" + json(message) + "}";
    });
    bad.close();
    check("connect_retries", () -> String.valueOf(failedConnects));
  }

  private static Socket socket(Map<String, String> auth, Inbox inbox) {
    String transport = env("INTEROP_TRANSPORT");
    IO.Options options = IO.Options.builder()
        .setForceNew(true)
        .setReconnection(false)
        .setAuth(auth)
        .build();
    if (transport.equals("websocket")) {
      options.transports = new String[] {WebSocket.NAME};
    } else if (transport.equals("polling")) {
      options.transports = new String[] {Polling.NAME};
    }
    Socket socket = IO.socket(URI.create(env("INTEROP_URL")), options);
    socket.onAnyIncoming(args -> inbox.queue.add(args));
    socket.on(Socket.EVENT_CONNECT, args -> inbox.queue.add(prepend(Socket.EVENT_CONNECT, args)));
    socket.on(Socket.EVENT_DISCONNECT, args -> inbox.queue.add(prepend(Socket.EVENT_DISCONNECT, args)));
    socket.on(Socket.EVENT_CONNECT_ERROR, args -> inbox.queue.add(prepend(Socket.EVENT_CONNECT_ERROR, args)));
    return socket;
  }

  /** The arguments every payload kind sends (the same in every client of the suite). */
  private static Object[] payload(String kind) throws Exception {
    switch (kind) {
      case "text":
        JSONObject object = new JSONObject();
        object.put("n", 42);
        object.put("list", new JSONArray("[1,\"two\",null,true]"));
        return new Object[] {TEXT, object};
      case "binary":
        return new Object[] {bytes(1000)};
      case "binary_mixed":
        JSONObject k = new JSONObject();
        k.put("k", 1);
        return new Object[] {"label", bytes(300), k};
      case "binary_large":
        return new Object[] {bytes(200000)};
      default:
        throw new IllegalArgumentException(kind);
    }
  }

  /** Byte i is i mod 256: every value, the polling separator 0x1e included. */
  private static byte[] bytes(int n) {
    byte[] b = new byte[n];
    for (int i = 0; i < n; i++) {
      b[i] = (byte) i;
    }
    return b;
  }

  private interface Body {
    String run() throws Exception;
  }

  /** Checks that run on the main user's socket, each on a new one. */
  private static boolean onMainSocket(String name) {
    return name.startsWith("push_") || name.startsWith("emit_") || name.startsWith("ack_") || name.equals("server_disconnect");
  }

  /**
   * Runs and reports one check. A main-socket check gets a new socket first, so that a
   * client bug that breaks a session (or garbles it) shows in its own check only. False if
   * the check failed.
   */
  private static boolean check(String name, Body body) {
    String line;
    boolean ok = true;
    try {
      if (onMainSocket(name)) {
        sock.close();
        openMain(false);
      }
      line = "{\"check\":" + quote(name) + ",\"observed\":" + body.run() + "}";
    } catch (Throwable e) {
      ok = false;
      line = "{\"check\":" + quote(name) + ",\"error\":" + quote(String.valueOf(e.getMessage())) + "}";
    }
    System.out.println(line);
    System.out.flush();
    return ok;
  }

  private static Object[] prepend(String name, Object[] rest) {
    Object[] all = new Object[rest.length + 1];
    all[0] = name;
    System.arraycopy(rest, 0, all, 1, rest.length);
    return all;
  }

  /** The arguments of a received item (all but its name) as JSON. */
  private static String args(Object[] item) throws Exception {
    return json(new JSONArray(Arrays.asList(Arrays.copyOfRange(item, 1, item.length))));
  }

  private static String json(Object v) throws Exception {
    if (v == null || v == JSONObject.NULL) {
      return "null";
    }
    if (v instanceof byte[]) {
      byte[] b = (byte[]) v;
      StringBuilder hex = new StringBuilder();
      for (byte x : MessageDigest.getInstance("SHA-256").digest(b)) {
        hex.append(String.format("%02x", x));
      }
      return "{\"$binary\":\"sha256:" + hex + "\",\"length\":" + b.length + "}";
    }
    if (v instanceof JSONArray) {
      JSONArray a = (JSONArray) v;
      StringBuilder s = new StringBuilder("[");
      for (int i = 0; i < a.length(); i++) {
        s.append(i > 0 ? "," : "").append(json(a.get(i)));
      }
      return s.append("]").toString();
    }
    if (v instanceof JSONObject) {
      JSONObject o = (JSONObject) v;
      StringBuilder s = new StringBuilder("{");
      Iterator<?> keys = o.keys();
      boolean first = true;
      while (keys.hasNext()) {
        String key = String.valueOf(keys.next());
        s.append(first ? "" : ",").append(json(key)).append(":").append(json(o.get(key)));
        first = false;
      }
      return s.append("}").toString();
    }
    if (v instanceof Number || v instanceof Boolean) {
      return String.valueOf(v);
    }
    return quote(String.valueOf(v));
  }

  private static String quote(String text) {
    StringBuilder s = new StringBuilder("\"");
    for (char c : text.toCharArray()) {
      if (c == '"' || c == '\\') {
        s.append('\\').append(c);
      } else if (c < 0x20 || c > 0x7e) {
        s.append(String.format("\\u%04x", (int) c));
      } else {
        s.append(c);
      }
    }
    return s.append('"').toString();
  }

  private static String env(String name) {
    String v = System.getenv(name);
    if (v == null) {
      throw new IllegalStateException(name + " is not set");
    }
    return v;
  }

  private JavaClient() {}
}
