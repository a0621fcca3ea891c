"""Loggers beyond TensorBoard: CSVLogger and a list of loggers work for fit, test, predict and `--ckpt_path last`,
and what reads results back (the runner, the report) reads the run's own logger-neutral record."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, cli

from mnist_cifar.experiments.logs import is_complete
from mnist_cifar.experiments.report import read_run

CNN = str(ROOT / "configs" / "cnn_mnist.yaml")  # no schedule: a resume may add epochs
QUIET = ["--data.val_size", "50", "--data.batch_size", "32", "--trainer.enable_progress_bar", "false"]



@pytest.mark.slow  # kept out of the 5-minute default tier (2026-12-06: it was at 4:27-4:52)
def test_csv_logger_fits_tests_predicts_and_resumes_in_one_run(mnist_dir: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    csv_logger = ["--trainer.logger", "mnist_cifar.reporting.loggers.CSVLogger",
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
    assert "CSVLogger takes no figures" in capsys.readouterr().err  # said once, in one line

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
        {"class_path": "mnist_cifar.reporting.loggers.CSVLogger",
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


@pytest.mark.slow  # kept out of the 5-minute default tier (2026-12-06: it was at 4:27-4:52)
def test_mlflow_logger_keeps_one_run_folder_and_one_mlflow_run(mnist_dir: Path, tmp_path: Path) -> None:
    """MLflow's store is shared by every run; the run folder (config, checkpoints, record) is the run's own, a resume
    continues the same MLflow run (with a changed batch size: MLflow refuses to change a logged parameter), and a
    test of its checkpoint is a new run beside it with the figures as artifacts."""
    from mlflow import MlflowClient

    logs = tmp_path / "logs"
    mlflow_logger = ["--trainer.logger", "mnist_cifar.reporting.loggers.MLFlowLogger",
                     "--trainer.logger.init_args.save_dir", str(logs)]
    base = ["fit", "--config", CNN, "--data.data_dir", str(mnist_dir), *QUIET, *mlflow_logger,
            "--trainer.logger.init_args.version", "seed42"]
    cli(*base, "--trainer.max_epochs", "1", "--test_after_fit", "false")
    run_dir = logs / "cnn_mnist" / "seed42"
    assert (run_dir / "config.yaml").is_file() and not (logs / "config.yaml").exists()
    resumed = cli(*base, "--trainer.max_epochs", "2", "--ckpt_path", "last", "--data.batch_size", "16")
    assert resumed.trainer.current_epoch == 2 and (run_dir / "resume_1.yaml").is_file()
    assert read_run(run_dir, "cnn").epochs == 2 and is_complete(run_dir)

    client = MlflowClient(f"sqlite:///{logs / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "cnn_mnist"]
    (fit_run,) = client.search_runs([experiment.experiment_id])
    assert fit_run.info.run_name == "seed42" and fit_run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(fit_run.info.run_id, "train/acc")] == [4, 14]  # one curve
    assert fit_run.data.params["batch_size"] == "32"  # the first value; the change is in resume_1.yaml
    assert {"test/acc", "test/acc_0"} <= set(fit_run.data.metrics)
    assert {a.path for a in client.list_artifacts(fit_run.info.run_id)} == {"samples", "test"}

    best = resumed.trainer.checkpoint_callback.best_model_path
    cli("test", "--ckpt_path", best, "--data.data_dir", str(mnist_dir), *mlflow_logger)
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
    assert len(runs) == 2 and runs[0].info.run_name == "version_0" and "test/acc_9" in runs[0].data.metrics
    assert "test/confusion_matrix" in {a.path for a in client.list_artifacts(runs[0].info.run_id, "test")}
    assert sorted(p.name for p in (logs / "cnn_mnist").iterdir()) == ["seed42", "version_0"]


def test_lightnings_own_mlflow_logger_is_refused_naming_ours(mnist_dir: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli("fit", "--config", CNN, "--data.data_dir", str(mnist_dir), "--trainer.logger",
            "lightning.pytorch.loggers.MLFlowLogger", "--trainer.logger.init_args.save_dir", str(tmp_path))
    assert exit_info.value.code == 2 and not list(tmp_path.iterdir())
    assert "Use --trainer.logger mnist_cifar.reporting.loggers.MLFlowLogger" in capsys.readouterr().err


def test_mlflow_logger_without_mlflow_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import mnist_cifar.reporting.loggers as loggers

    monkeypatch.setattr(loggers.internals, "mlflow_available", lambda: False)
    with pytest.raises(loggers.ConfigError, match=r"pip install -e '\.\[mlflow\]'"):
        loggers.MLFlowLogger()
