"""AlexNet (Krizhevsky et al., 2012) scaled to 28-32 pixel images, after d2l's chapter on AlexNet.

The same five convolutions (96, 256, 384, 384, 256 channels), ReLU, three max-pools and two dropout FC
layers, with 3x3 kernels and stride 1 instead of 11x11/4 on 224x224 inputs, and `hidden` units (default
1,024 instead of 4,096) in the FC layers. Named `SmallAlexNet` so configs never confuse it with torchvision's.
"""

from __future__ import annotations

from torch import Tensor, nn

from mnist_cifar.models._layers import flat_features


class SmallAlexNet(nn.Module):
    """d2l's AlexNet scaled to 28-32 pixels: five 3x3 convs (96-384 channels), three max-pools, two dropout FC layers.

    Args:
        input_shape: one image's (channels, height, width), linked from the data set by main.py.
        num_classes: the number of logits, linked from the data set.
        hidden: units in each of the two FC layers (AlexNet's 4,096 at ImageNet size).
        dropout: the dropout probability of the FC layers.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int] = (3, 32, 32),
        num_classes: int = 10,
        hidden: int = 1024,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(input_shape[0], 96, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(96, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Flatten(),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Linear(flat_features(self.features, input_shape), hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
