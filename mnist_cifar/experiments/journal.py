"""A study's journal file made readable again after a process was killed while appending to it."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path


def cut_torn_journal(path: Path) -> Path | None:
    """Cut a journal's torn last line (a process killed while appending; Optuna issue #5138), keeping the original
    beside it; returns where the original went, None when the journal was whole.

    Optuna appends each operation as one JSON line under its symlink lock. A line cut short can never be read
    again, and every later append lands on it, so the study could never be opened. Only the `tune` command calls
    this, holding the same lock Optuna writes under, before any trial of its own starts."""
    from optuna.storages.journal import JournalFileSymlinkLock

    if not path.is_file() or path.stat().st_size == 0:
        return None
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        content = path.read_bytes()
        whole = content.rfind(b"\n") + 1  # the end of the last complete line
        if whole == len(content):  # every line complete: the last may still be cut short before its newline
            previous = content.rfind(b"\n", 0, whole - 1) + 1
            if _is_json(content[previous:whole]):
                return None
            whole = previous
        kept = path.with_name(f"{path.name}.torn-{int(time.time())}")
        shutil.copy2(path, kept)
        with path.open("r+b") as file:
            file.truncate(whole)
            file.flush()
            os.fsync(file.fileno())
    finally:
        lock.release()
    print(f"warning: the study journal {path} ended in a torn line (a process was killed while writing it); cut "
          f"{len(content) - whole} bytes off so the study can continue. The original is kept as {kept}.",
          file=sys.stderr)
    return kept


def _is_json(line: bytes) -> bool:
    if not line.strip():
        return True
    try:
        json.loads(line)
    except ValueError:
        return False
    return True
