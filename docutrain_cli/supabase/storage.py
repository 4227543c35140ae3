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
import unicodedata
from pathlib import Path
from urllib.parse import quote

from docutrain_cli.errors import PermanentError, TransientError
from docutrain_cli.supabase.client import classify

from docutrain_cli.pipeline.load import REMOTE_PREFIX  # where sources are told apart


# Storage's own limit on an object name.
MAX_OBJECT_PATH = 1024


def check_object_path(path: object, *, user_id: str | None = None, user_prefix: bool = False) -> str:
    """`path` if it names one object inside a bucket; PermanentError with the
    reason otherwise. The download URL is built from it with the service-role
    key, so nothing may climb out of the bucket (`..`, `./`, empty segments,
    backslashes, control characters, absolute paths). With `user_prefix` the
    object must also lie under `{user_id}/`, the layout Supabase's storage
    policies give each user (setting storage_user_prefix)."""
    if not isinstance(path, str):
        raise PermanentError(f"storage_path must be a string, got {type(path).__name__}")
    if not path:
        raise PermanentError("storage_path is empty")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_OBJECT_PATH:
        raise PermanentError(f"storage_path is longer than {MAX_OBJECT_PATH} bytes")
    if path.startswith("/"):
        raise PermanentError("storage_path must be relative to the bucket, not start with '/'")
    if "\\" in path:
        raise PermanentError("storage_path must not contain a backslash")
    if any(unicodedata.category(ch) == "Cc" for ch in path):
        raise PermanentError("storage_path must not contain control characters")
    if any(segment in ("", ".", "..") for segment in path.split("/")):
        raise PermanentError("storage_path must not contain empty, '.' or '..' segments")
    if user_prefix:
        if not user_id:
            raise PermanentError(
                "storage_path must start with the document's user id, and the document has none"
                " (setting storage_user_prefix)"
            )
        if not path.startswith(f"{user_id}/"):
            raise PermanentError(
                f"storage_path must start with the document's user id {user_id!r}/ (setting storage_user_prefix)"
            )
    return path


def parse_source(source: str) -> tuple[str, str]:
    """'supabase://bucket/dir/file.pdf' -> ('bucket', 'dir/file.pdf'); the
    path is checked by check_object_path."""
    if not source.startswith(REMOTE_PREFIX):
        raise PermanentError(f"not a supabase:// source: {source}")
    bucket, _, path = source[len(REMOTE_PREFIX) :].partition("/")
    if not bucket or not path:
        raise PermanentError(f"expected supabase://<bucket>/<path>, got {source}")
    return bucket, check_object_path(path)


def check_source(source: str, *, bucket: str, user_id: str | None, user_prefix: bool) -> str:
    """The object path of a supabase:// source that may be downloaded with
    these settings: in the configured bucket, under the user's prefix."""
    source_bucket, path = parse_source(source)
    if source_bucket != bucket:
        raise PermanentError(f"storage bucket {source_bucket!r} is not the configured storage_bucket {bucket!r}")
    return check_object_path(path, user_id=user_id, user_prefix=user_prefix)


def make_source(bucket: str, storage_path: str, *, user_id: str | None = None, user_prefix: bool = False) -> str:
    """The job source for an object path; PermanentError if the path is not safe."""
    return f"{REMOTE_PREFIX}{bucket}/{check_object_path(storage_path, user_id=user_id, user_prefix=user_prefix)}"


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

    check_object_path(storage_path)  # the last gate before a request with the service-role key
    # The same endpoint storage3's download() uses: GET /storage/v1/object/<bucket>/<path>.
    url = f"{str(client.storage_url).rstrip('/')}/object/{quote(bucket)}/{quote(storage_path.lstrip('/'))}"
    what = f"download {storage_path!r} from storage bucket {bucket!r}"
    suffix = Path(storage_path).suffix[:16]
    fd, name = tempfile.mkstemp(prefix="docutrain-", suffix=suffix, dir=dest_dir)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            # Never follow a redirect: it would carry the service-role key elsewhere.
            with client.options.httpx_client.stream(
                "GET", url, headers=dict(client.options.headers), follow_redirects=False
            ) as response:
                if response.is_redirect:
                    response.read()
                    raise PermanentError(
                        f"storage answered {storage_path!r} with a redirect (HTTP {response.status_code}); not followed"
                    )
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
    """One worker's downloads: at most one on disk at a time, only from the
    configured bucket (and under the job's user id with `user_prefix`)."""

    def __init__(self, bucket: str, *, user_prefix: bool = True) -> None:
        self.bucket = bucket
        self.user_prefix = user_prefix
        self._files: list[Path] = []
        atexit.register(self.clear)

    def fetch(self, client, source: str, *, user_id: str | None, max_bytes: int | None = None) -> Path:
        """Download a supabase://bucket/path source, deleting the previous one."""
        path = check_source(source, bucket=self.bucket, user_id=user_id, user_prefix=self.user_prefix)
        bucket = self.bucket
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
