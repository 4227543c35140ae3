// POST /enqueue: the edge Worker's intake (worker.js routes requests here).
//
//   POST /enqueue   Authorization: Bearer <ENQUEUE_TOKEN>
//   {"user_document_id": "...", "user_id": "...", "storage_path": "user/file.pdf"}
//   -> 202 {"success": true, "message", "user_document_id", "status": "pending"}
//
// A 202 means the queue accepted the message (send() resolved). 400: the
// body is not what is expected; 413: it is over 64 KB; 401: no or wrong token; 405: not a POST;
// 404: another path; 429: over the intake limit of the client address or
// of the user (Retry-After says when to try again); 503: the queue refused,
// so the app should try again.
// `storage_path` (the object's path in the Supabase storage bucket) is what
// a runner downloads. Without it, a pulling runner cannot find the file and
// dead-letters the message (`docutrain enqueue --from-supabase` queues such
// rows); pushed to serve, serve reads it from the user_documents row.
//
// The message body is JSON (contentType "json": an HTTP pull consumer cannot
// read the Workers-only "v8" type). `job_id` is made the way docutrain makes
// its own: milliseconds * 1000 plus a small random number.

const MAX_FIELD = 1024; // characters; ids and paths are far shorter
const MAX_BODY = 64 * 1024; // bytes, as docutrain serve; a request is a few ids and a path

// The rate-limiting binding says only yes or no, not when its window ends;
// 60 s is the longest period Cloudflare allows ([[ratelimits]] in
// wrangler.toml), so a client that waits this long is over the window.
export const LIMIT_RETRY_AFTER = 60;

export function json(status, data, headers = {}) {
  return new Response(JSON.stringify(data), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

function refuse(status, error, headers) {
  return json(status, { success: false, error }, headers);
}

// Compare SHA-256 digests byte by byte, all of them: the time taken does
// not tell how much of a guessed token was right.
async function sameSecret(given, expected) {
  const encoder = new TextEncoder();
  const [a, b] = await Promise.all(
    [given, expected].map((s) => crypto.subtle.digest("SHA-256", encoder.encode(s))),
  );
  const x = new Uint8Array(a);
  const y = new Uint8Array(b);
  let diff = 0;
  for (let i = 0; i < x.length; i++) diff |= x[i] ^ y[i];
  return diff === 0;
}

function text(value) {
  return typeof value === "string" && value.trim() !== "" && value.length <= MAX_FIELD;
}

// Counts one request against a Workers rate-limiting binding. true: over
// the limit. A binding that is missing is a deployment error (500); one that
// fails lets the request through: the limit is a guard against floods, the
// token is what keeps strangers out.
async function overLimit(limiter, key) {
  try {
    const { success } = await limiter.limit({ key });
    return !success;
  } catch (error) {
    console.error(`rate limiter failed, request let through: ${error}`);
    return false;
  }
}

function limited(what) {
  return refuse(429, `too many requests for this ${what}; try again later`, {
    "retry-after": String(LIMIT_RETRY_AFTER),
  });
}

// The body as text, or null once it is over MAX_BODY: read no further, so a
// huge upload cannot use up the isolate's memory.
async function boundedText(request) {
  if (Number(request.headers.get("content-length") || 0) > MAX_BODY) return null;
  if (!request.body) return "";
  const reader = request.body.getReader();
  const decoder = new TextDecoder();
  let text = "";
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return text + decoder.decode();
    size += value.byteLength;
    if (size > MAX_BODY) {
      await reader.cancel();
      return null;
    }
    text += decoder.decode(value, { stream: true });
  }
}

export function newJobId(now = Date.now(), random = Math.random) {
  return now * 1000 + Math.floor(random() * 1000);
}

export async function handle(request, env) {
  const url = new URL(request.url);
  if (url.pathname !== "/enqueue") return refuse(404, "not found: POST /enqueue");
  if (request.method !== "POST") return refuse(405, "method not allowed: use POST", { allow: "POST" });
  if (!env.ENQUEUE_TOKEN) return refuse(500, "ENQUEUE_TOKEN is not set: run `wrangler secret put ENQUEUE_TOKEN`");
  for (const binding of ["ADDRESS_INTAKE_LIMIT", "USER_INTAKE_LIMIT"]) {
    if (!env[binding]) return refuse(500, `${binding} is not bound: see [[ratelimits]] in wrangler.toml`);
  }

  // Before the token check, so guessing the token is throttled too.
  // Cloudflare sets CF-Connecting-IP to the client's address.
  const address = request.headers.get("cf-connecting-ip") || "unknown";
  if (await overLimit(env.ADDRESS_INTAKE_LIMIT, `address:${address}`)) return limited("client address");

  const auth = request.headers.get("authorization") || "";
  const match = /^Bearer\s+(.+)$/i.exec(auth);
  if (!match || !(await sameSecret(match[1].trim(), env.ENQUEUE_TOKEN))) {
    return refuse(401, "missing or wrong bearer token", { "www-authenticate": "Bearer" });
  }

  const raw = await boundedText(request);
  if (raw === null) return refuse(413, `the body is over ${MAX_BODY / 1024} KB`);
  let body;
  try {
    body = JSON.parse(raw);
  } catch {
    return refuse(400, "the body must be JSON");
  }
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    return refuse(400, "the body must be a JSON object");
  }
  for (const field of ["user_document_id", "user_id"]) {
    if (!text(body[field])) return refuse(400, `${field} is required (a non-empty string)`);
  }
  if (body.storage_path !== undefined && !text(body.storage_path)) {
    return refuse(400, "storage_path must be a non-empty string when given");
  }

  if (await overLimit(env.USER_INTAKE_LIMIT, `user:${body.user_id.trim()}`)) return limited("user");

  const message = {
    job_id: newJobId(),
    user_document_id: body.user_document_id.trim(),
    user_id: body.user_id.trim(),
  };
  if (body.storage_path !== undefined) message.storage_path = body.storage_path.trim();
  try {
    await env.DOCUMENT_QUEUE.send(message, { contentType: "json" });
  } catch (error) {
    console.error(`queue send failed for ${message.user_document_id}: ${error}`);
    return refuse(503, "the queue did not accept the document; try again");
  }
  return json(202, {
    success: true,
    message: "Document queued for processing",
    user_document_id: message.user_document_id,
    status: "pending",
  });
}
