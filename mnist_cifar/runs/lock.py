"""One process per run: an exclusive `flock` on the run's lock file for the whole life of a `fit`.

Two `fit --ckpt_path last` on one run would write the same folder (one crashing on the other's temporary
file, epochs logged twice). The lock is a kernel `flock`, so it is released however the holder ends (kill -9
included), and it names its holder (pid, host, command) for the refusal. A launcher that locks a run before
starting its `fit` (the sweep runner) hands the locked descriptor to the child and names it in
`MNIST_CIFAR_RUN_LOCK_FD`: the child holds that lock instead of asking for a second one.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys

from mnist_cifar.errors import UserFacingError
from mnist_cifar.runs.folder import RunFolder

INHERITED_LOCK_ENV = "MNIST_CIFAR_RUN_LOCK_FD"


class RunLocked(UserFacingError):
    """Another process holds the run's lock."""


def try_lock(run: RunFolder) -> int | None:
    """An exclusive lock on `run`'s lock file as an open descriptor, or None when another process holds it."""
    run.lock.parent.mkdir(parents=True, exist_ok=True)
    handle = os.open(run.lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(handle)
        return None
    os.ftruncate(handle, 0)
    holder = f"pid {os.getpid()} on {socket.gethostname()}: {' '.join(sys.argv)[:300]}\n"
    os.pwrite(handle, holder.encode(), 0)
    return handle


def holder_of(run: RunFolder) -> str:
    try:
        return run.lock.read_text().strip() or "a process that did not say who it is"
    except OSError:
        return "an unknown process"


def inherited_lock(run: RunFolder) -> int | None:
    """The descriptor a launcher handed down for this run's lock, if it is that file."""
    value = os.environ.get(INHERITED_LOCK_ENV, "")
    if not value.isdigit():
        return None
    handle = int(value)
    try:
        held, wanted = os.fstat(handle), os.stat(run.lock)
    except OSError:
        return None
    return handle if (held.st_dev, held.st_ino) == (wanted.st_dev, wanted.st_ino) else None


def hold(run: RunFolder) -> int:
    """Lock `run` for this process or raise `RunLocked` at once, naming the holder."""
    handle = inherited_lock(run)
    if handle is not None:
        return handle
    handle = try_lock(run)
    if handle is None:
        raise RunLocked(
            f"The run {run.path} is in use: {holder_of(run)} holds its lock ({run.lock}). Two processes in one run "
            f"folder would overwrite each other's checkpoints and log every epoch twice, so this one did not start. "
            f"Wait for that process to end (or stop it: it saves last.ckpt on SIGTERM), then run this command "
            f"again; or start a new run without --ckpt_path."
        )
    return handle


def release(handle: int | None) -> None:
    if handle is not None and str(handle) != os.environ.get(INHERITED_LOCK_ENV):
        os.close(handle)
