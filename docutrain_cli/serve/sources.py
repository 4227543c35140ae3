"""Where a document sent over HTTP is read from.

`storage_path` names an object in Supabase Storage: a path inside the
`storage_bucket` setting (or `supabase://<that bucket>/path`), under the
user's own `{user_id}/` prefix (setting storage_user_prefix), with no `..`,
`.` or empty segments (see supabase/storage.check_object_path). A path on this
machine must look like one (absolute, `./`, `~` or `file://`). Without it, the
path is looked up in the document's `user_documents` row, and a path read
from a row is always a Storage path, never a local file.

A local file path is refused unless the operator started `serve
--allow-local-paths DIR`, and then only a regular file whose real path
(symlinks resolved) lies inside DIR; a relative path is taken inside DIR. A
path outside DIR gets the same answer whether or not it exists, the size
limit (max_file_mb) is checked before a byte is hashed, and the hash is kept
for the job but never sent back (see jobs.public_job).

A Storage path while Supabase is not configured here is refused too: the
worker could not download it, and the job would end dead at once.
"""

from __future__ import annotations

import hashlib
import os
import stat

from docutrain_cli.config import DEFAULT_PROCESSOR, Settings
from docutrain_cli.errors import ConfigError, PermanentError
from docutrain_cli.serve.errors import ApiError

HASH_BLOCK = 1024 * 1024


def _is_local(path: str) -> bool:
    # A relative path is a Storage path: local ones must say so.
    return path.startswith(("/", "./", "../", "~", "file:"))


def local_root(folder: str) -> str:
    """The real path of `serve --allow-local-paths DIR`; ConfigError unless a folder."""
    root = os.path.realpath(os.path.expanduser(folder))
    if not os.path.isdir(root):
        raise ConfigError(f"serve --allow-local-paths: {folder} is not a folder")
    return root


def check_storage_configured(settings: Settings, storage_path: str) -> None:
    """ApiError(422) when a job reading `storage_path` from Supabase Storage
    cannot succeed here: the built-in processor downloads it with the
    service-role key, and Supabase is not configured."""
    if settings.supabase_enabled or settings.processor != DEFAULT_PROCESSOR:
        return
    raise ApiError(
        422,
        f"storage_path: {storage_path} is a Supabase Storage path, but Supabase is not configured "
        "for this server (set SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY), so the job could not succeed; "
        "for files on this machine, start `docutrain serve --allow-local-paths DIR` and send a path inside DIR",
    )


def resolve_source(settings: Settings, document_id: str, user_id: str, storage_path: str | None,
                   local_root: str | None) -> tuple[str, str | None]:
    """(job source, sha256 or None) for a document; ApiError(422) when it
    cannot be read from where the request says. Blocks: call in a thread."""
    from docutrain_cli.supabase.storage import REMOTE_PREFIX, check_source, make_source

    from_row = storage_path is None
    if from_row:
        if not settings.supabase_enabled:
            raise ApiError(422, "storage_path is required (Supabase is not configured to look it up)")
        storage_path = _storage_path_of_row(settings, document_id)
    rule = {"user_id": user_id, "user_prefix": settings.storage_user_prefix}
    remote = storage_path.startswith(REMOTE_PREFIX) or from_row or not _is_local(storage_path)
    if remote:
        check_storage_configured(settings, storage_path)
    try:
        if storage_path.startswith(REMOTE_PREFIX):
            check_source(storage_path, bucket=settings.storage_bucket, **rule)
            return storage_path, None
        if remote:
            return make_source(settings.storage_bucket, storage_path, **rule), None
    except PermanentError as exc:
        raise ApiError(422, f"storage_path: {exc}") from None
    if local_root is None:
        raise ApiError(
            422,
            "storage_path: local file paths are refused; give a Supabase Storage path, "
            "or start `docutrain serve --allow-local-paths DIR`",
        )
    return read_local(settings, storage_path, local_root)


def read_local(settings: Settings, storage_path: str, root: str) -> tuple[str, str]:
    """(real path, sha256) of a regular file inside `root`, or ApiError(422)."""
    named = os.path.expanduser(storage_path.removeprefix("file://"))
    if "\0" in named:
        raise ApiError(422, "storage_path: not a path")
    real = os.path.realpath(os.path.join(root, named))  # an absolute `named` replaces root
    if os.path.commonpath([root, real]) != root:
        # Said before looking at the file: the answer tells nothing about it.
        raise ApiError(422, "storage_path: not inside the folder `serve --allow-local-paths` allows")
    shown = os.path.relpath(real, root)
    try:
        # O_NOFOLLOW: a symlink swapped in since realpath is not followed;
        # O_NONBLOCK: a FIFO cannot hang the thread.
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ApiError(422, f"storage_path: {shown}: no such file") from None
    except OSError as exc:
        raise ApiError(422, f"storage_path: {shown}: {(exc.strerror or 'cannot open').lower()}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ApiError(422, f"storage_path: {shown}: not a regular file")
        limit = int(settings.max_file_mb * 1024 * 1024)
        too_big = ApiError(422, f"storage_path: {shown}: larger than max_file_mb ({settings.max_file_mb:g} MB)")
        if info.st_size > limit:
            raise too_big
        # Hashed from the file we opened and checked, up to the limit (a
        # file may grow meanwhile).
        digest, read = hashlib.sha256(), 0
        while block := os.read(fd, HASH_BLOCK):
            read += len(block)
            if read > limit:
                raise too_big
            digest.update(block)
    except OSError as exc:
        raise ApiError(422, f"storage_path: {shown}: {(exc.strerror or 'cannot read').lower()}") from None
    finally:
        os.close(fd)
    return real, digest.hexdigest()


def _storage_path_of_row(settings: Settings, document_id: str) -> str:
    from docutrain_cli.supabase.pull import document_row

    row = document_row(settings, document_id)
    if row is None:
        raise ApiError(422, f"no {settings.documents_table} row with id {document_id}; send storage_path")
    path = (row.get("storage_path") or "").strip()
    if not path:
        raise ApiError(422, f"{settings.documents_table} row {document_id} has no storage_path; send it")
    return path
