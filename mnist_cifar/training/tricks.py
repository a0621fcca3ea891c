"""Training tricks of the speedrun recipes that live outside the network: airbench94's lookahead average of the
weights, its triangular learning-rate schedule, and freezing chosen parameters after some epochs.

Each is a plain Lightning callback or a torch scheduler, named in a config (`configs/speedrun_cifar.yaml`); the
lookahead state travels in the checkpoint, so a resumed run continues it exactly.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from mnist_cifar.errors import ConfigError


class TriangularLR(LambdaLR):
    """Scale every group's learning rate linearly from `start` to 1 at `peak_at` of the steps, then to `end`.

    A multiplier (unlike `OneCycleLR`'s one `max_lr`), so parameter groups keep their own learning rates, e.g. the
    64x BatchNorm biases of airbench. `total_steps` is filled in from the trainer when left out (step interval).
    """

    def __init__(self, optimizer: Optimizer, total_steps: int | None = None, start: float = 0.2, peak_at: float = 0.23,
                 end: float = 0.07, last_epoch: int = -1) -> None:
        if total_steps is None or total_steps < 1:
            raise ValueError("TriangularLR needs total_steps (given by the trainer with scheduler_interval: step).")
        self.total_steps = total_steps  # saved in the state: a resume can tell that its length changed
        peak = max(1, round(peak_at * total_steps))

        def multiplier(step: int) -> float:
            if step <= peak:
                return start + (1 - start) * step / peak
            return 1 + (end - 1) * min(1.0, (step - peak) / max(1, total_steps - peak))

        super().__init__(optimizer, multiplier, last_epoch=last_epoch)


class Lookahead(L.Callback):
    """airbench94's lookahead: from `start_epoch` on, every `every_n_steps` steps, move an average of the network's
    float state toward the weights with decay `decay_base ** every_n_steps * (step / total) ** decay_power` (rising to
    `decay_base ** every_n_steps` at the end), then copy the average back into the network; at each epoch end the
    network gets the average once more. Unlike an EMA kept aside, the training itself continues from the average.
    """

    def __init__(self, start_epoch: int = 3, every_n_steps: int = 5, decay_base: float = 0.95,
                 decay_power: float = 3.0) -> None:
        self.start_epoch, self.every_n_steps = start_epoch, every_n_steps
        self.decay_base, self.decay_power = decay_base, decay_power
        self.average: dict[str, Tensor] | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if trainer.current_epoch < self.start_epoch or step % self.every_n_steps:
            return
        if self.average is None:
            self.average = {name: value.detach().clone() for name, value in _float_state(pl_module).items()}
            return
        fraction = step / max(1, trainer.estimated_stepping_batches)
        self._pull(pl_module, self.decay_base**self.every_n_steps * fraction**self.decay_power)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.average is not None:
            self._pull(pl_module, 1.0)

    @torch.no_grad()
    def _pull(self, pl_module: L.LightningModule, decay: float) -> None:
        for name, value in _float_state(pl_module).items():
            average = self.average[name]
            if average.device != value.device:  # restored from a checkpoint read onto the CPU
                average = self.average[name] = average.to(value.device)
            average.lerp_(value, 1 - decay)
            value.copy_(average)

    def state_dict(self) -> dict[str, Any]:
        return {"average": self.average}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.average = state_dict.get("average")


def _float_state(pl_module: L.LightningModule) -> dict[str, Tensor]:
    """The module's floating-point parameters and buffers (BatchNorm statistics included), sharing their storage."""
    return {name: value for name, value in pl_module.state_dict().items() if value.is_floating_point()}


class FreezeAfterEpochs(L.Callback):
    """Stop training the named parameters (e.g. `net.whiten.bias`) from epoch `epochs` on."""

    def __init__(self, parameters: list[str], epochs: int) -> None:
        self.names, self.epochs = parameters, epochs

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.on_train_epoch_start(trainer, pl_module)  # a resume mid-epoch gets no epoch start

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        found = dict(pl_module.named_parameters())
        missing = [name for name in self.names if name not in found]
        if missing:
            raise ConfigError(f"FreezeAfterEpochs: the model has no parameter {', '.join(missing)}; the names are "
                              f"those of `model.named_parameters()`, e.g. net.whiten.bias.")
        for name in self.names:
            found[name].requires_grad_(trainer.current_epoch < self.epochs)
