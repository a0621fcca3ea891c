"""LeNet-5 in the form the course notes (and d2l) use: LeCun et al., 1998, with the 6/16-channel 5x5 convs.

conv5x5(6, padding 2) -> act -> pool2 -> conv5x5(16) -> act -> pool2 -> 120 -> act -> 84 -> act -> classes.
The notes' classic version uses sigmoid and average pooling; `activation: relu` and `pooling: max` give the
modern variant with the same 61,706 parameters on MNIST. Sized from `input_shape`, so 3x32x32 CIFAR works too.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from mnist_cifar.models._layers import Activation, flat_features, make_activation


class LeNet5(nn.Module):
    """LeNet-5 (6/16-channel 5x5 convs, 120/84 hidden units): the notes' classic sigmoid/average-pool form or the
    ReLU/max-pool one.

    Args:
        input_shape: one image's (channels, height, width), linked from the data set by main.py.
        num_classes: the number of logits, linked from the data set.
        activation: after every conv and hidden layer (sigmoid is the classic, relu the modern variant; tanh, gelu).
        pooling: avg (classic) or max.
        padding: zero padding of the first conv; 2 keeps a 28x28 input at 28x28 (the notes', d2l's §6.6), 0 is the
            form of d2l's §7.5 batch-norm LeNet (its first dense layer then sees 16x4x4 features).
        batch_norm: batch normalization after every conv and hidden dense layer, before the activation (d2l §7.5).
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int = 10,
        activation: Activation = "sigmoid",
        pooling: Literal["avg", "max"] = "avg",
        padding: int = 2,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        pool = nn.AvgPool2d if pooling == "avg" else nn.MaxPool2d

        def norm(kind: type[nn.Module], width: int) -> list[nn.Module]:
            return [kind(width)] if batch_norm else []

        self.features = nn.Sequential(
            nn.Conv2d(input_shape[0], 6, kernel_size=5, padding=padding),
            *norm(nn.BatchNorm2d, 6),
            make_activation(activation),
            pool(2),
            nn.Conv2d(6, 16, kernel_size=5),
            *norm(nn.BatchNorm2d, 16),
            make_activation(activation),
            pool(2),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(flat_features(self.features, input_shape), 120),
            *norm(nn.BatchNorm1d, 120),
            make_activation(activation),
            nn.Linear(120, 84),
            *norm(nn.BatchNorm1d, 84),
            make_activation(activation),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
