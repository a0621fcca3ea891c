"""The loggers: TensorBoard laid out for a reader, CSV and MLflow, each with a run folder.

`CSVLogger` is Lightning's, made to continue a resumed run's `metrics.csv` instead of deleting it.

Lightning 2.6.6's CSV writer removes `metrics.csv` whenever its folder is not empty ("Previous log files in this
directory will be deleted"), so `fit --ckpt_path last` in the run's own folder kept only the epochs after the
resume. This one reads the existing header and appends (a new metric rewrites the file with the wider header, as
Lightning's writer does within one process).
"""

from __future__ import annotations

import csv
import json
import os
from argparse import Namespace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import MLFlowLogger as LightningMLFlowLogger
from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only

from mnist_cifar import internals
from mnist_cifar.errors import ConfigError
from mnist_cifar.runs.folder import next_version


class _ContinuingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = sorted(next(csv.reader(file), []))


# TensorBoard orders chart groups (a tag's first path part) by name, numbers before letters (Time Series'
# `compareTagNames`, tensorboard/webapp/metrics/views/utils.ts): the curves get the first two places.
CURVE_GROUPS = {"train/": "1 train/", "val/": "2 val/"}
COUNTERS = {"epoch"}  # Lightning adds `epoch` to every logging call: a counter, not a curve


def tensorboard_tag(name: str) -> str:
    """The tag TensorBoard shows for a metric: `1 train/loss` for `train/loss`, `2 val/acc` for `val/acc`, else the name."""
    return next((shown + name[len(group):] for group, shown in CURVE_GROUPS.items() if name.startswith(group)), name)


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's TensorBoardLogger, laid out for the person reading TensorBoard.

    TensorBoard sorts chart groups by name, so with Lightning's names the dashboard opened on `epoch` (the counter
    Lightning adds to every logging call), then `hp/*`, `lr-*`, `run/*` and fifteen `test/*` cards before the first
    training curve. Here the curves come first, as `1 train/*` and `2 val/*` (names otherwise unchanged: TensorBoard's
    tag filter finds `val/acc`), and `epoch` is left out (the x axis is the step; `metrics.jsonl` keeps the epoch).
    Only TensorBoard's tags change: the other loggers, the callbacks and the report see `train/loss`, `val/acc`.
    """

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        shown = {tensorboard_tag(name): value for name, value in metrics.items() if name not in COUNTERS}
        if shown:
            super().log_metrics(shown, step)


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


RUN_ID_FILE = "mlflow_run.json"  # {tracking URI: run id}: the MLflow run that a resume of this folder continues


class MLFlowLogger(LightningMLFlowLogger):
    """MLflow tracking with the run folder every other logger here has: `<save_dir>/<name>/<version>/` holds the
    run's `config.yaml`, `checkpoints/`, `metrics.jsonl` and `provenance.json`, so `--ckpt_path last`, `test
    --ckpt_path` and the experiment runner work as with TensorBoard. The MLflow run is experiment `name`, run name
    `version`; a resume of the folder continues the same MLflow run (its id is kept in the folder's
    `mlflow_run.json`). Metrics, the hyperparameters and the figures (sample grid, confusion matrix, confident
    mistakes, as PNG artifacts) go to MLflow.

    Args:
        save_dir: The folder that holds the run folders (and, by default, the MLflow store).
        name: The experiment: the run folders' parent folder and the MLflow experiment's name.
        version: The run folder's name and the MLflow run's name; `None` takes the next free `version_N`.
        tracking_uri: Where MLflow keeps runs, e.g. `http://host:5000`. By default `$MLFLOW_TRACKING_URI`, else a
            SQLite database `<save_dir>/mlflow.db` with artifacts in `<save_dir>/mlartifacts` (mlflow 3 refuses its
            old file store unless `MLFLOW_ALLOW_FILE_STORE=true`; `file:` URIs still work with it).
        tags: MLflow tags of a new run.
        log_model: Lightning's `log_model` (upload checkpoints as artifacts: `True`, `"all"` or `False`).
        prefix: Put before every metric's name.
        artifact_location: Where a new experiment keeps its artifacts (the default store: `<save_dir>/mlartifacts`).
    """

    def __init__(self, save_dir: str = "lightning_logs", name: str = "default", version: int | str | None = None,
                 tracking_uri: str | None = None, tags: dict[str, Any] | None = None,
                 log_model: bool | Literal["all"] = False, prefix: str = "",
                 artifact_location: str | None = None) -> None:
        if not internals.mlflow_available():
            raise ConfigError("--trainer.logger mnist_cifar.reporting.loggers.MLFlowLogger needs MLflow, which is not "
                              "installed: pip install -e '.[mlflow]' (mlflow-skinny with SQLite support).")
        root = Path(save_dir).expanduser()
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root.resolve() / 'mlflow.db'}"
        if artifact_location is None and uri.startswith("sqlite:") and not tracking_uri:
            artifact_location = (root.resolve() / "mlartifacts").as_uri()
        super().__init__(experiment_name=name, tracking_uri=uri, tags=tags, log_model=log_model, prefix=prefix,
                         artifact_location=artifact_location)
        self._root, self._folder_name, self._version = root, name, version
        self._known_params: dict[str, str] = {}

    @property
    def save_dir(self) -> str:
        return str(self._root)

    @property
    def name(self) -> str:
        return self._folder_name

    @property
    def version(self) -> int | str:
        if self._version is None:
            self._version = next_version(self._root / self._folder_name)
        return self._version

    @property
    def log_dir(self) -> str:
        version = self.version if isinstance(self.version, str) else f"version_{self.version}"
        return str(self._root / self._folder_name / version)

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:  # noqa: ANN401 (an MlflowClient; mlflow is optional)
        if not self._initialized:
            self._open_run()
        return LightningMLFlowLogger.experiment.fget(self)

    def _open_run(self) -> None:
        """Continue the MLflow run this folder recorded for this store, or start one named after the folder."""
        from mlflow.exceptions import MlflowException

        self._root.mkdir(parents=True, exist_ok=True)
        record = Path(self.log_dir) / RUN_ID_FILE
        try:
            runs = json.loads(record.read_text()) if record.is_file() else {}
        except (OSError, ValueError):  # a damaged record: start a new MLflow run rather than fail the run
            runs = {}
        known = runs.get(self._tracking_uri) if isinstance(runs, dict) else None
        if isinstance(known, str) and known.isalnum():
            try:
                run = self._mlflow_client.get_run(known)
            except MlflowException:
                run = None
            if run is not None and run.info.lifecycle_stage != "deleted":
                self._run_id = known
                self._known_params = dict(run.data.params)
                self._mlflow_client.update_run(known, status="RUNNING")
        if self._run_id is None:
            self._run_name = Path(self.log_dir).name
        LightningMLFlowLogger.experiment.fget(self)
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({**(runs if isinstance(runs, dict) else {}), self._tracking_uri: self._run_id}))

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace) -> None:
        """Lightning's, except that a continued run logs only parameters it does not have: MLflow refuses to change
        a logged parameter, and a resume that changes a setting records it in the folder's `resume_<N>.yaml`."""
        _ = self.experiment
        flat = {key: value for key, value in internals.flat_params(params).items()
                if not key.startswith("_")}  # LightningCLI's bookkeeping such as `_instantiator`
        super().log_hyperparams({key: value for key, value in flat.items() if key not in self._known_params})
        self._known_params.update({key: str(value) for key, value in flat.items()})

    @rank_zero_only
    def log_image(self, tag: str, image: np.ndarray, step: int) -> None:
        """An RGB `(H, W, 3)` image as the artifact `<tag>/step_<step>.png` of the run."""
        self.experiment.log_image(self.run_id, image, artifact_file=f"{tag}/step_{step:07d}.png")
