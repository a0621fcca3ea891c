"""VGG-11/13/16/19 with BatchNorm for 32x32 images (Simonyan & Zisserman, 2014, as kuangliu/pytorch-cifar adapts it).

The ImageNet VGG's conv stacks ("A", "B", "D", "E" configurations) with BatchNorm after every conv, and the
three 4096-wide FC layers replaced by one 512 -> classes layer. Named `VGGNet` so that configs never
confuse it with torchvision's `VGG`. Pools are skipped once the map is 1 pixel wide, so MNIST's 28x28 works.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from mnist_cifar.models._layers import conv_bn_relu, pool_if_room

POOL = "M"
STAGES: dict[int, list[int | str]] = {
    11: [64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL],
    13: [64, 64, POOL, 128, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL],
    16: [64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL, 512, 512, 512, POOL],
    19: [64, 64, POOL, 128, 128, POOL, 256, 256, 256, 256, POOL, 512, 512, 512, 512, POOL, 512, 512, 512, 512, POOL],
}


class VGGNet(nn.Module):
    """VGG with BatchNorm after every conv and one 512 -> classes head, for small images.

    Args:
        input_shape: one image's (channels, height, width), linked from the data set by main.py.
        num_classes: the number of logits, linked from the data set.
        depth: 11, 13, 16 or 19 (the paper's A, B, D, E conv stacks).
    """

    def __init__(
        self, input_shape: tuple[int, int, int] = (3, 32, 32), num_classes: int = 10, depth: Literal[11, 13, 16, 19] = 16
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels, size = input_shape[0], input_shape[1]
        for item in STAGES[depth]:
            if item == POOL:
                pool, size = pool_if_room(size)
                layers.append(pool)
            else:
                layers.append(conv_bn_relu(in_channels, int(item)))
                in_channels = int(item)
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
