"""The notes' 6/16-channel `Net` from PyTorch's "Training a classifier" CIFAR-10 tutorial (about 63 % on CIFAR-10).

conv5x5(6) -> ReLU -> maxpool2 -> conv5x5(16) -> ReLU -> maxpool2 -> 120 -> ReLU -> 84 -> ReLU -> classes:
LeNet-5's layout with ReLU, max pooling and no padding.
"""

from __future__ import annotations

from torch import Tensor, nn

from mnist_cifar.models._layers import flat_features


class TutorialNet(nn.Module):
    """The 6/16-channel Net of PyTorch's CIFAR-10 tutorial: LeNet-5's layout with ReLU, max pooling and no padding.

    Args:
        input_shape: one image's (channels, height, width), linked from the data set by main.py.
        num_classes: the number of logits, linked from the data set.
    """

    def __init__(self, input_shape: tuple[int, int, int] = (3, 32, 32), num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(input_shape[0], 6, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(flat_features(self.features, input_shape), 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
