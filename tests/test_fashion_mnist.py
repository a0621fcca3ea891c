"""Fashion-MNIST as a first-class data set, and the knobs d2l's recipes need: its readers in both layouts, its class
names wherever classes are named, pixels in [0, 1], a resize (inside exported files too) and the book's weight
initializations."""

from __future__ import annotations

import csv
import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY, cli, write_fashion_mnist

from mnist_cifar.data import CIFAR10DataModule, FashionMNISTDataModule, MNISTDataModule
from mnist_cifar.errors import ConfigError, DataCorruptError, DataNotFoundError
from mnist_cifar.export.exported import KNOWN_INPUT_SHAPES
from mnist_cifar.models import FCNet, LeNet5
from mnist_cifar.training.classifier import ImageClassifier

LENET = str(ROOT / "configs" / "d2l_lenet_fashion.yaml")
QUICK = [*TINY, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]


@pytest.mark.parametrize("layout", ["debian", "torchvision"])
def test_both_layouts_read_to_the_exact_pixels_and_labels(tmp_path: Path, layout: str) -> None:
    written = write_fashion_mnist(tmp_path, layout)
    data = FashionMNISTDataModule(data_dir=str(tmp_path), download=False)
    for split in ("train", "test"):
        images, labels = data.stored_split(split)
        assert images.shape == (len(written[split][0]), 1, 28, 28) and images.dtype == torch.uint8
        assert torch.equal(images, torch.from_numpy(written[split][0]))
        assert torch.equal(labels, torch.from_numpy(written[split][1]).long())


def test_the_debian_folder_itself_is_a_data_dir(tmp_path: Path) -> None:
    write_fashion_mnist(tmp_path, "debian")  # --data.data_dir /usr/share/datasets/fashion-mnist
    data = FashionMNISTDataModule(data_dir=str(tmp_path / "fashion-mnist"), download=False)
    assert len(data.stored_split("test")[1]) == 60


def test_a_truncated_gz_file_is_named_with_the_fix(tmp_path: Path) -> None:
    write_fashion_mnist(tmp_path, "debian")
    images = tmp_path / "fashion-mnist" / "t10k-images-idx3-ubyte.gz"
    images.write_bytes(gzip.compress(gzip.decompress(images.read_bytes())[:-100]))
    with pytest.raises(DataCorruptError, match=r"Fashion-MNIST test files in .*fashion-mnist.*promises 47,040 bytes"):
        FashionMNISTDataModule(data_dir=str(tmp_path), download=False).stored_split("test")
    images.write_bytes(b"not gzip at all")
    with pytest.raises(DataCorruptError, match="Replace them with the original files"):
        FashionMNISTDataModule(data_dir=str(tmp_path), download=False).stored_split("test")


def test_no_copy_names_the_debian_package(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        FashionMNISTDataModule(data_dir=str(tmp_path), download=False).prepare_data()


def test_mnist_reads_its_gz_files_too(tmp_path: Path) -> None:
    write_fashion_mnist(tmp_path, "debian")
    (tmp_path / "fashion-mnist").rename(tmp_path / "raw")
    assert MNISTDataModule(data_dir=str(tmp_path), download=False).stored_split("test")[0].shape == (60, 1, 28, 28)


def test_every_data_sets_input_shape_is_one_an_exported_file_may_declare() -> None:
    for module in (MNISTDataModule, FashionMNISTDataModule, CIFAR10DataModule):
        assert module.image_shape in KNOWN_INPUT_SHAPES, module.name


def test_normalize_false_gives_pixels_in_zero_one_and_resize_sizes_the_network(fashion_dir: Path) -> None:
    data = FashionMNISTDataModule(data_dir=str(fashion_dir), normalize=False, resize=40)
    raw = torch.tensor([[[[0, 255] * 14] * 28]], dtype=torch.uint8)
    seen = data.preprocess(raw)
    assert seen.shape == (1, 1, 40, 40) and data.input_shape == (1, 40, 40)
    assert seen.min().item() == pytest.approx(0.0) and seen.max().item() == pytest.approx(1.0)
    standardized = FashionMNISTDataModule(data_dir=str(fashion_dir)).preprocess(raw)
    assert standardized.min().item() == pytest.approx(-0.2860 / 0.3530, abs=1e-4)
    for side in (0, 1025):
        with pytest.raises(ConfigError, match="data.resize must be a side in pixels from 1 to 1024"):
            FashionMNISTDataModule(resize=side)


def test_class_names_reach_the_metrics_and_the_predictions(fashion_dir: Path, tmp_path: Path) -> None:
    fitted = cli("fit", "--config", LENET, "--data.data_dir", str(fashion_dir), *QUICK)
    assert "test/acc_T-shirt-top" in fitted.trainer.callback_metrics and "test/acc_Ankle boot" in fitted.trainer.callback_metrics
    best = fitted.trainer.checkpoint_callback.best_model_path
    cli("predict", "--ckpt_path", best, "--data.data_dir", str(fashion_dir))
    table = next(Path(fitted.trainer.log_dir).parent.rglob("predictions*.csv"))
    header = next(csv.reader(table.open()))
    assert "p_T-shirt/top" in header and "p_Ankle boot" in header
    rows = list(csv.DictReader(table.open()))
    assert {row["true_class"] for row in rows} <= set(FashionMNISTDataModule.classes) and len(rows) == 60


@pytest.mark.slow
def test_a_resized_unnormalized_run_exports_with_its_preprocessing_inside(fashion_dir: Path, tmp_path: Path) -> None:
    """The export's own parity check (max logit difference 1e-4 against `test`) fails unless the resize, the
    [0, 1] scaling and the temperature (`--calibrate`) are inside the file; its metadata carries the class names."""
    from mnist_cifar.export.write import main as export_main

    fitted = cli("fit", "--config", LENET, "--data.data_dir", str(fashion_dir), "--data.resize", "32", *QUICK)
    target = tmp_path / "lenet.pt2"
    export_main(["--ckpt_path", fitted.trainer.checkpoint_callback.best_model_path, "--format", "exported_program",
                 "--output", str(target), "--data.data_dir", str(fashion_dir), "--calibrate"])
    record = json.loads(target.with_name("lenet.pt2.parity.json").read_text())
    assert json.loads(record["class_names"]) == list(FashionMNISTDataModule.classes)
    assert json.loads(record["resized_to"]) == 32 and json.loads(record["mean"]) == [0.0]
    assert json.loads(record["temperature"]) > 0 and json.loads(record["temperature"]) != 1.0


def test_weight_init_redraws_linear_and_conv_weights_and_refuses_unknown_specs() -> None:
    torch.manual_seed(0)
    net = LeNet5()
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    ImageClassifier(net, weight_init="normal:0.01")
    weights = [p for name, p in net.named_parameters() if name.endswith("weight")]
    assert all(not torch.equal(p, before[name]) for name, p in net.named_parameters() if name.endswith("weight"))
    assert all(torch.equal(p, before[name]) for name, p in net.named_parameters() if name.endswith("bias"))
    assert all(abs(p.std().item() - 0.01) < 0.004 for p in weights if p.numel() > 1000)
    torch.manual_seed(0)
    xavier = LeNet5()
    ImageClassifier(xavier, weight_init="xavier_uniform")
    first = xavier.classifier[0].weight
    bound = math.sqrt(6 / (first.shape[0] + first.shape[1]))
    assert first.abs().max().item() <= bound and first.abs().max().item() > 0.9 * bound
    for bad in ("normal", "normal:-1", "kaiming", "normal:nan"):
        with pytest.raises(ConfigError, match="model.weight_init must be"):
            ImageClassifier(LeNet5(), weight_init=bad)


def test_dropout_per_layer_and_batch_norm_lenet_are_the_books() -> None:
    mlp = FCNet(hidden=[256, 256], dropout=[0.2, 0.5])
    assert [m.p for m in mlp.modules() if isinstance(m, torch.nn.Dropout)] == [0.2, 0.5]
    with pytest.raises(ValueError, match="one per hidden layer"):
        FCNet(hidden=[256, 256], dropout=[0.2])
    bn = LeNet5(padding=0, batch_norm=True)
    assert bn.classifier[0].in_features == 16 * 4 * 4  # d2l §7.5's unpadded first conv
    assert sum(isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)) for m in bn.modules()) == 4
    assert sum(p.numel() for p in LeNet5().parameters()) == 61_706  # the plain one unchanged


def test_the_d2l_experiment_names_every_28_pixel_recipe() -> None:
    from mnist_cifar.experiments import definition

    experiment = definition.load("d2l")
    assert {v.name for v in experiment.variants} == {"softmax", "mlp", "dropout", "weight_decay", "lenet", "lenet_bn"}
    assert np.unique([Path(v.config).name for v in experiment.variants]).size == 6
