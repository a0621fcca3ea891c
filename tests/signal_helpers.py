"""A callback the signal tests put into real `main.py` processes (PYTHONPATH=tests): SIGTERM to its own process at a
chosen moment, on rank zero, as a cluster's scheduler would send it."""

from __future__ import annotations

import os
import signal
from typing import Any

import lightning as L


class SignalDuringValidation(L.Callback):
    """SIGTERM to this process at the first validation batch of epoch `epoch` (0-based), on rank zero."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int,
                                  dataloader_idx: int = 0) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == 0 and trainer.is_global_zero \
                and not trainer.sanity_checking:
            os.kill(os.getpid(), signal.SIGTERM)
