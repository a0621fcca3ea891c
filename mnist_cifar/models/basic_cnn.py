"""The notes' CNN_basic: one convolution layer, one pooling, one linear classifier.

conv5x5(channels, padding 2) -> ReLU -> maxpool2 -> linear -> classes: the smallest network that shows
weight sharing and local receptive fields beat a fully connected layer of similar size on images.
"""

from __future__ import annotations

from torch import Tensor, nn

from mnist_cifar.models._layers import flat_features


class BasicCNN(nn.Module):
    """The notes' CNN_basic: one conv layer (padding keeps the size), ReLU, 2x2 max-pool, a linear classifier.

    Args:
        input_shape: one image's (channels, height, width), linked from the data set by main.py.
        num_classes: the number of logits, linked from the data set.
        channels: the convolution's output channels.
        kernel_size: its square kernel size (odd; padded to keep the image size).
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int = 10,
        channels: int = 16,
        kernel_size: int = 5,
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(input_shape[0], channels, kernel_size=kernel_size, padding=kernel_size // 2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(flat_features(self.features, input_shape), num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
