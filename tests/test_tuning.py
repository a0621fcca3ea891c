"""Optuna studies (`python -m mnist_cifar.experiments tune`): a real study on tiny data with pruning, two workers
sharing its journal, stopped by SIGTERM and continued by the same command without a trial counted twice; its best
config runs with `fit`; a study on a real PostgreSQL server with two workers (skipped without one, failing under CI).
"""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from mnist_cifar.experiments.logs import read_scalars

optuna = pytest.importorskip("optuna", reason="the tune extra is not installed: pip install -e '.[tune]'")



TRIALS = 8  # as the issue asked: enough for the median pruner to prune, with 2 workers and a SIGTERM between
STUDY = {
    "description": "tiny study",
    "config": "configs/cnn_mnist.yaml",
    "args": {"trainer.max_epochs": 2, "data.init_args.val_size": 50, "trainer.enable_progress_bar": False},
    "space": {"model.optimizer.init_args.lr": {"float": [1.0e-5, 0.1], "log": True},
              "data.init_args.batch_size": {"categorical": [16, 32]}},
    "pruner": {"name": "median", "n_startup_trials": 2, "n_warmup_steps": 0},
    "sampler": {"name": "tpe", "seed": 0},
    "trials": TRIALS,
}


def tune(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mnist_cifar.experiments", "tune", *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def states(study_dir: Path) -> Counter:
    with open(study_dir / "trials.csv") as file:
        return Counter(row["state"] for row in csv.DictReader(file))


def journal(study_dir: Path):  # noqa: ANN201 (an optuna.Study)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(study_dir / "journal.log")))
    return optuna.load_study(study_name="tiny_study", storage=storage)


def wait_for_a_trial_in_flight_with_a_checkpoint(study_dir: Path) -> None:
    """A trial after the first two, RUNNING in the study, whose run has saved last.ckpt: stopped there, it must
    be resumed, not started again."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if (study_dir / "journal.log").is_file():
            for trial in journal(study_dir).get_trials(deepcopy=False):
                folder = study_dir / "trials" / f"trial{trial.number:04d}"
                if trial.number >= 2 and trial.state == optuna.trial.TrialState.RUNNING and (
                        folder / "checkpoints" / "last.ckpt").is_file():
                    return
        time.sleep(0.3)
    raise AssertionError("no trial reached its first checkpoint in 300 s")


@pytest.mark.slow
def test_a_study_prunes_shares_its_journal_survives_sigterm_and_gives_a_runnable_best_config(
        mnist_dir: Path, tmp_path: Path) -> None:
    spec = tmp_path / "tiny_study.yaml"
    spec.write_text(yaml.safe_dump(STUDY))
    args = [str(spec), "--root", str(tmp_path / "logs"), "--data_dir", str(mnist_dir), "--jobs", "2"]
    study_dir = tmp_path / "logs" / "studies" / "tiny_study"

    first = tune(*args, cwd=tmp_path)
    wait_for_a_trial_in_flight_with_a_checkpoint(study_dir)
    first.send_signal(signal.SIGTERM)
    output, _ = first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM, output[-3000:]
    running = [t.number for t in journal(study_dir).trials if t.state == optuna.trial.TrialState.RUNNING]
    assert running, output[-3000:]  # in flight when stopped: not counted as finished

    second = tune(*args, cwd=tmp_path)
    output, _ = second.communicate(timeout=600)
    assert second.returncode == 0, output[-3000:]
    assert any(f"resume trial {number}" in output for number in running), output  # from its last.ckpt
    counted = states(study_dir)
    assert counted.get("complete", 0) + counted.get("pruned", 0) == TRIALS and set(counted) <= {"complete", "pruned"}
    assert counted.get("pruned", 0) >= 1  # the median pruner stopped at least one trial early
    for trial in sorted(study_dir.glob("trials/trial*")):
        epochs = [step for step, _ in read_scalars(trial).get("val/acc", [])]
        assert len(epochs) == len(set(epochs))  # a resumed trial logged no epoch twice
        assert "test/acc" not in read_scalars(trial)  # trials are not tested: the test set is not searched
    assert (study_dir / "history.png").is_file() and (study_dir / "parallel_coordinates.png").is_file()

    best = yaml.safe_load((study_dir / "best.yaml").read_text())
    assert not any("ReportToOptuna" in str(c) for c in best["trainer"]["callbacks"])
    fitted = subprocess.run([sys.executable, str(ROOT / "main.py"), "fit", "--config", str(study_dir / "best.yaml"),
                             "--trainer.max_epochs", "1"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert fitted.returncode == 0, fitted.stderr[-3000:]
    assert list((tmp_path / "lightning_logs" / "tiny_study_best").glob("version_0/checkpoints/epoch*.ckpt"))


POSTGRES = os.environ.get("MNIST_CIFAR_TEST_POSTGRES")  # .ci/run exports what .ci/postgres.sh prints


@pytest.mark.cluster
def test_two_commands_share_a_study_on_postgresql(mnist_dir: Path, tmp_path: Path) -> None:
    """As two machines would: two `tune` commands on one PostgreSQL study finish its budget (a trial each) between
    them, neither running a trial the other has."""
    if not POSTGRES:
        if os.environ.get("CI"):
            pytest.fail("CI is set but MNIST_CIFAR_TEST_POSTGRES is not: .ci/run starts PostgreSQL (.ci/postgres.sh).")
        pytest.skip("no PostgreSQL here: run `sudo .ci/postgres.sh` and export MNIST_CIFAR_TEST_POSTGRES=<the URL it "
                    "prints> to run this test.")
    name = f"pg_study_{os.getpid()}"
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(yaml.safe_dump({**STUDY, "trials": 2, "pruner": {"name": "none"},
                                    "args": {**STUDY["args"], "trainer.max_epochs": 1}}))
    args = [str(spec), "--root", str(tmp_path / "logs"), "--data_dir", str(mnist_dir), "--storage", POSTGRES]
    workers = [tune(*args, cwd=tmp_path) for _ in range(2)]
    outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    study = optuna.load_study(study_name=name, storage=POSTGRES)
    try:
        finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert len(finished) == 2 and len({t.number for t in finished}) == 2
        assert all("start trial" in output for output in outputs)  # both commands ran trials
    finally:
        optuna.delete_study(study_name=name, storage=POSTGRES)


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "studies").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_study_file_loads_and_names_keys_its_config_has(path: Path) -> None:
    from mnist_cifar.cli.main import build
    from mnist_cifar.experiments.study import distributions, load

    study = load(str(path))
    assert distributions(study) and study.config.is_file()
    values = {key: domain.get("categorical", [None])[0] or domain.get("float", domain.get("int"))[0]
              for key, domain in study.space.items()}
    built = build(["--config", str(study.config), "--trainer.logger", "false",
                   *[f"--{key}={value}" for key, value in values.items()]], default_config=ROOT / "configs" / "default.yaml")
    assert built.datamodule.hparams.batch_size == values.get("data.init_args.batch_size", built.datamodule.hparams.batch_size)


@pytest.mark.parametrize("change, says", [
    ({"colour": "blue"}, "unknown key(s) colour"),
    ({"objective": "test/acc"}, "is a test figure"),
    ({"space": {"model.optimizer.init_args.lr": {"float": [1e-4, 1e-1], "categorical": [1]}}}, "exactly one of"),
    ({"direction": "up"}, "maximize or minimize"),
], ids=["unknown-key", "test-objective", "two-kinds", "direction"])
def test_a_bad_study_file_is_refused_naming_what_to_change(change: dict, says: str, tmp_path: Path) -> None:
    from mnist_cifar.errors import ConfigError
    from mnist_cifar.experiments.study import load

    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump({**STUDY, **change}))
    with pytest.raises(ConfigError, match=re.escape(says)):
        load(str(spec))


def _study_file(tmp_path: Path, trials: int) -> Path:
    path = tmp_path / "tiny_study.yaml"
    path.write_text(yaml.safe_dump({**STUDY, "config": str(ROOT / STUDY["config"]), "trials": trials}))
    return path


def test_a_torn_last_line_of_the_journal_is_cut_and_the_study_continues(tmp_path: Path) -> None:
    """A kill while Optuna appends leaves half a line, after which the study could never be opened again."""
    study_dir = tmp_path / "logs" / "studies" / "tiny_study"
    study_dir.mkdir(parents=True)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(study_dir / "journal.log")))
    study = optuna.create_study(study_name="tiny_study", storage=storage, direction="maximize")
    for value in (0.5, 0.7):
        trial = study.ask()
        trial.suggest_float("model.optimizer.init_args.lr", 1e-5, 0.1, log=True)
        trial.suggest_categorical("data.init_args.batch_size", [16, 32])
        study.tell(trial, value)
    whole = (study_dir / "journal.log").read_bytes()
    (study_dir / "journal.log").write_bytes(whole + b'{"op_code": 4, "worker_id": "x", "trial_')
    result = subprocess.run([sys.executable, "-m", "mnist_cifar.experiments", "tune", str(_study_file(tmp_path, 2)),
                             "--root", str(tmp_path / "logs")], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "torn line" in result.stderr
    repaired = (study_dir / "journal.log").read_bytes()
    assert repaired.startswith(whole) and b'"trial_' not in repaired[len(whole):]  # cut, then appended to as usual
    (kept,) = study_dir.glob("journal.log.torn-*")
    assert kept.read_bytes().endswith(b'"trial_')
    assert states(study_dir) == Counter({"complete": 2})
    assert len(journal(study_dir).trials) == 2


def test_a_worker_that_raises_fails_its_trial_and_tune_exits_non_zero(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture) -> None:
    import argparse

    from mnist_cifar.errors import exits_on_user_errors
    from mnist_cifar.experiments import study as studies
    from mnist_cifar.experiments.__main__ import tune_study

    def broken(self: studies.Tuner, study: object, number: int, params: dict, lock: int) -> str:
        os.close(lock)
        raise RuntimeError("the disk went away")
    monkeypatch.setattr(studies.Tuner, "_run_trial", broken)
    args = argparse.Namespace(study=str(_study_file(tmp_path, 3)), root=tmp_path / "logs", jobs=1, storage=None,
                              trials=None)
    with pytest.raises(SystemExit) as stopped, exits_on_user_errors():
        tune_study(args, [])
    err = capsys.readouterr().err
    assert stopped.value.code == 1 and "trial 0: RuntimeError: the disk went away" in err, err
    trials = journal(tmp_path / "logs" / "studies" / "tiny_study").trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL]
