"""Error types and the exit codes the CLI maps them to.

A job fails in one of two ways: a PermanentError means retrying cannot help
(the file is corrupt, encrypted, too large), so the job goes dead at once; a
TransientError (network, 429, 5xx, timeouts) is retried with backoff.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    ERROR = 1  # unexpected failure: a bug or an environment problem
    USAGE = 2  # bad flag, bad config value, unknown job id
    PARTIAL = 3  # some inputs refused or some jobs ended dead
    QUEUE_BUSY = 4  # another runner holds this queue: nothing was done
    UNAVAILABLE = 5  # a required service (database, Supabase) cannot be reached
    INTERRUPTED = 130  # stopped by Ctrl-C / SIGTERM before the queue was drained
    PIPE_CLOSED = 141  # stdout closed early (`| head`): stopped quietly, as Unix tools do (128 + SIGPIPE)


class DocutrainError(Exception):
    """Base class: anything a user can cause, printed as one line."""

    exit_code = ExitCode.ERROR


class ConfigError(DocutrainError):
    exit_code = ExitCode.USAGE


class UsageError(DocutrainError):
    exit_code = ExitCode.USAGE


class QueueBusyError(DocutrainError):
    exit_code = ExitCode.QUEUE_BUSY


class ServiceUnavailableError(DocutrainError):
    exit_code = ExitCode.UNAVAILABLE


class JobError(DocutrainError):
    """Raised inside a worker for one job."""


class PermanentError(JobError):
    """Bad input: retrying cannot help."""


class TransientError(JobError):
    """Temporary trouble (network, rate limit, server error): retry later."""

    exit_code = ExitCode.UNAVAILABLE  # when it reaches the CLI outside a job


def one_line(exc: BaseException, limit: int = 120) -> str:
    """An exception's message on one line, cut to `limit` characters, for
    reasons that quote a library's complaint."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
