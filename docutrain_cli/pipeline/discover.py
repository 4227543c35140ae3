"""Turn the paths a user typed (files, folders, globs) into files to queue."""

from __future__ import annotations

import dataclasses
import glob
import os
from pathlib import Path
from typing import Iterable, Iterator

from docutrain_cli.pipeline.formats import SUPPORTED_SUFFIXES
from docutrain_cli.pipeline.load import sha256_file

# A folder scan picks up SUPPORTED_SUFFIXES. A file named explicitly is queued
# whatever its type, so an unsupported one ends as a visible dead job with the reason.


@dataclasses.dataclass
class Found:
    path: str  # absolute
    sha256: str


@dataclasses.dataclass
class Refused:
    path: str  # as typed
    reason: str


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _walk(folder: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in SUPPORTED_SUFFIXES:
                yield Path(root) / name


def _why(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


def discover(paths: Iterable[str]) -> tuple[list[Found], list[Refused]]:
    """Expand and hash; every path that cannot be used comes back with a reason."""
    found: list[Found] = []
    refused: list[Refused] = []
    seen: set[str] = set()

    def add(candidate: Path, typed: str) -> None:
        absolute = os.path.abspath(candidate)
        if absolute in seen:
            return
        seen.add(absolute)
        try:
            found.append(Found(absolute, sha256_file(absolute)))
        except IsADirectoryError:
            refused.append(Refused(typed, "is a folder"))
        except OSError as exc:
            refused.append(Refused(typed, _why(exc)))

    for typed in paths:
        if _is_glob(typed) and not os.path.exists(typed):
            matches = sorted(glob.glob(os.path.expanduser(typed), recursive=True))
            if not matches:
                refused.append(Refused(typed, "no files match this pattern"))
            for match in matches:
                path = Path(match)
                for file in _walk(path) if path.is_dir() else [path]:
                    add(file, match)
            continue
        path = Path(os.path.expanduser(typed))
        if path.is_dir():
            before = len(found)
            for file in _walk(path):
                add(file, str(file))
            if len(found) == before:
                refused.append(Refused(typed, "folder has no supported documents"))
        elif path.exists():
            add(path, typed)
        else:
            refused.append(Refused(typed, "no such file or folder"))
    return found, refused
