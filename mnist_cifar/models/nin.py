"""Network in Network (Lin et al., 2013) for 28-32 pixel images, after d2l's NiN chapter.

Each NiN block is a spatial conv followed by two 1x1 convs (a per-pixel MLP), all with ReLU; the last
block outputs one channel per class and global average pooling replaces the FC layers altogether.
d2l's 11x11/4 first kernel for 224x224 inputs becomes 5x5/1 here.
"""

from __future__ import annotations

from torch import Tensor, nn


def nin_block(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2), nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 1), nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 1), nn.ReLU(inplace=True),
    )  # fmt: skip


class NiN(nn.Module):
    """Network in Network: conv blocks each followed by two 1x1 convs, the last giving one channel per class, then
    global average pooling.

    Args:
        input_shape: one image's (channels, height, width), linked from the data set by main.py.
        num_classes: the number of logits, linked from the data set.
        dropout: the dropout probability before the last block.
    """

    def __init__(self, input_shape: tuple[int, int, int] = (3, 32, 32), num_classes: int = 10, dropout: float = 0.5) -> None:
        super().__init__()
        self.network = nn.Sequential(
            nin_block(input_shape[0], 96, 5), nn.MaxPool2d(2),
            nin_block(96, 256, 5), nn.MaxPool2d(2),
            nin_block(256, 384, 3), nn.MaxPool2d(2),
            nn.Dropout(dropout),
            nin_block(384, num_classes, 3),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x)
