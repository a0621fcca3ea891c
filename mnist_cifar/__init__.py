"""mnist-cifar: classic MNIST and CIFAR-10 experiments as LightningCLI configs.

The names below are imported when first used (PEP 562), so commands that never train (`predict` with an exported
file, `python -m mnist_cifar.experiments status`) do not pay for importing Lightning."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from mnist_cifar import moved

moved.install()  # old module paths (before the subpackages) still import, with a warning

CONFIGS = Path(__file__).resolve().parent / "configs"  # the shipped configs: package data (configs/ in a clone)

_WHERE = {"ImageClassifier": "mnist_cifar.training.classifier", "CIFAR10DataModule": "mnist_cifar.data",
          "ImageDataModule": "mnist_cifar.data", "MNISTDataModule": "mnist_cifar.data",
          "FashionMNISTDataModule": "mnist_cifar.data",
          "UserFacingError": "mnist_cifar.errors"}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:  # noqa: ANN401
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'mnist_cifar' has no attribute {name!r}")
