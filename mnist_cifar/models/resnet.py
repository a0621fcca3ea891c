"""Residual networks for 32x32 images (He et al., 2015): the CIFAR ResNet-18/34 and the thin ResNet-20/32/44/56/110.

- depth 18 or 34: four stages of basic blocks, 64 -> 512 channels, [2, 2, 2, 2] or [3, 4, 6, 3] blocks, with a
  3x3 stem and no max-pool (as in kuangliu/pytorch-cifar; about 95 % on CIFAR-10 for ResNet-18).
- depth 6n + 2 (20, 32, 44, 56, 110): the paper's CIFAR family, three stages of n blocks, 16 -> 64 channels
  (0.27 M parameters for ResNet-20). Shortcuts that change shape use a 1x1 conv + BatchNorm (option B).
Named `CifarResNet` so configs never confuse it with torchvision's `ResNet`.
"""

from __future__ import annotations

from torch import Tensor, nn

WIDE_BLOCKS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3]}
WIDE_WIDTHS = [64, 128, 256, 512]
THIN_WIDTHS = [16, 32, 64]


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and a shortcut: out = ReLU(F(x) + shortcut(x))."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.residual(x) + self.shortcut(x))


def blocks_and_widths(depth: int) -> tuple[list[int], list[int]]:
    if depth in WIDE_BLOCKS:
        return WIDE_BLOCKS[depth], WIDE_WIDTHS
    if depth >= 8 and (depth - 2) % 6 == 0:
        return [(depth - 2) // 6] * 3, THIN_WIDTHS
    raise ValueError(f"CifarResNet depth must be 18, 34 or 6n+2 (20, 32, 44, 56, 110), got {depth}.")


class CifarResNet(nn.Module):
    """A residual network for small images: ResNet-18/34 (64-512 channels) or the thin ResNet-20/32/44/56/110.

    Args:
        input_shape: one image's (channels, height, width), linked from the data set by main.py.
        num_classes: the number of logits, linked from the data set.
        depth: 18 or 34 for the four-stage basic-block nets, or 6n + 2 (20, 32, 44, 56, 110) for He et al.'s CIFAR
            family.
    """

    def __init__(self, input_shape: tuple[int, int, int] = (3, 32, 32), num_classes: int = 10, depth: int = 18) -> None:
        super().__init__()
        blocks, widths = blocks_and_widths(depth)
        layers: list[nn.Module] = [
            nn.Conv2d(input_shape[0], widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        ]
        in_channels = widths[0]
        for stage, (count, width) in enumerate(zip(blocks, widths)):
            for index in range(count):
                layers.append(BasicBlock(in_channels, width, stride=2 if stage > 0 and index == 0 else 1))
                in_channels = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(in_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
