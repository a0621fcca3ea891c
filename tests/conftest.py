"""Tiny copies of the data sets in their real on-disk formats, so the real readers run offline.

Images carry a class-dependent bright square plus noise, so a network can learn them a little, and
every pixel value is known, so readers can be checked exactly.
"""

from __future__ import annotations

import gzip
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import write_png

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "default.yaml"
# The one tiny run: a 50-image validation split, small batches, no progress bar (tests add epochs and the rest).
TINY = ["--data.val_size", "50", "--data.batch_size", "32", "--trainer.enable_progress_bar", "false"]


def cli(*args: str):  # noqa: ANN201 (an ExperimentCLI; imported late so collection stays light)
    """One `main.py` command in this process, as `main.py` runs it (the shipped defaults, the one error path).
    The `isolated` fixture puts back what the command changes in the process."""
    from mnist_cifar.cli.main import run

    return run(list(args), default_config=DEFAULT_CONFIG)


def data_dir_for(config: Path, mnist_dir: Path, cifar_dir: Path, fashion_dir: Path) -> Path:
    """The tiny data set a shipped config's data module reads."""
    import yaml

    data_class = yaml.safe_load(config.read_text())["data"]["class_path"]
    folders = {"FashionMNISTDataModule": fashion_dir, "MNISTDataModule": mnist_dir, "CIFAR10DataModule": cifar_dir}
    return folders[data_class.rsplit(".", 1)[-1]]


def tiny_fit(config: str | Path, data_dir: Path, epochs: int = 1, *extra: str):  # noqa: ANN201
    """`fit` of a shipped config on tiny data for `epochs` epochs, in this process."""
    return cli("fit", "--config", str(config), "--data.data_dir", str(data_dir), *TINY, "--trainer.max_epochs",
               str(epochs), *extra)


def assert_one_process_test_figures(run_dir: Path, data_dir: Path) -> None:
    """A DDP run's after-fit test figures (its record) equal one process's test of its best checkpoint."""
    from mnist_cifar.cli.main import run
    from mnist_cifar.experiments.logs import read_scalars

    after_fit = {tag: values[-1][1] for tag, values in read_scalars(run_dir).items() if tag.startswith("test/")}
    (best,) = (run_dir / "checkpoints").glob("epoch*.ckpt")
    one = run(["test", "--ckpt_path", str(best), "--data.data_dir", str(data_dir)], default_config=DEFAULT_CONFIG)
    single = {name: value.item() for name, value in one.trainer.callback_metrics.items() if name.startswith("test/")}
    assert set(single) == set(after_fit) and "test/acc_0" in single
    for name, value in single.items():
        assert after_fit[name] == pytest.approx(value, abs=1e-6), name


CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def make_images(n: int, shape: tuple[int, int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = rng.integers(0, 80, size=(n, *shape), dtype=np.uint8)
    for image, label in zip(images, labels):
        row, col = divmod(int(label), 5)
        image[:, 4 + 10 * row : 12 + 10 * row, 2 + 5 * col : 6 + 5 * col] = 250
    return images, labels.astype(np.uint8)


def write_idx(path: Path, array: np.ndarray) -> None:
    magic = 0x0800 | (0x03 if array.ndim == 3 else 0x01)
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, n_train: int = 200, n_test: int = 60) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    splits = {"train": make_images(n_train, (1, 28, 28), 0), "test": make_images(n_test, (1, 28, 28), 1)}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = splits[split]
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images[:, 0])
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return splits


def write_fashion_mnist(root: Path, layout: str = "debian", n_train: int = 200,
                        n_test: int = 60) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Fashion-MNIST's four IDX files: `debian` as the package installs them (gzipped, in a fashion-mnist/ folder),
    `torchvision` as its download leaves them (uncompressed, in FashionMNIST/raw/)."""
    folder = root / ("fashion-mnist" if layout == "debian" else "FashionMNIST/raw")
    folder.mkdir(parents=True)
    splits = {"train": make_images(n_train, (1, 28, 28), 6), "test": make_images(n_test, (1, 28, 28), 7)}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = splits[split]
        for name, array in ((f"{prefix}-images-idx3-ubyte", images[:, 0]), (f"{prefix}-labels-idx1-ubyte", labels)):
            write_idx(folder / name, array)
            if layout == "debian":
                (folder / f"{name}.gz").write_bytes(gzip.compress((folder / name).read_bytes()))
                (folder / name).unlink()
    return splits


def write_cifar_batches(root: Path, per_batch: int = 40, n_test: int = 60) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train = make_images(5 * per_batch, (3, 32, 32), 2)
    test = make_images(n_test, (3, 32, 32), 3)
    for i in range(5):
        part = slice(i * per_batch, (i + 1) * per_batch)
        batch = {"data": train[0][part].reshape(per_batch, -1), "labels": train[1][part].tolist()}
        (folder / f"data_batch_{i + 1}").write_bytes(pickle.dumps(batch))
    (folder / "test_batch").write_bytes(pickle.dumps({"data": test[0].reshape(n_test, -1), "labels": test[1].tolist()}))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list(CIFAR_CLASSES)}))
    return {"train": train, "test": test}


def write_image_folder(root: Path, n_train: int = 120, n_test: int = 40) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    splits = {"train": make_images(n_train, (3, 32, 32), 4), "test": make_images(n_test, (3, 32, 32), 5)}
    for split, (images, labels) in splits.items():
        for name in CIFAR_CLASSES:
            (root / split / name).mkdir(parents=True)
        for i, (image, label) in enumerate(zip(images, labels)):
            write_png(torch.from_numpy(image), str(root / split / CIFAR_CLASSES[label] / f"{i:04d}.png"))
    return splits


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mnist")
    write_mnist(root)
    return root


@pytest.fixture(scope="session")
def fashion_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fashion")
    write_fashion_mnist(root)
    return root


@pytest.fixture(scope="session")
def cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    write_cifar_batches(root)
    return root


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test runs in its own folder (lightning_logs lands there) with no data or cache from the user, and
    leaves the process as it found it: what an in-process `main.py` command changes (torch's threads, the
    environment, warning filters, exception hooks, signal handlers) is put back after the test."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MNIST_CIFAR_DATA", raising=False)
    monkeypatch.setenv("MNIST_CIFAR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("sys.argv", ["main.py"])
    state = _process_state()
    yield
    _restore(state)


SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


def _process_state() -> dict:
    return {"threads": torch.get_num_threads(), "environ": dict(os.environ), "filters": list(warnings.filters),
            "excepthook": sys.excepthook, "threading_excepthook": threading.excepthook,
            "signals": {number: signal.getsignal(number) for number in SIGNALS}}


def _restore(state: dict) -> None:
    torch.set_num_threads(state["threads"])
    os.environ.clear()
    os.environ.update(state["environ"])
    warnings.filters[:] = state["filters"]
    sys.excepthook, threading.excepthook = state["excepthook"], state["threading_excepthook"]
    for number, handler in state["signals"].items():
        signal.signal(number, handler)


# Written in the checkout by Python and pytest themselves, not by the tests.
TOOL_LITTER = ("__pycache__", ".pytest_cache", ".egg-info")


def repository_files() -> set[str]:
    """Every file git sees in the checkout, the ignored ones (lightning_logs/, data/) included, with its state."""
    result = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    return {line for line in result.stdout.splitlines() if not any(part in line for part in TOOL_LITTER)}


@pytest.fixture(scope="session", autouse=True)
def repository_stays_untouched() -> Iterator[None]:
    """The tests write only into temporary folders: the checkout is the same after the suite as before it."""
    if not (ROOT / ".git").exists():
        yield
        return
    before = repository_files()
    yield
    added = repository_files() - before
    assert not added, f"the test suite wrote into the repository: {sorted(added)[:10]}"
