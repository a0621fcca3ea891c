"""The notes' improved CIFAR-10 CNN: stages of two 3x3 conv-BN-ReLU layers, max-pool and dropout.

Each stage doubles the channels (default 32 -> 64 -> 128) and halves the image; global average pooling and
one linear layer classify. BatchNorm lets it train fast with a high learning rate, dropout limits
over-fitting; the notes' step up from LeNet (70.6 % here) towards VGG-class accuracy; see
docs/results-overview.md for what was measured.
"""

from __future__ import annotations

from torch import Tensor, nn

from mnist_cifar.models._layers import conv_bn_relu, pool_if_room


class ImprovedCNN(nn.Module):
    """The notes' improved CNN: stages of two 3x3 conv-BN-ReLU layers, max-pool and dropout, then global average
    pooling.

    Args:
        input_shape: one image's (channels, height, width), linked from the data set by main.py.
        num_classes: the number of logits, linked from the data set.
        channels: the channels of each stage (one stage per entry; each halves the image).
        dropout: the dropout probability after every stage.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int] = (3, 32, 32),
        num_classes: int = 10,
        channels: list[int] = [32, 64, 128],  # noqa: B006 (never mutated)
        dropout: float = 0.25,
    ) -> None:
        super().__init__()
        stages: list[nn.Module] = []
        in_channels, size = input_shape[0], input_shape[1]
        for out_channels in channels:
            pool, size = pool_if_room(size)
            stages += [conv_bn_relu(in_channels, out_channels), conv_bn_relu(out_channels, out_channels), pool,
                       nn.Dropout(dropout)]
            in_channels = out_channels
        self.features = nn.Sequential(*stages, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(in_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
