"""`docutrain doctor`: check the configuration and the services it points at,
and say how to fix what is wrong. Every network check has a short timeout;
keys only ever appear redacted.
"""

from __future__ import annotations

import base64
import json
from typing import Callable

from docutrain_cli.config import Settings, redact
from docutrain_cli.errors import DocutrainError, TransientError
from docutrain_cli.pipeline.models import embedding_model, vector_dimensions
from docutrain_cli.supabase.checks import CHUNK_COLUMNS, DOCUMENT_COLUMNS, Check
from docutrain_cli.supabase.client import SCHEMA_FIX

TIMEOUT = 8.0

__all__ = ["Check", "run_checks"]


def run_checks(settings: Settings, *, timeout: float = TIMEOUT) -> list[Check]:
    checks = [_embedding_config(settings), _ocr(settings), _ocr_orientation(settings), _lease_order(settings)]
    if settings.supabase_enabled:
        checks.append(_supabase_key(settings))
        checks += _supabase_checks(settings, timeout)
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


def _supabase_checks(settings: Settings, timeout: float) -> list[Check]:
    from docutrain_cli.supabase import checks as supabase
    from docutrain_cli.supabase.client import close_client, make_client

    try:
        client = make_client(settings, timeout)
    except DocutrainError as exc:
        return [Check("Supabase reachable", False, str(exc), _fix_for(str(exc)))]
    try:
        reach = _guard("Supabase reachable", lambda: supabase.reachable(settings, client))
        if not reach.ok:
            return [reach]
        documents, chunks = settings.documents_table, settings.chunks_table
        return [
            reach,
            _guard(f"table {documents}", lambda: supabase.columns(settings, client, documents, DOCUMENT_COLUMNS)),
            _guard(f"table {chunks}", lambda: supabase.columns(settings, client, chunks, CHUNK_COLUMNS)),
            _guard("function match_document_chunks", lambda: supabase.match_function(settings, client)),
            _guard("vector size", lambda: supabase.vector_size(settings, client)),
            _guard(f"storage bucket {settings.storage_bucket}", lambda: supabase.bucket(settings, client)),
        ]
    finally:
        close_client(client)


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


def _lease_order(settings: Settings) -> Check:
    """Who is served first, as far as the queue can keep it (queues/order.py)."""
    name = "who is served first"
    if settings.queue_is_cloudflare:
        if not settings.cloudflare_high_queue:
            return Check(name, True, "Cloudflare Queues: fair share between users is not available (no ordering "
                         "control) and priority is not kept", "for priority, create a second queue and set "
                         "DOCUTRAIN_CLOUDFLARE_HIGH_QUEUE to its id (high jobs go there and are pulled first)")
        return Check(name, True, f"Cloudflare Queues: by priority (high jobs through queue "
                     f"{settings.cloudflare_high_queue}, pulled first); fair share between users is not available")
    wait = f"a job waits at most {settings.priority_max_wait:g} s for later higher-priority work"
    if settings.lease_order == "fifo":
        return Check(name, True, f"first in, first out within each priority (lease_order fifo); {wait}")
    weights = f", weights for {len(settings.user_weights)} user(s)" if settings.user_weights else ""
    return Check(name, True, f"fair share by tokens between users within each priority{weights}; {wait}")


def _ocr(settings: Settings) -> Check:
    from docutrain_cli.pipeline.ocr import ocr_check

    ok, detail, fix = ocr_check(settings)
    return Check("OCR (Tesseract)", ok, detail, fix)


def _ocr_orientation(settings: Settings) -> Check:
    from docutrain_cli.pipeline.ocr import orientation_check

    return Check("OCR orientation detection", *orientation_check(settings))


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


# -- OpenAI --------------------------------------------------------------------

def _openai(settings: Settings, timeout: float) -> Check:
    """One tiny input (a few tokens) through the embedder the workers use:
    proves key, model and vector size at once, with its error messages."""
    from docutrain_cli.errors import AccountError, PermanentError
    from docutrain_cli.pipeline.embed import make_embedder

    name = "OpenAI embeddings"
    embedder = make_embedder(settings, timeout=timeout, max_retries=0)
    try:
        [vector] = embedder.embed(["docutrain doctor"])
    except TransientError as exc:
        where = settings.openai_base_url or "api.openai.com"
        return Check(name, False, f"{where}: {exc}", "check the network / OPENAI_BASE_URL, then retry")
    except (PermanentError, AccountError) as exc:  # AccountError: key, access or quota
        return Check(name, False, str(exc), _openai_fix(str(exc)))
    size = len(vector)
    try:
        want = vector_dimensions(settings)
    except DocutrainError:
        want = size
    if size != want:
        return Check(name, False, f"model {settings.embedding_model} returned {size} dimensions, expected {want}", "set embedding_dimensions to match")
    return Check(name, True, f"model {settings.embedding_model} answers with {size} dimensions")


def _openai_fix(message: str) -> str | None:
    if "API key" in message:
        return "set OPENAI_API_KEY to a valid key"
    if "quota" in message:
        return "add credit or raise the usage limit in the OpenAI billing settings"
    if "not found" in message:
        return "set embedding_model"
    if "dimensions" in message:
        return "set embedding_dimensions to match"
    return None
