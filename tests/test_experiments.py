"""The experiment runner: definitions parse, sweeps run and resume, and the report is built from the logs."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import DEFAULT_CONFIG, ROOT

from mnist_cifar.cli.main import build
from mnist_cifar.errors import ConfigError
from mnist_cifar.experiments import definition
from mnist_cifar.experiments.__main__ import main as experiments_main
from mnist_cifar.experiments.logs import read_scalars

SWEEPS = [name for name in definition.available() if name != "architectures"]  # those are the shipped configs


def test_every_shipped_experiment_lists_variants_whose_configs_exist() -> None:
    for name in definition.available():
        experiment = definition.load(name)
        assert experiment.description and experiment.variants
        assert all(v.config.is_file() for v in experiment.variants), name


@pytest.mark.parametrize("name", SWEEPS)
def test_every_variant_of_every_experiment_builds(name: str) -> None:
    for variant in definition.load(name).variants:
        cli = build(variant.cli_args(), default_config=DEFAULT_CONFIG)
        for key, value in variant.args.items():
            if key.startswith("data.init_args."):
                assert cli.datamodule.hparams[key.rpartition(".")[2]] == value, (variant.name, key)


def test_the_fused_speedrun_variant_builds_a_fused_optimizer() -> None:
    variants = {v.name: v for v in definition.load("speedrun_cifar").variants}
    models = [build(variants[name].cli_args(), default_config=DEFAULT_CONFIG).model for name in ("as_shipped", "fused")]
    assert [model.optimizer(model.parameters()).defaults["fused"] for model in models] == [None, True]


def test_overrides_change_what_runs() -> None:
    variants = {v.name: v for v in definition.load("permuted_mnist").variants}
    fc = build(variants["fc_permuted"].cli_args(), default_config=DEFAULT_CONFIG)
    cnn = build(variants["cnn_normal"].cli_args(), default_config=DEFAULT_CONFIG)
    assert type(fc.model.net).__name__ == "FCNet" and fc.datamodule.permutation is not None
    assert type(cnn.model.net).__name__ == "SmallCNN" and cnn.datamodule.permutation is None
    assert fc.trainer.max_epochs == 5


TINY_EXPERIMENT = (
    "description: two LeNets\n"
    "target: 0.02\n"
    "config: configs/lenet_mnist.yaml\n"
    "args: {trainer.max_epochs: 2, data.init_args.val_size: 50, data.init_args.batch_size: 64, "
    "trainer.enable_progress_bar: false}\n"
    "variants:\n"
    "  relu: {}\n"
    "  sigmoid: {args: {model.net.init_args.activation: sigmoid}}\n"
)


@pytest.fixture()
def tiny_experiment(tmp_path: Path) -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_EXPERIMENT)
    return str(path)


@pytest.mark.slow
def test_sweep_runs_side_by_side_reports_and_resumes(tiny_experiment: str, mnist_dir: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "logs"
    experiments_main(["run", tiny_experiment, "--seeds", "2", "--root", str(root), "--data_dir", str(mnist_dir),
                      "--jobs", "2"])
    events = [line.split(" (")[0] for line in capsys.readouterr().out.splitlines() if line.startswith(("start", "end"))]
    assert events[:2] == ["start relu seed 42", "start sigmoid seed 42"]  # two processes at once
    assert len(events) == 8 and all(e.endswith(": ran") for e in events if e.startswith("end"))
    out = root / "experiments" / "tiny"
    for variant in ("relu", "sigmoid"):
        for seed in (42, 43):
            assert (out / variant / f"seed{seed}" / "config.yaml").is_file()
            assert "test/acc" in (out / variant / f"seed{seed}" / "output.log").read_text()
            assert json.loads((out / variant / f"seed{seed}" / "process.json").read_text())["process_seconds"] > 1
    with open(out / "results.csv") as file:
        rows = list(csv.DictReader(file))
    expected = [("relu", "42"), ("relu", "43"), ("sigmoid", "42"), ("sigmoid", "43")]
    assert sorted((r["variant"], r["seed"]) for r in rows) == expected
    assert all(0 <= float(r["test_acc"]) <= 1 and r["epochs"] == "2" and int(r["parameters"]) == 61_706 for r in rows)
    assert all(float(r["process_seconds"]) > float(r["fit_seconds"]) for r in rows)  # start-up and test included
    table = (out / "results.md").read_text()
    assert "| relu | 2 |" in table and "±" in table and (out / "tiny.png").stat().st_size > 1000
    assert "val ≥ 2 %: epochs, training s |" in table and " 1.0, " in table  # time to the target: the first epoch
    curves = list(csv.DictReader((out / "curves.csv").open()))
    assert sorted((r["variant"], r["seed"], r["epoch"]) for r in curves) == sorted(
        (v, s, e) for v, s in expected for e in ("1", "2"))  # every seed's every epoch
    assert all(float(r["train/loss"]) > 0 and 0 <= float(r["val/acc"]) <= 1 for r in curves)
    assert "tiny_curves.png" in table and (out / "tiny_curves.png").stat().st_size > 1000

    # A second run trains nothing but the run whose logs lack its test (as a killed run's do).
    (out / "sigmoid" / "seed43").rename(tmp_path / "kept")
    (out / "sigmoid" / "seed43").mkdir()
    (out / "sigmoid" / "seed43" / "leftover.txt").write_text("from a killed run")
    experiments_main(["run", tiny_experiment, "--seeds", "2", "--root", str(root), "--data_dir", str(mnist_dir)])
    printed = capsys.readouterr().out
    assert [line.split(" (")[0] for line in printed.splitlines() if line.startswith("start")] == ["start sigmoid seed 43"]
    assert not (out / "sigmoid" / "seed43" / "leftover.txt").exists()
    assert "relu seed 42: done before" in printed and "sigmoid seed 43: ran" in printed


def test_report_alone_rebuilds_from_logs_with_each_runs_calibration(tiny_experiment: str, mnist_dir: Path,
                                                                    tmp_path: Path) -> None:
    """The report is rebuilt from the logs alone, and gives each run's calibration beside its accuracy: ECE, NLL
    and Brier of the tested checkpoint, and ECE after temperature scaling, as the run logged them."""
    root = tmp_path / "logs"
    experiments_main(["run", tiny_experiment, "--seeds", "1", "--root", str(root), "--data_dir", str(mnist_dir),
                      "--only", "relu"])
    report_dir = tmp_path / "report"
    experiments_main(["report", tiny_experiment, "--root", str(root), "--report_dir", str(report_dir)])
    table = (report_dir / "results.md").read_text()
    assert "| relu | 1 |" in table and "sigmoid" not in table
    (row,) = csv.DictReader((report_dir / "results.csv").open())
    logged = {tag: values[-1][1] for tag, values in read_scalars(root / "experiments" / "tiny" / "relu" / "seed42").items()}
    for field, tag in (("test_ece", "test/ece"), ("test_nll", "test/nll"), ("test_brier", "test/brier"),
                       ("test_ece_calibrated", "test/ece_calibrated"), ("temperature", "test/temperature")):
        assert float(row[field]) == pytest.approx(logged[tag]), field
    assert 0 <= float(row["test_ece"]) <= 1 and float(row["temperature"]) > 0
    assert "| test ECE → with T |" in next(line for line in table.splitlines() if line.startswith("| variant |"))
    cell = f" {100 * float(row['test_ece']):.2f} % → {100 * float(row['test_ece_calibrated']):.2f} % |"
    assert cell in next(line for line in table.splitlines() if line.startswith("| relu |"))


@pytest.mark.slow  # kept out of the 5-minute default tier (2026-12-06: it was at 4:27-4:52)
def test_report_of_runs_without_a_validation_split(tiny_experiment: str, mnist_dir: Path, tmp_path: Path) -> None:
    """`--data.val_size 0` tests the last weights: the table says so instead of printing `nan %` and `0 / 0`."""
    root = tmp_path / "logs"
    experiments_main(["run", tiny_experiment, "--seeds", "1", "--root", str(root), "--data_dir", str(mnist_dir),
                      "--only", "relu", "--data.val_size=0"])
    table = (root / "experiments" / "tiny" / "results.md").read_text()
    assert "| no validation split | last / 2 |" in table and "nan" not in table
    row = next(line for line in table.splitlines() if line.startswith("| relu |"))
    assert row.endswith("| no validation split |")  # the time-to-target column too
    with open(root / "experiments" / "tiny" / "results.csv") as file:
        assert next(csv.DictReader(file))["epochs"] == "2"


@pytest.mark.slow
def test_a_failed_run_fails_the_sweep_by_name(tmp_path: Path, mnist_dir: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(TINY_EXPERIMENT.replace("sigmoid: {args: {", "sigmoid: {args: {data.init_args.val_size: -3, "))
    with pytest.raises(SystemExit) as exit_info:
        experiments_main(["run", str(path), "--seeds", "1", "--root", str(tmp_path / "logs"), "--data_dir",
                          str(mnist_dir), "--trainer.max_epochs=1"])
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert "relu seed 42: ran" in captured.out
    assert "1 run(s) did not finish: sigmoid seed 42 (failed (exit 2)" in captured.err


@pytest.mark.slow
def test_ctrl_c_stops_the_whole_sweep(tiny_experiment: str, mnist_dir: Path, tmp_path: Path) -> None:
    runner_process = subprocess.Popen(
        [sys.executable, "-m", "mnist_cifar.experiments", "run", tiny_experiment, "--seeds", "3", "--root",
         str(tmp_path / "logs"), "--data_dir", str(mnist_dir), "--trainer.max_epochs=1000", "--model.scheduler=null"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    first = runner_process.stdout.readline()
    assert first.startswith("start relu seed 42 (pid ")
    child = int(first.split("(pid ")[1].split(")")[0])
    config = tmp_path / "logs" / "experiments" / "tiny" / "relu" / "seed42" / "config.yaml"
    deadline = time.monotonic() + 120
    while not config.is_file() and time.monotonic() < deadline:  # written when fit starts
        time.sleep(0.2)
    time.sleep(1)
    runner_process.send_signal(signal.SIGINT)  # to the runner alone, as a signal from another process would be
    out, err = runner_process.communicate(timeout=120)
    assert runner_process.returncode == 130
    assert "start" not in out  # nothing else was started
    assert "stopped (SIGINT)" in err and "Traceback" not in err
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # the run in flight is gone too
    last = config.parent / "checkpoints" / "last.ckpt"  # it saved where it stopped, and the next run resumes there
    epoch = torch.load(last, weights_only=True)["epoch"]
    again = subprocess.run(
        [sys.executable, "-m", "mnist_cifar.experiments", "run", tiny_experiment, "--seeds", "1", "--only", "relu",
         "--root", str(tmp_path / "logs"), "--data_dir", str(mnist_dir), f"--trainer.max_epochs={epoch + 2}",
         "--model.scheduler=null"],  # a schedule that does not depend on max_epochs: the resume may add epochs
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.startswith("resume relu seed 42") and "relu seed 42: ran" in again.stdout


def test_unknown_key_in_an_experiment_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(TINY_EXPERIMENT.replace("sigmoid: {args:", "sigmoid: {arsg:"))
    with pytest.raises(SystemExit) as exit_info:
        experiments_main(["run", str(path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "variant 'sigmoid'" in err and "arsg" in err


def test_unknown_experiment_is_named(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        experiments_main(["report", "no_such_thing"])
    assert exit_info.value.code == 2 and "no_such_thing" in capsys.readouterr().err


@pytest.mark.parametrize("spec,says", [
    ("description: x\nconfig: configs/lenet_mnist.yaml\n", "has no variants"),
    ("description: x\nvariants:\n  a: {}\n", "has no config"),
    ("description: x\ntarget: 99\nconfig: configs/lenet_mnist.yaml\nvariants:\n  a: {}\n", "target must be"),
], ids=["no-variants", "no-config", "bad-target"])
def test_a_broken_experiment_file_is_named(spec: str, says: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(spec)
    with pytest.raises(SystemExit) as exit_info:
        experiments_main(["run", str(path)])
    assert exit_info.value.code == 2 and says in capsys.readouterr().err


def test_jobs_below_one_is_refused(tiny_experiment: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        experiments_main(["run", tiny_experiment, "--jobs", "0"])
    assert exit_info.value.code == 2 and "--jobs must be at least 1" in capsys.readouterr().err


def test_an_unknown_only_variant_is_refused_by_name(tiny_experiment: str, capsys: pytest.CaptureFixture) -> None:
    """A typo in --only used to run nothing and exit 0, which reads like a finished sweep."""
    with pytest.raises(SystemExit) as exit_info:
        experiments_main(["run", tiny_experiment, "--only", "relu", "rleu"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "rleu" in err and "relu, sigmoid" in err


@pytest.mark.slow
def test_a_killed_runner_takes_its_run_along_and_a_second_runner_keeps_off(tiny_experiment: str, mnist_dir: Path,
                                                                           tmp_path: Path) -> None:
    """kill -9 of the runner stops its run (which saves last.ckpt); while a run is alive another runner skips it and
    says so; `run` again resumes it, and its process.json holds both processes' wall times."""
    command = [sys.executable, "-m", "mnist_cifar.experiments", "run", tiny_experiment, "--seeds", "1", "--only",
               "relu", "--root", str(tmp_path / "logs"), "--data_dir", str(mnist_dir), "--model.scheduler=null"]
    runner_process = subprocess.Popen([*command, "--trainer.max_epochs=1000"], stdout=subprocess.PIPE, text=True,
                                      cwd=ROOT)
    first = runner_process.stdout.readline()
    child = int(first.split("(pid ")[1].split(")")[0])
    run_dir = tmp_path / "logs" / "experiments" / "tiny" / "relu" / "seed42"
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoints" / "last.ckpt").is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    started = time.monotonic()

    second = subprocess.run([*command, "--trainer.max_epochs=1000"], capture_output=True, text=True, cwd=ROOT,
                            timeout=120)
    assert second.returncode == 0 and "skip relu seed 42: another process is running it" in second.stdout
    os.kill(child, 0)  # the first run was left alone

    runner_process.kill()  # SIGKILL: the runner cannot pass anything on
    runner_process.wait()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the run outlived its killed runner")
    first_attempt = json.loads((run_dir / "process.json").read_text())["process_seconds"]
    assert first_attempt > time.monotonic() - started  # it recorded its own time, though its runner was gone
    epoch = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"]

    again = subprocess.run([*command, f"--trainer.max_epochs={epoch + 2}"], capture_output=True, text=True, cwd=ROOT,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.startswith("resume relu seed 42") and "relu seed 42: ran" in again.stdout
    assert json.loads((run_dir / "process.json").read_text())["process_seconds"] > first_attempt + 1


@pytest.mark.parametrize("spec, overrides, says", [
    ({"colours": 2}, {}, "unknown key(s) colours"),
    ({}, {"time": "soon"}, "give minutes (90) or [D-]HH:MM[:SS]"),
    ({}, {"cpus_per_run": 0}, "cpus_per_run must be at least 1"),
], ids=["unknown-key", "bad-time", "no-cpus"])
def test_bad_slurm_resources_are_refused_by_name(spec: dict, overrides: dict, says: str) -> None:
    from mnist_cifar.experiments.slurm import resources

    with pytest.raises(ConfigError, match=re.escape(says)):
        resources(spec, overrides)


def test_slurm_times_are_minutes() -> None:
    from mnist_cifar.experiments.slurm import resources

    assert [resources({"time": t}, {}).minutes() for t in ("90", "1:30", "1:30:01", "2-00:00:00")] == [90, 90, 91, 2880]


def test_waiting_on_slurm_ends_with_what_the_files_say_once_the_queue_is_empty(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A task that ends between two looks at the queue is reported as it ended (failed here), not as still running:
    `run --wait` once returned "did not finish: ... running (attempt 2)" for a run that had failed its retries."""
    from mnist_cifar.experiments import slurm

    experiment = definition.load("permuted_mnist")
    run = slurm.plan(experiment, 1, tmp_path, [], None)[0]
    folder, job = slurm.sweep_folder(tmp_path, experiment), "7_0"
    slurm.write_json(folder / "jobs.json", {"arrays": [{"job": "7", "runs": {job: [run.variant, run.seed]}}]})
    slurm.write_json(slurm.state_path(folder, run), {"job": job, "state": "running", "attempts": 2})
    looks = []

    def queue(_: Path) -> dict[str, tuple[str, int]]:  # the task fails its last attempt after the first look
        looks.append(len(looks))
        if len(looks) == 1:
            return {job: ("RUNNING", 0)}
        slurm.write_json(slurm.state_path(folder, run), {"job": job, "state": "failed", "attempts": 2, "exit": 2})
        return {}

    monkeypatch.setattr(slurm, "queue_listing", queue)
    shown: list[str] = []
    ((_, state),) = slurm.wait(experiment, 1, tmp_path, [run.variant], every=0, show=shown.append)
    assert state.startswith("failed (job 7_0, exit 2, after 2 attempt(s)"), state
    assert shown[0].endswith("running (job 7_0, attempt 2)") and shown[-1].split(": ", 1)[1].startswith("failed")


def test_status_and_list_import_neither_torch_nor_lightning(tmp_path: Path) -> None:
    """Commands that train nothing start in a fraction of a second (4.1 s before the run-record reader moved out of
    the Lightning logger's module): they read files and ask SLURM, nothing more."""
    code = ("import sys; from mnist_cifar.experiments.__main__ import main; "
            f"main(['status', 'permuted_mnist', '--root', {str(tmp_path)!r}]); main(['list']); "
            "heavy = sorted(m for m in ('torch', 'lightning', 'tensorboard', 'optuna') if m in sys.modules); "
            "assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "not submitted" in result.stdout


def test_curve_bands_are_the_mean_and_std_over_seeds_at_each_epoch(tmp_path: Path) -> None:
    from mnist_cifar.experiments.report import CURVE_FIELDS, curve_bands, plot_curves, read_curve_rows

    rows = [{"variant": "a", "seed": 42, "epoch": 1, "train/loss": 2.0, "val/loss": 1.0, "val/acc": 0.5},
            {"variant": "a", "seed": 43, "epoch": 1, "train/loss": 4.0, "val/loss": 3.0, "val/acc": 0.7},
            {"variant": "a", "seed": 42, "epoch": 2, "train/loss": 1.0, "val/loss": "", "val/acc": 0.6},
            {"variant": "b", "seed": 42, "epoch": 1, "train/loss": 9.0, "val/loss": 9.0, "val/acc": 0.1}]
    path = tmp_path / "curves.csv"
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=CURVE_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    again = read_curve_rows(path)
    epochs, mean, std = curve_bands(again, "a", "train/loss")
    assert epochs == [1, 2] and mean == [3.0, 1.0] and std == [pytest.approx(2 ** 0.5), 0.0]  # sample std of 2, 4
    assert curve_bands(again, "a", "val/loss")[0] == [1]  # an epoch without the metric is no point, not a zero
    plot_curves(again, ["a", "b", "not run"], "two variants", tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 1000
