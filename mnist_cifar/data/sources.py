"""Readers that turn each accepted on-disk copy of MNIST or CIFAR-10 into uint8 tensors.

Every reader returns a `Split`: images as uint8 `(N, C, H, W)` and labels as int64 `(N,)`. Decoding
happens once per process (or once per machine for image folders, through the tensor cache); all
later work (normalization, augmentation) runs batched on these tensors.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from torchvision.datasets.mnist import read_image_file, read_label_file
from torchvision.io import ImageReadMode, decode_image, read_file

from mnist_cifar.errors import DataCorruptError
from mnist_cifar.files import atomic_write

Split = tuple[Tensor, Tensor]

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR_BATCHES_DIR = "cifar-10-batches-py"
SHOWN_NAMES = 10


def _first_dir_with(candidates: Sequence[Path], names: Sequence[str]) -> Path | None:
    return next((d for d in candidates if all((d / name).is_file() for name in names)), None)


def _name_some(paths: Sequence[object]) -> str:
    shown = ", ".join(str(p) for p in paths[:SHOWN_NAMES])
    return shown + (f" and {len(paths) - SHOWN_NAMES} more" if len(paths) > SHOWN_NAMES else "")


def find_mnist(data_dir: Path) -> Path | None:
    """The folder holding the four uncompressed IDX files (torchvision's `MNIST/raw` layout or flat)."""
    names = [name for pair in MNIST_FILES.values() for name in pair]
    return _first_dir_with([data_dir / "MNIST" / "raw", data_dir / "raw", data_dir], names)


def read_mnist(raw_dir: Path, split: str) -> Split:
    images_name, labels_name = MNIST_FILES[split]
    try:
        images = read_image_file(str(raw_dir / images_name))
        labels = read_label_file(str(raw_dir / labels_name))
    except Exception as error:  # torchvision raises bare assertions/ValueErrors on bad headers
        raise DataCorruptError(
            f"The MNIST {split} files in {raw_dir} ({images_name}, {labels_name}) are not valid IDX "
            f"files ({type(error).__name__}: {error}). Replace them with the original uncompressed files "
            f"(or delete them and run with download enabled)."
        ) from error
    if len(images) != len(labels):
        raise DataCorruptError(
            f"The MNIST {split} files in {raw_dir} disagree: {len(images)} images but {len(labels)} labels. "
            f"Replace them with the original files."
        )
    return images.unsqueeze(1).contiguous(), labels.long()


def find_cifar_batches(data_dir: Path) -> Path | None:
    """The folder holding CIFAR-10's python pickle batches (torchvision's download layout)."""
    names = CIFAR_BATCHES["train"] + CIFAR_BATCHES["test"]
    return _first_dir_with([data_dir / CIFAR_BATCHES_DIR, data_dir], names)


def read_cifar_batches(batches_dir: Path, split: str) -> Split:
    images, labels = [], []
    for name in CIFAR_BATCHES[split]:
        path = batches_dir / name
        try:
            with open(path, "rb") as file:
                batch = pickle.load(file, encoding="latin1")
            data = torch.as_tensor(batch["data"], dtype=torch.uint8).reshape(-1, 3, 32, 32)
            targets = torch.as_tensor(batch["labels"], dtype=torch.long)
        except Exception as error:
            raise DataCorruptError(
                f"The CIFAR-10 batch file {path} cannot be read ({type(error).__name__}: {error}). "
                f"Replace the folder {batches_dir} with a fresh copy of cifar-10-python.tar.gz, unpacked."
            ) from error
        images.append(data)
        labels.append(targets)
    return torch.cat(images), torch.cat(labels)


def find_image_folder(data_dir: Path) -> Path | None:
    """A folder with `train/<class>/` and `test/<class>/` sub-folders of image files."""
    return data_dir if (data_dir / "train").is_dir() and (data_dir / "test").is_dir() else None


def _list_class_files(split_dir: Path, classes: Sequence[str]) -> list[tuple[Path, int]]:
    found = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    missing = [c for c in classes if c not in found]
    unknown = [c for c in found if c not in classes]
    if missing or unknown:
        raise DataCorruptError(
            f"The image folder {split_dir} must hold one sub-folder per class, named {', '.join(classes)}. "
            + (f"Missing: {', '.join(missing)}. " if missing else "")
            + (f"Not a class of this data set: {', '.join(unknown)}. " if unknown else "")
            + "Add or rename the folders, or point --data.data_dir at a complete copy."
        )
    files = []
    for label, name in enumerate(classes):
        names = sorted(f for f in os.listdir(split_dir / name) if not f.startswith("."))
        files.extend((split_dir / name / f, label) for f in names)
    return files


def _source_key(files: Sequence[tuple[Path, int]]) -> str:
    digest = hashlib.sha1()
    for path, label in files:
        stat = path.stat()
        digest.update(f"{path.resolve()}|{label}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def _decode_files(files: Sequence[tuple[Path, int]], image_shape: tuple[int, int, int]) -> Split:
    mode = ImageReadMode.RGB if image_shape[0] == 3 else ImageReadMode.GRAY
    images = torch.empty((len(files), *image_shape), dtype=torch.uint8)
    unreadable, wrong_size = [], []
    for i, (path, _) in enumerate(files):
        try:
            image = decode_image(read_file(str(path)), mode=mode)
        except Exception:
            unreadable.append(path)
            continue
        if tuple(image.shape) != image_shape:
            wrong_size.append(path)
            continue
        images[i] = image
    if unreadable or wrong_size:
        raise DataCorruptError(
            (f"{len(unreadable)} file(s) are not readable images: {_name_some(unreadable)}. " if unreadable else "")
            + (
                f"{len(wrong_size)} image(s) are not {image_shape[1]}x{image_shape[2]}: {_name_some(wrong_size)}. "
                if wrong_size
                else ""
            )
            + "Remove or replace them (the image folder must hold only the data set's images)."
        )
    return images, torch.tensor([label for _, label in files], dtype=torch.long)


def read_image_folder(
    root: Path, split: str, classes: Sequence[str], image_shape: tuple[int, int, int], cache_dir: Path
) -> Split:
    """Decode `root/<split>/<class>/*` once, then reuse a tensor cache keyed by every file's path, size and mtime."""
    files = _list_class_files(root / split, classes)
    cache_file = cache_dir / f"imagefolder-{split}-{_source_key(files)}.pt"
    if cache_file.is_file():
        cached = _read_cache(cache_file, len(files), image_shape)
        if cached is not None:
            return cached
    images, labels = _decode_files(files, image_shape)
    _save_atomically({"images": images, "labels": labels, "sha256": _tensor_digest(images, labels)}, cache_file)
    return images, labels


def check_image_folder(root: Path, classes: Sequence[str]) -> None:
    """Both splits hold one folder per class: checked before training, not found only at the after-fit test.
    (`find_image_folder` found `root` only because both split folders exist.)"""
    for split in ("train", "test"):
        _list_class_files(root / split, classes)


def _tensor_digest(images: Tensor, labels: Tensor) -> str:
    digest = hashlib.sha256()
    for tensor in (images, labels):
        digest.update(f"{tensor.dtype} {tuple(tensor.shape)}:".encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def _read_cache(cache_file: Path, count: int, image_shape: tuple[int, int, int]) -> Split | None:
    """The cached split if it is whole: the SHA-256 of its pixels and labels, written with it, still matches;
    else None (the cache is rebuilt from the image files, and a warning says so)."""
    try:
        cached = torch.load(cache_file, weights_only=True)
        images, labels = cached["images"], cached["labels"]
        whole = (images.dtype == torch.uint8 and tuple(images.shape) == (count, *image_shape)
                 and len(labels) == count and cached.get("sha256") == _tensor_digest(images, labels))
    except Exception:  # noqa: BLE001 (unreadable in any way: rebuilt, never trusted)
        whole = False
    if whole:
        return images, labels
    warnings.warn(f"The decoded-image cache {cache_file} is damaged or from an older version (its content does not "
                  f"match the checksum stored with it): decoding the image files again and rewriting it.", stacklevel=3)
    return None


def _save_atomically(obj: object, path: Path) -> None:
    try:
        atomic_write(path, lambda partial: torch.save(obj, partial))
    except OSError as error:
        warnings.warn(
            f"Could not write the decoded-image cache {path} ({error}); the images will be decoded again next "
            f"run. Set --data.cache_dir (or MNIST_CIFAR_CACHE) to a writable folder.",
            stacklevel=2,
        )
