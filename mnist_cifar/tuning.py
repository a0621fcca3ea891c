"""The callback that connects a `fit` run to its Optuna trial (`python -m mnist_cifar.experiments tune`).

The trial is rebuilt in the run's own process from the study's storage (a journal file, or a database URL).
Optuna keeps no pruner in the storage, so the pruner is rebuilt here from the study file's spec; every
validation's objective is reported as the trial's value at that epoch, and when the pruner says so the run
stops at that epoch's end (`trainer.should_stop`: the epoch's checkpoints are written, no exception) and writes
`pruned.json` in its folder, which the worker reads to tell the study the trial was pruned.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L

from mnist_cifar.loggers import run_dir

PRUNED_FILE = "pruned.json"


def open_storage(storage: str) -> Any:  # noqa: ANN401 (an optuna storage; optuna is optional)
    """A journal file (one machine, several processes) or an RDB URL such as postgresql://... (several machines)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if "://" in storage:
        return optuna.storages.RDBStorage(storage)
    return optuna.storages.JournalStorage(JournalFileBackend(storage))


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


def make_pruner(spec: dict[str, Any] | None) -> Any:  # noqa: ANN401
    """`{name: median, ...}` or `{name: hyperband, ...}`, the rest as the pruner's own arguments; none: no pruning."""
    import optuna

    spec = dict(spec or {"name": "none"})
    name = spec.pop("name", "median")
    pruners = {"median": optuna.pruners.MedianPruner, "hyperband": optuna.pruners.HyperbandPruner,
               "none": optuna.pruners.NopPruner}
    return pruners[name](**spec)


class ReportToOptuna(L.Callback):
    """Report `monitor` to Optuna trial `trial` of study `study` after every validation; stop when pruned.

    Args:
        storage: The study's storage: a journal file's path or a database URL.
        study: The study's name.
        trial: The trial's id in the storage.
        monitor: The metric reported, once per epoch (the study's objective).
        pruner: The study file's pruner spec (`{name: median, n_warmup_steps: 1}`).
    """

    def __init__(self, storage: str, study: str, trial: int, monitor: str = "val/acc",
                 pruner: dict[str, Any] | None = None) -> None:
        self.storage, self.study, self.trial_id, self.monitor, self.pruner = storage, study, trial, monitor, pruner
        self._trial: Any = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.is_global_zero and self._trial is None:
            import optuna

            study = optuna.load_study(study_name=self.study, storage=open_storage(self.storage),
                                      pruner=make_pruner(self.pruner))
            self._trial = optuna.trial.Trial(study, self.trial_id)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        prune = False
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.is_global_zero and self._trial is not None and value is not None:
            self._trial.report(float(value), step=trainer.current_epoch)
            prune = self._trial.should_prune()
        prune = trainer.strategy.broadcast(prune)
        if prune:
            folder = Path(run_dir(trainer))  # a collective: every rank asks, and only when they agree to stop
            if trainer.is_global_zero:
                (folder / PRUNED_FILE).write_text(json.dumps({"epoch": trainer.current_epoch, self.monitor: float(value)}))
            trainer.should_stop = True
