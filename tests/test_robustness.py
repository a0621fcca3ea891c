"""Hostile inputs lose nothing: damaged checkpoints, bad config values and strange image files are each named in
one paragraph; checkpoints made from Python load; the command line wins over a checkpoint; no logger is fine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import ROOT, TINY, cli
from PIL import Image

from mnist_cifar.data import MNISTDataModule
from mnist_cifar.data.user_images import read_user_images
from mnist_cifar.errors import CheckpointError
from mnist_cifar.models import LeNet5
from mnist_cifar.training.classifier import ImageClassifier

LENET = str(ROOT / "configs" / "lenet_mnist.yaml")



@pytest.fixture(scope="module")
def checkpoint(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fitted")
    result = cli("fit", "--config", LENET, "--data.data_dir", str(mnist_dir), *TINY, "--trainer.max_epochs", "1",
                 "--trainer.logger.init_args.save_dir", str(folder / "lightning_logs"), "--test_after_fit", "false")
    return Path(result.trainer.checkpoint_callback.best_model_path)


def flip_a_weight_byte(source: Path, target: Path) -> None:
    """Flip one bit inside the stored bytes of the first conv layer's weights."""
    data = bytearray(source.read_bytes())
    tensor = torch.load(source, weights_only=True)["state_dict"]["net.features.0.weight"]
    offset = bytes(data).find(tensor.numpy().tobytes())
    assert offset > 0
    data[offset + 17] ^= 0x04
    target.write_bytes(bytes(data))


def damage(kind: str, good: Path, path: Path) -> list[str]:
    """Write a damaged copy of `good` at `path`; returns the extra arguments the test command needs."""
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "bit-flipped":
        flip_a_weight_byte(good, path)
    elif kind == "wrong-architecture":
        path.write_bytes(good.read_bytes())
        return ["--config", str(ROOT / "configs" / "cnn_mnist.yaml")]  # a SmallCNN, not the LeNet-5 it holds
    return []


@pytest.mark.parametrize("kind,says", [("empty", "cannot be read"), ("truncated", "cannot be read"),
                                       ("bit-flipped", "damaged"), ("wrong-architecture", "does not fit this network")])
def test_a_damaged_checkpoint_is_refused_by_name(kind: str, says: str, checkpoint: Path, mnist_dir: Path,
                                                 tmp_path: Path) -> None:
    path = tmp_path / f"{kind}.ckpt"
    extra = damage(kind, checkpoint, path)
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), "test", "--ckpt_path", str(path), *extra,
                             "--data.data_dir", str(mnist_dir)], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and str(path) in error[0] and says in error[0]
    assert "Traceback" not in result.stderr and "\x1b" not in result.stderr


def test_a_bit_flip_is_refused_from_python_too(checkpoint: Path, tmp_path: Path) -> None:
    flip_a_weight_byte(checkpoint, tmp_path / "flipped.ckpt")
    with pytest.raises(CheckpointError, match="damaged"):
        ImageClassifier.load_from_checkpoint(tmp_path / "flipped.ckpt")
    ImageClassifier.load_from_checkpoint(checkpoint)  # the original is fine


BAD_VALUES = [
    (["--model.optimizer.init_args.lr", "-1"], "lr"),
    (["--model.optimizer.init_args.lr", "0"], "lr"),
    (["--trainer.max_epochs", "-5"], "max_epochs"),
    (["--trainer.max_epochs", "0"], "max_epochs"),
    (["--data.batch_size", "0"], "batch_size"),
    (["--data.eval_batch_size", "-2"], "eval_batch_size"),
    (["--data.val_size", "-1"], "val_size"),
    (["--model.net", "mnist_cifar.models.NoSuchNet"], "NoSuchNet"),
    (["--trainer.max_epocs", "3"], "max_epocs"),
    (["--trainer.precision", "16-mixed", "--trainer.accelerator", "cpu"], "16-mixed"),
]


@pytest.mark.parametrize("args,key", BAD_VALUES, ids=[key for _, key in BAD_VALUES])
def test_bad_config_values_fail_before_any_data_is_read(args: list[str], key: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:  # the data folder does not exist: reading it would fail otherwise
        cli("fit", "--config", LENET, "--data.data_dir", str(tmp_path / "no_data"), "--data.download", "false", *args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert key in err and "No MNIST data" not in err and "Traceback" not in err


def test_val_size_larger_than_the_training_set_is_named(mnist_dir: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli("fit", "--config", LENET, "--data.data_dir", str(mnist_dir), "--data.val_size", "100000")
    assert exit_info.value.code == 2 and "data.val_size=100000" in capsys.readouterr().err


def test_checkpoint_made_from_python_loads_in_python_and_on_the_command_line(mnist_dir: Path, tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture) -> None:
    model = ImageClassifier(net=LeNet5((1, 28, 28), 10), optimizer=torch.optim.SGD)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=False,
                        enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=MNISTDataModule(data_dir=str(mnist_dir), val_size=50, batch_size=32))
    path = tmp_path / "python.ckpt"
    trainer.save_checkpoint(path)

    reloaded = ImageClassifier.load_from_checkpoint(path, net=LeNet5((1, 28, 28), 10))
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), model.state_dict().values()))
    tested = cli("test", "--config", LENET, "--ckpt_path", str(path), "--data.data_dir", str(mnist_dir))
    assert 0 <= tested.trainer.callback_metrics["test/acc"].item() <= 1

    with pytest.raises(SystemExit) as exit_info:
        cli("test", "--ckpt_path", str(path), "--data.data_dir", str(mnist_dir))
    assert exit_info.value.code == 2 and "made from Python" in capsys.readouterr().err


def test_the_command_line_and_config_win_over_the_checkpoint(checkpoint: Path, mnist_dir: Path) -> None:
    plain = cli("test", "--ckpt_path", str(checkpoint), "--data.data_dir", str(mnist_dir))
    assert plain.model.hparams.label_smoothing == 0.0  # the checkpoint's
    assert plain.datamodule.hparams.batch_size == 64  # a resource: the default's, not the checkpoint's 32
    typed = cli("test", "--ckpt_path", str(checkpoint), "--data.data_dir", str(mnist_dir),
                "--model.label_smoothing", "0.3", "--data.eval_batch_size", "7")
    assert typed.model.hparams.label_smoothing == 0.3 and typed.datamodule.hparams.eval_batch_size == 7
    configured = cli("test", "--config", LENET, "--ckpt_path", str(checkpoint), "--data.data_dir", str(mnist_dir))
    assert configured.datamodule.hparams.batch_size == 256  # lenet_mnist.yaml's, over the checkpoint's 32
    assert typed.trainer.callback_metrics["test/loss"] != plain.trainer.callback_metrics["test/loss"]  # it was used


def test_test_and_predict_log_beside_the_run_that_made_the_checkpoint(checkpoint: Path, mnist_dir: Path) -> None:
    experiment = checkpoint.parents[2]
    tested = cli("test", "--ckpt_path", str(checkpoint), "--data.data_dir", str(mnist_dir))
    assert Path(tested.trainer.log_dir).parent == experiment and Path(tested.trainer.log_dir) != checkpoint.parents[1]


def test_no_logger_runs_and_writes_nothing_in_the_current_folder(mnist_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("mine: 1\n")
    result = cli("fit", "--config", LENET, "--data.data_dir", str(mnist_dir), *TINY, "--trainer.max_epochs", "1",
                 "--trainer.logger", "false")
    assert result.trainer.callback_metrics["test/acc"] >= 0
    assert (tmp_path / "config.yaml").read_text() == "mine: 1\n"
    assert {p.name for p in tmp_path.iterdir()} <= {"cache", "config.yaml", "lightning_logs"}


def write_hostile_folder(folder: Path) -> dict[str, str]:
    """Every kind of file a user's folder may hold; returns file name -> expected reason ("" = predicted)."""
    folder.mkdir()
    Image.fromarray(np.full((40, 30, 3), 200, np.uint8)).save(folder / "good.png")
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("this is not an image\n")
    good = (folder / "good.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    Image.fromarray(np.full((20, 20), 32896, np.uint16)).save(folder / "deep.png")  # 16-bit gray, value 128.5 * 256
    Image.fromarray(np.full((20, 20, 3), 90, np.uint8)).save(folder / "still.gif")
    frames = [Image.fromarray(np.full((20, 20, 3), v, np.uint8)) for v in (10, 250)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    Image.new("CMYK", (20, 20), (0, 0, 0, 0)).save(folder / "cmyk.jpg")
    Image.new("L", (10000, 10000), 255).save(folder / "huge.png")
    (folder / "loop_a.png").symlink_to(folder / "loop_b.png")
    (folder / "loop_b.png").symlink_to(folder / "loop_a.png")
    return {"good.png": "", "deep.png": "", "still.gif": "", "animated.gif": "", "cmyk.jpg": "", "huge.png": "",
            "empty.png": "empty file", "text.png": "not an image file", "truncated.png": "truncated or damaged",
            "loop_a.png": "symbolic link loop", "loop_b.png": "symbolic link loop"}


def test_predict_reads_every_readable_image_and_names_why_the_others_are_not(tmp_path: Path) -> None:
    expected = write_hostile_folder(tmp_path / "mine")
    found = read_user_images(tmp_path / "mine", (1, 28, 28))
    predicted = {Path(source).name: image for source, image in zip(found.sources, found.images)}
    assert set(predicted) == {name for name, why in expected.items() if not why}
    reasons = {Path(file).name: why for file, why in found.unreadable}
    assert set(reasons) == {name for name, why in expected.items() if why}
    for name, why in reasons.items():
        assert expected[name] in why, (name, why)
    assert int(predicted["deep.png"].float().mean()) == 128  # 16-bit scaled to 8 bits, not clipped to 255
    assert int(predicted["huge.png"].float().mean()) == 255 and predicted["cmyk.jpg"].float().mean() > 250
    assert found.images.shape == (6, 1, 28, 28)


def test_a_failed_save_leaves_the_previous_checkpoint_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mnist_cifar.runs import checkpoint_io

    path = tmp_path / "last.ckpt"
    checkpoint_io.atomic_save({"state_dict": {"w": torch.ones(3)}, "global_step": 1}, path)
    before = path.read_bytes()

    def disk_full(obj: object, file: object) -> None:
        file.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_io.torch, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        checkpoint_io.atomic_save({"state_dict": {"w": torch.zeros(3)}, "global_step": 2}, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    with pytest.raises(CheckpointError, match="NaN"):
        checkpoint_io.atomic_save({"state_dict": {"w": torch.tensor([float("nan")])}}, path)


def test_resuming_last_without_a_last_checkpoint_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli("fit", "--config", LENET, "--ckpt_path", "last", "--trainer.logger.init_args.save_dir", str(tmp_path))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--ckpt_path last found no checkpoint" in err and "lenet_mnist" in err and "Traceback" not in err


@pytest.mark.slow
def test_a_full_disk_during_a_save_is_one_paragraph_and_keeps_the_last_checkpoint(mnist_dir: Path,
                                                                                   tmp_path: Path) -> None:
    """A file-size limit (RLIMIT_FSIZE, with SIGXFSZ ignored) makes the next checkpoint write fail as a full disk
    does: exit non-zero, one paragraph naming the folder and the size, the previous last.ckpt byte for byte."""
    import resource
    import signal as signals

    base = [sys.executable, str(ROOT / "main.py"), "fit", "--config", str(ROOT / "configs" / "mlp_mnist.yaml"),
            "--data.data_dir", str(mnist_dir), *TINY, "--test_after_fit", "false"]
    subprocess.run([*base, "--trainer.max_epochs", "1"], cwd=tmp_path, check=True, capture_output=True, timeout=300)
    last = tmp_path / "lightning_logs" / "mlp_mnist" / "version_0" / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    limit = len(before) // 2

    def small_files() -> None:
        signals.signal(signals.SIGXFSZ, signals.SIG_IGN)  # else the kernel kills the writer instead of failing it
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run([*base, "--trainer.max_epochs", "2", "--ckpt_path", "last"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300, preexec_fn=small_files)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "inline_container" not in result.stderr
    message = next(line for line in result.stderr.splitlines() if line.startswith("error:"))
    assert str(last.parent) in message and "MB" in message and "--ckpt_path last" in message
    assert last.read_bytes() == before
    assert not [p.name for p in last.parent.iterdir() if p.name.startswith(".")]  # no temporary file left behind
