"""A checkpoint is data, not instructions: crafted checkpoints (a valid SHA-256 is easy to recompute) cannot import
code, construct foreign classes, choose where data is read or written, download, or delete outside their run."""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY, cli, write_image_folder

from mnist_cifar.runs.checkpoint_io import HASH_KEY, content_hash

CNN = str(ROOT / "configs" / "cnn_mnist.yaml")  # no schedule: a resume may add epochs
ZEN = "Beautiful is better than ugly"  # what importing the standard library's `this` prints



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


@pytest.mark.slow
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
    from mnist_cifar.errors import CheckpointError
    from mnist_cifar.training.classifier import ImageClassifier

    crafted = craft(fitted, tmp_path / "foreign.ckpt", _set_net("this.Anything"))
    sys.modules.pop("this", None)
    with pytest.raises(CheckpointError, match="cannot choose what is imported"):
        ImageClassifier.load_from_checkpoint(crafted)
    assert "this" not in sys.modules
    assert isinstance(ImageClassifier.load_from_checkpoint(fitted), ImageClassifier)  # its own checkpoint loads


# -- Every payload through every way in: refused in one paragraph, nothing run, nothing foreign imported ----------

def _popen(marker: Path) -> dict:
    return {"class_path": "mnist_cifar.experiments.runner.subprocess.Popen",
            "init_args": {"args": f"touch {marker}", "shell": True}}


def _linear_with_device(value: object) -> Callable[[dict], None]:
    """`torch.nn.Linear`, whose `device` is untyped: jsonargparse would build a `{class_path}` placed there."""
    def edit(checkpoint: dict) -> None:
        checkpoint["hyper_parameters"]["net"] = {"class_path": "torch.nn.Linear",
                                                 "init_args": {"in_features": 784, "out_features": 10, "device": value}}
    return edit


def _hparam(key: str, value: object) -> Callable[[dict], None]:
    def edit(checkpoint: dict) -> None:
        checkpoint["hyper_parameters"][key] = value
    return edit


def _net_arg(key: str, value: object) -> Callable[[dict], None]:
    def edit(checkpoint: dict) -> None:
        checkpoint["hyper_parameters"]["net"]["init_args"][key] = value
    return edit


def _top(key: str, value: object) -> Callable[[dict], None]:
    def edit(checkpoint: dict) -> None:
        checkpoint[key] = value
    return edit


def payloads(marker: Path) -> dict[str, tuple[Callable[[dict], None], str]]:
    """name: (edit, words the refusal must hold)."""
    return {
        "alias-through-a-module-in-an-untyped-parameter": (_linear_with_device(_popen(marker)), "object to build"),
        "alias-as-the-network": (_set_net("mnist_cifar.experiments.runner.subprocess.Popen"), "subprocess"),
        "alias-through-os": (_set_net("mnist_cifar.data.base.os.system"), "goes through the module"),
        "alias-through-torch-to-hub": (_set_net("torch.nn.modules.module.torch.hub.load"), "torch.hub"),
        "alias-as-the-optimizer": (_hparam("optimizer", {"class_path": "torch.optim.adam.torch.hub.load"}), "torch.hub"),
        "alias-as-the-scheduler": (_hparam("scheduler", _popen(marker)), "subprocess"),
        "alias-as-the-data-module": (_set_data_class("mnist_cifar.data.base.os.system"), "module os"),
        "unimported-module": (_set_net("mnist_cifar.models.this.Anything"), "does not exist"),
        "nested-class-in-a-plain-setting": (_hparam("label_smoothing", _popen(marker)), "object to build"),
        "import-path-as-a-plain-value": (_net_arg("n_feature", "mnist_cifar.experiments.runner.subprocess.Popen"),
                                         "subprocess"),
        "instantiator": (_hparam("_instantiator", "mnist_cifar.experiments.runner.subprocess.Popen"), "instantiator"),
        "hparams-name": (_top("hparams_name", "net"), "hparams_name"),
        "unknown-setting": (_hparam("callbacks", [_popen(marker)]), "does not take"),
        "a-billion-wide": (_net_arg("n_feature", 10**9), "larger than"),
        "a-million-wide": (_net_arg("n_feature", 10**6), "larger than"),
        "a-class-from-the-wrong-package": (_set_net("torch.optim.SGD"), "defined in"),
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(last.ckpt of a one-epoch cnn_mnist run, the MNIST folder), shared by the payload table."""
    from conftest import write_mnist

    root = tmp_path_factory.mktemp("payloads")
    write_mnist(root / "mnist")
    result = cli("fit", "--config", CNN, "--data.data_dir", str(root / "mnist"), *TINY, "--trainer.max_epochs", "1",
                 "--trainer.logger.init_args.save_dir", str(root / "logs"), "--test_after_fit", "false")
    return Path(result.trainer.checkpoint_callback.best_model_path).parent / "last.ckpt", root / "mnist"


def _test(crafted: Path, data: Path) -> None:
    cli("test", "--ckpt_path", str(crafted), "--data.data_dir", str(data))


def _predict(crafted: Path, data: Path) -> None:
    cli("predict", "--ckpt_path", str(crafted), "--data.data_dir", str(data))


def _export(crafted: Path, data: Path) -> None:
    from mnist_cifar.export.write import main as export_main

    export_main(["--ckpt_path", str(crafted), "--data.data_dir", str(data), "--output", str(crafted) + ".onnx"])


def _load_from_checkpoint(crafted: Path, data: Path) -> None:
    from mnist_cifar.errors import UserFacingError
    from mnist_cifar.training.classifier import ImageClassifier

    try:
        ImageClassifier.load_from_checkpoint(crafted)
    except UserFacingError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


WAYS_IN = {"test": _test, "predict": _predict, "export": _export, "load_from_checkpoint": _load_from_checkpoint}
PAYLOAD_NAMES = list(payloads(Path("marker")))


@pytest.mark.parametrize("way", list(WAYS_IN))
@pytest.mark.parametrize("payload", PAYLOAD_NAMES)
def test_every_payload_is_refused_on_every_way_in(payload: str, way: str, trained: tuple[Path, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    last, data = trained
    marker = tmp_path / "command_ran"
    edit, words = payloads(marker)[payload]
    crafted = craft(last, tmp_path / f"{payload}.ckpt", edit)
    sys.modules.pop("this", None)
    before = set(sys.modules)
    with pytest.raises(SystemExit) as stopped:
        WAYS_IN[way](crafted, data)
    err = capsys.readouterr().err
    assert stopped.value.code == 2, err[-2000:]
    refusal = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(refusal) == 1 and words in refusal[0] and str(crafted) in refusal[0], err[-2000:]
    assert "Traceback" not in err
    assert not marker.exists()  # no command ran
    assert "this" not in sys.modules
    foreign = {m for m in set(sys.modules) - before if not m.startswith(("mnist_cifar", "torch", "lightning", "onnx"))}
    assert not foreign, foreign
    assert not (tmp_path / f"{payload}.ckpt.onnx").exists()


def test_resources_in_a_checkpoint_are_the_users(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """Loader workers, batch sizes, device placement and compilation come from the user or the defaults."""
    last, data = trained

    def edit(checkpoint: dict) -> None:
        checkpoint["datamodule_hyper_parameters"].update(num_workers=8, batch_size=10**9, eval_batch_size=10**9,
                                                         on_device=True)
        checkpoint["hyper_parameters"].update(compile=True, compile_backend="eager", compile_mode="max-autotune")
    crafted = craft(last, tmp_path / "resources.ckpt", edit)
    tested = cli("test", "--ckpt_path", str(crafted), "--data.data_dir", str(data))
    hparams = tested.datamodule.hparams
    assert (hparams.num_workers, hparams.batch_size, hparams.eval_batch_size, hparams.on_device) == (0, 64, None, False)
    assert tested.model.hparams.compile is False and tested.model.hparams.compile_mode == "default"
    typed = cli("test", "--ckpt_path", str(crafted), "--data.data_dir", str(data), "--data.eval_batch_size", "16")
    assert typed.datamodule.hparams.eval_batch_size == 16  # the user's own value is used


def test_a_network_bigger_than_its_weights_is_refused_before_allocating(trained: tuple[Path, Path],
                                                                         tmp_path: Path) -> None:
    """Sized on the meta device first: a width of 10**6 would take ~4 GB of real memory before the shape check."""
    import resource

    from mnist_cifar.errors import CheckpointError
    from mnist_cifar.training.classifier import ImageClassifier

    last, _ = trained
    crafted = craft(last, tmp_path / "wide.ckpt", _net_arg("n_feature", 10**6))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError, match="larger than"):
        ImageClassifier.load_from_checkpoint(crafted)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 200_000  # KiB: well under the 4 GB
