"""Errors meant for the person at the keyboard, not for a traceback, and the one path from them to an exit code.

Every entry point (`main.py` and `mnist-cifar`, `export`, `predict` with an exported file, the experiment commands)
runs inside `exits_on_user_errors`: a `UserFacingError` anywhere in the chain of causes is printed as one paragraph
(`error: ...` or `stopped: ...`) and the process exits with the error's own status; anything else is a bug and keeps
its traceback. So every message must name the thing that is wrong and the way to fix it.

Exit statuses: 2 the input was wrong (data, config, checkpoint, a file to predict: fix it and run again); 1 the work
itself failed (a run diverged, an export did not match its checkpoint, runs of a sweep failed); 128 + N stopped by
signal N, resumable (the shell's convention for a signal).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager


class UserFacingError(RuntimeError):
    """A problem with the user's data, config or files, explained in its message."""

    exit_code = 2
    label = "error"


class DataNotFoundError(UserFacingError):
    """No copy of a data set in any accepted layout, and it could not be downloaded."""


class DataCorruptError(UserFacingError):
    """A data set copy was found but some of its files cannot be read."""


class CheckpointError(UserFacingError):
    """A checkpoint path that does not exist or does not hold a Lightning checkpoint."""


class ConfigError(UserFacingError, ValueError):
    """A config value outside what the component accepts."""


class WorkFailed(UserFacingError):
    """The input was fine but the work failed (a diverged run, an export unlike its checkpoint, failed runs)."""

    exit_code = 1


class Interrupted(UserFacingError):
    """Stopped by a signal after keeping what was done; running the same command again continues."""

    label = "stopped"

    def __init__(self, signal_number: int, message: str) -> None:
        super().__init__(message)
        self.signal_number = signal_number
        self.exit_code = 128 + signal_number

    @staticmethod
    def name(signal_number: int) -> str:
        return signal.Signals(signal_number).name


def user_facing_cause(error: BaseException | None) -> UserFacingError | None:
    """The `UserFacingError` behind `error`; jsonargparse and Lightning wrap those raised inside them."""
    while error is not None and not isinstance(error, UserFacingError):
        error = error.__cause__ or error.__context__
    return error


@contextmanager
def exits_on_user_errors() -> Iterator[None]:
    """Print a user-facing error as one paragraph and exit with its status; let every other exception through."""
    try:
        yield
    except Exception as error:
        known = user_facing_cause(error)
        if known is None:
            raise
        print(f"{known.label}: {known}", file=sys.stderr)
        raise SystemExit(known.exit_code) from None
