"""Pieces the model files share: activations by name, conv-BN-ReLU, and the flattened size of a feature extractor."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Activation = Literal["relu", "sigmoid", "tanh", "gelu"]
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}.")
    return ACTIVATIONS[name]()


@torch.no_grad()
def flat_features(features: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Number of features `features` outputs for one image of `input_shape`, found by a dry run."""
    return features(torch.zeros(1, *input_shape)).flatten(1).shape[1]


def dropout_head(in_features: int, hidden: int, num_classes: int, dropout: float) -> nn.Sequential:
    """AlexNet's and VGG's classifier: two `hidden`-unit dense layers with ReLU and dropout, then the logits."""
    return nn.Sequential(
        nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )  # fmt: skip


def require_side(model: str, input_shape: tuple[int, int, int], smallest: int, book: int) -> None:
    """Refuse, naming the fix, an input too small for a network built for ImageNet-sized images."""
    if min(input_shape[1:]) < smallest:
        raise ValueError(f"{model} takes images of at least {smallest} pixels a side (its strided convolutions and "
                         f"pools would shrink {input_shape[1]}x{input_shape[2]} to nothing); d2l trains it at {book}: "
                         f"give --data.resize {book}.")


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> nn.Sequential:
    """A padded conv (no bias: BatchNorm has one) -> BatchNorm -> ReLU, the unit of VGG-BN and the improved CNN."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def pool_if_room(size: int) -> tuple[nn.Module, int]:
    """Max-pool by 2 while the feature map is at least 2 pixels wide, else skip: deep nets then fit 28x28 MNIST."""
    return (nn.MaxPool2d(2), size // 2) if size >= 2 else (nn.Identity(), size)
