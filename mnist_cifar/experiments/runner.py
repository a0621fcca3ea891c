"""Run every variant of an experiment for each seed, each run its own `python main.py fit` process.

A process per run means a run can itself be DDP (Lightning relaunches the command it was started with), and a
crash, leak or changed global state in one run cannot reach the next. `jobs` runs go side by side; with
`gpus`, each job slot owns one GPU (`CUDA_VISIBLE_DEVICES`). Ctrl-C or SIGTERM stops the whole sweep: the
runs in flight get SIGINT, save `last.ckpt` at their current step and stop; the next `run` resumes each
unfinished run from its `last.ckpt` (bit for bit, as `fit --ckpt_path last` does) and starts afresh only
those killed before their first checkpoint.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mnist_cifar.experiments.definition import REPO, Experiment, Variant
from mnist_cifar.experiments.logs import is_complete
from mnist_cifar.parent_death import die_with_parent
from mnist_cifar.runs.folder import KEPT_AFRESH, RunFolder
from mnist_cifar.runs.lock import INHERITED_LOCK_ENV, try_lock

FIRST_SEED = 42
MAIN = REPO / "main.py"
# How a run's `fit` is started: main.py in a clone (as a user types it), the package's own entry where it is installed.
FIT = [sys.executable, str(MAIN)] if MAIN.is_file() else [sys.executable, "-m", "mnist_cifar"]
STOP_GRACE_SECONDS = 60  # how long a stopped run may take to save its checkpoint before it is killed


class SweepInterrupted(Exception):
    """Ctrl-C or SIGTERM reached the runner; `signal_number` says which."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = signal_number


@dataclass
class Run:
    variant: str
    seed: int
    folder: Path
    args: list[str]
    outcome: str = "not started"

    @property
    def failed(self) -> bool:
        return self.outcome not in ("ran", "done before", LOCKED)


def seeds(count: int) -> list[int]:
    return [FIRST_SEED + i for i in range(count)]


def run_dir(root: Path, experiment: str, variant: str, seed: int) -> Path:
    return root / "experiments" / experiment / variant / f"seed{seed}"


def fit_args(root: Path, experiment: Experiment, variant: Variant, seed: int, extra: list[str]) -> list[str]:
    return [
        "fit",
        *variant.cli_args(),
        f"--seed_everything={seed}",
        f"--trainer.logger.init_args.save_dir={root / 'experiments' / experiment.name}",
        f"--trainer.logger.init_args.name={variant.name}",
        f"--trainer.logger.init_args.version=seed{seed}",
        *extra,
    ]


def plan(experiment: Experiment, seed_count: int, root: Path, extra: list[str], only: list[str] | None) -> list[Run]:
    return [
        Run(variant.name, seed, run_dir(root, experiment.name, variant.name, seed),
            fit_args(root, experiment, variant, seed, extra))
        for seed in seeds(seed_count)
        for variant in experiment.variants
        if not only or variant.name in only
    ]


def thread_args(extra: list[str], jobs: int) -> list[str]:
    """Share the CPU cores between the jobs, unless the user chose a thread count."""
    if jobs == 1 or any(arg.startswith("--num_threads") for arg in extra):
        return []
    return [f"--num_threads={max(1, (os.cpu_count() or 1) // jobs)}"]


def run_experiment(experiment: Experiment, seed_count: int, root: Path, extra: list[str],
                   only: list[str] | None = None, jobs: int = 1, gpus: list[str] | None = None) -> list[Run]:
    """Run what is missing, `jobs` at a time; returns every planned run with its outcome.

    Raises `SweepInterrupted` on Ctrl-C or SIGTERM, after the runs in flight have stopped.
    """
    runs = plan(experiment, seed_count, root, extra, only)
    pending = deque()
    for run in runs:
        if is_complete(run.folder):
            run.outcome = "done before"
        else:
            pending.append(run)
    slots = list(range(jobs))
    running: dict[subprocess.Popen, tuple[Run, int]] = {}
    locks: dict[subprocess.Popen, int] = {}
    previous = {s: signal.signal(s, _raise_interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while pending or running:
            while pending and slots:
                run, slot = pending.popleft(), slots.pop(0)
                lock = lock_run(run.folder)
                if lock is None:
                    run.outcome = LOCKED
                    print(f"skip {run.variant} seed {run.seed}: another process is running it ({lock_path(run.folder)} "
                          f"is locked); run again once it has ended", flush=True)
                    slots.append(slot)
                    continue
                process = _start(run, slot, jobs, gpus, thread_args(extra, jobs), lock)
                running[process], locks[process] = (run, slot), lock
            time.sleep(0.2)
            for process in [p for p in running if p.poll() is not None]:
                run, slot = running.pop(process)
                os.close(locks.pop(process))
                run.outcome = _outcome(run, process.returncode)
                print(f"end {run.variant} seed {run.seed}: {run.outcome}", flush=True)
                slots.append(slot)
    except SweepInterrupted:
        _stop(running)
        raise
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return runs


def _raise_interrupt(signal_number: int, frame: object) -> None:
    raise SweepInterrupted(signal_number)


LOCKED = "skipped (another process is running it)"


def lock_path(folder: Path) -> Path:
    """The run's own lock file (`RunFolder.lock`): the one every `fit` in that folder holds too."""
    return RunFolder.at(folder).lock


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


def _start(run: Run, slot: int, jobs: int, gpus: list[str] | None, threads: list[str], lock: int) -> subprocess.Popen:
    folder = RunFolder.at(run.folder)
    resume = folder.last.is_file()
    if not resume:
        start_afresh(run.folder)  # a run killed before its first checkpoint starts afresh
    run.folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    output = None if jobs == 1 else open(folder.output_log, "w")  # noqa: SIM115 (the child owns it)
    where = "" if output is None else f" (output: {folder.output_log})"
    resume_args = ["--ckpt_path=last"] if resume else []  # the run's own folder: its logger version is fixed
    process = subprocess.Popen([*FIT, *run.args, *threads, *resume_args], env=handing_down(lock, env),
                               stdout=output, stderr=subprocess.STDOUT if output else None, pass_fds=(lock,),
                               preexec_fn=die_with_the_runner(os.getpid()))
    how = "resume" if resume else "start"
    print(f"{how} {run.variant} seed {run.seed} (pid {process.pid}){where}", flush=True)
    return process


def _outcome(run: Run, returncode: int) -> str:
    if returncode != 0:
        return f"failed (exit {returncode})"
    return "ran" if is_complete(run.folder) else "incomplete (no test/acc in its logs)"


def _stop(running: dict[subprocess.Popen, tuple[Run, int]]) -> None:
    """Pass SIGINT on to the runs in flight, give them time to stop, then kill what is left."""
    for process in running:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for process, (run, _) in running.items():
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        run.outcome = "interrupted"
