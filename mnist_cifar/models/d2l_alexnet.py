"""AlexNet as d2l §7.1 trains it on Fashion-MNIST resized to 224x224: Krizhevsky et al.'s five convolutions (11x11
stride 4, then 5x5 and three 3x3; 96-256-384-384-256 channels), three 3x3/2 max-pools and two 4,096-unit dropout
layers, for one input channel and ten classes. `SmallAlexNet` (alexnet.py) is its 28-32 pixel adaptation.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from mnist_cifar.models._layers import dropout_head, flat_features, require_side


class D2LAlexNet(nn.Module):
    """d2l's AlexNet (46.8 M parameters at 1x224x224); meant for `data.resize: 224`.

    Args:
        input_shape: one image's (channels, height, width), linked from the data set (224 a side in d2l).
        num_classes: the number of logits, linked from the data set.
        hidden: units in each of the two dense layers (4,096 in AlexNet and d2l).
        dropout: the dropout probability after each of them (0.5).
    """

    smallest_side: ClassVar[int] = 65  # pixels a side its convolutions and pools need

    def __init__(self, input_shape: tuple[int, int, int] = (1, 224, 224), num_classes: int = 10, hidden: int = 4096,
                 dropout: float = 0.5) -> None:
        super().__init__()
        require_side("D2LAlexNet", input_shape, self.smallest_side, 224)
        self.features = nn.Sequential(
            nn.Conv2d(input_shape[0], 96, kernel_size=11, stride=4, padding=1), nn.ReLU(), nn.MaxPool2d(3, stride=2),
            nn.Conv2d(96, 256, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(3, stride=2),
            nn.Conv2d(256, 384, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 384, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(3, stride=2),
            nn.Flatten(),
        )  # fmt: skip
        self.classifier = dropout_head(flat_features(self.features, input_shape), hidden, num_classes, dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
