"""An OpenAI Files + Batch API stand-in for the tests: real HTTP on 127.0.0.1.

Implements what docutrain's batch mode calls, in OpenAI's documented shapes:

- POST /v1/files (multipart: `file`, `purpose`), GET /v1/files (list, cursor
  pages with `after`/`limit`), GET /v1/files/{id}, GET /v1/files/{id}/content
- POST /v1/batches, GET /v1/batches/{id}, GET /v1/batches (list, cursor pages)
- POST /v1/embeddings (sync, for `docutrain search`'s query): openai_standin's,
  with its checks, limits, error shapes and rate-limit headers (`state.sync`)

Batches move validating -> in_progress -> completed | failed | expired when
the test says so (`advance`), so tests wait for states, not for time.
Validation is OpenAI's: purpose `batch`, endpoint and completion window,
every line a JSON object with a unique custom_id, method POST and the
batch's url, one model per file, at most 50,000 requests, 50,000 embedding
inputs and 200 MB. Output lines come back shuffled; lines with an input in
`fail_texts` or containing `fail_marker` go to the error file (500), and,
unless `fail_in_sync` is off, a sync request with such an input is answered
500 (as many times as it is sent: the SDK's own retries included). An expired batch
runs only `expire_after` requests; the rest go to the error file as
`batch_expired`. It counts files and batches created, and tokens billed.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import random
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

from openai_standin import MODELS, EmbeddingsHandler, StandIn, count_tokens, fake_vector
from standin_server import Listener

MAX_REQUESTS = 50_000
MAX_INPUTS = 50_000
MAX_BYTES = 200 * 1024 * 1024


@dataclass
class BatchState:
    port: int = 0
    files: dict[str, dict] = field(default_factory=dict)  # id -> file object (+ "_content")
    batches: dict[str, dict] = field(default_factory=dict)
    files_created: int = 0
    batches_created: int = 0
    tokens_billed: int = 0
    requests_run: int = 0
    inputs_run: int = 0
    fail_texts: set[str] = field(default_factory=set)
    fail_marker: str | None = None  # any input containing it fails too
    fail_in_sync: bool = True  # False: failing inputs fail in batch lines only
    sync_failures: int = 0  # POST /v1/embeddings answered 500 for a failing input
    required_key: str | None = None
    quota_exhausted: bool = False
    seed: int = 7
    sync: StandIn = field(default_factory=StandIn)  # the sync /v1/embeddings endpoint
    lock: threading.Lock = field(default_factory=threading.Lock)
    _serial: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def sync_requests(self) -> int:
        """POST /v1/embeddings answered 200 (the sync endpoint's own record)."""
        return len(self.sync.requests)

    @property
    def sync_tokens(self) -> int:
        return self.sync.tokens

    def new_id(self, prefix: str) -> str:
        self._serial += 1
        return f"{prefix}{self._serial:06d}{random.Random(self._serial).randrange(16**6):06x}"

    def fails(self, text: str) -> bool:
        return text in self.fail_texts or bool(self.fail_marker and self.fail_marker in text)

    def batch_ids(self, status: str | None = None) -> list[str]:
        with self.lock:
            return [b["id"] for b in self.batches.values() if status is None or b["status"] == status]

    def advance(self, batch_id: str | None = None, to: str = "completed", *, expire_after: int = 0,
                failure: tuple[str, str] | None = None) -> None:
        """Move a batch (every open one when None) to `to`: in_progress,
        completed, failed (with `failure` = (code, message)) or expired."""
        with self.lock:
            targets = [batch_id] if batch_id else [
                b["id"] for b in self.batches.values() if b["status"] in ("validating", "in_progress")
            ]
            for bid in targets:
                self._move(self.batches[bid], to, expire_after, failure)

    def _move(self, batch: dict, to: str, expire_after: int, failure) -> None:
        now = int(time.time())
        if to == "in_progress":
            batch.update(status="in_progress", in_progress_at=now)
            return
        if to == "failed":
            code, message = failure or ("server_error", "The batch failed.")
            batch.update(status="failed", failed_at=now,
                         errors={"object": "list", "data": [{"code": code, "message": message, "param": None, "line": None}]})
            return
        lines = [json.loads(l) for l in self.files[batch["input_file_id"]]["_content"].splitlines() if l.strip()]
        run = lines if to == "completed" else lines[:expire_after]
        out, err = [], []
        for record in run:
            texts = record["body"]["input"]
            request_id = self.new_id("req_")
            if any(self.fails(t) for t in texts):
                err.append({"id": self.new_id("batch_req_"), "custom_id": record["custom_id"],
                            "response": {"status_code": 500, "request_id": request_id,
                                         "body": {"error": {"message": "The server had an error processing your request.",
                                                            "type": "server_error", "param": None, "code": None}}},
                            "error": None})
                continue
            model = record["body"]["model"]
            dims = record["body"].get("dimensions") or MODELS[model]
            tokens = sum(count_tokens(t) for t in texts)
            self.tokens_billed += tokens
            self.requests_run += 1
            self.inputs_run += len(texts)
            out.append({"id": self.new_id("batch_req_"), "custom_id": record["custom_id"],
                        "response": {"status_code": 200, "request_id": request_id, "body": {
                            "object": "list", "model": model,
                            "data": [{"object": "embedding", "index": i, "embedding": fake_vector(t, dims)}
                                     for i, t in enumerate(texts)],
                            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}},
                        "error": None})
        for record in lines[len(run):]:
            err.append({"id": self.new_id("batch_req_"), "custom_id": record["custom_id"], "response": None,
                        "error": {"code": "batch_expired", "message": "This request could not be executed before the completion window expired."}})
        rng = random.Random(self.seed)
        rng.shuffle(out)  # the API promises no order
        rng.shuffle(err)
        batch["output_file_id"] = self._add_file(f"{batch['id']}_output.jsonl", "batch_output", out) if out else None
        batch["error_file_id"] = self._add_file(f"{batch['id']}_error.jsonl", "batch_output", err) if err else None
        batch["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(err)}
        batch.update(status=to, finalizing_at=now, **{("completed_at" if to == "completed" else "expired_at"): now})

    def _add_file(self, name: str, purpose: str, records: list[dict]) -> str:
        content = "".join(json.dumps(r) + "\n" for r in records).encode()
        file_id = self.new_id("file-")
        self.files[file_id] = {"id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                               "filename": name, "purpose": purpose, "_content": content}
        return file_id


def _public(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def _handler(state: BatchState):
    class Handler(EmbeddingsHandler):
        standin = state.sync

        def _refused(self) -> bool:
            if state.required_key is not None and self.headers.get("authorization") != f"Bearer {state.required_key}":
                self._error(401, "Incorrect API key provided.", "invalid_api_key")
                return True
            if state.quota_exhausted and self.command == "POST":
                self._error(429, "You exceeded your current quota, please check your plan and billing details.",
                            "insufficient_quota")
                return True
            return False

        def _page(self, items: list[dict], query: dict) -> None:
            items = sorted(items, key=lambda o: o["id"], reverse=True)  # newest first, like the API
            after = query.get("after", [None])[0]
            if after:
                ids = [o["id"] for o in items]
                items = items[ids.index(after) + 1:] if after in ids else []
            limit = int(query.get("limit", ["20"])[0])
            page = items[:limit]
            self.send_json(200, {"object": "list", "data": [_public(o) for o in page],
                             "first_id": page[0]["id"] if page else None,
                             "last_id": page[-1]["id"] if page else None, "has_more": len(items) > limit})

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query)
            parts = url.path.strip("/").split("/")
            if self._refused():
                return
            with state.lock:
                if parts[:2] == ["v1", "files"]:
                    if len(parts) == 2:
                        purpose = query.get("purpose", [None])[0]
                        return self._page([f for f in state.files.values() if purpose in (None, f["purpose"])], query)
                    file = state.files.get(parts[2])
                    if file is None:
                        return self._error(404, f"No such File object: {parts[2]}", param="id")
                    if len(parts) == 4 and parts[3] == "content":
                        return self.send_body(200, file["_content"], "application/octet-stream")
                    return self.send_json(200, _public(file))
                if parts[:2] == ["v1", "batches"]:
                    if len(parts) == 2:
                        return self._page(list(state.batches.values()), query)
                    batch = state.batches.get(parts[2])
                    if batch is None:
                        return self._error(404, f"No batch found with id '{parts[2]}'.")
                    return self.send_json(200, batch)
            self._error(404, f"Invalid URL (GET {url.path})")

        def do_POST(self) -> None:
            raw = self.read_body()
            path = urllib.parse.urlsplit(self.path).path.rstrip("/")
            if self._refused():
                return
            if path == "/v1/files":
                return self._upload(raw)
            if path == "/v1/batches":
                return self._create(raw)
            if path == "/v1/embeddings":  # a sync request (e.g. `docutrain search` embedding its query)
                try:
                    inputs = json.loads(raw).get("input") or []
                except (ValueError, AttributeError):
                    inputs = []
                with state.lock:
                    failing = state.fail_in_sync and any(isinstance(t, str) and state.fails(t) for t in inputs)
                    state.sync_failures += failing
                if failing:
                    return self._error(500, "The server had an error processing your request.")
                return self.answer_embeddings(raw)
            self._error(404, f"Invalid URL (POST {path})")

        def _upload(self, raw: bytes) -> None:
            head = f"content-type: {self.headers.get('content-type')}\r\n\r\n".encode()
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
            fields = {}
            for part in message.iter_parts():
                fields[part.get_param("name", header="content-disposition")] = (
                    part.get_filename(), part.get_payload(decode=True))
            if "file" not in fields or "purpose" not in fields:
                return self._error(400, "Missing required parameter: 'file' or 'purpose'.")
            purpose = fields["purpose"][1].decode()
            if purpose not in ("batch", "assistants", "fine-tune", "vision", "user_data", "evals"):
                return self._error(400, f"'{purpose}' is not one of the supported purposes.", param="purpose")
            filename, content = fields["file"]
            if purpose == "batch" and len(content) > MAX_BYTES:
                return self._error(400, "File is too large: a batch input file can be at most 200 MB.")
            with state.lock:
                file_id = state.new_id("file-")
                state.files[file_id] = {"id": file_id, "object": "file", "bytes": len(content),
                                        "created_at": int(time.time()), "filename": filename,
                                        "purpose": purpose, "_content": content}
                state.files_created += 1
                self.send_json(200, _public(state.files[file_id]))

        def _create(self, raw: bytes) -> None:
            body = json.loads(raw)
            if body.get("endpoint") not in ("/v1/responses", "/v1/chat/completions", "/v1/embeddings", "/v1/completions"):
                return self._error(400, "Invalid endpoint.", param="endpoint")
            if body.get("completion_window") != "24h":
                return self._error(400, "Invalid completion_window: only '24h' is supported.", param="completion_window")
            with state.lock:
                file = state.files.get(body.get("input_file_id"))
                if file is None:
                    return self._error(404, f"No such File object: {body.get('input_file_id')}", param="input_file_id")
                batch_id = state.new_id("batch_")
                now = int(time.time())
                batch = {"id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                         "input_file_id": file["id"], "completion_window": "24h", "status": "validating",
                         "output_file_id": None, "error_file_id": None, "created_at": now,
                         "in_progress_at": None, "expires_at": now + 86400, "finalizing_at": None,
                         "completed_at": None, "failed_at": None, "expired_at": None, "cancelling_at": None,
                         "cancelled_at": None, "request_counts": {"total": 0, "completed": 0, "failed": 0},
                         "metadata": body.get("metadata")}
                problem = _validate(file["_content"], body["endpoint"])
                if problem:
                    batch.update(status="failed", failed_at=now, errors={"object": "list", "data": [
                        {"code": problem[0], "message": problem[1], "param": None, "line": problem[2]}]})
                state.batches[batch_id] = batch
                state.batches_created += 1
                self.send_json(200, batch)

    return Handler


def _validate(content: bytes, endpoint: str) -> tuple[str, str, int | None] | None:
    """What OpenAI's validation says of an input file, or None."""
    seen, models, inputs = set(), set(), 0
    lines = [l for l in content.decode("utf-8").splitlines() if l.strip()]
    if len(lines) > MAX_REQUESTS:
        return ("too_many_requests", f"The input file has {len(lines)} requests; at most {MAX_REQUESTS}.", None)
    for n, text in enumerate(lines, 1):
        try:
            record = json.loads(text)
        except ValueError:
            return ("invalid_json_line", "This line is not parseable as valid JSON.", n)
        if record.get("custom_id") in seen:
            return ("duplicate_custom_id", "The custom_id for this request is a duplicate of another request.", n)
        seen.add(record.get("custom_id"))
        if record.get("method") != "POST" or record.get("url") != endpoint:
            return ("invalid_url", f"The url provided for this request does not match the batch endpoint {endpoint}.", n)
        models.add(record.get("body", {}).get("model"))
        inputs += len(record.get("body", {}).get("input") or [])
    if len(models) > 1:
        return ("mismatched_model", "The provided model does not match the model of the other requests in the file.", None)
    if endpoint == "/v1/embeddings" and inputs > MAX_INPUTS:
        return ("too_many_inputs", f"The batch has {inputs} embedding inputs; at most {MAX_INPUTS}.", None)
    return None


class BatchServer:
    def __init__(self) -> None:
        self.state = BatchState()
        self._listener = Listener(_handler(self.state))

    def __enter__(self) -> BatchState:
        self.state.port = self.state.sync.port = self._listener.up().port
        return self.state

    def __exit__(self, *exc) -> None:
        self._listener.down()
