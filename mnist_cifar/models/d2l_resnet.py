"""ResNet-18 as d2l §7.6 builds it (He et al.'s ImageNet stem and stages) and trains it on Fashion-MNIST at 96x96:
a 7x7/2 conv with batch norm and a 3x3/2 max-pool, four stages of two residual blocks (64, 128, 256, 512 channels;
a 1x1 conv on the shortcut where the shape changes), global average pooling and one dense layer. Its convs keep
their bias, as d2l's do. `CifarResNet` (resnet.py) is the 3x3-stem CIFAR form.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from mnist_cifar.models._layers import require_side


class Residual(nn.Module):
    """d2l's `Residual`: conv-BN-ReLU-conv-BN plus the input (through a strided 1x1 conv when needed), then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1), nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1), nn.BatchNorm2d(out_channels),
        )  # fmt: skip
        reshaped = stride != 1 or in_channels != out_channels
        self.shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride) if reshaped else nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.residual(x) + self.shortcut(x))


class D2LResNet18(nn.Module):
    """d2l's ResNet-18 (11.2 M parameters); meant for `data.resize: 96`.

    Args:
        input_shape: one image's (channels, height, width), linked from the data set (96 a side in d2l).
        num_classes: the number of logits, linked from the data set.
    """

    smallest_side: ClassVar[int] = 8  # pixels a side its convolutions and pools need

    def __init__(self, input_shape: tuple[int, int, int] = (1, 96, 96), num_classes: int = 10) -> None:
        super().__init__()
        require_side("D2LResNet18", input_shape, self.smallest_side, 96)
        layers: list[nn.Module] = [
            nn.Conv2d(input_shape[0], 64, kernel_size=7, stride=2, padding=3), nn.BatchNorm2d(64), nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        ]  # fmt: skip
        channels = 64
        for stage, width in enumerate((64, 128, 256, 512)):
            layers += [Residual(channels, width, stride=1 if stage == 0 else 2), Residual(width, width)]
            channels = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
