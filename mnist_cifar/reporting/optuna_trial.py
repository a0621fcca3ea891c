"""The callback that connects a `fit` run to its Optuna trial (`python -m mnist_cifar.experiments tune`).

The trial is rebuilt in the run's own process from the study's storage (a journal file, or a database URL).
Optuna keeps no pruner in the storage, so the pruner is rebuilt here from the study file's spec; every
validation's objective is reported as the trial's value at that epoch, and when the pruner says so the run
stops at that epoch's end (`trainer.should_stop`: the epoch's checkpoints are written, no exception) and writes
`pruned.json` in its folder, which the worker reads to tell the study the trial was pruned.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L

from mnist_cifar.runs.folder import run_dir

PRUNED_FILE = "pruned.json"


def open_storage(storage: str) -> Any:  # noqa: ANN401 (an optuna storage; optuna is optional)
    """A journal file (one machine, several processes) or an RDB URL such as postgresql://... (several machines)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if "://" in storage:
        return optuna.storages.RDBStorage(storage)
    return optuna.storages.JournalStorage(JournalFileBackend(storage))


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
