"""The one way this project replaces a file: whole or not at all, also across a crash or a full disk.

A reader (a resumed run, `predict`, the SLURM status, the next process reading a cache) finds either the old file
or the new one, never a half-written mix: the content goes to a temporary file in the same folder, is flushed to
the disk, and takes the target's name in one `os.replace`; the folder is flushed after, so the rename survives a
power cut. On any error the temporary file (and what a writer put beside it) is removed and the target is
unchanged. Temporary files left by a process that was killed are removed by the next write to the same target.
"""

from __future__ import annotations

import csv
import os
import re
import secrets
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

PARTIAL = ".partial-"
HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())  # a folder may be shared by machines (a cluster)


def atomic_write(target: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """`write(temporary)` fills a file beside `target` (same suffix, so writers that go by it work); it then becomes
    `target`. `write` may raise to give up (a check that failed): `target` is left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(target)
    temporary = target.with_name(f".{target.stem}{PARTIAL}{HOST}.{os.getpid()}.{secrets.token_hex(4)}{target.suffix}")
    try:
        write(temporary)
        _fsync_file(temporary)
        os.replace(temporary, target)
    finally:
        for leftover in target.parent.glob(f"{temporary.name}*"):  # the temporary file, and a writer's side files
            leftover.unlink(missing_ok=True)
    _fsync_folder(target.parent)


def atomic_write_table(target: str | os.PathLike, rows: Iterable[Mapping[str, object]], fields: Sequence[str]) -> None:
    """`rows` as a CSV file with the header `fields` (a missing value: an empty cell)."""

    def write(temporary: Path) -> None:
        with open(temporary, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(fields), restval="")
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(target, write)


def atomic_write_bytes(target: str | os.PathLike, data: bytes | memoryview) -> None:
    atomic_write(target, lambda temporary: temporary.write_bytes(data))


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    atomic_write(target, lambda temporary: temporary.write_text(text))


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as file:
        os.fsync(file.fileno())


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _remove_orphans(target: Path) -> None:
    """Temporary files for `target` whose process on this machine is gone (killed mid-write); a live writer's, and
    every other machine's, are kept."""
    prefix = f".{target.stem}{PARTIAL}{HOST}."
    for orphan in target.parent.glob(f"{prefix}*"):
        pid = orphan.name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            orphan.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process of that pid
        return True
    return True
