"""The experiment runner: definitions parse, sweeps run and resume, and the report is built from the logs."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import DEFAULT_CONFIG

from mnist_cifar.cli import build
from mnist_cifar.experiments import definition, runner
from mnist_cifar.experiments.__main__ import main as experiments_main

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


def test_overrides_change_what_runs() -> None:
    variants = {v.name: v for v in definition.load("permuted_mnist").variants}
    fc = build(variants["fc_permuted"].cli_args(), default_config=DEFAULT_CONFIG)
    cnn = build(variants["cnn_normal"].cli_args(), default_config=DEFAULT_CONFIG)
    assert type(fc.model.net).__name__ == "FCNet" and fc.datamodule.permutation is not None
    assert type(cnn.model.net).__name__ == "SmallCNN" and cnn.datamodule.permutation is None
    assert fc.trainer.max_epochs == 5


@pytest.fixture()
def tiny_experiment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    folder = tmp_path / "experiments"
    folder.mkdir()
    (folder / "tiny.yaml").write_text(
        "description: two LeNets\n"
        "config: configs/lenet_mnist.yaml\n"
        "args: {trainer.max_epochs: 2, data.init_args.val_size: 50, data.init_args.batch_size: 64}\n"
        "variants:\n"
        "  relu: {}\n"
        "  sigmoid: {args: {model.net.init_args.activation: sigmoid}}\n"
    )
    monkeypatch.setattr(definition, "EXPERIMENTS_DIR", folder)
    return "tiny"


def test_sweep_runs_every_seed_reports_and_resumes(tiny_experiment: str, mnist_dir: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "logs"
    experiments_main(["run", tiny_experiment, "--seeds", "2", "--root", str(root), "--data_dir", str(mnist_dir)])
    out = root / "experiments" / tiny_experiment
    for variant in ("relu", "sigmoid"):
        for seed in (42, 43):
            assert (out / variant / f"seed{seed}" / "config.yaml").is_file()
    with open(out / "results.csv") as file:
        rows = list(csv.DictReader(file))
    assert sorted((r["variant"], r["seed"]) for r in rows) == [("relu", "42"), ("relu", "43"), ("sigmoid", "42"), ("sigmoid", "43")]
    assert all(0 <= float(r["test_acc"]) <= 1 and r["epochs"] == "2" and int(r["parameters"]) == 61_706 for r in rows)
    table = (out / "results.md").read_text()
    assert "| relu | 2 |" in table and "±" in table and (out / f"{tiny_experiment}.png").stat().st_size > 1000

    # A second run trains nothing; an interrupted run (no test/acc in its logs) is redone from scratch.
    (out / "sigmoid" / "seed43").rename(tmp_path / "kept")
    (out / "sigmoid" / "seed43").mkdir()
    (out / "sigmoid" / "seed43" / "leftover.txt").write_text("from a killed run")
    started = []
    real_run = runner.run
    monkeypatch.setattr(runner, "run", lambda args, **kw: started.append(args) or real_run(args, **kw))
    capsys.readouterr()
    experiments_main(["run", tiny_experiment, "--seeds", "2", "--root", str(root), "--data_dir", str(mnist_dir)])
    assert len(started) == 1 and "--seed_everything=43" in started[0] and "--trainer.logger.init_args.name=sigmoid" in started[0]
    assert not (out / "sigmoid" / "seed43" / "leftover.txt").exists()
    assert "relu seed 42: done before" in capsys.readouterr().out


def test_report_alone_rebuilds_from_logs(tiny_experiment: str, mnist_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "logs"
    experiments_main(["run", tiny_experiment, "--seeds", "1", "--root", str(root), "--data_dir", str(mnist_dir),
                      "--only", "relu"])
    report_dir = tmp_path / "report"
    experiments_main(["report", tiny_experiment, "--root", str(root), "--report_dir", str(report_dir)])
    assert "| relu | 1 |" in (report_dir / "results.md").read_text()
    assert "sigmoid" not in (report_dir / "results.md").read_text()


def test_unknown_experiment_is_named(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        experiments_main(["report", "no_such_thing"])
    assert exit_info.value.code == 2 and "no_such_thing" in capsys.readouterr().err
