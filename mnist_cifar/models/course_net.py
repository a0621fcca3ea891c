"""The course's CIFAR-10 network (the widely used PyTorch tutorial model of three 5x5 conv + pool stages).

conv5x5(32, pad 2) -> pool -> conv5x5(32, pad 2) -> pool -> conv5x5(64, pad 2) -> pool -> flatten -> 64 -> classes.
The course's original has no activation between layers (max-pooling is its only non-linearity);
`activation: relu` (the default here) adds ReLU after every conv and the hidden linear layer, which trains
to a clearly higher accuracy; `activation: null` reproduces the original.
"""

from __future__ import annotations

from torch import Tensor, nn

from mnist_cifar.models._layers import Activation, flat_features, make_activation


class CourseNet(nn.Module):
    """The course's CIFAR-10 net: three 5x5 conv (pad 2) + max-pool stages of 32, 32, 64 channels, FC 64.

    Args:
        input_shape: one image's (channels, height, width), linked from the data set by main.py.
        num_classes: the number of logits, linked from the data set.
        activation: added after every conv and the hidden linear layer (relu, sigmoid, tanh, gelu); null is the course's
            original, with max-pooling as its only non-linearity.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int] = (3, 32, 32),
        num_classes: int = 10,
        activation: Activation | None = "relu",
    ) -> None:
        super().__init__()

        def act() -> nn.Module:
            return make_activation(activation) if activation else nn.Identity()

        layers: list[nn.Module] = []
        channels = input_shape[0]
        for out_channels in (32, 32, 64):
            layers += [nn.Conv2d(channels, out_channels, kernel_size=5, padding=2), act(), nn.MaxPool2d(2)]
            channels = out_channels
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.classifier = nn.Sequential(
            nn.Linear(flat_features(self.features, input_shape), 64), act(), nn.Linear(64, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
