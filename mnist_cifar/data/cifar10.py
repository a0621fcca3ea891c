"""CIFAR-10: 60,000 colour images, 3x32x32, ten classes, from torchvision's python batches or an image folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torchvision.datasets import CIFAR10

from mnist_cifar.data.base import ImageDataModule
from mnist_cifar.data.sources import (
    CIFAR_BATCHES_DIR,
    Split,
    check_image_folder,
    find_cifar_batches,
    find_image_folder,
    read_cifar_batches,
    read_image_folder,
)


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10 with the notes' training augmentation on by default: 4-pixel-padded random crop and horizontal flip.

    Reads torchvision's `cifar-10-batches-py/` or an image-folder copy (`train/<class>/*`, `test/<class>/*`,
    as Kaggle and the JPEG copy distribute it); an image folder is decoded once and cached in `cache_dir`.
    """

    name = "CIFAR-10"
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    image_shape = (3, 32, 32)
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)
    # Of the uint8 luma that `grayscale: true` produces, measured on the training split (JPEG copy).
    gray_mean, gray_std = 0.4787, 0.2388
    layouts = (
        f"{CIFAR_BATCHES_DIR}/ (torchvision's download: data_batch_1..5, test_batch), or an image folder with "
        "train/<class>/*.png|jpg and test/<class>/*.png|jpg for the classes " + ", ".join(classes)
    )

    def __init__(self, crop_padding: int = 4, horizontal_flip: bool = True, **kwargs: Any) -> None:
        super().__init__(crop_padding=crop_padding, horizontal_flip=horizontal_flip, **kwargs)

    def find_source(self) -> tuple[str, Path] | None:
        batches = find_cifar_batches(self.data_dir)
        if batches is not None:
            return "batches", batches
        folder = find_image_folder(self.data_dir)
        return None if folder is None else ("folder", folder)

    def check_source(self, source: Any) -> None:
        if source[0] == "folder":
            check_image_folder(source[1], self.classes)

    def download_source(self) -> None:
        CIFAR10(root=str(self.data_dir), train=True, download=True)

    def read_split(self, source: Any, split: str) -> Split:
        kind, path = source
        if kind == "batches":
            return read_cifar_batches(path, split)
        return read_image_folder(path, split, self.classes, self.image_shape, self.cache_dir)
