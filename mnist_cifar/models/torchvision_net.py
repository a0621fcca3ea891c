"""Any `torchvision.models` classifier by name, with its last linear layer replaced for this data set's classes.

`weights` names torchvision's pretrained weights (e.g. `IMAGENET1K_V1`, or `DEFAULT`); `null` trains from
scratch. Downloading weights needs internet once (torchvision caches them under `$TORCH_HOME/hub/checkpoints`);
offline, asking for weights that are not cached stops with a message saying where to put the file.
Grayscale input is repeated to three channels; `resize` upsamples images (e.g. to 224 for ImageNet weights).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from mnist_cifar.errors import ConfigError, UserFacingError


def _replace_last_linear(model: nn.Module, num_classes: int) -> None:
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(f"{type(model).__name__} has no final nn.Linear layer to replace; choose another model.")
    name, last = linears[-1]
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    setattr(parent, name.rpartition(".")[2], nn.Linear(last.in_features, num_classes))


def _load(name: str, weights: str | None) -> nn.Module:
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise ConfigError(
            f"torchvision has no classification model {name!r}. Choose one of: "
            + ", ".join(torchvision.models.list_models(module=torchvision.models))
        )
    try:
        weights_enum = torchvision.models.get_model_weights(name)[weights] if weights else None
    except KeyError:
        raise ConfigError(
            f"{name} has no weights {weights!r}; choose one of: "
            + ", ".join(w.name for w in torchvision.models.get_model_weights(name))
            + ", or weights: null to train from scratch."
        ) from None
    try:
        return torchvision.models.get_model(name, weights=weights_enum)
    except Exception as error:
        if weights_enum is None:
            raise
        folder = Path(torch.hub.get_dir()) / "checkpoints"
        raise UserFacingError(
            f"Could not load the {name} weights {weights} ({type(error).__name__}: {error}). They are downloaded from "
            f"{weights_enum.url} and cached in {folder}; offline, copy that file into {folder} "
            f"(or set TORCH_HOME), or train from scratch with --model.net.init_args.weights null."
        ) from error


class TorchvisionNet(nn.Module):
    """Any torchvision.models classifier by name, with its last linear layer replaced for the data set's classes.

    Args:
        input_shape: one image's (channels, height, width), linked from the data set by main.py.
        num_classes: the number of logits, linked from the data set.
        name: a torchvision classification model, e.g. resnet18, mobilenet_v3_small, efficientnet_b0.
        weights: torchvision's pretrained weights by name (IMAGENET1K_V1, DEFAULT) or null to train from scratch; never
            read from a checkpoint, whose own weights replace them.
        resize: upsample images to this size first (e.g. 224 for ImageNet weights); null keeps them as they are.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int] = (3, 32, 32),
        num_classes: int = 10,
        name: str = "resnet18",
        weights: str | None = None,
        resize: int | None = None,
    ) -> None:
        super().__init__()
        self.backbone = _load(name, weights)
        _replace_last_linear(self.backbone, num_classes)
        self.resize = resize

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.resize:
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False)
        return self.backbone(x)
