"""The notes' ReLU LeNet for CIFAR-10: LeNet's layout with 3x3 convs, 16/32 channels and 224/96 hidden units.

conv3x3(16) -> ReLU -> maxpool2 -> conv3x3(32) -> ReLU -> maxpool2 -> 224 -> ReLU -> 96 -> ReLU -> classes
(unpadded convs, as in LeNet). About 70 % on CIFAR-10 after 14 epochs of Adam with crop+flip augmentation.
"""

from __future__ import annotations

from torch import Tensor, nn

from mnist_cifar.models._layers import flat_features


class CifarLeNet(nn.Module):
    """The notes' ReLU LeNet for CIFAR-10: 3x3 convs of 16 and 32 channels, then 224 and 96 hidden units.

    Args:
        input_shape: one image's (channels, height, width), linked from the data set by main.py.
        num_classes: the number of logits, linked from the data set.
    """

    def __init__(self, input_shape: tuple[int, int, int] = (3, 32, 32), num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(input_shape[0], 16, kernel_size=3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, kernel_size=3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(flat_features(self.features, input_shape), 224),
            nn.ReLU(),
            nn.Linear(224, 96),
            nn.ReLU(),
            nn.Linear(96, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
