// node --test (Node 20+): the Worker's intake against fake queue and
// rate-limiter bindings (tests/test_edge_worker.py runs it in workerd).
import assert from "node:assert/strict";
import { test } from "node:test";

import { LIMIT_RETRY_AFTER, newJobId } from "./intake.js";
import worker from "./worker.js";

const TOKEN = "s3cret-intake-token";

function fakeQueue({ fail = false } = {}) {
  const sent = [];
  return {
    sent,
    async send(body, options) {
      if (fail) throw new Error("Queue send failed: Too Many Requests");
      sent.push({ body: structuredClone(body), options });
    },
  };
}

// The rate-limiting binding's interface: limit({key}) -> {success}, here
// with a fixed count per key.
function fakeLimiter(limit = 1000, { fail = false } = {}) {
  const counts = new Map();
  return {
    counts,
    async limit({ key }) {
      if (fail) throw new Error("rate limiter unavailable");
      counts.set(key, (counts.get(key) || 0) + 1);
      return { success: counts.get(key) <= limit };
    },
  };
}

function envWith(queue, { user = fakeLimiter(), address = fakeLimiter() } = {}) {
  return { ENQUEUE_TOKEN: TOKEN, DOCUMENT_QUEUE: queue, USER_INTAKE_LIMIT: user, ADDRESS_INTAKE_LIMIT: address };
}

function call(env, { method = "POST", path = "/enqueue", token = TOKEN, body, address } = {}) {
  const headers = { "content-type": "application/json" };
  if (address) headers["cf-connecting-ip"] = address;
  if (token) headers.authorization = `Bearer ${token}`;
  const init = { method, headers };
  if (body !== undefined) init.body = typeof body === "string" ? body : JSON.stringify(body);
  return worker.fetch(new Request(`https://intake.example${path}`, init), env);
}

const good = { user_document_id: "doc-1", user_id: "user-1", storage_path: "user-1/a.pdf" };

test("a valid request is queued as JSON and answered 202 pending", async () => {
  const queue = fakeQueue();
  const response = await call(envWith(queue), { body: good });
  assert.equal(response.status, 202);
  assert.deepEqual(await response.json(), {
    success: true,
    message: "Document queued for processing",
    user_document_id: "doc-1",
    status: "pending",
  });
  assert.equal(queue.sent.length, 1);
  const [{ body, options }] = queue.sent;
  assert.deepEqual(options, { contentType: "json" }); // a pull consumer cannot read v8
  assert.deepEqual({ ...body, job_id: 0 }, { ...good, job_id: 0 });
  assert.ok(Number.isSafeInteger(body.job_id) && body.job_id > Date.now() * 1000 - 10_000_000);
});

test("storage_path is optional; ids are trimmed", async () => {
  const queue = fakeQueue();
  const response = await call(
    envWith(queue),
    { body: { user_document_id: " doc-2 ", user_id: "u" } },
  );
  assert.equal(response.status, 202);
  assert.equal(queue.sent[0].body.user_document_id, "doc-2");
  assert.equal("storage_path" in queue.sent[0].body, false);
});

test("missing or wrong tokens get 401 and nothing is queued", async () => {
  for (const token of [null, "wrong", `${TOKEN}x`]) {
    const queue = fakeQueue();
    const response = await call(envWith(queue), { token, body: good });
    assert.equal(response.status, 401, `token ${token}`);
    assert.equal(response.headers.get("www-authenticate"), "Bearer");
    assert.equal((await response.json()).success, false);
    assert.equal(queue.sent.length, 0);
  }
});

test("bad bodies get 400 with the reason", async () => {
  const cases = [
    ["not json", "the body must be JSON"],
    [[good], "the body must be a JSON object"],
    [{ user_id: "u" }, "user_document_id is required"],
    [{ user_document_id: "d" }, "user_id is required"],
    [{ user_document_id: "", user_id: "u" }, "user_document_id is required"],
    [{ user_document_id: 12, user_id: "u" }, "user_document_id is required"],
    [{ ...good, storage_path: "" }, "storage_path must be"],
  ];
  for (const [body, reason] of cases) {
    const queue = fakeQueue();
    const response = await call(envWith(queue), { body });
    assert.equal(response.status, 400, JSON.stringify(body));
    assert.match((await response.json()).error, new RegExp(reason));
    assert.equal(queue.sent.length, 0);
  }
});

test("a body over 64 KB gets 413 without being read to the end", async () => {
  const queue = fakeQueue();
  const huge = JSON.stringify({ ...good, metadata: "x".repeat(70 * 1024) });
  const response = await call(envWith(queue), { body: huge });
  assert.equal(response.status, 413);
  assert.match((await response.json()).error, /over 64 KB/);
  let pulled = 0;
  const endless = new ReadableStream({
    pull(controller) {
      pulled += 1;
      controller.enqueue(new Uint8Array(16 * 1024));
    },
  });
  const request = new Request("https://intake.example/enqueue", {
    method: "POST", body: endless, duplex: "half", headers: { authorization: `Bearer ${TOKEN}` },
  });
  assert.equal((await worker.fetch(request, envWith(queue))).status, 413);
  assert.ok(pulled <= 6, `read ${pulled} chunks`);
  assert.equal(queue.sent.length, 0);
});

test("other methods get 405, other paths 404", async () => {
  const env = envWith(fakeQueue());
  const get = await call(env, { method: "GET" });
  assert.equal(get.status, 405);
  assert.equal(get.headers.get("allow"), "POST");
  assert.equal((await call(env, { path: "/", body: good })).status, 404);
  assert.equal(env.DOCUMENT_QUEUE.sent.length, 0);
});

test("a queue that refuses the send is a 503, never a 202", async () => {
  const response = await call(envWith(fakeQueue({ fail: true })), { body: good });
  assert.equal(response.status, 503);
  assert.equal((await response.json()).success, false);
});

test("without a configured token every request is refused", async () => {
  const queue = fakeQueue();
  const response = await call({ ...envWith(queue), ENQUEUE_TOKEN: undefined }, { body: good, token: "anything" });
  assert.equal(response.status, 500);
  assert.equal(queue.sent.length, 0);
});

test("a user over the limit gets 429 with Retry-After, other users do not", async () => {
  const queue = fakeQueue();
  const env = envWith(queue, { user: fakeLimiter(2) });
  const statuses = [];
  for (let i = 0; i < 3; i++) statuses.push((await call(env, { body: { ...good, user_id: " u-flood " } })).status);
  assert.deepEqual(statuses, [202, 202, 429]);
  const refused = await call(env, { body: { ...good, user_id: "u-flood" } });
  assert.equal(refused.status, 429);
  assert.equal(refused.headers.get("retry-after"), String(LIMIT_RETRY_AFTER));
  assert.match((await refused.json()).error, /too many requests for this user/);
  assert.equal((await call(env, { body: { ...good, user_id: "u-calm" } })).status, 202);
  assert.deepEqual([...env.USER_INTAKE_LIMIT.counts.keys()], ["user:u-flood", "user:u-calm"]); // trimmed, like the message
  assert.equal(queue.sent.length, 3);
});

test("an address over the limit gets 429 before its token is even checked", async () => {
  const queue = fakeQueue();
  const env = envWith(queue, { address: fakeLimiter(2) });
  const guesses = [];
  for (let i = 0; i < 3; i++) guesses.push((await call(env, { token: `guess-${i}`, body: good, address: "203.0.113.9" })).status);
  assert.deepEqual(guesses, [401, 401, 429]);
  const blocked = await call(env, { body: good, address: "203.0.113.9" }); // even with the right token
  assert.equal(blocked.status, 429);
  assert.equal(blocked.headers.get("retry-after"), String(LIMIT_RETRY_AFTER));
  assert.equal((await call(env, { body: good, address: "198.51.100.4" })).status, 202);
  assert.equal(env.ADDRESS_INTAKE_LIMIT.counts.get("address:203.0.113.9"), 4);
  assert.equal(queue.sent.length, 1);
});

test("a missing limiter binding refuses everything; a failing one lets requests through", async () => {
  for (const binding of ["USER_INTAKE_LIMIT", "ADDRESS_INTAKE_LIMIT"]) {
    const queue = fakeQueue();
    const response = await call({ ...envWith(queue), [binding]: undefined }, { body: good });
    assert.equal(response.status, 500);
    assert.match((await response.json()).error, new RegExp(`${binding} is not bound`));
    assert.equal(queue.sent.length, 0);
  }
  const queue = fakeQueue();
  const broken = fakeLimiter(0, { fail: true });
  const response = await call(envWith(queue, { user: broken, address: broken }), { body: good });
  assert.equal(response.status, 202);
  assert.equal(queue.sent.length, 1);
});

test("job ids grow with time like docutrain's", () => {
  assert.equal(newJobId(1_700_000_000_000, () => 0.5), 1_700_000_000_000_500);
  assert.ok(newJobId(2, () => 0.999) < newJobId(3, () => 0));
});
