"""Small helpers the model files share: the flattened size a feature extractor produces, and activations by name."""

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
