"""Readers that turn each accepted on-disk copy of MNIST, Fashion-MNIST or CIFAR-10 into uint8 tensors.

Every reader returns a `Split`: images as uint8 `(N, C, H, W)` and labels as int64 `(N,)`. Decoding
happens once per process (or once per machine for image folders, through the tensor cache); all
later work (normalization, augmentation) runs batched on these tensors.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import pickle
import struct
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
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


def find_idx(folders: Sequence[Path]) -> Path | None:
    """The first folder holding the four IDX files of MNIST's layout, uncompressed or each as `<name>.gz` (the
    published files; torchvision's download keeps both)."""
    names = [name for pair in MNIST_FILES.values() for name in pair]
    return next((d for d in folders if all(_idx_file(d, name) is not None for name in names)), None)


def find_mnist(data_dir: Path) -> Path | None:
    """The folder holding MNIST's four IDX files (torchvision's `MNIST/raw` layout or flat)."""
    return find_idx([data_dir / "MNIST" / "raw", data_dir / "raw", data_dir])


def _idx_file(folder: Path, name: str) -> Path | None:
    return next((p for p in (folder / name, folder / f"{name}.gz") if p.is_file()), None)


def read_idx(path: Path) -> Tensor:
    """An IDX file of unsigned bytes (the format of MNIST and Fashion-MNIST), gzip-compressed or not, as uint8.

    The header is a zero pair, the type byte 0x08 (unsigned byte), the number of dimensions and each size as a
    big-endian uint32; the data must be exactly that many bytes."""
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08 or not 1 <= data[3] <= 4:
        raise ValueError(f"its header {data[:4].hex() or 'is empty'} is not that of an IDX file of unsigned bytes")
    if len(data) < 4 + 4 * data[3]:
        raise ValueError(f"its header ends after {len(data)} bytes, before the {data[3]} sizes it announces")
    sizes = struct.unpack(f">{data[3]}I", data[4 : 4 + 4 * data[3]])
    start, count = 4 + 4 * data[3], math.prod(sizes)
    if len(data) - start != count:
        raise ValueError(f"its header promises {count:,} bytes of data for shape {list(sizes)}, but it holds "
                         f"{len(data) - start:,}")
    return torch.frombuffer(bytearray(data[start:]), dtype=torch.uint8).view(*sizes)


def read_idx_split(folder: Path, split: str, name: str) -> Split:
    """`split` of an MNIST-layout data set (`name` for messages) from the IDX files in `folder`."""
    images_name, labels_name = MNIST_FILES[split]
    images_path, labels_path = _idx_file(folder, images_name), _idx_file(folder, labels_name)
    try:
        if images_path is None or labels_path is None:
            raise FileNotFoundError("one of them is missing")
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.dim() != 3 or labels.dim() != 1:
            raise ValueError(f"the images have {images.dim()} dimensions (3 expected), the labels {labels.dim()} (1)")
    except (OSError, ValueError, EOFError, gzip.BadGzipFile) as error:
        raise DataCorruptError(
            f"The {name} {split} files in {folder} ({images_name}, {labels_name}, or their .gz) are not valid IDX "
            f"files ({type(error).__name__}: {error}). Replace them with the original files (or delete them and "
            f"run with download enabled)."
        ) from error
    if len(images) != len(labels):
        raise DataCorruptError(
            f"The {name} {split} files in {folder} disagree: {len(images)} images but {len(labels)} labels. "
            f"Replace them with the original files."
        )
    return images.unsqueeze(1).contiguous(), labels.long()


def read_mnist(raw_dir: Path, split: str) -> Split:
    return read_idx_split(raw_dir, split, "MNIST")


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
        cached = read_cache(cache_file, len(files), image_shape)
        if cached is not None:
            return cached
    images, labels = _decode_files(files, image_shape)
    save_cache({"images": images, "labels": labels, "sha256": tensor_digest(images, labels)}, cache_file)
    return images, labels


def check_image_folder(root: Path, classes: Sequence[str]) -> None:
    """Both splits hold one folder per class: checked before training, not found only at the after-fit test.
    (`find_image_folder` found `root` only because both split folders exist.)"""
    for split in ("train", "test"):
        _list_class_files(root / split, classes)


def tensor_digest(images: Tensor, labels: Tensor) -> str:
    digest = hashlib.sha256()
    for tensor in (images, labels):
        digest.update(f"{tensor.dtype} {tuple(tensor.shape)}:".encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def read_cache(cache_file: Path, count: int, image_shape: tuple[int, int, int]) -> Split | None:
    """The cached split if it is whole: the SHA-256 of its pixels and labels, written with it, still matches;
    else None (the cache is rebuilt, and a warning says so). Decoded image folders and corrupted test splits."""
    try:
        cached = torch.load(cache_file, weights_only=True)
        images, labels = cached["images"], cached["labels"]
        whole = (images.dtype == torch.uint8 and tuple(images.shape) == (count, *image_shape)
                 and len(labels) == count and cached.get("sha256") == tensor_digest(images, labels))
    except Exception:  # noqa: BLE001 (unreadable in any way: rebuilt, never trusted)
        whole = False
    if whole:
        return images, labels
    warnings.warn(f"The decoded-image cache {cache_file} is damaged or from an older version (its content does not "
                  f"match the checksum stored with it): making it again from the data set and rewriting it.", stacklevel=3)
    return None


def save_cache(obj: object, path: Path) -> None:
    try:
        atomic_write(path, lambda partial: torch.save(obj, partial))
    except OSError as error:
        warnings.warn(
            f"Could not write the decoded-image cache {path} ({error}); the images will be decoded again next "
            f"run. Set --data.cache_dir (or MNIST_CIFAR_CACHE) to a writable folder.",
            stacklevel=2,
        )
