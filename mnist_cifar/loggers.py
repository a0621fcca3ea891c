"""Lightning's CSVLogger, made to continue a resumed run's `metrics.csv` instead of deleting it.

Lightning 2.6.6's CSV writer removes `metrics.csv` whenever its folder is not empty ("Previous log files in this
directory will be deleted"), so `fit --ckpt_path last` in the run's own folder kept only the epochs after the
resume. This one reads the existing header and appends (a new metric rewrites the file with the wider header, as
Lightning's writer does within one process).
"""

from __future__ import annotations

import csv

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class _ContinuingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = sorted(next(csv.reader(file), []))


class CSVLogger(LightningCSVLogger):
    """Lightning's CSVLogger (`metrics.csv` and `hparams.yaml` in the run folder), continuing the file of the run it
    resumes. Same arguments as `lightning.pytorch.loggers.CSVLogger`."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment
