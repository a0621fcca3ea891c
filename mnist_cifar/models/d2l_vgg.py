"""VGG as d2l §7.2 builds it: blocks of 3x3 convs with ReLU (no batch normalization), each block ending in a 2x2
max-pool, then two 4,096-unit dropout layers. VGG-11's blocks are (1, 64), (1, 128), (2, 256), (2, 512), (2, 512);
d2l trains a narrow one on Fashion-MNIST at 224x224, every block's channels divided by 4 (`width_divisor: 4`).
`VGGNet` (vgg.py) is the batch-normalized CIFAR form.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from mnist_cifar.models._layers import dropout_head, flat_features, require_side

VGG11_BLOCKS = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))


class D2LVGG(nn.Module):
    """d2l's VGG-11 (its §7.2 training run: `width_divisor: 4`, 1x224x224 inputs).

    Args:
        input_shape: one image's (channels, height, width), linked from the data set (224 a side in d2l).
        num_classes: the number of logits, linked from the data set.
        width_divisor: every block's channels divided by this (1 is VGG-11 itself, 4 the book's run).
        hidden: units in each of the two dense layers (4,096).
        dropout: the dropout probability after each of them (0.5).
    """

    smallest_side: ClassVar[int] = 32  # pixels a side its convolutions and pools need

    def __init__(self, input_shape: tuple[int, int, int] = (1, 224, 224), num_classes: int = 10,
                 width_divisor: int = 4, hidden: int = 4096, dropout: float = 0.5) -> None:
        super().__init__()
        require_side("D2LVGG", input_shape, self.smallest_side, 224)
        layers: list[nn.Module] = []
        channels = input_shape[0]
        for convs, width in VGG11_BLOCKS:
            for _ in range(convs):
                layers += [nn.Conv2d(channels, width // width_divisor, kernel_size=3, padding=1), nn.ReLU()]
                channels = width // width_divisor
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.classifier = dropout_head(flat_features(self.features, input_shape), hidden, num_classes, dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
