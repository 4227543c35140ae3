"""`docutrain doctor`: check the configuration and the services it points at,
and say how to fix what is wrong. Every network check has a short timeout;
keys only ever appear redacted.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Callable

from docutrain_cli.config import Settings, redact
from docutrain_cli.errors import DocutrainError, PermanentError, TransientError

TIMEOUT = 8.0
DOCUMENT_COLUMNS = (
    "id", "user_id", "status", "storage_path", "error_message",
    "page_count", "chunk_count", "processed_at", "updated_at",
)
CHUNK_COLUMNS = (
    "id", "user_document_id", "user_id", "chunk_index", "content",
    "page_start", "page_end", "token_count", "embedding",
)
SCHEMA_FIX = "apply the SQL from `docutrain schema` in the Supabase SQL editor"


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def run_checks(settings: Settings, *, timeout: float = TIMEOUT) -> list[Check]:
    checks = [_embedding_config(settings), _ocr(settings)]
    if settings.supabase_enabled:
        key_check = _supabase_key(settings)
        checks.append(key_check)
        reach = _guard("Supabase reachable", lambda: _reachable(settings, timeout))
        checks.append(reach)
        if reach.ok:
            checks += [
                _guard(f"table {settings.documents_table}", lambda: _columns(settings, settings.documents_table, DOCUMENT_COLUMNS, timeout)),
                _guard(f"table {settings.chunks_table}", lambda: _columns(settings, settings.chunks_table, CHUNK_COLUMNS, timeout)),
                _guard("function match_document_chunks", lambda: _match_function(settings, timeout)),
                _guard("vector size", lambda: _vector_size(settings, timeout)),
                _guard(f"storage bucket {settings.storage_bucket}", lambda: _bucket(settings, timeout)),
            ]
    else:
        checks.append(
            Check(
                "Supabase",
                True,
                "not configured: results stay in the local store",
                "to sync with Supabase set SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY",
            )
        )
    if settings.embedder_kind == "openai":
        checks.append(_guard("OpenAI embeddings", lambda: _openai(settings, timeout)))
    return checks


def _guard(name: str, check: Callable[[], Check]) -> Check:
    """A check that blows up becomes a failed check, never a crash."""
    try:
        return check()
    except TransientError as exc:
        return Check(name, False, str(exc), "check the network / the project's status page, then retry")
    except DocutrainError as exc:
        return Check(name, False, str(exc), _fix_for(str(exc)))
    except Exception as exc:  # noqa: BLE001 - a doctor reports, it does not crash
        return Check(name, False, f"{type(exc).__name__}: {exc}", None)


def _fix_for(message: str) -> str | None:
    lowered = message.lower()
    if "does not exist" in lowered:
        return SCHEMA_FIX
    if "invalid api key" in lowered or "jwt" in lowered or "401" in lowered:
        return "set SUPABASE_SERVICE_ROLE_KEY to the project's service_role key (Project Settings > API)"
    return None


# -- configuration -------------------------------------------------------------

def _embedding_config(settings: Settings) -> Check:
    from docutrain_cli.schema import embedding_model, vector_dimensions

    try:
        dims = vector_dimensions(settings)
    except DocutrainError as exc:
        return Check("embedding settings", False, str(exc), "set embedding_dimensions")
    detail = f"{settings.embedder_kind} embedder, model {embedding_model(settings)}, {dims} dimensions"
    if settings.openai_api_key:
        detail += f", OPENAI_API_KEY {redact(settings.openai_api_key)}"
    if settings.openai_base_url:
        detail += f", base URL {settings.openai_base_url}"
    return Check("embedding settings", True, detail)


def _ocr(settings: Settings) -> Check:
    from docutrain_cli.pipeline.ocr import ocr_check

    ok, detail, fix = ocr_check(settings)
    return Check("OCR (Tesseract)", ok, detail, fix)


def _jwt_role(key: str) -> str | None:
    parts = key.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, json.JSONDecodeError):
        return None
    return payload.get("role") if isinstance(payload, dict) else None


def _supabase_key(settings: Settings) -> Check:
    key = settings.supabase_service_role_key or ""
    url = settings.supabase_url or ""
    shown = f"{url}, key {redact(key)}"
    role = _jwt_role(key)
    if key.startswith("sb_publishable_") or role == "anon":
        return Check(
            "Supabase settings", False, f"{shown}: this is the public (anon) key",
            "docutrain writes for every user: set SUPABASE_SERVICE_ROLE_KEY to the service_role / secret key",
        )
    if not url.startswith(("https://", "http://")):
        return Check("Supabase settings", False, f"{shown}: URL must start with https://", "e.g. https://<project>.supabase.co")
    if url.startswith("http://") and not any(h in url for h in ("127.0.0.1", "localhost")):
        return Check("Supabase settings", False, f"{shown}: plain http sends the key unencrypted", "use the https:// URL")
    return Check("Supabase settings", True, shown + (f" (role {role})" if role else ""))


# -- Supabase ------------------------------------------------------------------

def _sink(settings: Settings, timeout: float):
    from docutrain_cli.sinks.supabase import SupabaseSink

    return SupabaseSink(settings, timeout=timeout)


def _select(settings: Settings, table: str, columns: str, timeout: float):
    from docutrain_cli.supabase_client import classify

    try:
        return _sink(settings, timeout)._table(table).select(columns).limit(0).execute()
    except Exception as exc:  # noqa: BLE001
        raise classify(exc, f"select from {table}") from None


def _reachable(settings: Settings, timeout: float) -> Check:
    try:
        _select(settings, settings.documents_table, "id", timeout)
    except PermanentError as exc:
        if "does not exist" not in str(exc):
            raise
        # Reached it: the table question is the next check's to answer.
    return Check("Supabase reachable", True, f"{settings.supabase_url} answers")


def _columns(settings: Settings, table: str, expected: tuple[str, ...], timeout: float) -> Check:
    name = f"table {table}"
    try:
        _select(settings, table, ",".join(expected), timeout)
        return Check(name, True, f"has {', '.join(expected)}")
    except PermanentError as exc:
        if "table does not exist" in str(exc):
            return Check(name, False, f"table {table} does not exist", SCHEMA_FIX)
        if "column does not exist" not in str(exc):
            raise
    missing = []
    for column in expected:  # one at a time, to name each missing one
        try:
            _select(settings, table, column, timeout)
        except PermanentError as exc:
            if "does not exist" not in str(exc):
                raise
            missing.append(column)
    return Check(name, False, f"missing column(s): {', '.join(missing)}", SCHEMA_FIX)


def _match_function(settings: Settings, timeout: float) -> Check:
    from docutrain_cli.schema import vector_dimensions
    from docutrain_cli.supabase_client import classify

    name = "function match_document_chunks"
    params = {"query_embedding": [0.0] * vector_dimensions(settings), "match_count": 0}
    try:
        _sink(settings, timeout).client.rpc("match_document_chunks", params).execute()
    except Exception as exc:  # noqa: BLE001
        error = classify(exc, "call match_document_chunks")
        if "does not exist" in str(error):
            return Check(name, False, "function match_document_chunks does not exist", SCHEMA_FIX)
        raise error from None
    return Check(name, True, "callable")


def _vector_size(settings: Settings, timeout: float) -> Check:
    from docutrain_cli.schema import vector_dimensions

    want = vector_dimensions(settings)
    table = settings.chunks_table
    from docutrain_cli.supabase_client import classify

    try:
        rows = _sink(settings, timeout)._table(table).select("embedding").limit(1).execute().data
    except Exception as exc:  # noqa: BLE001
        error = classify(exc, f"select from {table}")
        if "does not exist" in str(error):
            return Check("vector size", False, f"cannot read {table}.embedding", SCHEMA_FIX)
        raise error from None
    if not rows:
        return Check("vector size", True, f"expecting {want}; {table} has no rows yet to compare")
    value = rows[0].get("embedding")
    have = len(json.loads(value) if isinstance(value, str) else value or [])
    if have != want:
        return Check(
            "vector size", False,
            f"{table}.embedding holds {have}-dimension vectors, this configuration makes {want}",
            "use the embedding model the table was made for, or re-create the column with `docutrain schema`'s size",
        )
    return Check("vector size", True, f"{want} dimensions, matches {table}")


def _bucket(settings: Settings, timeout: float) -> Check:
    from docutrain_cli.supabase_client import classify

    name = f"storage bucket {settings.storage_bucket}"
    try:
        _sink(settings, timeout).client.storage.get_bucket(settings.storage_bucket)
    except Exception as exc:  # noqa: BLE001
        error = classify(exc, f"get storage bucket {settings.storage_bucket!r}")
        if isinstance(error, PermanentError) and ("404" in str(error) or "not found" in str(error).lower()):
            return Check(
                name, False, f"bucket {settings.storage_bucket!r} does not exist",
                "create it in Supabase Storage, or set storage_bucket (DOCUTRAIN_STORAGE_BUCKET) to the bucket uploads go to",
            )
        raise error from None
    return Check(name, True, "exists")


# -- OpenAI --------------------------------------------------------------------

def _openai(settings: Settings, timeout: float) -> Check:
    import openai

    from docutrain_cli.schema import vector_dimensions

    name = "OpenAI embeddings"
    client = openai.OpenAI(
        api_key=settings.openai_api_key, base_url=settings.openai_base_url, timeout=timeout, max_retries=0
    )
    kwargs = {"dimensions": settings.embedding_dimensions} if settings.embedding_dimensions else {}
    try:
        # One tiny input (a few tokens): proves key, model and vector size at once.
        response = client.embeddings.create(
            model=settings.embedding_model, input=["docutrain doctor"], encoding_format="float", **kwargs
        )
    except openai.AuthenticationError:
        return Check(name, False, f"key {redact(settings.openai_api_key or '')} was refused", "set OPENAI_API_KEY to a valid key")
    except openai.NotFoundError as exc:
        return Check(name, False, f"model {settings.embedding_model!r} not found ({exc.status_code})", "set embedding_model")
    except (openai.APIConnectionError, openai.APITimeoutError) as exc:
        return Check(name, False, f"cannot reach {settings.openai_base_url or 'api.openai.com'}: {type(exc).__name__}", "check the network / OPENAI_BASE_URL")
    except openai.APIStatusError as exc:
        return Check(name, False, f"HTTP {exc.status_code}: {exc.message}", None)
    size = len(response.data[0].embedding)
    try:
        want = vector_dimensions(settings)
    except DocutrainError:
        want = size
    if size != want:
        return Check(name, False, f"model {settings.embedding_model} returned {size} dimensions, expected {want}", "set embedding_dimensions to match")
    return Check(name, True, f"model {settings.embedding_model} answers with {size} dimensions")
