// node --test (Node 20+): the Worker against a fake queue binding.
import assert from "node:assert/strict";
import { test } from "node:test";

import worker, { newJobId } from "./worker.js";

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

function call(env, { method = "POST", path = "/enqueue", token = TOKEN, body } = {}) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const init = { method, headers };
  if (body !== undefined) init.body = typeof body === "string" ? body : JSON.stringify(body);
  return worker.fetch(new Request(`https://intake.example${path}`, init), env);
}

const good = { user_document_id: "doc-1", user_id: "user-1", storage_path: "user-1/a.pdf" };

test("a valid request is queued as JSON and answered 202 pending", async () => {
  const queue = fakeQueue();
  const response = await call({ ENQUEUE_TOKEN: TOKEN, DOCUMENT_QUEUE: queue }, { body: good });
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
    { ENQUEUE_TOKEN: TOKEN, DOCUMENT_QUEUE: queue },
    { body: { user_document_id: " doc-2 ", user_id: "u" } },
  );
  assert.equal(response.status, 202);
  assert.equal(queue.sent[0].body.user_document_id, "doc-2");
  assert.equal("storage_path" in queue.sent[0].body, false);
});

test("missing or wrong tokens get 401 and nothing is queued", async () => {
  for (const token of [null, "wrong", `${TOKEN}x`]) {
    const queue = fakeQueue();
    const response = await call({ ENQUEUE_TOKEN: TOKEN, DOCUMENT_QUEUE: queue }, { token, body: good });
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
    const response = await call({ ENQUEUE_TOKEN: TOKEN, DOCUMENT_QUEUE: queue }, { body });
    assert.equal(response.status, 400, JSON.stringify(body));
    assert.match((await response.json()).error, new RegExp(reason));
    assert.equal(queue.sent.length, 0);
  }
});

test("other methods get 405, other paths 404", async () => {
  const env = { ENQUEUE_TOKEN: TOKEN, DOCUMENT_QUEUE: fakeQueue() };
  const get = await call(env, { method: "GET" });
  assert.equal(get.status, 405);
  assert.equal(get.headers.get("allow"), "POST");
  assert.equal((await call(env, { path: "/", body: good })).status, 404);
  assert.equal(env.DOCUMENT_QUEUE.sent.length, 0);
});

test("a queue that refuses the send is a 503, never a 202", async () => {
  const response = await call({ ENQUEUE_TOKEN: TOKEN, DOCUMENT_QUEUE: fakeQueue({ fail: true }) }, { body: good });
  assert.equal(response.status, 503);
  assert.equal((await response.json()).success, false);
});

test("without a configured token every request is refused", async () => {
  const queue = fakeQueue();
  const response = await call({ DOCUMENT_QUEUE: queue }, { body: good, token: "anything" });
  assert.equal(response.status, 500);
  assert.equal(queue.sent.length, 0);
});

test("job ids grow with time like docutrain's", () => {
  assert.equal(newJobId(1_700_000_000_000, () => 0.5), 1_700_000_000_000_500);
  assert.ok(newJobId(2, () => 0.999) < newJobId(3, () => 0));
});
