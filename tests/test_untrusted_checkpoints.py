"""A checkpoint is data, not instructions: crafted checkpoints (a valid SHA-256 is easy to recompute) cannot import
code, construct foreign classes, choose where data is read or written, download, or delete outside their run."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path
from typing import Callable

import pytest
import torch
from conftest import DEFAULT_CONFIG, ROOT, write_image_folder

from mnist_cifar.checkpoint_io import HASH_KEY, content_hash
from mnist_cifar.cli import ExperimentCLI, run

CNN = str(ROOT / "configs" / "cnn_mnist.yaml")  # no schedule: a resume may add epochs
TINY = ["--data.val_size", "50", "--data.batch_size", "32", "--trainer.enable_progress_bar", "false"]
ZEN = "Beautiful is better than ugly"  # what importing the standard library's `this` prints


def cli(*args: str) -> ExperimentCLI:
    return run(list(args), default_config=DEFAULT_CONFIG)


def craft(source: Path, target: Path, edit: Callable[[dict], None]) -> Path:
    """Edit a real checkpoint and give it a valid content hash, as anyone can."""
    checkpoint = torch.load(source, weights_only=True)
    edit(checkpoint)
    checkpoint[HASH_KEY] = content_hash(checkpoint)
    torch.save(checkpoint, target)
    return target


@pytest.fixture()
def fitted(mnist_dir: Path, tmp_path: Path) -> Path:
    """The last.ckpt of a one-epoch cnn_mnist run in its own run folder."""
    result = cli("fit", "--config", CNN, "--data.data_dir", str(mnist_dir), *TINY, "--trainer.max_epochs", "1",
                 "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"), "--test_after_fit", "false")
    return Path(result.trainer.checkpoint_callback.best_model_path).parent / "last.ckpt"


def point_every_saved_path_at(victim: Path, run_checkpoints: Path) -> Callable[[dict], None]:
    """`<run>/checkpoints/../../../..<victim>` in each saved path of every ModelCheckpoint state."""
    escape = str(run_checkpoints / Path(*[".."] * len(run_checkpoints.parts))) + str(victim)

    def edit(checkpoint: dict) -> None:
        for state in checkpoint["callbacks"].values():
            if "best_model_path" in state:
                for key in ("best_model_path", "last_model_path", "kth_best_model_path"):
                    state[key] = escape
                state["best_k_models"] = {escape: torch.tensor(0.0)}
                state["best_model_score"] = torch.tensor(0.0)
    return edit


def test_saved_paths_outside_the_run_are_not_deleted_on_resume(fitted: Path, mnist_dir: Path, tmp_path: Path) -> None:
    victim = tmp_path / "elsewhere"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    crafted = craft(fitted, fitted.parent / "crafted.ckpt", point_every_saved_path_at(victim, fitted.parent))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = cli("fit", "--config", CNN, "--data.data_dir", str(mnist_dir), *TINY, "--trainer.max_epochs", "3",
                      "--ckpt_path", str(crafted))
    assert (victim / "precious.txt").read_text() == "keep me"
    assert resumed.trainer.current_epoch == 3
    assert any("outside its own folder" in str(w.message) for w in caught)
    best = Path(resumed.trainer.checkpoint_callback.best_model_path).resolve()
    assert best.parent == fitted.parent.resolve()  # the tracking restarted inside the run


def _set_net(name: str) -> Callable[[dict], None]:
    def edit(checkpoint: dict) -> None:
        checkpoint["hyper_parameters"]["net"]["class_path"] = name
    return edit


def _set_optimizer(name: str) -> Callable[[dict], None]:
    def edit(checkpoint: dict) -> None:
        checkpoint["hyper_parameters"]["optimizer"] = name
    return edit


def _nest_in_net_args(name: str) -> Callable[[dict], None]:
    def edit(checkpoint: dict) -> None:
        checkpoint["hyper_parameters"]["net"]["init_args"]["n_feature"] = {"class_path": name}
    return edit


def _set_data_class(name: str) -> Callable[[dict], None]:
    def edit(checkpoint: dict) -> None:
        checkpoint["datamodule_hyper_parameters"]["_class_path"] = name
    return edit


FOREIGN = [
    ("network", _set_net("this.Anything"), "model.net.class_path"),
    ("optimizer", _set_optimizer("this.Anything"), "model.optimizer"),
    ("nested-class", _nest_in_net_args("this.Anything"), "model.net.init_args.n_feature.class_path"),
    ("data-module", _set_data_class("this.Anything"), "data.class_path"),
    ("other-nn-module", _set_net("collections.OrderedDict"), "model.net.class_path"),
]


@pytest.mark.parametrize("edit, key", [(e, k) for _, e, k in FOREIGN], ids=[name for name, _, _ in FOREIGN])
def test_a_foreign_class_in_a_checkpoint_is_refused_before_any_import(
        edit: Callable[[dict], None], key: str, fitted: Path, mnist_dir: Path, tmp_path: Path) -> None:
    crafted = craft(fitted, tmp_path / "foreign.ckpt", edit)
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), "test", "--ckpt_path", str(crafted),
                             "--data.data_dir", str(mnist_dir)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert ZEN not in result.stdout + result.stderr  # `this` was never imported
    assert key in result.stderr and "cannot choose what is imported" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_foreign_class_the_user_names_is_trusted(fitted: Path, mnist_dir: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A user's own network outside the package: `fit` with it, then `test` naming it (flag or trust setting)."""
    package = tmp_path / "site" / "userpkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "from torch import nn\n\n\nclass Net(nn.Module):\n    def __init__(self, num_classes: int = 10) -> None:\n"
        "        super().__init__()\n        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes))\n\n"
        "    def forward(self, x):\n        return self.body(x)\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    trained = cli("fit", "--config", CNN, "--model.net", "userpkg.Net", "--data.data_dir", str(mnist_dir), *TINY,
                  "--trainer.max_epochs", "1", "--trainer.logger.init_args.save_dir", str(tmp_path / "own"))
    best = trained.trainer.checkpoint_callback.best_model_path
    expected = trained.trainer.callback_metrics["test/acc"].item()
    named = cli("test", "--ckpt_path", best, "--model.net", "userpkg.Net", "--data.data_dir", str(mnist_dir))
    assert named.trainer.callback_metrics["test/acc"].item() == pytest.approx(expected)
    monkeypatch.setenv("MNIST_CIFAR_TRUSTED_MODULES", "userpkg")
    trusted = cli("test", "--ckpt_path", best, "--data.data_dir", str(mnist_dir))
    assert trusted.trainer.callback_metrics["test/acc"].item() == pytest.approx(expected)


def test_paths_and_download_in_a_checkpoint_are_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """data_dir, cache_dir, download and predict_path come from the user or the defaults, never from the file."""
    data = tmp_path / "cifar_folder"
    write_image_folder(data, n_train=60, n_test=20)
    monkeypatch.setenv("MNIST_CIFAR_DATA", str(data))
    fitted = cli("fit", "--config", str(ROOT / "configs" / "lenet_cifar.yaml"), *TINY, "--data.val_size", "10",
                 "--trainer.max_epochs", "1", "--test_after_fit", "false")
    best = Path(fitted.trainer.checkpoint_callback.best_model_path)
    foreign = tmp_path / "chosen_by_the_file"

    def edit(checkpoint: dict) -> None:
        checkpoint["datamodule_hyper_parameters"].update(
            data_dir=str(foreign / "data"), cache_dir=str(foreign / "cache"), download=True,
            predict_path=str(foreign / "images"))
    crafted = craft(best, best.parent / "crafted.ckpt", edit)
    tested = cli("test", "--ckpt_path", str(crafted))
    assert tested.datamodule.data_dir == data
    assert tested.datamodule.hparams.predict_path is None
    predicted = cli("predict", "--ckpt_path", str(crafted))
    assert len(predicted.datamodule.predict_set) == 20  # the test set of the user's data, not the file's images
    assert not foreign.exists()


def test_load_from_checkpoint_in_python_refuses_a_foreign_class_before_importing_it(fitted: Path,
                                                                                     tmp_path: Path) -> None:
    from mnist_cifar.classifier import ImageClassifier
    from mnist_cifar.errors import CheckpointError

    crafted = craft(fitted, tmp_path / "foreign.ckpt", _set_net("this.Anything"))
    sys.modules.pop("this", None)
    with pytest.raises(CheckpointError, match="cannot choose what is imported"):
        ImageClassifier.load_from_checkpoint(crafted)
    assert "this" not in sys.modules
    assert isinstance(ImageClassifier.load_from_checkpoint(fitted), ImageClassifier)  # its own checkpoint loads
