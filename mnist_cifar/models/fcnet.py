"""Fully connected network (MLP) with any number of hidden layers: the notes' FCN_basic, FC2Layer and FCN_dropout.

`hidden: []` is the 1-layer FCN (multinomial logistic regression), `hidden: [8, 8]` the notes' FC2Layer(784, 8, 10)
(6,442 parameters on MNIST), and `dropout > 0` adds dropout after every hidden activation (FCN_dropout).
The image is flattened, so the network ignores where a pixel is: it does as well on pixel-permuted images.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from mnist_cifar.models._layers import Activation, make_activation


class FCNet(nn.Module):
    """A fully connected network (MLP) on the flattened image: any hidden widths, activation and dropout.

    Args:
        input_shape: one image's (channels, height, width), linked from the data set by main.py.
        num_classes: the number of logits, linked from the data set.
        hidden: the widths of the hidden layers; [] is multinomial logistic regression, [8, 8] the notes' FC2Layer.
        activation: after every hidden layer (relu, sigmoid, tanh, gelu).
        dropout: the probability of dropping a hidden unit, after every hidden activation (0 = no dropout); a list
            gives each hidden layer its own (d2l §4.6: [0.2, 0.5]).
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int = 10,
        hidden: list[int] = [8, 8],  # noqa: B006 (jsonargparse needs the literal default; never mutated)
        activation: Activation = "relu",
        dropout: float | list[float] = 0.0,
    ) -> None:
        super().__init__()
        rates = list(dropout) if isinstance(dropout, (list, tuple)) else [dropout] * len(hidden)
        if len(rates) != len(hidden) or not all(0 <= rate < 1 for rate in rates):
            raise ValueError(f"dropout must be one probability in [0, 1) or one per hidden layer ({len(hidden)}), "
                             f"got {dropout!r}.")
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for size, rate in zip(hidden, rates):
            layers += [nn.Linear(width, size), make_activation(activation)]
            if rate > 0:
                layers.append(nn.Dropout(rate))
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.network = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x)
