"""Fashion-MNIST: 70,000 grayscale photos of clothing in ten classes, 1x28x28, in MNIST's IDX format.

Zalando's drop-in replacement for MNIST (Xiao, Rasul & Vollgraf, 2017), and the data set every image chapter of d2l
(Dive into Deep Learning) trains on. It keeps MNIST's protocol here (a seeded hold-out validation split, the test
split read once); only the classes, the mean/std and where the files are looked for differ. Offline, Debian's
package `dataset-fashion-mnist` installs the four original .gz files: `--data.data_dir /usr/share/datasets/fashion-mnist`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torchvision.datasets import FashionMNIST

from mnist_cifar.data.mnist import MNISTDataModule
from mnist_cifar.data.sources import Split, find_idx, read_idx_split


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST with MNIST's protocol and options (no augmentation by default; `permute_pixels` works too)."""

    name = "Fashion-MNIST"
    classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
    image_shape = (1, 28, 28)
    mean = (0.2860,)  # of the 60,000 training images, as read from the published files
    std = (0.3530,)
    gray_mean, gray_std = mean[0], std[0]
    layouts = (
        "FashionMNIST/raw/ (torchvision's layout), fashion-mnist/ (the Debian package's folder name), raw/ or the "
        "folder itself, holding the four IDX files train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, uncompressed or as .gz (Debian: apt-get install "
        "dataset-fashion-mnist, then --data.data_dir /usr/share/datasets/fashion-mnist)"
    )

    def find_source(self) -> Path | None:
        root = self.data_dir
        return find_idx([root / "FashionMNIST" / "raw", root / "fashion-mnist", root / "raw", root])

    def download_source(self) -> None:
        FashionMNIST(root=str(self.data_dir), train=True, download=True)

    def read_split(self, source: Any, split: str) -> Split:
        return read_idx_split(source, split, self.name)
