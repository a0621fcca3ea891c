"""Every use of a framework's private name, in one place: the likeliest thing a new release breaks.

Each entry says why the public API does not do it, and the version it was read in (lightning 2.6.6,
jsonargparse 4.53, optuna 5.1, 2026-12). `tests/test_internals.py` checks that every name below still exists where it
is read, naming it, so an upgrade that moves one fails there, loudly, and not deep inside a run.
pyproject.toml pins lightning below its next minor for the same reason.

Private names that are *overridden* rather than called (a subclass's hook) are listed in `OVERRIDDEN` and checked
the same way: `LightningCLI._parse_ckpt_path` (cli.py), `ModelCheckpoint._generate_state_key` (resume.py),
`ExperimentWriter._check_log_dir_exists` (loggers.py).
"""

from __future__ import annotations

from typing import Any

# (module, attribute path) of every private name this project reads or overrides; checked by the tests.
READ = (
    ("lightning.fabric.utilities.logger", "_convert_params"),
    ("lightning.fabric.utilities.logger", "_flatten_dict"),
    ("lightning.pytorch.loggers.mlflow", "_MLFLOW_AVAILABLE"),
    ("optuna.trial", "FrozenTrial._trial_id"),
)
OVERRIDDEN = (
    ("lightning.pytorch.cli", "LightningCLI._parse_ckpt_path"),
    ("lightning.pytorch.callbacks", "ModelCheckpoint._generate_state_key"),
    ("lightning.fabric.loggers.csv_logs", "_ExperimentWriter._check_log_dir_exists"),
)


def flat_params(params: Any) -> dict[str, Any]:  # noqa: ANN401 (a dict or Namespace of hyperparameters)
    """Hyperparameters as one flat dict, as Lightning's own loggers flatten them for `log_hyperparams`.

    Lightning has no public flattening; its loggers use these two (lightning.fabric.utilities.logger, 2.6.6)."""
    from lightning.fabric.utilities.logger import _convert_params, _flatten_dict

    return _flatten_dict(_convert_params(params))


def mlflow_available() -> bool:
    """Whether mlflow imports, as Lightning's MLFlowLogger decides it (lightning.pytorch.loggers.mlflow, 2.6.6)."""
    from lightning.pytorch.loggers import mlflow

    return bool(mlflow._MLFLOW_AVAILABLE)


def trial_id(trial: Any) -> int:  # noqa: ANN401 (an optuna FrozenTrial)
    """A trial's storage id. `optuna.trial.Trial(study, trial_id)` (public) needs it to rebuild a trial in another
    process, and FrozenTrial exposes it only as `_trial_id` (optuna 5.1)."""
    return trial._trial_id


def batches_done_in_epoch(trainer: Any) -> int:  # noqa: ANN401 (a lightning Trainer)
    """Batches the fit loop has processed in the current epoch: the sampler position a checkpoint saves.

    No public Trainer property gives it (`fit_loop.epoch_loop.batch_progress`, lightning 2.6.6; the loops are public
    attributes but their progress counters are internal bookkeeping)."""
    return trainer.fit_loop.epoch_loop.batch_progress.current.processed


def shift_batches_done(trainer: Any, by: int) -> None:  # noqa: ANN401
    """Move the fit loop's batch counters by `by` (a resume with another batch size starts the rest of the epoch at
    another batch index); the loop ends the epoch when its counter reaches the epoch's batch count (2.6.6)."""
    progress = trainer.fit_loop.epoch_loop.batch_progress
    for counter in (progress.current, progress.total):
        for stage in ("ready", "started", "processed", "completed"):
            setattr(counter, stage, getattr(counter, stage) + by)


def batch_index(trainer: Any) -> int:  # noqa: ANN401
    """The index of the batch being trained in the current epoch (`fit_loop.epoch_loop.batch_idx`, 2.6.6)."""
    return trainer.fit_loop.epoch_loop.batch_idx
