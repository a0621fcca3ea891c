"""The TensorBoard callbacks: what a tiny fit + test writes, read back from its event files."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from conftest import ROOT, TINY, cli
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from torchvision.io import decode_png

from mnist_cifar.cli.main import ExperimentCLI
from mnist_cifar.data import CIFAR10DataModule
from mnist_cifar.models import CifarLeNet
from mnist_cifar.reporting import callbacks
from mnist_cifar.reporting.callbacks import AugmentedSamples, ConfidentMistakes, ConfusionMatrix, HParamsWithResults
from mnist_cifar.training.classifier import ImageClassifier

CIFAR = str(ROOT / "configs" / "lenet_cifar.yaml")
ONE_EPOCH = [*TINY, "--trainer.max_epochs", "1"]
FIGURES = ("samples/train_augmented", "test/confusion_matrix", "test/confident_mistakes")



def find(result: ExperimentCLI, kind: type) -> object:
    return next(callback for callback in result.trainer.callbacks if isinstance(callback, kind))


@pytest.fixture(scope="module")
def fitted(cifar_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[ExperimentCLI, EventAccumulator]:
    """One tiny CIFAR fit, ended by the test of its best checkpoint as every `fit` is, and its events."""
    logs = tmp_path_factory.mktemp("logs")
    result = cli("fit", "--config", CIFAR, "--data.data_dir", str(cifar_dir), *ONE_EPOCH,
                 "--trainer.logger.init_args.save_dir", str(logs))
    events = EventAccumulator(result.trainer.log_dir, size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    return result, events.Reload()


def test_figures_are_written_as_images(fitted: tuple[ExperimentCLI, EventAccumulator]) -> None:
    _, events = fitted
    assert set(FIGURES) <= set(events.Tags()["images"])
    for tag in FIGURES:
        (image,) = events.Images(tag)  # exactly once per run
        pixels = decode_png(torch.frombuffer(bytearray(image.encoded_image_string), dtype=torch.uint8))
        assert pixels.shape[1:] == (image.height, image.width) and min(image.height, image.width) > 200
        assert pixels.float().std() > 10  # a drawing, not a blank canvas


def test_per_class_accuracy_adds_up_to_the_test_accuracy(fitted: tuple[ExperimentCLI, EventAccumulator]) -> None:
    result, events = fitted
    per_class = [events.Scalars(f"test/acc_{name}")[-1].value for name in CIFAR10DataModule.classes]
    test_acc = result.trainer.callback_metrics["test/acc"].item()
    assert sum(per_class) / 10 == pytest.approx(test_acc, abs=1e-6)  # the tiny test set has 6 images per class
    counts = find(result, ConfusionMatrix).matrix.compute()
    assert counts.sum() == 60 and counts.diag().sum() / 60 == pytest.approx(test_acc, abs=1e-6)


def records(run_dir: Path) -> list[tuple[str, object]]:
    """Every (tag, value) the run's event files hold, in order (fit's file, then later ones)."""
    files = sorted(run_dir.glob("events.out.tfevents.*"))
    return [(value.tag, value) for file in files for event in EventFileLoader(str(file)).Load()
            for value in event.summary.value]


def session_hparams(events: EventAccumulator) -> dict:
    content = events.PluginTagToContent("hparams")
    return HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info.hparams


def test_hparams_record_names_the_run_and_its_results(fitted: tuple[ExperimentCLI, EventAccumulator]) -> None:
    result, events = fitted
    content = events.PluginTagToContent("hparams")
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {metric.name.tag for metric in experiment.metric_infos} == {"results/val_acc_best", "results/test_acc"}
    start = session_hparams(events)
    assert start["Run"].string_value == "fit" and "data/data_dir" not in start
    assert start["model/net/class_path"].string_value == "mnist_cifar.models.CifarLeNet"
    assert start["model/optimizer/init_args/lr"].number_value == pytest.approx(1e-3)
    assert start["data/class"].string_value == "CIFAR10DataModule"
    assert start["data/batch_size"].number_value == 32 and start["data/augment"].string_value == "True"

    best = result.trainer.checkpoint_callback.best_model_score.item()
    test_acc = result.trainer.callback_metrics["test/acc"].item()
    # One value each, written once it exists: no placeholder at step 0 that would draw as a ramp.
    assert [s.value for s in events.Scalars("results/val_acc_best")] == [pytest.approx(best)]
    assert [s.value for s in events.Scalars("results/test_acc")] == [pytest.approx(test_acc)]
    assert events.Scalars("results/test_acc")[0].step == result.trainer.global_step > 0
    assert "hp_metric" not in events.Tags()["scalars"]  # no placeholder record from the logger
    assert [tag for tag, _ in records(Path(result.trainer.log_dir))].count("_hparams_/experiment") == 1


def test_no_scalar_starts_with_a_placeholder(fitted: tuple[ExperimentCLI, EventAccumulator]) -> None:
    """Every scalar a person reads as a curve holds measured values only: none is a constant written before it
    was measured (each tag's first value is at a step where that figure existed, and no tag is written twice at
    one step)."""
    result, events = fitted
    for tag in events.Tags()["scalars"]:
        steps = [s.step for s in events.Scalars(tag)]
        assert len(steps) == len(set(steps)), tag
        if tag.startswith(("results/", "test/", "2 val/")):
            assert min(steps) > 0, tag  # measured after training steps, not announced at step 0


def tensorboard_order(tag: str) -> tuple:
    """TensorBoard's group order (tensorboard/webapp/metrics/views/utils.ts compareTagNames): by the first path
    part, a leading number first and numerically, then text by character code."""
    group = tag.split("/", 1)[0]
    head = group.split(" ", 1)[0]
    return (0, float(head), group) if head.isdigit() else (1, 0.0, group)


def test_the_dashboard_shows_the_training_curves_first(fitted: tuple[ExperimentCLI, EventAccumulator]) -> None:
    _, events = fitted
    tags = events.Tags()["scalars"] + events.Tags()["images"]
    groups = list(dict.fromkeys(tag.split("/", 1)[0] for tag in sorted(tags, key=tensorboard_order)))
    assert groups[:2] == ["1 train", "2 val"], groups
    assert {"1 train/loss", "1 train/acc", "2 val/loss", "2 val/acc"} <= set(tags)
    assert "epoch" not in tags and not any(tag.startswith("hp/") for tag in tags)
    assert "train/loss" in result_metrics(fitted[0]) and "val/acc" in result_metrics(fitted[0])  # names unchanged


def result_metrics(result: ExperimentCLI) -> dict:
    from mnist_cifar.experiments.logs import read_record

    return read_record(Path(result.trainer.log_dir)) or {}


def test_a_test_from_a_checkpoint_is_a_row_that_says_so_without_placeholders(
    fitted: tuple[ExperimentCLI, EventAccumulator], cifar_dir: Path
) -> None:
    result, _ = fitted
    best = result.trainer.checkpoint_callback.best_model_path
    tested = cli("test", "--ckpt_path", best, "--data.data_dir", str(cifar_dir))
    run_dir = Path(tested.trainer.log_dir)
    assert run_dir != Path(result.trainer.log_dir)
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    shown = Path(best).resolve().relative_to(Path(result.trainer.logger.save_dir).resolve())
    assert session_hparams(events)["Run"].string_value == f"test of {shown}"
    assert str(shown).startswith("lenet_cifar/version_0/checkpoints/epoch")
    assert "results/val_acc_best" not in events.Tags()["scalars"]  # not measured here: an empty cell, not a 0
    assert [s.value for s in events.Scalars("results/test_acc")] == [
        pytest.approx(tested.trainer.callback_metrics["test/acc"].item())]
    assert [tag for tag, _ in records(run_dir)].count("_hparams_/session_start_info") == 1


def test_sample_grid_is_the_augmented_batch_the_network_trains_on(
    cifar_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained, drawn = [], []
    training_step, displayable = ImageClassifier.training_step, callbacks.displayable
    monkeypatch.setattr(ImageClassifier, "training_step",
                        lambda self, batch, i: trained.append(batch[0]) or training_step(self, batch, i))
    monkeypatch.setattr(callbacks, "displayable", lambda images, *a: drawn.append(images) or displayable(images, *a))
    result = cli("fit", "--config", CIFAR, "--data.data_dir", str(cifar_dir), *ONE_EPOCH, "--test_after_fit", "false")

    shown = drawn[0]
    assert len(drawn) == 1 and len(shown) == 32
    assert torch.equal(shown, trained[0][:32])  # the very images of the first training step
    dm = result.datamodule
    plain = dm.preprocess(dm.train_set.images)  # every training image without augmentation
    unchanged = (shown[:, None] == plain[None]).flatten(2).all(2).any(1)
    assert unchanged.sum() <= 2  # crop + flip moved (nearly) all of them
    dm.hparams.augment = False
    assert (dm.preprocess(dm.train_set.images[:4], train=True)[:, None] == plain[None]).flatten(2).all(2).any(1).all()


def test_displayable_undoes_the_normalization() -> None:
    dm = CIFAR10DataModule()
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    assert torch.equal(callbacks.displayable(dm.preprocess(images), *dm.normalization), images)


def test_confident_mistakes_keeps_only_the_top_wrong_predictions(tmp_path: Path) -> None:
    trainer = SimpleNamespace(is_global_zero=True, loggers=[TensorBoardLogger(tmp_path)])
    mistakes = ConfidentMistakes(count=3)
    confidences = []
    for seed in range(4):
        generator = torch.Generator().manual_seed(seed)
        logits, labels = torch.randn(20, 10, generator=generator) * 3, torch.randint(0, 10, (20,), generator=generator)
        images = torch.arange(20.0).view(20, 1, 1, 1).expand(20, 1, 2, 2) + 100 * seed  # which image it was
        mistakes.on_test_batch_end(trainer, None, logits, (images, labels), seed)
        probabilities, predicted = logits.softmax(1).max(1)
        confidences += [(p.item(), 100 * seed + i) for i, p in enumerate(probabilities) if predicted[i] != labels[i]]
    expected = sorted(confidences, reverse=True)[:3]
    assert mistakes.confidence.tolist() == pytest.approx([c for c, _ in expected])
    assert mistakes.images[:, 0, 0, 0].tolist() == [float(i) for _, i in expected]
    assert (mistakes.true != mistakes.predicted).all() and len(mistakes.images) == 3


@pytest.mark.parametrize("logger", [["--trainer.fast_dev_run", "2"],
                                    ["--trainer.logger", "lightning.pytorch.loggers.CSVLogger"]],
                         ids=["fast_dev_run", "csv-logger"])
def test_without_tensorboard_the_figures_are_not_made(cifar_dir: Path, logger: list[str]) -> None:
    result = cli("fit", "--config", CIFAR, "--data.data_dir", str(cifar_dir), *ONE_EPOCH, "--trainer.limit_train_batches", "2",
                 "--trainer.limit_val_batches", "1", *logger)
    assert result.trainer.state.finished
    assert not list(Path().rglob("events.out.tfevents.*"))
    assert find(result, ConfidentMistakes).images is None
    csv_logged = "--trainer.logger" in logger  # the per-class accuracies reach every logger; fast_dev_run logs nothing
    assert (find(result, ConfusionMatrix).matrix is not None) == csv_logged


def test_without_any_logger_the_callbacks_do_nothing(cifar_dir: Path) -> None:
    every = [HParamsWithResults(), AugmentedSamples(), ConfusionMatrix(), ConfidentMistakes()]
    trainer = L.Trainer(logger=False, callbacks=every, max_epochs=1, limit_train_batches=2, limit_val_batches=1,
                        enable_checkpointing=False, enable_progress_bar=False)
    model = ImageClassifier(CifarLeNet((3, 32, 32), 10))
    dm = CIFAR10DataModule(data_dir=str(cifar_dir), val_size=50, batch_size=32)
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm)
    assert trainer.callback_metrics["test/acc"] >= 0 and not list(Path().rglob("events.out.tfevents.*"))
    assert every[2].matrix is None and every[3].images is None


def test_step_loss_is_logged_every_n_steps_at_lightnings_steps(cifar_dir: Path, tmp_path: Path) -> None:
    """`train/loss_step` goes to the logger directly (not through `self.log`): at the steps Lightning would use."""
    result = cli("fit", "--config", CIFAR, "--data.data_dir", str(cifar_dir), *ONE_EPOCH, "--trainer.log_every_n_steps",
                 "2", "--trainer.logger.init_args.save_dir", str(tmp_path), "--test_after_fit", "false")
    steps = result.trainer.global_step
    events = EventAccumulator(result.trainer.log_dir).Reload()
    logged = events.Scalars("1 train/loss_step")  # TensorBoard's name of train/loss_step (loggers.tensorboard_tag)
    assert steps >= 4 and [s.step for s in logged] == list(range(1, steps, 2))
    assert all(0 < s.value < 10 for s in logged)
    assert "train/loss_step" not in result.trainer.callback_metrics  # not also kept by Lightning each step


def test_progress_bar_is_ours_and_the_flag_still_turns_it_off(cifar_dir: Path, tmp_path: Path) -> None:
    from mnist_cifar.reporting.progress import ProgressBar

    common = ["fit", "--config", CIFAR, "--data.data_dir", str(cifar_dir), "--data.val_size", "50", "--data.batch_size",
              "32", "--trainer.max_epochs", "1", "--trainer.limit_train_batches",
              "2", "--trainer.limit_val_batches", "1", "--test_after_fit", "false",
              "--trainer.logger.init_args.save_dir", str(tmp_path)]
    assert isinstance(cli(*common).trainer.progress_bar_callback, ProgressBar)
    assert cli(*common, "--trainer.enable_progress_bar", "false").trainer.progress_bar_callback is None
