"""A logger-neutral record of every run: `metrics.jsonl` in the run's folder, one line per logging call.

The experiment reports, the runner's "is this run done" and anything else that reads results back must not depend
on which logger the user chose (TensorBoard, CSV, a list of them). So the CLI adds this small logger after the
user's own: it receives exactly what they receive (every `self.log` value and every direct `log_metrics`) and
writes it, on rank zero, beside the first logger's files, as `{"step": N, "<metric>": value, ...}` lines.
"""

from __future__ import annotations

import json
import math
from argparse import Namespace
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

from mnist_cifar.runs.folder import RunFolder


class RunRecord(Logger):
    """Writes every logged metric to `<run folder>/metrics.jsonl`; the run folder is the first logger's `log_dir`."""

    def __init__(self, first: Logger) -> None:
        super().__init__()
        self.first = first

    @property
    def name(self) -> str | None:
        return self.first.name

    @property
    def version(self) -> int | str | None:
        return self.first.version

    @property
    def log_dir(self) -> str | None:
        return getattr(self.first, "log_dir", None)

    @property
    def save_dir(self) -> str | None:
        return self.first.save_dir

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.log_dir is None:
            return
        line = {"step": step, **{key: _plain(value) for key, value in metrics.items()}}
        folder = Path(self.log_dir)
        folder.mkdir(parents=True, exist_ok=True)
        with open(RunFolder.at(folder).metrics, "a") as file:
            file.write(json.dumps(line) + "\n")

    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """The hyperparameters are in the run's config.yaml already."""


def _plain(value: Any) -> float | None:
    number = float(value.item() if hasattr(value, "item") else value)
    return number if math.isfinite(number) else None
