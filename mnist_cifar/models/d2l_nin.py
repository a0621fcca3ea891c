"""Network in Network as d2l §7.3 builds it for 224x224 inputs: four NiN blocks (a conv then two 1x1 convs, ReLU
after each) of 96 (11x11 stride 4), 256 (5x5), 384 (3x3) and `num_classes` (3x3) channels, 3x3/2 max-pools between
them, dropout before the last, and global average pooling instead of dense layers. `NiN` (nin.py) is the CIFAR form.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from mnist_cifar.models._layers import require_side


def nin_block(in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding), nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, kernel_size=1), nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, kernel_size=1), nn.ReLU(),
    )  # fmt: skip


class D2LNiN(nn.Module):
    """d2l's NiN (about 2 M parameters); meant for `data.resize: 224`.

    Args:
        input_shape: one image's (channels, height, width), linked from the data set (224 a side in d2l).
        num_classes: the number of logits (the last block's channels), linked from the data set.
        dropout: the dropout probability before the last block (0.5).
    """

    smallest_side: ClassVar[int] = 67  # pixels a side its convolutions and pools need

    def __init__(self, input_shape: tuple[int, int, int] = (1, 224, 224), num_classes: int = 10,
                 dropout: float = 0.5) -> None:
        super().__init__()
        require_side("D2LNiN", input_shape, self.smallest_side, 224)
        self.network = nn.Sequential(
            nin_block(input_shape[0], 96, kernel_size=11, stride=4, padding=0), nn.MaxPool2d(3, stride=2),
            nin_block(96, 256, kernel_size=5, stride=1, padding=2), nn.MaxPool2d(3, stride=2),
            nin_block(256, 384, kernel_size=3, stride=1, padding=1), nn.MaxPool2d(3, stride=2),
            nn.Dropout(dropout),
            nin_block(384, num_classes, kernel_size=3, stride=1, padding=1),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x)
