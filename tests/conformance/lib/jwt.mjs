// HS256 JSON Web Tokens for tests, signed with node:crypto (RFC 7519 / 7515 compact form).
import crypto from "node:crypto";

const b64url = (buf) => Buffer.from(buf).toString("base64url");

/** Signs `claims` (sub, rooms, ...); `exp` defaults to one hour from now. */
export function signJwt(claims, secret, { expiresInSec = 3600 } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const payload = b64url(JSON.stringify({ iat: now, exp: now + expiresInSec, ...claims }));
  const sig = crypto.createHmac("sha256", secret).update(`${header}.${payload}`).digest();
  return `${header}.${payload}.${b64url(sig)}`;
}
