"""Beyond accuracy: calibration figures checked against hand-computed values, a temperature that repairs an
over-confident model, and corrupted test sets that are deterministic, shape-preserving and refused by unknown name."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY, cli

from mnist_cifar.data import CIFAR10DataModule, MNISTDataModule
from mnist_cifar.data.corruptions import CORRUPTIONS, SEVERITIES, available, corrupt
from mnist_cifar.errors import ConfigError
from mnist_cifar.reporting.calibration import Scores, fit_temperature

LENET = str(ROOT / "configs" / "lenet_mnist.yaml")


class OneDevice:
    """A strategy's `reduce` on one process."""

    @staticmethod
    def reduce(tensor: torch.Tensor, reduce_op: str = "sum") -> torch.Tensor:
        return tensor


def test_ece_nll_and_brier_are_the_hand_computed_ones() -> None:
    # Top-class confidences 0.9 (right), 0.9 (wrong), 0.62 (right), 0.62 (right) over two classes.
    probabilities = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.38, 0.62], [0.38, 0.62]])
    labels = torch.tensor([0, 1, 1, 1])
    scores = Scores(num_classes=2, bins=15, device=torch.device("cpu"))
    scores.update(probabilities.log(), labels)
    figures = scores.compute(OneDevice())
    # Bin 13 (0.867-0.933): confidence 0.9, accuracy 0.5, half the images; bin 9 (0.6-0.667): 0.62 against 1.0.
    assert figures["ece"] == pytest.approx(0.5 * abs(0.9 - 0.5) + 0.5 * abs(0.62 - 1.0), abs=1e-6)
    assert figures["nll"] == pytest.approx(-(math.log(0.9) + math.log(0.1) + 2 * math.log(0.62)) / 4, abs=1e-6)
    brier = (2 * 0.1**2 + 2 * 0.9**2 + 2 * (2 * 0.38**2)) / 4  # each image: both classes' squared errors
    assert figures["brier"] == pytest.approx(brier, abs=1e-6)
    assert scores.bins[0].tolist().count(0) == 13  # two filled bins


def test_a_temperature_repairs_a_deliberately_over_confident_model() -> None:
    generator = torch.Generator().manual_seed(0)
    true_logits = torch.randn(20000, 10, generator=generator) * 1.5
    labels = torch.multinomial(true_logits.softmax(-1), 1, generator=generator).squeeze(1)  # calibrated by design
    over_confident = 4 * true_logits
    temperature = fit_temperature(over_confident[:10000], labels[:10000])  # fitted on one half ("validation")
    assert temperature == pytest.approx(4.0, rel=0.1)
    before, after = (Scores(10, 15, torch.device("cpu")) for _ in range(2))
    before.update(over_confident[10000:], labels[10000:])  # measured on the other ("test")
    after.update(over_confident[10000:] / temperature, labels[10000:])
    raw, calibrated = before.compute(OneDevice()), after.compute(OneDevice())
    assert raw["ece"] > 0.15 and calibrated["ece"] < 0.03 and calibrated["nll"] < raw["nll"]


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_each_corruption_is_deterministic_shape_preserving_and_grows_with_severity(name: str) -> None:
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    images[:, :, 8:24, 8:24] = 255  # structure for the blurs and the contrast to act on
    changes = []
    for severity in SEVERITIES:
        once, again = corrupt(images, name, severity), corrupt(images, name, severity)
        assert once.shape == images.shape and once.dtype == torch.uint8 and torch.equal(once, again)
        changes.append((once.float() - images.float()).abs().mean().item())
    assert changes[-1] > 0.5  # severity 5 visibly changes the images
    if name not in ("saturate", "jpeg_compression"):  # (saturate's scale is not monotone: 0.3, 0.1, 1.5, 2, 2.5)
        assert changes[-1] >= changes[0]
    gray = images[:, :1, :28, :28]
    if name in available(1):
        assert corrupt(gray, name, 3).shape == gray.shape


def test_an_unknown_corruption_or_severity_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"data.corruption must be one of gaussian_noise, .* or all"):
        MNISTDataModule(corruption="fog")
    with pytest.raises(ConfigError, match="saturate needs RGB images"):
        MNISTDataModule(corruption="saturate")
    with pytest.raises(ConfigError, match="data.severity 1-5"):
        CIFAR10DataModule(corruption="contrast", severity=6)
    assert len(CIFAR10DataModule().corruption_runs()) == 55 and len(MNISTDataModule().corruption_runs()) == 50


def test_a_corrupted_test_split_is_cached_and_rebuilt_when_damaged(mnist_dir: Path, tmp_path: Path) -> None:
    data = MNISTDataModule(data_dir=str(mnist_dir), corruption="gaussian_noise", severity=5,
                           cache_dir=str(tmp_path / "cache"))
    data.setup("test")
    first = data.test_set.images.clone()
    (cached,) = (tmp_path / "cache" / "corruptions").glob("*.pt")
    again = MNISTDataModule(data_dir=str(mnist_dir), corruption="gaussian_noise", severity=5,
                            cache_dir=str(tmp_path / "cache"))
    again.setup("test")
    assert torch.equal(again.test_set.images, first) and not torch.equal(first, data.stored_split("test")[0])
    cached.write_bytes(cached.read_bytes()[:-200])
    with pytest.warns(UserWarning, match="is damaged"):
        damaged = MNISTDataModule(data_dir=str(mnist_dir), corruption="gaussian_noise", severity=5,
                                  cache_dir=str(tmp_path / "cache"))
        damaged.setup("test")
    assert torch.equal(damaged.test_set.images, first)


@pytest.mark.slow
def test_every_test_logs_calibration_and_corruption_all_keeps_the_clean_figures(mnist_dir: Path) -> None:
    fitted = cli("fit", "--config", LENET, "--data.data_dir", str(mnist_dir), *TINY, "--trainer.max_epochs", "2")
    run = Path(fitted.trainer.log_dir)
    record = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = {key for line in record for key in line}
    assert {"test/ece", "test/nll", "test/brier", "test/temperature", "test/ece_calibrated"} <= logged
    assert (run / "reliability.png").stat().st_size > 5000
    clean = fitted.trainer.callback_metrics["test/acc"].item()

    best = fitted.trainer.checkpoint_callback.best_model_path
    tested = cli("test", "--ckpt_path", best, "--data.data_dir", str(mnist_dir), "--data.corruption", "all")
    folder = Path(tested.trainer.log_dir)
    rows = list(csv.DictReader((folder / "corruptions.csv").open()))
    assert len(rows) == 50 and {r["corruption"] for r in rows} == set(available(1))
    assert all(0 <= float(r["acc"]) <= 1 and float(r["ece"]) >= 0 for r in rows)
    test_acc = [line["test/acc"] for line in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines())
                if "test/acc" in line]
    assert test_acc == [pytest.approx(clean)]  # the clean test only: the corrupted ones went to corruptions.csv
    summary = {k: v for line in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines())
               for k, v in line.items() if k.startswith("corruption/")}
    assert summary["corruption/mean_acc"] == pytest.approx(sum(float(r["acc"]) for r in rows) / 50)
    assert summary["corruption/worst_acc"] == pytest.approx(min(float(r["acc"]) for r in rows))
    assert (folder / "corruption_examples.png").stat().st_size > 10_000  # 10 corruptions x (clean + 5 severities)


@pytest.mark.slow
def test_the_robustness_command_tests_every_run_once_and_reports_over_seeds(mnist_dir: Path, tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture) -> None:
    from mnist_cifar.experiments.__main__ import main as experiments_main

    experiment = tmp_path / "tiny.yaml"
    experiment.write_text("description: one LeNet\nconfig: configs/lenet_mnist.yaml\n"
                          "args: {trainer.max_epochs: 1, data.init_args.val_size: 50, data.init_args.batch_size: 64, "
                          "trainer.enable_progress_bar: false}\nvariants:\n  relu: {}\n")
    root = tmp_path / "logs"
    common = ["--root", str(root), "--seeds", "2", "--data_dir", str(mnist_dir)]
    experiments_main(["run", str(experiment), *common])
    experiments_main(["robustness", str(experiment), *common])
    out = capsys.readouterr().out
    assert out.count("on every corruption") == 2
    report = (root / "experiments" / "tiny" / "robustness.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| relu |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1] == "2" and "±" in cells[2] and "±" in cells[3] and cells[4].split(" (")[0] in available(1)
    rows = list(csv.DictReader((root / "experiments" / "tiny" / "corruptions.csv").open()))
    assert len(rows) == 100 and {r["seed"] for r in rows} == {"42", "43"}
    assert "Accuracy per corruption" in report and "| contrast | " in report.split("Accuracy per corruption")[1]
    experiments_main(["robustness", str(experiment), *common])  # done already: nothing is tested again
    assert "on every corruption" not in capsys.readouterr().out


def test_the_per_corruption_table_averages_severities_then_seeds() -> None:
    from mnist_cifar.experiments.definition import Experiment, Variant
    from mnist_cifar.experiments.robustness import per_corruption_table

    experiment = Experiment(name="tiny", description="", variants=[Variant("a", ROOT / "configs" / "lenet_mnist.yaml"),
                                                                   Variant("b", ROOT / "configs" / "lenet_mnist.yaml")])
    accuracy = {("a", 42, "blur"): (0.9, 0.7), ("a", 43, "blur"): (0.7, 0.5), ("a", 42, "noise"): (0.5, 0.5),
                ("a", 43, "noise"): (0.5, 0.5), ("b", 42, "blur"): (0.8, 0.8)}  # b: one seed, no noise
    rows = [{"variant": v, "seed": seed, "corruption": c, "severity": str(severity), "acc": str(acc)}
            for (v, seed, c), pair in accuracy.items() for severity, acc in enumerate(pair, 1)]
    lines = per_corruption_table(experiment, rows).splitlines()
    assert lines[0] == "| corruption | a | b |"
    assert lines[2:] == ["| blur | 70.00 ± 14.14 % | 80.00 % |", "| noise | 50.00 ± 0.00 % | — |"]


def test_a_checkpoint_does_not_choose_the_corruption_it_is_tested_on(mnist_dir: Path) -> None:
    """A run fitted with --data.corruption (its after-fit test corrupted) saves that setting in its checkpoint;
    `test --ckpt_path` still tests the clean split unless the user types a corruption."""
    fitted = cli("fit", "--config", LENET, "--data.data_dir", str(mnist_dir), *TINY, "--trainer.max_epochs", "1",
                 "--data.corruption", "contrast", "--data.severity", "5")
    best = fitted.trainer.checkpoint_callback.best_model_path
    assert torch.load(best, weights_only=True)["datamodule_hyper_parameters"]["corruption"] == "contrast"
    tested = cli("test", "--ckpt_path", best, "--data.data_dir", str(mnist_dir))
    assert tested.datamodule.active_corruption is None
    assert torch.equal(tested.datamodule.test_set.images, tested.datamodule.stored_split("test")[0])
