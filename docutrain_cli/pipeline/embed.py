"""Embedders: OpenAI (or any OpenAI-compatible server) and an offline one.

`make_embedder(settings)` builds one; each worker keeps its own in its
WorkerContext (clients must be created in the worker, never inherited
through fork). The `openai` package is imported only when an OpenAI
embedder is built, so importing this module stays cheap. The models table
(prices, sizes) is pipeline/models.py.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections import deque
from typing import Iterator, Protocol, Sequence

from docutrain_cli.errors import AccountError, JobError, PermanentError, TransientError
from docutrain_cli.pipeline.models import DEFAULT_DIMENSIONS, MAX_INPUT_TOKENS, OFFLINE_DIMENSIONS, OFFLINE_MODEL
from docutrain_cli.ratelimit.pacing import Pacer
from docutrain_cli.ratelimit.budget import RateBudget, refusal_wait
from docutrain_cli.pipeline.tokens import TokenCounter, counter_for

# OpenAI's limits for one embeddings request (one input's: models.MAX_INPUT_TOKENS).
MAX_INPUTS_PER_REQUEST = 2048
MAX_TOKENS_PER_REQUEST = 300_000


class Embedder(Protocol):
    kind: str  # "openai" | "offline"
    model: str
    dimensions: int | None  # None until the server has told us (unknown model)
    requested_dimensions: int | None  # what we ask for; part of the cache key
    counter: TokenCounter
    max_input_tokens: int
    tokens_used: int  # running total of tokens sent
    rate_limited: int  # running total of 429 answers
    waited: float  # running total of seconds spent waiting for the rate budget
    deadline: float | None  # monotonic time by which waiting for the budget must stop

    def embed(self, texts: list[str], token_counts: Sequence[int] | None = None) -> list[list[float]]: ...

    def embed_batches(
        self, texts: list[str], token_counts: Sequence[int] | None = None
    ) -> Iterator[tuple[range, list[list[float]]]]: ...


def describe_embedder(settings) -> str:
    """One line for `docutrain run` to say which embedder is in use (no client made)."""
    if settings.embedder_kind == "offline":
        return f"offline embedder {OFFLINE_MODEL} ({OFFLINE_DIMENSIONS} dimensions, no network)"
    where = settings.openai_base_url or "api.openai.com"
    dims = f", {settings.embedding_dimensions} dimensions" if settings.embedding_dimensions else ""
    return f"OpenAI embeddings: {settings.embedding_model}{dims} via {where}"


def plan_batches(
    token_counts: Sequence[int],
    *,
    max_inputs: int = MAX_INPUTS_PER_REQUEST,
    max_tokens: int = MAX_TOKENS_PER_REQUEST,
) -> Iterator[range]:
    """Consecutive index ranges that respect both request limits: as few requests as allowed."""
    start, tokens = 0, 0
    for i, count in enumerate(token_counts):
        if i > start and (i - start >= max_inputs or tokens + count > max_tokens):
            yield range(start, i)
            start, tokens = i, 0
        tokens += count
    if start < len(token_counts):
        yield range(start, len(token_counts))


def request_tokens(texts: Sequence[str], scale: float = 1.0) -> list[int]:
    """What each text likely weighs against the per-request token budget.

    The chunker's estimate is deliberately high, because it guards the
    per-input limit; planning requests with it sent about 1.5x the requests
    needed. About four UTF-8 bytes a token is cl100k_base's average on prose.
    The embedder scales it by what the server reports: usage on every
    answer, and the count in a refusal ("Requested N tokens") when it was low.
    """
    return [math.ceil(len(t.encode("utf-8")) * scale / 4) for t in texts]


def budget_weights(counter: TokenCounter, texts: Sequence[str], token_counts: Sequence[int] | None = None) -> list[int]:
    """What each text is reserved at in the shared rate budget, before the
    density the server's answers showed: the exact count when the counter is
    exact, else `request_tokens`. The budget learns the server's count per
    such token, so `docutrain estimate` predicts the bill from these too."""
    if counter.exact:
        return list(token_counts) if token_counts is not None else [counter.count(t) for t in texts]
    return request_tokens(texts)


# "Requested 9000 tokens, max 8192" (400) and "Limit 3000, Requested 4100." (429 too large)
_REQUESTED_TOKENS = re.compile(r"requested\s+(\d+)", re.IGNORECASE)
_REQUEST_TOO_LARGE = "request too large"


# The offline embedder is pipeline/offline.py (it imports numpy: only
# make_embedder loads it, so importing this module stays cheap).

# -- OpenAI -------------------------------------------------------------------

_KEY_LIKE = re.compile(r"(sk-|Bearer\s+)[A-Za-z0-9_\-*]{4,}")


class OpenAIEmbedder:
    kind = "openai"
    max_input_tokens = MAX_INPUT_TOKENS

    def __init__(
        self,
        *,
        api_key: str,
        model: str = "text-embedding-3-small",
        dimensions: int | None = None,
        base_url: str | None = None,
        max_retries: int = 2,
        timeout: float = 120.0,
        max_inputs: int = MAX_INPUTS_PER_REQUEST,
        max_tokens: int = MAX_TOKENS_PER_REQUEST,
        budget: "RateBudget | None" = None,
        patience: float = 600.0,
    ) -> None:
        import openai  # heavy: only workers get here

        self.openai = openai  # the SDK module, for its exception classes (also BatchAPI's)
        self._api_key = api_key
        # max_retries=0: the SDK would retry a 429 on its own, blind to the
        # shared budget; we handle 429s (and retry 5xx) in _embed_batch.
        self.client = openai.OpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout)
        self.max_retries = max_retries  # for network trouble and 5xx
        # The shared rate budget's pace; `patience`: how long 429s may go
        # on before the job is given back.
        self.pacer = Pacer(budget, patience)
        self.model = model
        self.requested_dimensions = dimensions
        self.dimensions = dimensions or DEFAULT_DIMENSIONS.get(model)
        self.counter = counter_for(model)
        self.max_inputs = max_inputs
        self.max_tokens = max_tokens
        self.tokens_used = 0
        self.requests = 0
        # Server tokens per request_tokens() token, from recent usage reports
        # and refusals: requests are planned at the density the server counts.
        self._densities: deque[float] = deque(maxlen=8)

    # What the job's result reports, and when waiting must stop (see Pacer).
    @property
    def rate_limited(self) -> int:
        return self.pacer.rate_limited

    @property
    def waited(self) -> float:
        return self.pacer.waited

    @property
    def deadline(self) -> float | None:
        return self.pacer.deadline

    @deadline.setter
    def deadline(self, value: float | None) -> None:
        self.pacer.deadline = value

    def embed(self, texts: list[str], token_counts: Sequence[int] | None = None) -> list[list[float]]:
        vectors: list[list[float]] = []
        for _, batch_vectors in self.embed_batches(texts, token_counts):
            vectors.extend(batch_vectors)
        return vectors

    def embed_batches(
        self, texts: list[str], token_counts: Sequence[int] | None = None
    ) -> Iterator[tuple[range, list[list[float]]]]:
        """Embed in as few requests as the API limits allow, yielding each
        request's index range and vectors as soon as it is answered.

        `token_counts` are the chunker's counts of the texts (made with
        `self.counter`); they weigh the texts against the request budget only
        when that counter is exact. An estimate is planned with
        `request_tokens` instead, which is closer to what the server counts.
        """
        if any(not t for t in texts):
            raise ValueError("cannot embed an empty string")  # the chunker never makes one
        done = 0
        while done < len(texts):
            scale, planned_from = self._request_scale, done
            weights = self._weights(texts[done:], None if token_counts is None else token_counts[done:])
            for part in plan_batches(weights, max_inputs=self.max_inputs, max_tokens=self._max_request_tokens):
                batch = range(planned_from + part.start, planned_from + part.stop)
                vectors = self._embed_batch(texts[batch.start : batch.stop])
                done = batch.stop
                yield batch, vectors
                if self._request_scale != scale:
                    break  # the server counts differently than planned: plan the rest again

    @property
    def _request_scale(self) -> float:
        # The densest recent report, 5 % to spare: a plan rarely overshoots.
        return max(self._densities) * 1.05 if self._densities else 1.0

    def _weights(self, texts: Sequence[str], token_counts: Sequence[int] | None = None) -> list[int]:
        """What each text weighs against the per-request token budget."""
        if not self.counter.exact:
            return request_tokens(texts, self._request_scale)
        return list(token_counts) if token_counts is not None else [self.counter.count(t) for t in texts]

    def _learn_density(self, server_tokens: int, texts: Sequence[str]) -> None:
        estimated = sum(request_tokens(texts))
        if estimated and not self.counter.exact:
            self._densities.append(server_tokens / estimated)

    def _embed_split(self, texts: list[str], exc: Exception) -> list[list[float]]:
        """The server counted more tokens than one request takes. Its message
        says how many: plan at that density and split the batch to fit;
        halve it when there is nothing to learn."""
        match = _REQUESTED_TOKENS.search(str(getattr(exc, "message", "") or exc))
        if match:
            self._learn_density(int(match.group(1)), texts)
        parts = list(plan_batches(self._weights(texts), max_inputs=self.max_inputs, max_tokens=self._max_request_tokens))
        if len(parts) < 2:
            half = len(texts) // 2
            parts = [range(0, half), range(half, len(texts))]
        vectors: list[list[float]] = []
        for part in parts:
            vectors.extend(self._embed_batch(texts[part.start : part.stop]))
        return vectors

    def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        """One request, at the budget's pace. A 429 is a wait, never a
        failure: the worker waits what the server asks (the budget makes
        everyone else wait too) and tries again, until `patience` runs out
        or the job's deadline nears; then the job goes back to the queue
        unharmed (RateLimitedError)."""
        openai = self.openai
        kwargs = {"model": self.model, "input": texts, "encoding_format": "float"}
        if self.requested_dimensions:
            kwargs["dimensions"] = self.requested_dimensions
        # The budget applies the density the server showed all workers, so it
        # gets the plain estimate (or the exact count), not this process's scale.
        estimate = sum(budget_weights(self.counter, texts))
        refused_since: float | None = None
        failures = 0
        while True:
            reservation = self.pacer.turn(estimate, refused_since)
            try:
                self.requests += 1
                raw = self.client.embeddings.with_raw_response.create(**kwargs)
                response = raw.parse()
            except openai.RateLimitError as exc:
                self.pacer.cancel(reservation)
                message = str(getattr(exc, "message", "") or exc)
                if _code(exc) == "insufficient_quota":
                    raise self._classified(exc) from None
                if _REQUEST_TOO_LARGE in message.lower():
                    return self._too_large_for_the_limit(texts, exc)
                refused_since = refused_since or time.monotonic()
                self.pacer.refused(getattr(exc.response, "headers", None), message, refused_since)
                continue
            except openai.BadRequestError as exc:
                self.pacer.cancel(reservation)
                if len(texts) > 1 and _about_too_many_tokens(exc):
                    return self._embed_split(texts, exc)
                raise self._classified(exc) from None
            except openai.OpenAIError as exc:
                self.pacer.cancel(reservation)
                error = self._classified(exc)
                failures += 1
                if not isinstance(error, TransientError) or failures > self.max_retries:
                    raise error from None
                # The client's own retries are off (they would fight the
                # budget over 429s), so a flaky server gets ours: short, jittered.
                headers = getattr(getattr(exc, "response", None), "headers", None)
                pause = refusal_wait(headers, None) or 0.5 * 2 ** (failures - 1)
                time.sleep(min(pause, 8.0) * random.uniform(0.8, 1.2))
                continue
            vectors = self._vectors(response, texts)
            self.pacer.settle(reservation, _usage(response), raw.headers)
            return vectors

    def _classified(self, exc: Exception) -> JobError:
        """`classify`, and an account problem recorded where `status` shows it."""
        error = self.classify(exc)
        if isinstance(error, AccountError):
            self.pacer.account_problem(str(error))
        return error

    def _too_large_for_the_limit(self, texts: list[str], exc: Exception) -> list[list[float]]:
        """More tokens in one request than the account allows in a minute:
        waiting never helps, smaller requests do."""
        if len(texts) > 1:
            return self._embed_split(texts, exc)
        raise self.pacer.account_problem(
            "one chunk is larger than the account's whole tokens-per-minute limit: "
            "lower chunk_tokens (or raise the limit)"
        )

    @property
    def _max_request_tokens(self) -> int:
        ceiling = self.pacer.request_ceiling()
        return min(self.max_tokens, ceiling) if ceiling else self.max_tokens

    def _vectors(self, response, texts: list[str]) -> list[list[float]]:
        expected = len(texts)
        data = sorted(response.data, key=lambda item: item.index)
        if len(data) != expected or [d.index for d in data] != list(range(expected)):
            raise TransientError(
                f"the embedding server returned {len(data)} vectors for {expected} inputs"
            )
        vectors = [list(d.embedding) for d in data]
        sizes = {len(v) for v in vectors}
        if len(sizes) != 1 or (self.dimensions and sizes != {self.dimensions}):
            raise PermanentError(
                f"the embedding server returned vectors of {sorted(sizes)} dimensions, "
                f"expected {self.dimensions}: check embedding_model / embedding_dimensions"
            )
        self.dimensions = sizes.pop()
        used = _usage(response)
        if used:
            self._learn_density(used, texts)
        self.tokens_used += used if used else sum(self.counter.count(t) for t in texts)
        return vectors

    def classify(self, exc: Exception) -> JobError:
        """An openai exception as PermanentError, TransientError or
        AccountError, with a message a user can act on and no key in it
        (also used by doctor)."""
        openai = self.openai
        # Not a document's fault: AccountError stops the run and leaves the jobs queued.
        if isinstance(exc, openai.AuthenticationError):
            return AccountError(
                "OpenAI rejected the API key (401): set a valid key in OPENAI_API_KEY (setting openai_api_key)"
            )
        if isinstance(exc, openai.PermissionDeniedError):
            return AccountError(
                f"OpenAI denied access (403): {self.clean_message(exc)}; check that the key in OPENAI_API_KEY "
                f"may use {self.model}"
            )
        if isinstance(exc, openai.NotFoundError):
            return PermanentError(f"embedding model {self.model!r} not found (404) at the configured endpoint")
        if isinstance(exc, openai.RateLimitError):
            if _code(exc) == "insufficient_quota":
                return AccountError(
                    "the OpenAI quota is exhausted (429 insufficient_quota): add credit or raise the "
                    "usage limit at https://platform.openai.com/settings/organization/billing"
                )
            return TransientError("rate limited by the embedding server (429)")
        if isinstance(exc, openai.BadRequestError):
            return PermanentError(f"the embedding server refused the request (400): {self.clean_message(exc)}")
        if isinstance(exc, openai.APITimeoutError):
            return TransientError("the embedding server timed out")
        if isinstance(exc, openai.APIConnectionError):
            return TransientError("cannot reach the embedding server")
        if isinstance(exc, openai.APIStatusError):
            if exc.status_code >= 500 or exc.status_code in (408, 409):
                return TransientError(f"embedding server error ({exc.status_code})")
            return PermanentError(
                f"the embedding server refused the request ({exc.status_code}): {self.clean_message(exc)}"
            )
        return TransientError(f"embedding request failed: {type(exc).__name__}")

    def clean_message(self, exc: Exception) -> str:
        """The server's message, without anything that looks like a key (also
        BatchAPI's, for the errors of its file and batch calls)."""
        body = getattr(exc, "body", None)
        message = body.get("message") if isinstance(body, dict) else None
        text = " ".join(str(message or exc).split())
        if self._api_key:
            text = text.replace(self._api_key, "…")
        text = _KEY_LIKE.sub(r"\1…", text)
        return text[:200]


def _usage(response) -> int | None:
    usage = getattr(response, "usage", None)
    return getattr(usage, "total_tokens", None) or getattr(usage, "prompt_tokens", None)


def _code(exc: Exception) -> str | None:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        return body.get("code") or (body.get("error") or {}).get("code")
    return getattr(exc, "code", None)


def _about_too_many_tokens(exc: Exception) -> bool:
    text = str(getattr(exc, "message", "") or exc).lower()
    return "token" in text and any(w in text for w in ("maximum", "max", "too many", "limit", "exceed"))


# -- building one -------------------------------------------------------------

def make_embedder(
    settings, *, timeout: float = 120.0, max_retries: int = 2, budget: RateBudget | None = None
) -> Embedder:
    """A new embedder for the settings. Workers make one in their
    WorkerContext and reuse it: its HTTP client must be made in the worker.
    An OpenAI embedder paces itself by the account's shared rate budget
    (the context's, or one opened here)."""
    if settings.embedder_kind == "offline":
        from docutrain_cli.pipeline.offline import OfflineEmbedder

        return OfflineEmbedder()
    if not settings.openai_api_key:
        raise PermanentError("embedder is 'openai' but OPENAI_API_KEY is not set")
    if budget is None:
        from docutrain_cli.ratelimit.budget import open_budget

        budget = open_budget(settings)
    return OpenAIEmbedder(
        api_key=settings.openai_api_key,
        model=settings.embedding_model,
        dimensions=settings.embedding_dimensions,
        base_url=settings.openai_base_url,
        timeout=timeout,
        max_retries=max_retries,
        budget=budget,
        patience=settings.rate_limit_patience,
    )
