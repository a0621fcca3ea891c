"""The SLURM backend of the sweep runner: every run (variant × seed) is one task of a job array, submitted through
submitit, running the same `python main.py fit ...` command as the local backend, in the same run folder.

Who does what, and why:
- **submitit owns the requeue.** Each job asks SLURM for a signal before its time limit (`--signal=USR2@<lead>`);
  the job's own process (submitit's) forwards it to the run as SIGTERM, the run saves `last.ckpt` at its current
  step (`StopOnSignal`) and exits, and submitit requeues the job (`scontrol requeue`): a time limit at most
  `max_requeues` times, a preemption always. The requeued task starts the run with `--ckpt_path last` in the same
  folder, which continues bit for bit. Lightning's own SLURM requeue is turned off in the run
  (`SLURMEnvironment(auto_requeue=False)`): two owners would requeue twice.
- **The run's process ignores SIGUSR2**: on a cluster whose process tracking signals every process of the job,
  the default action of SIGUSR2 would kill it before it saved anything.
- **A SIGTERM from outside** (`scancel --signal=TERM`, `scontrol requeue`, a preemption's notice) reaches the run
  directly: it saves `last.ckpt` and exits, and the task ends at once, its state "stopped by SIGTERM", which
  `status` shows as resumable; the same `run` command submits it again and it continues from that checkpoint.
  Where SLURM itself requeues the job (`scontrol requeue`, `PreemptMode=REQUEUE`) the requeued task resumes it,
  and `status` counts those requeues (SLURM's `RestartCnt`, `SLURM_RESTART_COUNT`) beside submitit's.
- **A run that fails** (non-zero exit, not stopped by a signal) is started again in the same task, from its
  `last.ckpt` when it has one, up to `retries` more times, then ends as failed.
- **The runner does not stay alive**: what `status` shows comes from the queue (`squeue`) and from files the
  tasks write (`<experiment>/slurm/runs/<variant>/seed<N>.json`, each run's `output.log`); `sacct` is not used,
  since many clusters (and the local test cluster) keep no accounting.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from mnist_cifar.errors import ConfigError
from mnist_cifar.experiments.definition import Experiment
from mnist_cifar.experiments.launch import launch_fit, lock_run
from mnist_cifar.experiments.logs import is_complete
from mnist_cifar.experiments.runner import Run, plan
from mnist_cifar.files import atomic_write_text
from mnist_cifar.runs.folder import RunFolder
from mnist_cifar.runs.parent_death import die_with_parent

REQUEUE_SIGNAL = signal.SIGUSR2  # submitit's default (SUBMITIT_PREEMPT_SIGNAL); forwarded to the run as SIGTERM
STOPPED = "stopped by SIGTERM"  # a task's state after a SIGTERM from outside: resumable by the same command
STOP_GRACE_SECONDS = 60  # how long a signalled run may take to save last.ckpt before it is killed
NO_REQUEUE_PLUGIN = json.dumps({"class_path": "lightning.pytorch.plugins.environments.SLURMEnvironment",
                                "init_args": {"auto_requeue": False}})


@dataclass
class Resources:
    """What each run asks SLURM for: the `--backend slurm` options, or an experiment file's `slurm:` block."""

    partition: str | None = None
    time: str = "60"  # minutes, or [D-]HH:MM[:SS]
    cpus_per_run: int = 1  # per task; the run's --num_threads
    gpus_per_run: int = 0  # per node
    nodes_per_run: int = 1
    tasks_per_node: int = 1  # DDP processes per node (Lightning's devices): one per GPU
    account: str | None = None
    qos: str | None = None
    mem: str | None = None  # e.g. 8G
    signal_seconds: int = 120  # how long before the time limit the run is told to save and requeue
    retries: int = 2  # starts again after a failure, in the same task
    max_requeues: int = 3  # requeues after a time limit (a preemption is always requeued)
    parallel: int = 64  # array tasks running at once (the %N of --array)
    sbatch: list[str] = field(default_factory=list)  # any other sbatch option, e.g. ["--constraint=a100"]

    def minutes(self) -> int:
        text = self.time.strip()
        days, _, clock = text.rpartition("-")
        parts = [int(p) for p in clock.split(":")] if clock.replace(":", "").isdigit() else []
        if not parts or len(parts) > 3 or (days and not days.isdigit()):
            raise ConfigError(f"slurm time {self.time!r}: give minutes (90) or [D-]HH:MM[:SS] (1-12:00:00).")
        if len(parts) == 1:
            minutes = parts[0]
        else:
            hours, mins, secs = (parts + [0])[:3]
            minutes = hours * 60 + mins + (1 if secs else 0)
        return minutes + int(days or 0) * 24 * 60

    def executor_parameters(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        for option in self.sbatch:
            key, has_value, value = option.removeprefix("--").partition("=")
            if not option.startswith("--") or not key:
                raise ConfigError(f"slurm sbatch option {option!r}: give it as --name=value or --flag.")
            extra[key.replace("-", "_")] = value if has_value else True
        chosen = {"partition": self.partition, "account": self.account, "qos": self.qos, "mem": self.mem,
                  "gpus_per_node": self.gpus_per_run or None}
        return {"time": self.minutes(), "cpus_per_task": self.cpus_per_run, "nodes": self.nodes_per_run,
                "ntasks_per_node": self.tasks_per_node, "signal_delay_s": self.signal_seconds,
                "array_parallelism": self.parallel, "job_name": "mnist_cifar",
                **{key: value for key, value in chosen.items() if value is not None},
                **({"additional_parameters": extra} if extra else {})}


def resources(spec: dict[str, Any] | None, overrides: dict[str, Any]) -> Resources:
    """The experiment file's `slurm:` block, then the command line's options over it."""
    allowed = {f.name for f in fields(Resources)}
    unknown = sorted(set(spec or {}) - allowed)
    if unknown:
        raise ConfigError(f"the experiment's slurm: block has unknown key(s) {', '.join(unknown)}; it may have "
                          f"{', '.join(sorted(allowed))}.")
    chosen = Resources(**{**(spec or {}), **{k: v for k, v in overrides.items() if v is not None}})
    for name in ("cpus_per_run", "nodes_per_run", "tasks_per_node", "parallel"):
        if int(getattr(chosen, name)) < 1:
            raise ConfigError(f"slurm {name} must be at least 1, got {getattr(chosen, name)}.")
    chosen.minutes()
    return chosen


# ---- the sweep's files ------------------------------------------------------------------------------------------

def sweep_folder(root: Path, experiment: Experiment) -> Path:
    """`<root>/experiments/<experiment>/slurm/`: submitit's files, the submitted jobs, each run's state."""
    return root / "experiments" / experiment.name / "slurm"


def state_path(folder: Path, run: Run) -> Path:
    return folder / "runs" / run.variant / f"seed{run.seed}.json"


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=1))


# ---- what runs inside the job -----------------------------------------------------------------------------------

class SlurmRun:
    """One run inside its array task: `python main.py fit ...` as a child process, restarted after a failure,
    stopped with SIGTERM (and requeued by submitit) when the time-limit or preemption signal arrives.

    submitit calls `checkpoint` from its signal handler on the task of global rank 0; every task forwards the
    signal to its own run first (`_forward`), so each DDP rank's process gets SIGTERM."""

    def __init__(self, command: list[str], folder: str, state_file: str, retries: int) -> None:
        self.command, self.folder, self.state_file, self.retries = command, folder, state_file, retries
        self._child: subprocess.Popen | None = None
        self._stopping = False

    def __getstate__(self) -> dict[str, Any]:
        return {"command": self.command, "folder": self.folder, "state_file": self.state_file, "retries": self.retries}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    @property
    def rank(self) -> int:
        return int(os.environ.get("SLURM_PROCID", "0"))

    def __call__(self) -> str:
        submitit_handler = signal.getsignal(REQUEUE_SIGNAL)
        signal.signal(REQUEUE_SIGNAL, self._forward(submitit_handler))
        folder = Path(self.folder)
        lock = lock_run(folder) if self.rank == 0 else None
        if self.rank == 0 and lock is None:
            raise RuntimeError(f"{folder} is locked by another process running this run (a local `run`?).")
        state = read_json(Path(self.state_file))
        state["job"] = os.environ.get("SLURM_ARRAY_JOB_ID", os.environ.get("SLURM_JOB_ID", "")) + (
            f"_{os.environ['SLURM_ARRAY_TASK_ID']}" if "SLURM_ARRAY_TASK_ID" in os.environ else "")
        restarts = os.environ.get("SLURM_RESTART_COUNT", "0")  # SLURM's own count: requeues made from outside too
        if restarts.isdigit() and int(restarts) > state.get("requeues", 0):
            state["requeues"] = int(restarts)
        if is_complete(folder):  # requeued after it had finished (the signal came during its last moments)
            self._update(state, state="done", exit=0)
            return "done"
        code = 0
        # A run of several tasks (DDP) is not restarted: one rank alone would wait for the others for ever.
        retries = self.retries if int(os.environ.get("SLURM_NTASKS", "1")) == 1 else 0
        for attempt in range(retries + 1):
            code = self._attempt(folder, lock, state, attempt)
            if self._stopping:  # submitit's signal (a time limit, a preemption), forwarded: submitit requeues it
                self._update(state, state="stopped by a signal", exit=code)
                self._wait_for_the_requeue()
                raise RuntimeError(f"the run was stopped by a signal (exit {code}) and not requeued")
            if code in (143, -signal.SIGTERM):  # SIGTERM from outside (scancel --signal=TERM, scontrol requeue, a
                # preemption's notice): the run saved last.ckpt; end now, shown as stopped and resumable
                self._update(state, state=STOPPED, exit=code)
                raise RuntimeError(f"{folder}: stopped by SIGTERM after saving its last.ckpt; the same `run` command "
                                   f"resumes it from there")
            if code == 0 and is_complete(folder):
                self._update(state, state="done", exit=0)
                return "done"
            self._update(state, state="failed" if attempt == retries else "retrying", exit=code)
        raise RuntimeError(f"{folder}: failed {retries + 1} times, the last with exit {code}; see "
                           f"{RunFolder.at(folder).output_log}")

    def _attempt(self, folder: Path, lock: int | None, state: dict[str, Any], attempt: int) -> int:
        if self.rank == 0:
            self._update(state, state="running", attempts=state.get("attempts", 0) + 1, exit=None)
        launched = launch_fit(folder, self.command, lock, primary=self.rank == 0,
                              preexec=_run_process_setup(os.getpid()),
                              note=f" (attempt {attempt + 1}, job {state.get('job')})")
        self._child = launched.process
        return self._child.wait()

    def _forward(self, submitit_handler: Any) -> Callable[[int, Any], None]:  # noqa: ANN401 (a signal handler)
        def forward(signal_number: int, frame: Any) -> None:  # noqa: ANN401
            self._stop_child()
            if callable(submitit_handler):
                submitit_handler(signal_number, frame)  # rank 0: checkpoint(), scontrol requeue, exit
        return forward

    def _stop_child(self) -> None:
        """SIGTERM to the run, and wait until it has saved and exited (killed after `STOP_GRACE_SECONDS`).

        This runs in a signal handler that interrupted `Popen.wait` in `_attempt`, which holds the Popen's
        (non-reentrant) wait lock: waiting through Popen here would deadlock, so the child is reaped with
        `os.waitpid` directly."""
        self._stopping = True
        child = self._child
        if child is None or child.returncode is not None:
            return
        child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while True:
            try:
                pid, _ = os.waitpid(child.pid, os.WNOHANG)
            except ChildProcessError:  # reaped already
                return
            if pid:
                return
            if time.monotonic() > deadline:
                child.kill()
                deadline = float("inf")
            time.sleep(0.1)

    def checkpoint(self) -> Any:  # noqa: ANN401 (submitit's DelayedSubmission)
        """submitit's hook before it requeues the job: the run has saved `last.ckpt`; the requeued task resumes it."""
        import submitit

        self._stop_child()
        state = read_json(Path(self.state_file))
        self._update(state, state="requeued", requeues=state.get("requeues", 0) + 1)
        return submitit.helpers.DelayedSubmission(SlurmRun(self.command, self.folder, self.state_file, self.retries))

    def _update(self, record: dict[str, Any], **changes: Any) -> None:  # noqa: ANN401
        if self.rank != 0:
            return
        record.update(changes, updated=time.time())
        write_json(Path(self.state_file), record)

    @staticmethod
    def _wait_for_the_requeue(seconds: float = 120) -> None:
        """After a signal, the job is requeued or killed from outside: wait for that rather than end as a failure."""
        time.sleep(seconds)


def _run_process_setup(parent: int) -> Callable[[], None]:
    def setup() -> None:
        signal.signal(REQUEUE_SIGNAL, signal.SIG_IGN)
        die_with_parent(signal.SIGTERM, parent)
    return setup


# ---- submit, state, cancel ----------------------------------------------------------------------------------------

def require_slurm() -> None:
    missing = [tool for tool in ("sbatch", "squeue", "scancel") if shutil.which(tool) is None]
    if missing:
        raise ConfigError(f"--backend slurm needs SLURM's commands on this machine; {', '.join(missing)} not found. "
                          f"Run from a cluster's login node, or start the local test cluster (.ci/slurm_cluster.sh).")
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise ConfigError("--backend slurm needs submitit: pip install -e '.[slurm]'.") from None


def run_command(run: Run, chosen: Resources, extra: list[str]) -> list[str]:
    """The local backend's `fit` arguments, with the threads, DDP shape and requeue owner of a SLURM task."""
    shape = ([f"--trainer.num_nodes={chosen.nodes_per_run}", f"--trainer.devices={chosen.tasks_per_node}"]
             if chosen.nodes_per_run * chosen.tasks_per_node > 1 else [])
    threads = [] if any(a.startswith("--num_threads") for a in extra) else [f"--num_threads={chosen.cpus_per_run}"]
    at = len(run.args) - len(extra)  # the user's own overrides come last and win
    return [*run.args[:at], *shape, *threads, f"--trainer.plugins+={NO_REQUEUE_PLUGIN}", *run.args[at:]]


def submit(experiment: Experiment, seed_count: int, root: Path, extra: list[str], only: list[str] | None,
           chosen: Resources) -> tuple[list[Run], str | None]:
    """Submit every run that is neither done nor already in the queue as one job array; returns the runs (their
    outcome says what was done with each) and the array's job id (None when nothing was submitted)."""
    import submitit

    require_slurm()
    folder = sweep_folder(root, experiment)
    runs = plan(experiment, seed_count, root, extra, only)
    queued = queue_states(folder)
    todo = []
    for run in runs:
        job = read_json(state_path(folder, run)).get("job") or _submitted_job(folder, run)
        if is_complete(run.folder):
            run.outcome = "done before"
        elif job and job in queued:
            run.outcome = f"already in the queue (job {job}, {queued[job].lower()})"
        else:
            todo.append(run)
    if not todo:
        return runs, None
    executor = submitit.SlurmExecutor(folder=folder / "jobs" / "%j", max_num_timeout=chosen.max_requeues)
    executor.update_parameters(**chosen.executor_parameters())
    submitted = []
    with executor.batch():
        for run in todo:
            state_file = state_path(folder, run)
            write_json(state_file, {"state": "queued", "attempts": 0, "requeues": 0})
            submitted.append(executor.submit(
                SlurmRun(run_command(run, chosen, extra), str(run.folder), str(state_file), chosen.retries)))
    jobs = [job.job_id for job in submitted]
    array = _record_submission(folder, todo, jobs)
    for run, job in zip(todo, jobs):
        state_file = state_path(folder, run)
        write_json(state_file, {**read_json(state_file), "job": job})
        run.outcome = f"submitted (job {job})"
    return runs, array


def _record_submission(folder: Path, runs: list[Run], jobs: list[str]) -> str | None:
    record = read_json(folder / "jobs.json")
    array = jobs[0].split("_")[0] if jobs else None
    record.setdefault("arrays", []).append({"job": array, "submitted": time.time(),
                                            "runs": {job: [run.variant, run.seed] for run, job in zip(runs, jobs)}})
    write_json(folder / "jobs.json", record)
    return array


def _submitted_job(folder: Path, run: Run) -> str | None:
    for array in reversed(read_json(folder / "jobs.json").get("arrays", [])):
        for job, (variant, seed) in array.get("runs", {}).items():
            if variant == run.variant and seed == run.seed:
                return job
    return None


def queue_states(folder: Path) -> dict[str, str]:
    """SLURM's state of every task of this sweep's arrays still known to the queue: {"<array>_<task>": "RUNNING"}."""
    return {job: state for job, (state, _) in queue_listing(folder).items()}


def queue_listing(folder: Path) -> dict[str, tuple[str, int]]:
    """{"<array>_<task>": (state, times SLURM has requeued it)} for this sweep's tasks still in the queue; the count
    includes requeues made from outside (`scontrol requeue`, a preemption), which no task of ours has seen yet."""
    arrays = [a["job"] for a in read_json(folder / "jobs.json").get("arrays", []) if a.get("job")]
    if not arrays or shutil.which("squeue") is None:
        return {}
    listed = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(arrays), "-O", "JobArrayID:|,State:|,RestartCnt"],
                            capture_output=True, text=True, timeout=60)
    if listed.returncode != 0 and "Invalid job id" not in listed.stderr:
        raise ConfigError(f"squeue failed: {listed.stderr.strip() or listed.returncode}")
    jobs = {}
    for line in listed.stdout.splitlines():
        job, state, restarts = (line.split("|") + ["", ""])[:3]
        jobs[job.strip()] = (state.strip(), int(restarts) if restarts.strip().isdigit() else 0)
    return jobs


def tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("      " + line for line in text[-lines:])


def run_states(experiment: Experiment, seed_count: int, root: Path, only: list[str] | None = None,
               queued: dict[str, tuple[str, int]] | None = None) -> list[tuple[Run, str]]:
    """Every run's state, from the queue (`queued`: a `queue_listing` taken before the files are read, or a fresh
    one) and its files: queued, running, requeued, done, failed (with its output's last lines), not submitted."""
    folder = sweep_folder(root, experiment)
    queued = queue_listing(folder) if queued is None else queued
    states = []
    for run in plan(experiment, seed_count, root, [], only):
        record = read_json(state_path(folder, run))
        job = record.get("job") or _submitted_job(folder, run)
        in_queue, restarts = queued.get(job or "", (None, 0))
        requeues = max(record.get("requeues", 0), restarts)
        again = f", requeued {requeues}x" if requeues else ""
        if is_complete(run.folder):
            state = f"done{again}"
        elif in_queue in ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING"):
            state = f"requeued {requeues}x, waiting (job {job})" if requeues else f"queued (job {job})"
        elif in_queue:
            attempt = f", attempt {record['attempts']}" if record.get("attempts", 0) > 1 else ""
            state = f"{'running' if in_queue == 'RUNNING' else in_queue.lower()} (job {job}{attempt}{again})"
        elif not job and run.folder.is_dir():
            saved = "from its last.ckpt" if RunFolder.at(run.folder).last.is_file() else "afresh"
            state = f"started here, not finished (`run` continues it {saved})"
        elif job and not record.get("attempts"):
            err = folder / "jobs" / job / f"{job}_0_log.err"
            said = tail(err)
            state = (f"not in the queue and never started its run (job {job}: cancelled?)"
                     + (f"; the end of {err}:\n{said}" if said.strip() else ""))
        elif job and record.get("state") == STOPPED:
            state = (f"stopped by SIGTERM (job {job}{again}) with its last.ckpt saved: the same `run` command "
                     f"resumes it")
        elif job:
            log = RunFolder.at(run.folder).output_log
            log = log if record.get("attempts") and log.is_file() else folder / "jobs" / job / f"{job}_0_log.err"
            state = (f"failed (job {job}, exit {record.get('exit')}, after {record.get('attempts', 0)} attempt(s), "
                     f"last state {record.get('state', 'unknown')}); the end of {log}:\n{tail(log)}")
        else:
            state = "not submitted"
        states.append((run, state))
    return states


def cancel(experiment: Experiment, root: Path) -> list[str]:
    """scancel every array of this sweep that still has tasks in the queue; returns the job ids cancelled."""
    require_slurm()
    folder = sweep_folder(root, experiment)
    arrays = sorted({job.split("_")[0] for job in queue_states(folder)})
    if arrays:
        subprocess.run(["scancel", *arrays], check=True, timeout=60)
    return arrays


def wait(experiment: Experiment, seed_count: int, root: Path, only: list[str] | None, every: float = 2.0,
         show: Callable[[str], None] = print) -> list[tuple[Run, str]]:
    """Follow the sweep until none of its runs is in the queue, printing each change of state.

    One `squeue` a round, taken before the runs' files are read: the round that finds the queue empty reads the
    files after the last task had left it, so the states it returns are final. (Asking the queue a second time
    after reading the files returned a task that ended in between as still running.)"""
    folder = sweep_folder(root, experiment)
    seen: dict[tuple[str, int], str] = {}
    while True:
        queued = queue_listing(folder)
        states = run_states(experiment, seed_count, root, only, queued)
        for run, state in states:
            first_line = state.splitlines()[0]
            if seen.get((run.variant, run.seed)) != first_line:
                seen[(run.variant, run.seed)] = first_line
                show(f"{run.variant} seed {run.seed}: {first_line}")
        if not queued:
            return states
        time.sleep(every)
