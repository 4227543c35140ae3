"""Supabase Storage: `supabase://bucket/path` sources, downloaded by the
worker that processes them.

Streaming keeps a worker's memory flat for large PDFs, and a size limit
stops an oversized file early. A worker keeps at most one download
(`Downloads`): the previous one is deleted when the next job downloads (its
extraction is finished by then), and the last one when the process exits.
"""

from __future__ import annotations

import atexit
import os
import tempfile
from pathlib import Path
from urllib.parse import quote

from docutrain_cli.errors import PermanentError, TransientError
from docutrain_cli.supabase.client import classify

from docutrain_cli.pipeline.load import REMOTE_PREFIX  # where sources are told apart


def parse_source(source: str) -> tuple[str, str]:
    """'supabase://bucket/dir/file.pdf' -> ('bucket', 'dir/file.pdf')."""
    if not source.startswith(REMOTE_PREFIX):
        raise PermanentError(f"not a supabase:// source: {source}")
    bucket, _, path = source[len(REMOTE_PREFIX) :].partition("/")
    if not bucket or not path:
        raise PermanentError(f"expected supabase://<bucket>/<path>, got {source}")
    return bucket, path


def make_source(bucket: str, storage_path: str) -> str:
    return f"{REMOTE_PREFIX}{bucket}/{storage_path.lstrip('/')}"


def download(
    client,
    storage_path: str,
    *,
    bucket: str,
    dest_dir: str | os.PathLike[str] | None = None,
    max_bytes: int | None = None,
) -> Path:
    """Stream an object from Storage into a new temporary file; returns its
    path (the caller deletes it)."""
    import httpx

    # The same endpoint storage3's download() uses: GET /storage/v1/object/<bucket>/<path>.
    url = f"{str(client.storage_url).rstrip('/')}/object/{quote(bucket)}/{quote(storage_path.lstrip('/'))}"
    what = f"download {storage_path!r} from storage bucket {bucket!r}"
    suffix = Path(storage_path).suffix[:16]
    fd, name = tempfile.mkstemp(prefix="docutrain-", suffix=suffix, dir=dest_dir)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            with client.options.httpx_client.stream("GET", url, headers=dict(client.options.headers)) as response:
                if response.status_code in (400, 404):
                    # Storage answers 400 "not_found"/"Bucket not found" as well as 404.
                    response.read()
                    raise PermanentError(
                        f"{storage_path!r} not found in storage bucket {bucket!r}"
                        f" ({_storage_message(response)})"
                    )
                if response.status_code >= 400:
                    response.read()
                    raise classify(httpx.HTTPStatusError("", request=response.request, response=response), what)
                size = 0
                for block in response.iter_bytes(1 << 20):
                    size += len(block)
                    if max_bytes is not None and size > max_bytes:
                        raise PermanentError(
                            f"too large: over {max_bytes // (1024 * 1024)} MB in storage bucket {bucket!r}"
                        )
                    out.write(block)
    except (PermanentError, TransientError):
        path.unlink(missing_ok=True)
        raise
    except Exception as exc:  # noqa: BLE001
        path.unlink(missing_ok=True)
        raise classify(exc, what) from None
    return path


class Downloads:
    """One worker's downloads: at most one on disk at a time."""

    def __init__(self) -> None:
        self._files: list[Path] = []
        atexit.register(self.clear)

    def fetch(self, client, source: str, *, max_bytes: int | None = None) -> Path:
        """Download a supabase://bucket/path source, deleting the previous one."""
        bucket, path = parse_source(source)
        self.clear()
        local = download(client, path, bucket=bucket, max_bytes=max_bytes)
        self._files.append(local)
        return local

    def clear(self) -> None:
        while self._files:
            self._files.pop().unlink(missing_ok=True)


def _storage_message(response) -> str:
    try:
        data = response.json()
        return str(data.get("message") or data.get("error") or response.status_code)
    except Exception:  # noqa: BLE001
        return f"HTTP {response.status_code}"
