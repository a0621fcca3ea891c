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
import signal
import subprocess
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from mnist_cifar.errors import Interrupted
from mnist_cifar.experiments.definition import Experiment, Variant
from mnist_cifar.experiments.launch import die_with_the_runner, launch_fit, lock_run
from mnist_cifar.experiments.logs import is_complete
from mnist_cifar.runs.folder import RunFolder

FIRST_SEED = 42
STOP_GRACE_SECONDS = 60  # how long a stopped run may take to save its checkpoint before it is killed


class SweepInterrupted(Interrupted):
    """Ctrl-C or SIGTERM reached the runner; `signal_number` says which."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal_number, f"the sweep was stopped ({self.name(signal_number)}); run the same command "
                                        f"again to finish it.")


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
                    print(f"skip {run.variant} seed {run.seed}: another process is running it ({RunFolder.at(run.folder).lock} "
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


def _start(run: Run, slot: int, jobs: int, gpus: list[str] | None, threads: list[str], lock: int) -> subprocess.Popen:
    env = dict(os.environ)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    to_log = jobs > 1  # one run at a time prints to the terminal; side by side, each to its output.log
    launched = launch_fit(run.folder, [*run.args, *threads], lock, to_log=to_log, env=env,
                          preexec=die_with_the_runner(os.getpid()))
    where = f" (output: {RunFolder.at(run.folder).output_log})" if to_log else ""
    how = "resume" if launched.resume else "start"
    print(f"{how} {run.variant} seed {run.seed} (pid {launched.process.pid}){where}", flush=True)
    return launched.process


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
