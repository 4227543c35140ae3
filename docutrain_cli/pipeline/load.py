"""Find the job's file and check it before anything opens it.

Sources are local paths or `supabase://bucket/path` objects in Supabase
Storage: `load_source` is the one place that downloads those to a temporary
file and hands back the same `LoadedFile`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

from docutrain_cli.errors import PermanentError

REMOTE_PREFIX = "supabase://"  # supabase://bucket/path, see supabase/storage.py
HASH_BLOCK = 1 << 20


@dataclasses.dataclass(frozen=True)
class LoadedFile:
    path: Path
    size_bytes: int
    sha256: str


def load_source(source: str, *, max_file_mb: float, context=None, user_id: str | None = None) -> LoadedFile:
    """`context` (the worker's WorkerContext) is needed for supabase:// sources;
    `user_id` is the job's, whose storage prefix the object must lie under."""
    if source.startswith(REMOTE_PREFIX):
        # Supabase Storage (issue 4): download into a temporary file in this
        # worker, then check it like any local file.
        if context is None or not context.settings.supabase_enabled:
            raise PermanentError(
                "supabase:// source but Supabase is not configured: set SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY"
            )
        max_bytes = int(max_file_mb * 1024 * 1024)
        path = context.downloads.fetch(context.supabase, source, user_id=user_id, max_bytes=max_bytes)
        return load_local(path, max_file_mb=max_file_mb)
    return load_local(Path(source), max_file_mb=max_file_mb)


def load_local(path: Path, *, max_file_mb: float) -> LoadedFile:
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise PermanentError("file not found") from None
    except PermissionError:
        raise PermanentError("cannot read the file: permission denied") from None
    except OSError as exc:
        raise PermanentError(f"cannot read the file: {exc.strerror or exc}") from None
    if path.is_dir():
        raise PermanentError("is a directory, not a file")
    limit = max_file_mb * 1024 * 1024
    if stat.st_size > limit:
        raise PermanentError(
            f"too large: {_mb(stat.st_size)} MB, limit {_mb(limit)} MB"
        )
    if stat.st_size == 0:
        raise PermanentError("empty file")
    if not os.access(path, os.R_OK):
        raise PermanentError("cannot read the file: permission denied")
    try:
        sha256 = sha256_file(path)
    except PermissionError:
        raise PermanentError("cannot read the file: permission denied") from None
    return LoadedFile(path=path, size_bytes=stat.st_size, sha256=sha256)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The hex SHA-256 of a file's bytes, read in blocks (the one hashing
    function: `enqueue` hashes with it too, so duplicates match)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _mb(size: float) -> str:
    mb = size / (1024 * 1024)
    return f"{mb:.0f}" if mb >= 10 or mb == int(mb) else f"{mb:.1f}"
