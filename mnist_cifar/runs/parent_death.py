"""Tie a process's life to its parent's: Linux's parent-death signal (prctl PR_SET_PDEATHSIG).

Used where a parent that dies must not leave its children running: the sweep runner's `fit` processes and the DDP
ranks a launcher started. Kept free of heavy imports: the runner calls it in each child between fork and exec.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

PR_SET_PDEATHSIG = 1


def die_with_parent(signal_number: int, parent: int) -> None:
    """Have the kernel send `signal_number` to this process when its parent dies; send it now if `parent` (the
    expected parent's pid) is already gone. Off Linux (no prctl) nothing changes."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal_number)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the signal was armed
        os.kill(os.getpid(), signal_number)
