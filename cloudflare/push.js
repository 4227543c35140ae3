// The push consumer (wrangler.toml's second way to deploy): Cloudflare hands
// this Worker batches from the docutrain queue, and each message is POSTed to
// `docutrain serve` at ${DOCUTRAIN_URL}/v1/documents with the bearer token
// DOCUTRAIN_TOKEN (a Worker secret). One machine with docutrain's local queue
// then takes Cloudflare's traffic without polling.
//
// What each answer does to the message:
//   200/202 from serve               ack (serve committed the job)
//   429, 5xx, 408, 425, no answer    retry after Retry-After, else a backoff
//   401/403/404/405, a redirect      retry too: the token or DOCUTRAIN_URL is
//                                    wrong, not the message; fixing it is enough
//   any other 4xx (400, 413, 422)    serve refused the document itself: sent to
//                                    the dead-letter queue with the reason, acked
// Refused documents go to the dead-letter queue at once rather than through
// max_retries redeliveries: sending again cannot help, and dropping would
// lose the document silently; there it is kept with its reason for
// `docutrain jobs --state dead` and `docutrain retry` (as the pull consumer
// keeps what it cannot read). Once serve cannot take one message, the rest of
// the batch are retried after the same delay without a request.
//
// serve is idempotent on user_document_id (one job per document while one is
// queued or running), so a delivery repeated after a lost answer does not
// queue the document twice; the id also goes as the Idempotency-Key header
// for proxies in between.

const TIMEOUT_MS = 30_000;
const FIRST_RETRY_DELAY = 10; // seconds; doubles with each delivery
const LONGEST_RETRY_DELAY = 3600;
const CLOUDFLARE_LONGEST_DELAY = 43_200; // retry({delaySeconds}) accepts up to 12 h
const NOT_THE_MESSAGE = new Set([401, 403, 404, 405, 408, 425, 429]);
const REASON_CHARS = 300;
const RAW_BODY_KEPT = 60_000; // characters of an unreadable body in its dead-letter record

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

// Attempt n waits between d/2 and d, d = 10 s * 2^(n-1), at most an hour:
// spread out, so a batch that failed together does not come back together.
export function backoffSeconds(attempts, random = Math.random) {
  const delay = Math.min(FIRST_RETRY_DELAY * 2 ** Math.max(attempts - 1, 0), LONGEST_RETRY_DELAY);
  return Math.ceil(delay / 2 + (random() * delay) / 2);
}

// Retry-After in seconds or as an HTTP date; null when absent or unreadable.
export function retryAfterSeconds(value, now = Date.now()) {
  if (!value) return null;
  const text = value.trim();
  const seconds = /^\d+$/.test(text) ? Number(text) : (Date.parse(text) - now) / 1000;
  if (!Number.isFinite(seconds)) return null;
  return Math.min(Math.max(Math.ceil(seconds), 1), CLOUDFLARE_LONGEST_DELAY);
}

function isLoopback(hostname) {
  return hostname === "localhost" || hostname === "[::1]" || /^127\.\d+\.\d+\.\d+$/.test(hostname);
}

// The intake URL, or the reason there is none. The token travels with every
// request, so plain http is refused except to this machine (tests, a tunnel).
export function serveEndpoint(env) {
  if (!env.DOCUTRAIN_URL) return { problem: "DOCUTRAIN_URL is not set (a [vars] entry in wrangler.toml)" };
  if (!env.DOCUTRAIN_TOKEN) return { problem: "DOCUTRAIN_TOKEN is not set: run `wrangler secret put DOCUTRAIN_TOKEN`" };
  let base;
  try {
    base = new URL(env.DOCUTRAIN_URL);
  } catch {
    return { problem: "DOCUTRAIN_URL is not a URL" };
  }
  if (base.protocol !== "https:" && !(base.protocol === "http:" && isLoopback(base.hostname))) {
    return { problem: "DOCUTRAIN_URL must start with https:// (the bearer token goes with every request)" };
  }
  return { url: `${base.origin}${base.pathname.replace(/\/+$/, "")}/v1/documents` };
}

// The body of POST /v1/documents for a message, or the reason there is none.
// Two kinds of message arrive: /enqueue requests (worker.js) and docutrain
// jobs (`docutrain enqueue` or `retry` on a cloudflare:// queue, and jobs a
// pull runner gave back before the switch to push).
export function documentOf(body) {
  if (!isObject(body)) return { problem: "the message is not a JSON object" };
  const document = {};
  if (typeof body.user_document_id === "string") {
    document.user_document_id = body.user_document_id;
    if (typeof body.storage_path === "string") document.storage_path = body.storage_path;
  } else if (typeof body.document_id === "string" && typeof body.source === "string") {
    document.user_document_id = body.document_id;
    document.storage_path = body.source; // supabase://bucket/path, which serve takes
    if (isObject(body.metadata)) document.metadata = body.metadata;
  } else {
    return { problem: "neither an /enqueue request nor a docutrain job with a document id" };
  }
  if (typeof body.user_id === "string") document.user_id = body.user_id;
  return { document };
}

async function answerOf(response) {
  try {
    return JSON.parse(await response.text());
  } catch {
    return null;
  }
}

function describe(status, answer) {
  const said = isObject(answer) && typeof answer.error === "string" ? `: ${answer.error}` : "";
  return `docutrain serve answered ${status}${said}`.slice(0, REASON_CHARS);
}

// One POST: {outcome: "done"} | {outcome: "dead", reason} | {outcome: "retry", reason, retryAfter}.
async function deliver(document, url, token) {
  let response;
  try {
    response = await fetch(url, {
      method: "POST",
      headers: {
        authorization: `Bearer ${token}`,
        "content-type": "application/json",
        "idempotency-key": document.user_document_id,
        "user-agent": "docutrain-intake-worker",
      },
      body: JSON.stringify(document),
      redirect: "manual", // never carry the token to wherever a redirect points
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
  } catch (error) {
    const why = error?.name === "TimeoutError" ? `no answer in ${TIMEOUT_MS / 1000} s` : String(error);
    return { outcome: "retry", reason: `cannot reach docutrain serve: ${why}`.slice(0, REASON_CHARS) };
  }
  const { status } = response;
  const answer = await answerOf(response);
  const retryAfter = retryAfterSeconds(response.headers.get("retry-after"));
  if (status === 200 || status === 202) {
    if (isObject(answer) && answer.user_document_id === document.user_document_id) return { outcome: "done" };
    return { outcome: "retry", retryAfter, reason: `${status} is not docutrain serve's answer: check DOCUTRAIN_URL` };
  }
  if (status >= 300 && status < 400) {
    const where = response.headers.get("location") || "elsewhere";
    return { outcome: "retry", retryAfter, reason: `serve redirected to ${where}: set DOCUTRAIN_URL to the final address`.slice(0, REASON_CHARS) };
  }
  if (status >= 500 || NOT_THE_MESSAGE.has(status)) {
    return { outcome: "retry", retryAfter, reason: describe(status, answer) };
  }
  return { outcome: "dead", reason: describe(status, answer) };
}

// The dead-letter record: the message as it came, marked dead with the
// reason (docutrain's own form for a dead job). Acked only once the
// dead-letter queue has it; otherwise retried, never dropped.
async function deadLetter(message, env, reason) {
  const body = message.body;
  const record = isObject(body)
    ? { ...body }
    : { source: `cloudflare message ${message.id}`, raw_body: String(body).slice(0, RAW_BODY_KEPT) };
  record.dead = true;
  record.attempts = message.attempts;
  record.errors = [...(Array.isArray(body?.errors) ? body.errors : []), `push consumer: ${reason}`];
  const name = isObject(body) ? body.user_document_id ?? body.document_id ?? message.id : message.id;
  try {
    if (!env.DEAD_LETTER_QUEUE) throw new Error("DEAD_LETTER_QUEUE is not bound (see wrangler.toml)");
    await env.DEAD_LETTER_QUEUE.send(record, { contentType: "json" });
  } catch (error) {
    const delay = backoffSeconds(message.attempts);
    console.error(`push: document ${name}: ${reason}; the dead-letter queue refused it (${error}), retried in ${delay} s`);
    message.retry({ delaySeconds: delay });
    return;
  }
  console.error(`push: document ${name}: ${reason}; moved to the dead-letter queue`);
  message.ack();
}

export async function push(batch, env) {
  const endpoint = serveEndpoint(env);
  if (endpoint.problem) {
    console.error(`push: ${endpoint.problem}; ${batch.messages.length} message(s) retried`);
    for (const message of batch.messages) message.retry({ delaySeconds: backoffSeconds(message.attempts) });
    return;
  }
  let waitFor = null; // seconds, once serve could not take a message
  let skipped = 0;
  for (const message of batch.messages) {
    if (waitFor !== null) {
      message.retry({ delaySeconds: waitFor });
      skipped += 1;
      continue;
    }
    const { document, problem } = documentOf(message.body);
    if (problem) {
      await deadLetter(message, env, problem);
      continue;
    }
    const result = await deliver(document, endpoint.url, env.DOCUTRAIN_TOKEN);
    if (result.outcome === "done") {
      message.ack();
    } else if (result.outcome === "dead") {
      await deadLetter(message, env, result.reason);
    } else {
      waitFor = result.retryAfter ?? backoffSeconds(message.attempts);
      console.error(
        `push: document ${document.user_document_id}: ${result.reason}; retried in ${waitFor} s (delivery ${message.attempts})`,
      );
      message.retry({ delaySeconds: waitFor });
    }
  }
  if (skipped) console.error(`push: ${skipped} more message(s) of the batch retried in ${waitFor} s without a request`);
}
