"""MNIST: 70,000 handwritten digits, 1x28x28, from torchvision's download or any folder of the IDX files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torchvision.datasets import MNIST

from mnist_cifar.data.base import ImageDataModule
from mnist_cifar.data.sources import Split, find_mnist, read_mnist


class MNISTDataModule(ImageDataModule):
    """MNIST with no augmentation by default; `permute_pixels: true` gives the notes' permuted-MNIST."""

    name = "MNIST"
    classes = tuple(str(digit) for digit in range(10))
    image_shape = (1, 28, 28)
    mean = (0.1307,)
    std = (0.3081,)
    gray_mean, gray_std = mean[0], std[0]
    layouts = (
        "MNIST/raw/ (torchvision's layout), raw/ or the folder itself, holding the four uncompressed IDX files "
        "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"
    )

    def find_source(self) -> Path | None:
        return find_mnist(self.data_dir)

    def download_source(self) -> None:
        MNIST(root=str(self.data_dir), train=True, download=True)

    def read_split(self, source: Any, split: str) -> Split:
        return read_mnist(source, split)
