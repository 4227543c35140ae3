"""Settings: one frozen, picklable object built from, in rising priority,
built-in defaults < docutrain.toml < environment variables < command-line flags.

This is the only module that reads os.environ, so every other module (and
every worker process) sees one consistent picture.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from pathlib import Path
from typing import Any, Mapping

from docutrain_cli.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIG_FILE = "docutrain.toml"
ENV_PREFIX = "DOCUTRAIN_"
# Well-known variables that other tools use too; they are read as-is.
PLAIN_ENV = {
    "openai_api_key": "OPENAI_API_KEY",
    "openai_base_url": "OPENAI_BASE_URL",
    "supabase_url": "SUPABASE_URL",
    "supabase_service_role_key": "SUPABASE_SERVICE_ROLE_KEY",
    "tessdata": "TESSDATA_PREFIX",
    "cloudflare_api_token": "CLOUDFLARE_API_TOKEN",
}
SECRET_FIELDS = {
    "openai_api_key",
    "supabase_service_role_key",
    "pdf_password",
    "cloudflare_api_token",
    "serve_token",
    "webhook_secret",
    "status_webhook_secret",
    "cloudflare_api_token",
}
CLOUDFLARE_PREFIX = "cloudflare://"
# The built-in job: load the source (a local file or a Supabase Storage
# object), extract, chunk, embed, store. Another processor reads its sources
# its own way.
DEFAULT_PROCESSOR = "docutrain_cli.run.process:process_job"


def _secret(default: Any = None) -> Any:
    return dataclasses.field(default=default, repr=False)


@dataclasses.dataclass(frozen=True)
class Settings:
    # Queue and runner
    queue: str = "queue.db"
    queue_name: str = "docutrain"
    workers: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)
    job_timeout: float = 600.0
    max_attempts: int = 5
    retry_base_delay: float = 10.0
    retry_max_delay: float = 600.0
    grace_period: float = 30.0
    poll_interval: float = 1.0
    visibility_timeout: float = 120.0
    processor: str = DEFAULT_PROCESSOR
    # Who is served first (queues/fair.py): "fair" shares by tokens between
    # users within each priority; "fifo" is first in, first out.
    lease_order: str = "fair"
    # A job is never overtaken longer than this by higher-priority work that arrived after it.
    priority_max_wait: float = 900.0
    # user id -> weight (default 1): a user of weight 2 gets twice the tokens
    # of one of weight 1 while both have work queued. TOML table, or env "u1=2,u2=0.5".
    # Not part of the hash (a dict is not hashable; caches key on Settings).
    user_weights: dict[str, float] = dataclasses.field(default_factory=dict, hash=False)
    # The tokens a job is assumed to cost when its file cannot be measured at
    # enqueue (a Storage object): corrected by what it really cost when it is done.
    remote_job_tokens: int = 5_000
    # Cloudflare Queues (--queue cloudflare://<account_id>/<queue_id>)
    cloudflare_api_url: str = "https://api.cloudflare.com/client/v4"
    cloudflare_dead_queue: str | None = None  # the dead-letter queue's id
    cloudflare_high_queue: str | None = None  # high-priority jobs go here, and are pulled first
    cloudflare_api_token: str | None = _secret()
    # Pipeline
    store: str = "docutrain.db"
    max_file_mb: float = 200.0
    max_pages: int = 10_000
    chunk_tokens: int = 800
    chunk_overlap: int = 100
    pdf_password: str | None = _secret()
    # OCR of scanned pages (pipeline/ocr.py)
    ocr: str = "auto"  # auto (when Tesseract is installed) | off | force
    ocr_language: str = "eng"  # Tesseract languages, several joined with '+'
    ocr_dpi: int = 200  # reads as many words as 300 at ~0.8x the CPU (docs/benchmarks.md, row 9)
    max_ocr_pages: int = 200  # per document; more is refused (OCR costs seconds a page)
    tessdata: str | None = None  # Tesseract's language folder; found when unset
    # Embeddings
    embedder: str = "auto"  # auto | openai | offline
    embedding_model: str = "text-embedding-3-small"
    embedding_dimensions: int | None = None
    openai_api_key: str | None = _secret()
    openai_base_url: str | None = None
    # The account's rate limit, shared by all workers and runners (0 = learn
    # it from the API's x-ratelimit-* headers).
    embedding_tpm: int = 0
    embedding_rpm: int = 0
    rate_limit_patience: float = 600.0  # 429s for this long give the job back to the queue
    account_retry_interval: float = 300.0  # a service paused by quota/key trouble retries this often
    # sync: workers embed at once; batch: OpenAI's Batch API, half the price, within 24 h
    embedding_mode: str = "sync"
    batch_queue_tokens: int = 3_000_000  # the account's queued-token quota for the Batch API (tier 1)
    batch_poll_interval: float = 60.0  # how often a running service polls its batches
    # Supabase
    supabase_url: str | None = None
    supabase_service_role_key: str | None = _secret()
    documents_table: str = "user_documents"
    chunks_table: str = "document_chunks"
    storage_bucket: str = "documents"
    # A document's storage_path must lie under `{user_id}/` (the layout
    # Supabase's storage policies use), so one user's row cannot name another's file.
    storage_user_prefix: bool = True
    # A service runner queues pending rows no webhook announced this often.
    reconcile_interval: float = 300.0
    # HTTP intake (`docutrain serve`): the bearer token clients send.
    serve_token: str | None = _secret()
    # The only secret /v1/webhooks/supabase takes once set (the serve token
    # then no longer opens it): what the Supabase trigger stores.
    webhook_secret: str | None = _secret()
    # Documents a user, and a client address, may queue through `serve`
    # ("120/minute"; None: no limit). Off by default: one backend (the app,
    # Supabase's webhook, the Cloudflare Worker) often sends every user's uploads.
    intake_rate: str | None = None
    # The HTTP server's limits: a request's line and headers, connections and
    # requests at once (more get 503), idle time between requests, and the
    # time a client has to send a request's headers (and again its body).
    serve_max_header_kb: int = 16
    serve_limit_concurrency: int = 500
    serve_keep_alive_timeout: float = 5.0
    serve_request_timeout: float = 10.0
    # Status changes POSTed to the app, signed with HMAC-SHA256.
    status_webhook_url: str | None = None
    status_webhook_secret: str | None = _secret()

    @property
    def queue_is_postgres(self) -> bool:
        return self.queue.startswith(("postgres://", "postgresql://"))

    @property
    def queue_is_cloudflare(self) -> bool:
        return self.queue.startswith(CLOUDFLARE_PREFIX)

    @property
    def supabase_enabled(self) -> bool:
        return bool(self.supabase_url and self.supabase_service_role_key)

    @property
    def embedder_kind(self) -> str:
        if self.embedder == "auto":
            return "openai" if self.openai_api_key else "offline"
        return self.embedder

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)

    def redacted(self) -> dict[str, Any]:
        """All settings as a dict, secrets masked: safe to print or log."""
        out = dataclasses.asdict(self)
        for name in SECRET_FIELDS:
            if out.get(name):
                out[name] = redact(out[name])
        if self.queue_is_postgres:
            out["queue"] = redact_url(self.queue)
        return out


def redact(secret: str) -> str:
    return secret[:4] + "…" if len(secret) > 12 else "…"


def redact_url(url: str) -> str:
    """postgresql://user:secret@host/db -> postgresql://user:…@host/db; a
    password in the query (?password=…, ?sslpassword=…, which libpq takes
    too) goes the same way."""
    url = re.sub(_USER_PASSWORD, r"\1…@", url)
    return re.sub(_QUERY_PASSWORD, r"\1…", url)


_USER_PASSWORD = r"(://[^:/@]+:)([^@]*)@"  # user:password@
_QUERY_PASSWORD = r"(?i)([?&](?:ssl)?password=)([^&#]*)"


def url_passwords(url: str) -> list[str]:
    """The passwords a Postgres URL holds (after `user:`, or in its query):
    what must never appear in a message about it."""
    found = (m.group(2) for pattern in (_USER_PASSWORD, _QUERY_PASSWORD) for m in re.finditer(pattern, url))
    return [secret for secret in found if secret]


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: str | float | int, name: str = "duration") -> float:
    """'90', '90s', '4m', '1.5h' -> seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ConfigError(
                f"{name}: expected a duration such as 30s, 4m or 1h, got {value!r}"
            )
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds < 0:
        raise ConfigError(f"{name}: must not be negative, got {value!r}")
    return seconds


_RATE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|day)s?\s*$")
_RATE_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def parse_rate(value: str | None, name: str = "rate") -> tuple[int, float] | None:
    """'120/minute' -> (120, 60.0); None, '' or 'off' -> None (no limit)."""
    if value is None or value.strip().lower() in ("", "off"):
        return None
    match = _RATE.match(value.lower())
    if not match or int(match.group(1)) < 1:
        raise ConfigError(f"{name}: expected a count per second, minute, hour or day such as 120/minute, got {value!r}")
    return int(match.group(1)), float(_RATE_SECONDS[match.group(2)])


_DURATION_FIELDS = {
    "job_timeout",
    "retry_base_delay",
    "retry_max_delay",
    "grace_period",
    "poll_interval",
    "visibility_timeout",
    "rate_limit_patience",
    "account_retry_interval",
    "batch_poll_interval",
    "reconcile_interval",
    "serve_keep_alive_timeout",
    "serve_request_timeout",
    "priority_max_wait",
}
_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
_TRUE_WORDS = {"1", "true", "yes", "on"}
_FALSE_WORDS = {"0", "false", "no", "off"}


def parse_weights(value: Any, label: str = "user_weights") -> dict[str, float]:
    """A TOML table {"u1" = 2} or the env form "u1=2,u2=0.5" -> {user id: weight}."""
    if isinstance(value, str):
        pairs = []
        for item in filter(None, (part.strip() for part in value.split(","))):
            user, sep, weight = item.rpartition("=")
            if not sep or not user.strip():
                raise ConfigError(f"{label}: expected USER=WEIGHT pairs joined with ',', got {item!r}")
            pairs.append((user.strip(), weight.strip()))
    elif isinstance(value, Mapping):
        pairs = list(value.items())
    else:
        raise ConfigError(f"{label}: expected a table of user id = weight, got {value!r}")
    weights = {}
    for user, weight in pairs:
        try:
            number = float(weight)
        except (TypeError, ValueError):
            number = float("nan")
        if not number > 0 or number == float("inf"):
            raise ConfigError(f"{label}: the weight of {user!r} must be a positive number, got {weight!r}")
        weights[str(user)] = number
    return weights


def _coerce(name: str, value: Any, label: str) -> Any:
    """`value` as the setting's type; errors name it by `label`, where it was given."""
    if name in _DURATION_FIELDS:
        return parse_duration(value, label)
    if name == "user_weights":
        return parse_weights(value, label)
    annotation = str(_FIELDS[name].type)
    if value is None or (value == "" and "None" in annotation):
        return None
    if annotation.startswith("bool"):
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in _TRUE_WORDS or word in _FALSE_WORDS:
            return word in _TRUE_WORDS
        raise ConfigError(f"{label}: expected true or false, got {value!r}")
    if annotation.startswith("int"):
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{label}: expected a whole number, got {value!r}") from None
        return number
    if annotation.startswith("float"):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{label}: expected a number, got {value!r}") from None
    return str(value)


# A typo (--workers 2000) would start that many processes, each importing
# PyMuPDF, long before a Ctrl-C could be heard; several machines share a
# queue for more.
MAX_WORKERS = 256


def _validate(s: Settings) -> None:
    if not 1 <= s.workers <= MAX_WORKERS:
        raise ConfigError(f"workers: must be 1 to {MAX_WORKERS}, got {s.workers}")
    if s.max_attempts < 1:
        raise ConfigError(f"max_attempts: must be at least 1, got {s.max_attempts}")
    if s.embedder not in ("auto", "openai", "offline"):
        raise ConfigError(f"embedder: expected auto, openai or offline, got {s.embedder!r}")
    if s.embedding_mode not in ("sync", "batch"):
        raise ConfigError(f"embedding_mode: expected sync or batch, got {s.embedding_mode!r}")
    if s.embedding_mode == "batch" and s.embedder_kind != "openai":
        raise ConfigError("embedding_mode 'batch' needs the OpenAI embedder: set OPENAI_API_KEY")
    if s.batch_queue_tokens < 1:
        raise ConfigError(f"batch_queue_tokens: must be positive, got {s.batch_queue_tokens}")
    if s.embedder == "openai" and not s.openai_api_key:
        raise ConfigError("embedder is 'openai' but OPENAI_API_KEY is not set")
    if not 16 <= s.chunk_tokens <= 8000:
        raise ConfigError(f"chunk_tokens: must be between 16 and 8000, got {s.chunk_tokens}")
    if not 0 <= s.chunk_overlap < s.chunk_tokens // 2:
        raise ConfigError(
            f"chunk_overlap: must be at least 0 and under half of chunk_tokens, got {s.chunk_overlap}"
        )
    for name in ("embedding_tpm", "embedding_rpm"):
        if getattr(s, name) < 0:
            raise ConfigError(f"{name}: must be 0 (learn from the API) or a positive limit, got {getattr(s, name)}")
    if s.embedding_dimensions is not None and s.embedding_dimensions < 1:
        raise ConfigError(f"embedding_dimensions: must be positive, got {s.embedding_dimensions}")
    if bool(s.supabase_url) != bool(s.supabase_service_role_key):
        missing = "SUPABASE_SERVICE_ROLE_KEY" if s.supabase_url else "SUPABASE_URL"
        raise ConfigError(f"Supabase is half configured: {missing} is not set")
    if s.ocr not in ("auto", "off", "force"):
        raise ConfigError(f"ocr: expected auto, off or force, got {s.ocr!r}")
    if not re.fullmatch(r"[\w/]+(\+[\w/]+)*", s.ocr_language):
        raise ConfigError(f"ocr_language: expected Tesseract language names joined with '+', e.g. eng+deu, got {s.ocr_language!r}")
    if not 72 <= s.ocr_dpi <= 1200:
        raise ConfigError(f"ocr_dpi: must be between 72 and 1200, got {s.ocr_dpi}")
    if s.max_ocr_pages < 1:
        raise ConfigError(f"max_ocr_pages: must be at least 1, got {s.max_ocr_pages}")
    if s.status_webhook_url and not s.status_webhook_url.startswith(("http://", "https://")):
        raise ConfigError(f"status_webhook_url: expected an http:// or https:// URL, got {s.status_webhook_url!r}")
    if s.status_webhook_url and not s.status_webhook_secret:
        raise ConfigError("status_webhook_url is set but status_webhook_secret is not: the app could not verify the calls")
    for name in ("serve_max_header_kb", "serve_limit_concurrency", "serve_keep_alive_timeout", "serve_request_timeout"):
        if getattr(s, name) <= 0:
            raise ConfigError(f"{name}: must be positive, got {getattr(s, name)}")
    parse_rate(s.intake_rate, "intake_rate")
    if s.webhook_secret and s.webhook_secret == s.serve_token:
        raise ConfigError("webhook_secret: must differ from serve_token, or it would still open everything")
    if s.lease_order not in ("fair", "fifo"):
        raise ConfigError(f"lease_order: expected fair or fifo, got {s.lease_order!r}")
    if s.remote_job_tokens < 1:
        raise ConfigError(f"remote_job_tokens: must be positive, got {s.remote_job_tokens}")
    if ":" not in s.processor:
        raise ConfigError(f"processor: expected 'module:function', got {s.processor!r}")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    data = data.get("docutrain", data)  # a [docutrain] table or top-level keys
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"{path}: unknown setting {unknown[0]!r}")
    return {k: _coerce(k, v, f"{path} {k}") for k, v in data.items()}


def _read_env(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in _FIELDS:
        env_name = ENV_PREFIX + name.upper()
        if env_name in environ:
            values[name] = _coerce(name, environ[env_name], f"{env_name} {name}")
        elif name in PLAIN_ENV and environ.get(PLAIN_ENV[name]):
            values[name] = _coerce(name, environ[PLAIN_ENV[name]], f"{PLAIN_ENV[name]} {name}")
    return values


def flag_name(setting: str) -> str:
    """The command-line flag of a setting: job_timeout -> --job-timeout."""
    return "--" + setting.replace("_", "-")


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build Settings. `overrides` are command-line flags (None means 'not given')."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    path = Path(config_file or environ.get(ENV_PREFIX + "CONFIG") or CONFIG_FILE)
    if config_file or path.exists():
        values.update(_read_toml(path))
    values.update(_read_env(environ))
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = _coerce(name, value, flag_name(name))
    settings = Settings(**values)
    _validate(settings)
    return settings


def environ_flag(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Read a non-setting environment variable (e.g. CI) in one place."""
    return (os.environ if environ is None else environ).get(name)
