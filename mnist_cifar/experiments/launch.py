"""The one way a launcher starts a run: the local runner, a SLURM task and an Optuna trial all call `launch_fit`.

A run is an ordinary `main.py fit` process in its own run folder. The launcher holds the folder's lock first
(`lock_run`) and hands it down to the `fit` (`handing_down`), resumes from `last.ckpt` when there is one and
otherwise empties the folder (a run killed before its first checkpoint starts afresh), and appends what the run
prints to the folder's `output.log` under a `--- start ---` or `--- resume ---` line, so a resumed run's log keeps
every attempt.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mnist_cifar.experiments.definition import REPO
from mnist_cifar.runs.folder import KEPT_AFRESH, RunFolder
from mnist_cifar.runs.lock import INHERITED_LOCK_ENV, try_lock
from mnist_cifar.runs.parent_death import die_with_parent

MAIN = REPO / "main.py"
# How a run's `fit` is started: main.py in a clone (as a user types it), the package's own entry where it is installed.
FIT = [sys.executable, str(MAIN)] if MAIN.is_file() else [sys.executable, "-m", "mnist_cifar"]


@dataclass
class Launched:
    process: subprocess.Popen
    resume: bool


def launch_fit(folder: Path, args: Sequence[str], lock: int | None, *, to_log: bool = True, primary: bool = True,
               env: dict[str, str] | None = None, preexec: Callable[[], None] | None = None,
               note: str = "") -> Launched:
    """Start `main.py fit <args>` for the run in `folder`, holding `lock` (handed down), resuming when it can.

    `to_log`: append the run's output to its `output.log` (else it inherits this process's terminal). `primary`:
    False for the other ranks of a multi-node SLURM run, which neither empty the folder nor write its log.
    `note` goes on the log's header line (e.g. the attempt and the job)."""
    run = RunFolder.at(folder)
    resume = run.last.is_file()
    if primary:
        if not resume:
            start_afresh(folder)
        folder.mkdir(parents=True, exist_ok=True)
    output = (open(run.output_log, "a") if primary else open(os.devnull, "a")) if to_log else None  # noqa: SIM115
    try:
        if output is not None and primary:
            print(f"--- {'resume' if resume else 'start'}{note} ---", file=output, flush=True)
        process = subprocess.Popen(
            [*FIT, *args, *(["--ckpt_path=last"] if resume else [])],
            stdout=output, stderr=subprocess.STDOUT if output is not None else None,
            pass_fds=() if lock is None else (lock,), env=env if lock is None else handing_down(lock, env),
            preexec_fn=preexec)
    finally:
        if output is not None:
            output.close()  # the child has its own copy of the descriptor
    return Launched(process, resume)


def lock_run(folder: Path) -> int | None:
    """An exclusive `flock` on the run's lock file, or None when another process holds it.

    The descriptor is handed to the run's `fit` process (`handing_down`), which holds that same lock instead of
    asking for its own, so the lock lasts as long as either of them: a runner killed with -9 leaves its run
    locked until the run has stopped too, and a second runner, or a `fit` typed by hand, never starts a second
    process on the same folder (two would delete each other's temporary checkpoint files)."""
    return try_lock(RunFolder.at(folder))


def handing_down(lock: int, env: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment, naming the lock descriptor it inherits (`pass_fds`)."""
    return {**(os.environ if env is None else env), INHERITED_LOCK_ENV: str(lock)}


def die_with_the_runner(runner: int) -> Callable[[], None]:
    """In the child, before `exec`: SIGTERM when the runner dies, so a runner killed with -9 leaves no run behind;
    the run saves last.ckpt on SIGTERM and the next `run` resumes it (Linux; elsewhere the run outlives it)."""
    return lambda: die_with_parent(signal.SIGTERM, runner)


def start_afresh(folder: Path) -> None:
    """Empty a run folder for a run that starts again from nothing (no last.ckpt), keeping its output.log."""
    for entry in folder.iterdir() if folder.is_dir() else ():
        if entry.name not in KEPT_AFRESH:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
