"""Hyperparameter search with Optuna: `python -m mnist_cifar.experiments tune <study.yaml>`.

A study file names a base config, fixed overrides, a search space over any config key, the objective (the best
`val/acc` over epochs by default: a test figure is never an objective, and trials are not tested), the direction,
a seeded sampler, a pruner and a budget:

    description: lr, weight decay and batch size of the notes' LeNet on CIFAR-10
    config: configs/lenet_cifar.yaml
    args: {trainer.max_epochs: 14}
    space:
      model.optimizer.init_args.lr: {float: [1.0e-4, 0.1], log: true}
      model.optimizer.init_args.weight_decay: {float: [1.0e-6, 0.01], log: true}
      data.init_args.batch_size: {categorical: [32, 64, 128]}
    objective: val/acc        # the best value over the run's epochs
    direction: maximize
    sampler: {name: tpe, seed: 0}                       # or random
    pruner: {name: median, n_startup_trials: 5, n_warmup_steps: 2}   # or hyperband, or none
    trials: 30                # finished (complete or pruned) trials the study stops at
    timeout: null             # or seconds: this worker asks for no new trial after that
    seed: 42                  # every trial's seed_everything

Each trial is an ordinary `python main.py fit` process in `<root>/studies/<study>/trials/trial<N>/` (so it can be
DDP, and its folder is a run like any other: config.yaml, checkpoints, TensorBoard events with its HParams row),
with `mnist_cifar.reporting.optuna_trial.ReportToOptuna` reporting the objective every epoch. The study lives in a journal file
(`<root>/studies/<study>/journal.log`) or in the database `--storage` names (PostgreSQL for several machines);
`--jobs N` workers, and the same command on other machines, share it. Ctrl-C or SIGTERM stops every trial in
flight at its current step (last.ckpt); the same command again resumes those trials where they stopped (a trial
is told to the study only when its run has ended), then goes on asking for new ones.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mnist_cifar.errors import ConfigError
from mnist_cifar.experiments.definition import overrides, shipped_path
from mnist_cifar.experiments.journal import cut_torn_journal
from mnist_cifar.experiments.launch import die_with_the_runner, launch_fit, lock_run
from mnist_cifar.experiments.logs import read_scalars
from mnist_cifar.experiments.runner import thread_args
from mnist_cifar.internals import trial_id
from mnist_cifar.moved import new_name
from mnist_cifar.reporting.optuna_trial import PRUNED_FILE, open_storage
from mnist_cifar.runs.folder import process_seconds
from mnist_cifar.runs.yaml_bounds import load_file

REPORT_TO_OPTUNA = "mnist_cifar.reporting.optuna_trial.ReportToOptuna"

STUDY_KEYS = {"description", "config", "args", "space", "objective", "direction", "sampler", "pruner", "trials",
              "timeout", "seed"}
KINDS = ("float", "int", "categorical")
MAX_FAILURES_IN_A_ROW = 3  # a worker stops after this many failed trials of its own in a row


@dataclass
class Study:
    name: str
    config: Path
    space: dict[str, dict[str, Any]]
    args: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    objective: str = "val/acc"
    direction: str = "maximize"
    sampler: dict[str, Any] = field(default_factory=lambda: {"name": "tpe", "seed": 0})
    pruner: dict[str, Any] = field(default_factory=lambda: {"name": "median"})
    trials: int = 20
    timeout: float | None = None
    seed: int = 42


def load(path: str) -> Study:
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"No study file {path}: give the path of a study .yaml (see mnist_cifar/experiments/study.py).")
    spec = load_file(file) or {}
    unknown = sorted(set(spec) - STUDY_KEYS)
    if unknown:
        raise ConfigError(f"{file} has unknown key(s) {', '.join(unknown)}; a study file may have "
                          f"{', '.join(sorted(STUDY_KEYS))}.")
    for key in ("config", "space"):
        if not spec.get(key):
            raise ConfigError(f"{file} has no {key}: a study needs a base config and a search space.")
    for key, domain in spec["space"].items():
        kinds = [kind for kind in KINDS if kind in (domain or {})]
        if len(kinds) != 1:
            raise ConfigError(f"{file}, space {key}: give exactly one of {', '.join(KINDS)}, e.g. "
                              f"{{float: [1.0e-4, 0.1], log: true}} or {{categorical: [32, 64]}}.")
    if spec.get("direction", "maximize") not in ("maximize", "minimize"):
        raise ConfigError(f"{file}: direction must be maximize or minimize, got {spec['direction']!r}.")
    if spec.get("objective", "val/acc").startswith("test/"):
        raise ConfigError(f"{file}: objective {spec['objective']!r} is a test figure; search on the validation "
                          f"split (e.g. val/acc) and test the chosen config once.")
    return Study(name=file.stem, config=shipped_path(spec.pop("config")), space=spec.pop("space"), **spec)


def distributions(study: Study) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    made = {}
    for key, domain in study.space.items():
        if "categorical" in domain:
            made[key] = CategoricalDistribution(domain["categorical"])
        else:
            kind = FloatDistribution if "float" in domain else IntDistribution
            low, high = domain["float" if "float" in domain else "int"]
            made[key] = kind(low, high, log=bool(domain.get("log", False)), step=domain.get("step"))
    return made


def open_study(study: Study, storage: str, seed_offset: int = 0) -> Any:  # noqa: ANN401 (an optuna.Study)
    import warnings

    import optuna

    from mnist_cifar.reporting.optuna_trial import make_pruner

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    spec = dict(study.sampler)
    name = spec.pop("name", "tpe")
    if spec.get("seed") is not None:
        spec["seed"] += seed_offset
    samplers = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
    if name not in samplers:
        raise ConfigError(f"study sampler {name!r}: use tpe or random.")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name=study.name, storage=open_storage(storage), direction=study.direction,
                               sampler=samplers[name](**spec), pruner=make_pruner(study.pruner), load_if_exists=True)


class Tuner:
    """The workers of one `tune` command: threads, each running one trial process at a time."""

    def __init__(self, study: Study, root: Path, storage: str | None, jobs: int, extra: list[str]) -> None:
        self.study, self.jobs, self.extra = study, jobs, extra
        self.folder = root / "studies" / study.name
        self.folder.mkdir(parents=True, exist_ok=True)
        self.storage = storage or str(self.folder / "journal.log")
        self.stopping: int | None = None
        self.children: set[subprocess.Popen] = set()
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.me = f"{socket.gethostname()}:{os.getpid()}"
        self.crashed: list[str] = []  # what ended a worker by an exception

    def run(self) -> None:
        if "://" not in self.storage:
            cut_torn_journal(Path(self.storage))
        # One study object, so one seeded sampler, for all of this command's workers (a sampler each would suggest
        # the same values to each); a later command, or another machine's, seeds its sampler past the trials so far.
        self.shared = open_study(self.study, self.storage)
        offset = len(self.shared.get_trials(deepcopy=False)) + (os.getpid() if "://" in self.storage else 0)
        if offset and self.study.sampler.get("seed") is not None:  # a database: other machines' commands too
            self.shared = open_study(self.study, self.storage, seed_offset=offset)
        previous = {s: signal.signal(s, self._stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            workers = [threading.Thread(target=self._work, daemon=True) for _ in range(self.jobs)]
            for worker in workers:
                worker.start()
            while any(worker.is_alive() for worker in workers):
                for worker in workers:
                    worker.join(timeout=0.2)
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def _stop(self, signal_number: int, frame: object) -> None:
        self.stopping = signal_number
        with self.lock:
            for child in self.children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)  # saves last.ckpt at its current step

    def _work(self) -> None:
        """Claim and run trials until the budget is spent. An exception in this worker (not a failed trial: an
        error of the tuner itself, or of the storage) marks the trial it was running FAIL and is kept, so that
        `tune` ends non-zero naming it instead of leaving the trial RUNNING."""
        study = self.shared
        failures = 0
        number: int | None = None
        try:
            while self.stopping is None and failures < MAX_FAILURES_IN_A_ROW:
                number = None
                claimed = self._claim(study)
                if claimed is None:
                    return
                number, params, lock = claimed
                state = self._run_trial(study, number, params, lock)
                failures = failures + 1 if state == "failed" else 0
        except Exception as error:  # noqa: BLE001 (reported by `tune` after every worker has ended)
            from optuna.trial import TrialState

            where = f"trial {number}" if number is not None else "claiming a trial"
            self.crashed.append(f"{where}: {type(error).__name__}: {error}")
            if number is not None:
                try:
                    self._tell(study, number, state=TrialState.FAIL)
                except Exception:  # noqa: BLE001 (the storage itself failing: the trial stays as it is)
                    pass

    def _claim(self, study: Any) -> tuple[int, dict[str, Any], int] | None:  # noqa: ANN401
        """An interrupted trial of this machine whose worker is gone, else a new one while the budget lasts."""
        import optuna
        from optuna.trial import TrialState

        with self.lock:
            trials = study.get_trials(deepcopy=False)
            for trial in trials:
                if trial.state == TrialState.RUNNING and self._orphan(trial.user_attrs.get("worker", "")):
                    lock = lock_run(self.trial_dir(trial.number))
                    if lock is not None:
                        optuna.trial.Trial(study, trial_id(trial)).set_user_attr("worker", self.me)
                        return trial.number, trial.params, lock
            counted = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)]
            timed_out = self.study.timeout is not None and time.monotonic() - self.started > self.study.timeout
            if len(counted) >= self.study.trials or timed_out:
                return None
            trial = study.ask(distributions(self.study))
            trial.set_user_attr("worker", self.me)
            lock = lock_run(self.trial_dir(trial.number))
            return trial.number, trial.params, lock

    def _orphan(self, worker: str) -> bool:
        host, _, pid = worker.rpartition(":")
        if host != socket.gethostname() or not pid.isdigit() or worker == self.me:
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def trial_dir(self, number: int) -> Path:
        return self.folder / "trials" / f"trial{number:04d}"

    def _command(self, trial_id: int, number: int, params: dict[str, Any]) -> list[str]:
        callback = {"class_path": REPORT_TO_OPTUNA,
                    "init_args": {"storage": self.storage, "study": self.study.name, "trial": trial_id,
                                  "monitor": self.study.objective, "pruner": self.study.pruner}}
        return ["fit", "--config", str(self.study.config), *overrides(self.study.args),
                *overrides(params), f"--seed_everything={self.study.seed}",
                f"--trainer.logger.init_args.save_dir={self.folder}", "--trainer.logger.init_args.name=trials",
                f"--trainer.logger.init_args.version=trial{number:04d}", "--test_after_fit=false",
                f"--trainer.callbacks+={json.dumps(callback)}", *thread_args(self.extra, self.jobs), *self.extra]

    def _tell(self, study: Any, number: int, *values: float, **state: Any) -> None:  # noqa: ANN401
        with self.lock:  # the workers share one study object
            study.tell(number, *values, **state)

    def _run_trial(self, study: Any, number: int, params: dict[str, Any], lock: int) -> str:  # noqa: ANN401
        from optuna.trial import TrialState

        folder = self.trial_dir(number)
        storage_id = trial_id(study.get_trials(deepcopy=False)[number])
        launched = launch_fit(folder, self._command(storage_id, number, params), lock,
                              preexec=die_with_the_runner(os.getpid()))
        child = launched.process
        with self.lock:
            self.children.add(child)
        print(f"{'resume' if launched.resume else 'start'} trial {number}: {params}", flush=True)
        code = child.wait()
        with self.lock:
            self.children.discard(child)
        os.close(lock)
        if self.stopping is not None:
            return "stopped"  # left RUNNING: the next `tune` resumes it from its last.ckpt
        if code != 0:
            self._tell(study, number, state=TrialState.FAIL)
            print(f"trial {number} failed (exit {code}); see {folder / 'output.log'}", flush=True)
            return "failed"
        value = best_value(folder, self.study)
        if (folder / PRUNED_FILE).is_file():
            self._tell(study, number, state=TrialState.PRUNED)
            print(f"trial {number} pruned at epoch {json.loads((folder / PRUNED_FILE).read_text())['epoch']}",
                  flush=True)
            return "pruned"
        if value is None:
            self._tell(study, number, state=TrialState.FAIL)
            return "failed"
        self._tell(study, number, value)
        print(f"trial {number}: {self.study.objective} {value:.4f}", flush=True)
        return "complete"


def best_value(folder: Path, study: Study) -> float | None:
    values = [value for _, value in read_scalars(folder).get(study.objective, [])]
    if not values:
        return None
    return max(values) if study.direction == "maximize" else min(values)


def write_outputs(study: Study, root: Path, storage: str | None) -> Path:
    """trials.csv, trials.md, best.yaml and the plots, in the study's folder; returns that folder."""
    from optuna.trial import TrialState

    folder = root / "studies" / study.name
    optuna_study = open_study(study, storage or str(folder / "journal.log"))
    trials = optuna_study.get_trials(deepcopy=False)
    keys = list(study.space)
    rows = []
    for trial in trials:
        run = folder / "trials" / f"trial{trial.number:04d}"
        epochs = len(read_scalars(run).get(study.objective, [])) if run.is_dir() else 0
        value = best_value(run, study) if run.is_dir() else None
        rows.append({"trial": trial.number, "state": trial.state.name.lower(),
                     **{key: trial.params.get(key, "") for key in keys},
                     study.objective: "" if value is None else f"{value:.4f}", "epochs": epochs,
                     "wall_seconds": f"{process_seconds(run):.0f}" if run.is_dir() else ""})
    with open(folder / "trials.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["trial", "state", *keys, study.objective, "epochs", "wall_seconds"])
        writer.writeheader()
        writer.writerows(rows)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = optuna_study.best_trial
        best_config = folder / "trials" / f"trial{best.number:04d}" / "config.yaml"
        if best_config.is_file():
            write_best_config(best_config, folder / "best.yaml", study)
        else:
            print(f"note: the best trial ({best.number}) ran elsewhere (another machine on the same storage, or a "
                  f"folder since removed): no {best_config} here, so no best.yaml was written.", file=sys.stderr)
    plots(optuna_study, folder)
    return folder


def write_best_config(trial_config: Path, target: Path, study: Study) -> None:
    """The best trial's complete config, as `python main.py fit --config best.yaml` runs it: its resolved
    config.yaml without the Optuna callback, logged as a new run of `<study>_best`, tested after fit."""
    config = load_file(trial_config)
    trainer = config.setdefault("trainer", {})
    trainer["callbacks"] = [c for c in trainer.get("callbacks") or []
                            if not (isinstance(c, dict) and new_name(str(c.get("class_path"))) == REPORT_TO_OPTUNA)]
    logger = trainer.get("logger")
    if isinstance(logger, dict) and isinstance(logger.get("init_args"), dict):
        logger["init_args"].update(save_dir="lightning_logs", name=f"{study.name}_best", version=None)
    config.pop("ckpt_path", None)
    config["test_after_fit"] = True
    target.write_text(yaml.safe_dump(config, sort_keys=False))


def plots(optuna_study: Any, folder: Path) -> None:  # noqa: ANN401
    """Optuna's history, parallel-coordinates and importance plots as PNGs (matplotlib; one line each that fails)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    for name, draw in (("history", optuna_plots.plot_optimization_history),
                       ("parallel_coordinates", optuna_plots.plot_parallel_coordinate),
                       ("importances", optuna_plots.plot_param_importances)):
        try:
            axes = draw(optuna_study)
            figure = (axes.flat[0] if hasattr(axes, "flat") else axes).get_figure()
            figure.savefig(folder / f"{name}.png", dpi=120, bbox_inches="tight")
            plt.close(figure)
        except Exception as error:  # noqa: BLE001 (a plot that cannot be drawn yet, e.g. too few trials)
            print(f"no {name}.png: {error}", flush=True)
