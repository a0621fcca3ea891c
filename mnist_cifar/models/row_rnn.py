"""A recurrent classifier that reads an image row by row (or pixel by pixel): the notes' RNN/LSTM/GRU on images.

Row by row, each time step sees one image row with all its channels: 28 steps of 28 values on MNIST, 32 steps
of 96 (3 x 32) on CIFAR-10. `pixelwise: true` reads one pixel per step (784 steps on MNIST: the hard
"sequential MNIST" task). The last layer's final hidden state (both directions when bidirectional) is classified.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RowRNN(nn.Module):
    """A recurrent classifier reading an image row by row (or pixel by pixel), classifying the last hidden state.

    Args:
        input_shape: one image's (channels, height, width), linked from the data set by main.py.
        num_classes: the number of logits, linked from the data set.
        cell: rnn, lstm or gru.
        hidden_size: units per layer and direction.
        num_layers: stacked recurrent layers.
        bidirectional: also read the rows bottom-up (the final states of both directions are classified).
        pixelwise: one pixel per time step (784 steps on MNIST, sequential MNIST) instead of one row.
        dropout: between stacked layers (needs num_layers > 1).
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int = 10,
        cell: Literal["rnn", "lstm", "gru"] = "lstm",
        hidden_size: int = 128,
        num_layers: int = 1,
        bidirectional: bool = False,
        pixelwise: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        channels, _, width = input_shape
        self.pixelwise = pixelwise
        self.directions = 2 if bidirectional else 1
        self.rnn = CELLS[cell](
            input_size=channels if pixelwise else channels * width,
            hidden_size=hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.classifier = nn.Linear(hidden_size * self.directions, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        steps = x.flatten(2).transpose(1, 2) if self.pixelwise else x.permute(0, 2, 1, 3).reshape(n, h, c * w)
        _, hidden = self.rnn(steps)
        if isinstance(hidden, tuple):  # LSTM returns (h_n, c_n)
            hidden = hidden[0]
        last_layer = hidden[-self.directions :]  # (directions, n, hidden_size)
        return self.classifier(last_layer.transpose(0, 1).reshape(n, -1))
