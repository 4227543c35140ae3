// node --test (Node 20+): the push consumer against a real HTTP server on
// 127.0.0.1 that answers as told, with fake batch messages and a fake
// dead-letter queue binding (tests/test_edge_worker.py runs the real ones in
// workerd, against a real `docutrain serve`).
import assert from "node:assert/strict";
import http from "node:http";
import { after, before, test } from "node:test";

import { backoffSeconds, documentOf, push, retryAfterSeconds, serveEndpoint } from "./push.js";
import worker from "./worker.js";

const TOKEN = "serve-token-0123456789abcdef0123456789";

// Each request is recorded and answered with the next scripted answer
// (default: 202 as serve gives it); "hang up" closes the socket unanswered.
const server = { requests: [], answers: [] };
before(async () => {
  server.http = http.createServer((request, response) => {
    let raw = "";
    request.on("data", (chunk) => (raw += chunk));
    request.on("end", () => {
      const body = raw ? JSON.parse(raw) : null;
      server.requests.push({ method: request.method, url: request.url, headers: request.headers, body });
      const answer = server.answers.shift() ?? { status: 202 };
      if (answer === "hang up") return request.socket.destroy();
      const payload = answer.body ?? { success: true, job_id: 1, user_document_id: body?.user_document_id, status: "pending" };
      response.writeHead(answer.status, { "content-type": "application/json", ...(answer.headers || {}) });
      response.end(typeof payload === "string" ? payload : JSON.stringify(payload));
    });
  });
  await new Promise((resolve) => server.http.listen(0, "127.0.0.1", resolve));
  server.url = `http://127.0.0.1:${server.http.address().port}`;
});
after(() => server.http.close());

function reset(...answers) {
  server.requests = [];
  server.answers = answers;
}

function message(body, attempts = 1) {
  return {
    id: `msg-${Math.random().toString(16).slice(2)}`,
    body,
    attempts,
    outcome: null,
    ack() {
      this.outcome = { acked: true };
    },
    retry(options) {
      this.outcome = { retried: options.delaySeconds };
    },
  };
}

function deadQueue({ fail = false } = {}) {
  return {
    sent: [],
    async send(body, options) {
      if (fail) throw new Error("Queue send failed");
      this.sent.push({ body: structuredClone(body), options });
    },
  };
}

function env(extra = {}) {
  return { DOCUTRAIN_URL: `${server.url}/`, DOCUTRAIN_TOKEN: TOKEN, DEAD_LETTER_QUEUE: deadQueue(), ...extra };
}

const edge = (id, extra = {}) => ({ job_id: 1, user_document_id: id, user_id: "user-1", storage_path: `user-1/${id}.pdf`, ...extra });

test("each message is POSTed to /v1/documents with the token and its id as idempotency key, and acked on 202/200", async () => {
  reset({ status: 202 }, { status: 200 });
  const messages = [message(edge("doc-1")), message(edge("doc-2"))];
  await worker.queue({ messages }, env());
  assert.deepEqual(messages.map((m) => m.outcome), [{ acked: true }, { acked: true }]);
  assert.equal(server.requests.length, 2);
  const [first] = server.requests;
  assert.equal(first.method, "POST");
  assert.equal(first.url, "/v1/documents");
  assert.equal(first.headers.authorization, `Bearer ${TOKEN}`);
  assert.equal(first.headers["content-type"], "application/json");
  assert.equal(first.headers["idempotency-key"], "doc-1");
  assert.deepEqual(first.body, { user_document_id: "doc-1", user_id: "user-1", storage_path: "user-1/doc-1.pdf" });
});

test("429 and 5xx are retried after Retry-After, and the rest of the batch waits without a request", async () => {
  for (const [status, retryAfter] of [[429, "7"], [503, "2"], [500, undefined]]) {
    reset({ status: 202 }, { status, headers: retryAfter ? { "retry-after": retryAfter } : {}, body: { error: "busy" } });
    const messages = [message(edge("a")), message(edge("b"), 3), message(edge("c")), message(edge("d"))];
    await push({ messages }, env());
    assert.equal(server.requests.length, 2, `status ${status}`); // c and d were not sent
    assert.deepEqual(messages[0].outcome, { acked: true });
    const delay = messages[1].outcome.retried;
    if (retryAfter) assert.equal(delay, Number(retryAfter));
    else assert.ok(delay >= 20 && delay <= 40, `backoff for the third delivery: ${delay}`);
    assert.deepEqual(messages.slice(2).map((m) => m.outcome), [{ retried: delay }, { retried: delay }]);
  }
});

test("no answer (a dropped connection, nothing listening) is retried with a backoff", async () => {
  reset("hang up");
  const dropped = message(edge("dropped"));
  await push({ messages: [dropped] }, env());
  assert.ok(dropped.outcome.retried >= 5 && dropped.outcome.retried <= 10);

  const closed = http.createServer();
  await new Promise((resolve) => closed.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${closed.address().port}`;
  await new Promise((resolve) => closed.close(resolve));
  const unreachable = message(edge("unreachable"), 2);
  await push({ messages: [unreachable] }, env({ DOCUTRAIN_URL: url }));
  assert.ok(unreachable.outcome.retried >= 10 && unreachable.outcome.retried <= 20);
});

test("a wrong token or URL is retried, not dead-lettered: fixing the setting is enough", async () => {
  for (const status of [401, 403, 404, 405]) {
    reset({ status, body: { error: "missing or wrong token" } });
    const dead = deadQueue();
    const m = message(edge("doc"));
    await push({ messages: [m] }, env({ DEAD_LETTER_QUEUE: dead }));
    assert.ok("retried" in m.outcome, `status ${status}`);
    assert.equal(dead.sent.length, 0);
  }
  reset({ status: 301, headers: { location: "https://elsewhere.example/v1/documents" }, body: "" });
  const redirected = message(edge("doc"));
  await push({ messages: [redirected] }, env());
  assert.ok("retried" in redirected.outcome);
  assert.equal(server.requests.length, 1); // the redirect was not followed with the token
});

test("a 200 that is not serve's answer is not taken for a delivery", async () => {
  reset({ status: 200, body: "<html>captive portal</html>" });
  const m = message(edge("doc"));
  await push({ messages: [m] }, env());
  assert.ok("retried" in m.outcome);
});

test("a document serve refuses goes to the dead-letter queue with the reason, and is acked", async () => {
  reset({ status: 422, body: { error: "storage_path: no such object" } }, { status: 202 });
  const dead = deadQueue();
  const messages = [message(edge("refused", { errors: ["earlier"] }), 4), message(edge("fine"))];
  await push({ messages }, env({ DEAD_LETTER_QUEUE: dead }));
  assert.deepEqual(messages.map((m) => m.outcome), [{ acked: true }, { acked: true }]); // the batch goes on
  assert.equal(dead.sent.length, 1);
  const [{ body, options }] = dead.sent;
  assert.deepEqual(options, { contentType: "json" });
  assert.equal(body.user_document_id, "refused");
  assert.equal(body.dead, true);
  assert.equal(body.attempts, 4);
  assert.deepEqual(body.errors, ["earlier", "push consumer: docutrain serve answered 422: storage_path: no such object"]);
});

test("messages no document can be made of are dead-lettered without a request", async () => {
  reset();
  const dead = deadQueue();
  const messages = [message("plain text"), message({ source: "/local/file.pdf" }), message(null)];
  await push({ messages }, env({ DEAD_LETTER_QUEUE: dead }));
  assert.equal(server.requests.length, 0);
  assert.deepEqual(messages.map((m) => m.outcome), [{ acked: true }, { acked: true }, { acked: true }]);
  assert.equal(dead.sent[0].body.raw_body, "plain text");
  assert.equal(dead.sent[0].body.source, `cloudflare message ${messages[0].id}`);
  assert.match(dead.sent[1].body.errors[0], /neither an \/enqueue request nor a docutrain job/);
});

test("when the dead-letter queue cannot take it, the message is retried, never dropped", async () => {
  for (const extra of [{ DEAD_LETTER_QUEUE: deadQueue({ fail: true }) }, { DEAD_LETTER_QUEUE: undefined }]) {
    reset({ status: 422, body: { error: "bad" } });
    const m = message(edge("doc"));
    await push({ messages: [m] }, env(extra));
    assert.ok("retried" in m.outcome);
  }
});

test("without a usable DOCUTRAIN_URL or DOCUTRAIN_TOKEN every message is retried and nothing is sent", async () => {
  const cases = [
    [{ DOCUTRAIN_URL: undefined }, /DOCUTRAIN_URL is not set/],
    [{ DOCUTRAIN_TOKEN: "" }, /DOCUTRAIN_TOKEN is not set/],
    [{ DOCUTRAIN_URL: "not a url" }, /not a URL/],
    [{ DOCUTRAIN_URL: "http://docutrain.example.com" }, /must start with https/],
  ];
  for (const [extra, reason] of cases) {
    reset();
    assert.match(serveEndpoint(env(extra)).problem, reason);
    const messages = [message(edge("a")), message(edge("b"))];
    await push({ messages }, env(extra));
    assert.ok(messages.every((m) => "retried" in m.outcome));
    assert.equal(server.requests.length, 0);
  }
  assert.equal(serveEndpoint(env({ DOCUTRAIN_URL: "https://h.example/base/" })).url, "https://h.example/base/v1/documents");
});

test("docutrain job bodies (pull runners' retries, `docutrain retry`) become documents too", () => {
  const job = { job_id: 5, source: "supabase://documents/u/a.pdf", document_id: "d-1", user_id: "u", metadata: { t: 1 }, attempts: 2 };
  assert.deepEqual(documentOf(job).document, {
    user_document_id: "d-1", storage_path: "supabase://documents/u/a.pdf", metadata: { t: 1 }, user_id: "u",
  });
  assert.deepEqual(documentOf({ user_document_id: "d-2" }).document, { user_document_id: "d-2" }); // serve looks the path up
});

test("backoff doubles from 10 s up to an hour, spread over the upper half; Retry-After is clamped", () => {
  assert.equal(backoffSeconds(1, () => 0), 5);
  assert.equal(backoffSeconds(1, () => 1), 10);
  assert.equal(backoffSeconds(4, () => 1), 80);
  assert.equal(backoffSeconds(30, () => 1), 3600);
  assert.equal(retryAfterSeconds("12"), 12);
  assert.equal(retryAfterSeconds("0"), 1);
  assert.equal(retryAfterSeconds("999999"), 43200);
  assert.equal(retryAfterSeconds(new Date(Date.UTC(2030, 0, 1, 0, 1)).toUTCString(), Date.UTC(2030, 0, 1)), 60);
  assert.equal(retryAfterSeconds("soon"), null);
  assert.equal(retryAfterSeconds(null), null);
});
