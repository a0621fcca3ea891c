"""Loggers beyond TensorBoard: CSVLogger and a list of loggers work for fit, test, predict and `--ckpt_path last`,
and what reads results back (the runner, the report) reads the run's own logger-neutral record."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml
from conftest import DEFAULT_CONFIG, ROOT

from mnist_cifar.cli import ExperimentCLI, run
from mnist_cifar.experiments.logs import is_complete
from mnist_cifar.experiments.report import read_run

CNN = str(ROOT / "configs" / "cnn_mnist.yaml")  # no schedule: a resume may add epochs
QUIET = ["--data.val_size", "50", "--data.batch_size", "32", "--trainer.enable_progress_bar", "false"]


def cli(*args: str) -> ExperimentCLI:
    return run(list(args), default_config=DEFAULT_CONFIG)


def test_csv_logger_fits_tests_predicts_and_resumes_in_one_run(mnist_dir: Path, tmp_path: Path) -> None:
    csv_logger = ["--trainer.logger", "mnist_cifar.loggers.CSVLogger",
                  "--trainer.logger.init_args.save_dir", str(tmp_path / "logs")]
    fitted = cli("fit", "--config", CNN, "--data.data_dir", str(mnist_dir), *QUIET, *csv_logger,
                 "--trainer.logger.init_args.version", "seed42", "--trainer.max_epochs", "1")
    run_dir = Path(fitted.trainer.log_dir)
    assert run_dir == tmp_path / "logs" / "cnn_mnist" / "seed42"
    assert (run_dir / "config.yaml").is_file() and (run_dir / "provenance.json").is_file()
    with open(run_dir / "metrics.csv") as file:
        columns = next(csv.reader(file))
    assert {"test/acc", "val/acc", "train/loss", "run/fit_seconds"} <= set(columns)
    assert {f"test/acc_{digit}" for digit in range(10)} <= set(columns)  # per-class figures reach every logger

    best = fitted.trainer.checkpoint_callback.best_model_path
    tested = cli("test", "--ckpt_path", best, "--data.data_dir", str(mnist_dir), *csv_logger)
    assert tested.trainer.callback_metrics["test/acc"].item() == pytest.approx(
        fitted.trainer.callback_metrics["test/acc"].item())
    predicted = cli("predict", "--ckpt_path", best, "--data.data_dir", str(mnist_dir), *csv_logger)
    assert (Path(predicted.trainer.log_dir) / "predictions.csv").is_file()

    resumed = cli("fit", "--config", CNN, "--data.data_dir", str(mnist_dir), *QUIET, *csv_logger,
                  "--trainer.logger.init_args.version", "seed42", "--trainer.max_epochs", "2", "--ckpt_path", "last")
    assert Path(resumed.trainer.log_dir) == run_dir and resumed.trainer.current_epoch == 2
    result = read_run(run_dir, "cnn")  # the report reads the run's record, not TensorBoard files
    assert result is not None and result.epochs == 2 and is_complete(run_dir)
    with open(run_dir / "metrics.csv") as file:
        assert {row["epoch"] for row in csv.DictReader(file) if row.get("train/acc")} == {"0", "1"}  # continued
    assert not list(run_dir.glob("events.out.tfevents.*"))


def test_a_list_of_loggers_resumes_last_in_the_same_run(mnist_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "two_loggers.yaml"
    config.write_text(yaml.safe_dump({"trainer": {"logger": [
        {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
         "init_args": {"save_dir": str(tmp_path / "logs"), "name": "listed"}},
        {"class_path": "mnist_cifar.loggers.CSVLogger",
         "init_args": {"save_dir": str(tmp_path / "logs"), "name": "listed"}},
    ]}}))
    base = ["fit", "--config", CNN, "--config", str(config), "--data.data_dir", str(mnist_dir), *QUIET]
    first = cli(*base, "--trainer.max_epochs", "1")
    run_dir = Path(first.trainer.log_dir)
    resumed = cli(*base, "--trainer.max_epochs", "2", "--ckpt_path", "last")
    assert Path(resumed.trainer.log_dir) == run_dir and resumed.trainer.current_epoch == 2
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["version_0"]  # no second version started afresh
    with open(run_dir / "metrics.csv") as file:
        epochs = {row["epoch"] for row in csv.DictReader(file) if row.get("train/acc")}
    assert epochs == {"0", "1"}
    assert list(run_dir.glob("events.out.tfevents.*")) and (run_dir / "resume_1.yaml").is_file()
