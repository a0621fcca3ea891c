"""The notes' small CNN, `CNN(input_size, n_feature, output_size)`, for the FC-vs-CNN experiment.

conv5x5(n) -> ReLU -> maxpool2 -> conv5x5(n) -> ReLU -> maxpool2 -> FC 50 -> ReLU -> classes. With
`n_feature: 6` it has 6,422 parameters on MNIST, about as many as FCNet with `hidden: [8, 8]` (6,442): the
notes use the pair to show what convolution's locality buys, and what it loses on permuted pixels.
"""

from __future__ import annotations

from torch import Tensor, nn

from mnist_cifar.models._layers import flat_features


class SmallCNN(nn.Module):
    """The notes' CNN(n_feature): conv5x5-ReLU-pool twice with n_feature channels, FC 50, then the classes.

    Args:
        input_shape: one image's (channels, height, width), linked from the data set by main.py.
        num_classes: the number of logits, linked from the data set.
        n_feature: channels of both convolutions (6 gives 6,422 parameters on MNIST, the FC2Layer's size).
    """

    def __init__(self, input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10, n_feature: int = 6) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(input_shape[0], n_feature, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(n_feature, n_feature, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(flat_features(self.features, input_shape), 50), nn.ReLU(), nn.Linear(50, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
