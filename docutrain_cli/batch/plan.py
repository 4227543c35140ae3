"""Request files within the Batch API's limits, and reading its result lines.

Limits (OpenAI's Batch guide and API reference): a file holds at most 50,000
requests and 200 MB; an /v1/embeddings batch at most 50,000 inputs across all
its requests; one model per file. Each request is an ordinary embeddings
body, so it may carry up to 2048 inputs and 300,000 tokens: packing inputs
into requests is what keeps a 50,000-chunk backfill at one file of a few
hundred lines. The account's queued-token quota (tier 1: 3,000,000 for
text-embedding-3-small) caps the tokens in flight, so a file never holds
more than that either.

Pure functions: the batch step commits the plan before any file exists.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Iterator, Sequence

from docutrain_cli.pipeline.embed import MAX_INPUTS_PER_REQUEST, MAX_TOKENS_PER_REQUEST, plan_batches

MAX_REQUESTS_PER_FILE = 50_000
MAX_INPUTS_PER_BATCH = 50_000  # /v1/embeddings only
MAX_FILE_BYTES = 200 * 1024 * 1024
ENDPOINT = "/v1/embeddings"
COMPLETION_WINDOW = "24h"
# Error-file codes for requests an expired or cancelled batch never ran.
NOT_RUN = ("batch_expired", "batch_cancelled")


@dataclasses.dataclass(frozen=True)
class Limits:
    requests: int = MAX_REQUESTS_PER_FILE
    inputs: int = MAX_INPUTS_PER_BATCH
    bytes: int = MAX_FILE_BYTES
    tokens: int = 3_000_000  # the account's queued-token quota (setting batch_queue_tokens)
    inputs_per_request: int = MAX_INPUTS_PER_REQUEST
    tokens_per_request: int = MAX_TOKENS_PER_REQUEST


@dataclasses.dataclass(frozen=True)
class PlannedFile:
    lines: list[list[int]]  # indexes into the texts given to plan_files, per request line
    tokens: int
    bytes: int


def body(model: str, dimensions: int, texts: Sequence[str]) -> dict:
    """One request's body: what the sync embedder sends, too."""
    data = {"model": model, "input": list(texts), "encoding_format": "float"}
    if dimensions:
        data["dimensions"] = dimensions
    return data


def line(custom_id: str, model: str, dimensions: int, texts: Sequence[str]) -> bytes:
    record = {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body(model, dimensions, texts)}
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def jsonl(tag: str, model: str, dimensions: int, lines: Sequence[Sequence[str]]) -> bytes:
    return b"".join(line(f"{tag}-{n}", model, dimensions, texts) for n, texts in enumerate(lines))


def plan_files(
    texts: Sequence[str], tokens: Sequence[int], model: str, dimensions: int, limits: Limits = Limits()
) -> Iterator[PlannedFile]:
    """Split texts into files of request lines, each file within every limit,
    as few files and requests as the limits allow (texts stay in order)."""
    # A request line's size without its texts: custom_id, model, brackets.
    overhead = len(line("docutrain-000000000000-000000-00000", model, dimensions, [""])) + 16
    requests = plan_batches(tokens, max_inputs=limits.inputs_per_request, max_tokens=limits.tokens_per_request)
    current: list[list[int]] = []
    file_tokens = file_inputs = file_bytes = 0
    for request in requests:
        # A request may have to be cut where the file ends (inputs, bytes, tokens).
        start = request.start
        while start < request.stop:
            room_inputs = limits.inputs - file_inputs
            part: list[int] = []
            part_tokens, part_bytes = 0, overhead
            for i in range(start, request.stop):
                size = len(json.dumps(texts[i], ensure_ascii=False).encode("utf-8")) + 1
                if part and (
                    len(part) >= room_inputs
                    or file_bytes + part_bytes + size > limits.bytes
                    or file_tokens + part_tokens + tokens[i] > limits.tokens
                ):
                    break
                part.append(i)
                part_tokens += tokens[i]
                part_bytes += size
            fits = (
                len(current) < limits.requests
                and file_inputs + len(part) <= limits.inputs
                and file_bytes + part_bytes <= limits.bytes
                and file_tokens + part_tokens <= limits.tokens
            )
            if not fits and current:
                yield PlannedFile(current, file_tokens, file_bytes)
                current, file_tokens, file_inputs, file_bytes = [], 0, 0, 0
                continue  # plan the part again against an empty file
            current.append(part)
            file_tokens += part_tokens
            file_inputs += len(part)
            file_bytes += part_bytes
            start = part[-1] + 1
    if current:
        yield PlannedFile(current, file_tokens, file_bytes)


def minimum_files(inputs: int, tokens: int, size: int, limits: Limits = Limits()) -> int:
    """The fewest files the limits allow for this much work (the bench's yardstick)."""
    return max(
        math.ceil(inputs / limits.inputs),
        math.ceil(tokens / limits.tokens),
        math.ceil(size / limits.bytes),
        1 if inputs else 0,
    )


@dataclasses.dataclass
class Results:
    """A finished batch's output and error files, matched by custom_id
    (their order is not the input's)."""

    vectors: dict[tuple[int, int], list[float]] = dataclasses.field(default_factory=dict)
    failures: dict[int, str] = dataclasses.field(default_factory=dict)  # line -> why
    tokens: int = 0  # as the output's usage reports them

    def read(self, tag: str, content: bytes | str, expected: dict[int, int]) -> None:
        """Read one output or error file. `expected`: line -> number of inputs."""
        text = content.decode("utf-8") if isinstance(content, bytes) else content
        prefix = tag + "-"
        for raw in text.splitlines():
            if not raw.strip():
                continue
            record = json.loads(raw)
            custom_id = str(record.get("custom_id") or "")
            if not custom_id.startswith(prefix) or not custom_id[len(prefix):].isdigit():
                continue  # not one of ours: ignore rather than guess
            number = int(custom_id[len(prefix):])
            if number not in expected:
                continue
            response = record.get("response") or {}
            answer = response.get("body") or {}
            if record.get("error") or response.get("status_code") != 200:
                if (record.get("error") or {}).get("code") in NOT_RUN:
                    continue  # never run: it goes into the next batch, not counted as a failure
                self.failures[number] = _why(record)
                continue
            data = sorted(answer.get("data") or [], key=lambda d: d.get("index", 0))
            if [d.get("index") for d in data] != list(range(expected[number])):
                self.failures[number] = f"{len(data)} vectors for {expected[number]} inputs"
                continue
            for item in data:
                self.vectors[(number, item["index"])] = item["embedding"]
            usage = answer.get("usage") or {}
            self.tokens += int(usage.get("total_tokens") or usage.get("prompt_tokens") or 0)


def _why(record: dict) -> str:
    error = record.get("error") or ((record.get("response") or {}).get("body") or {}).get("error") or {}
    status = (record.get("response") or {}).get("status_code")
    message = " ".join(str(error.get("message") or "no message").split())[:200]
    code = error.get("code")
    return f"{status or 'error'}{f' {code}' if code else ''}: {message}"
