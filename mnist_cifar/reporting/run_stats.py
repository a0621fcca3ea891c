"""Log what a run cost next to what it learned: parameters, training images/s per epoch, and the fit's wall time.

The experiment reports are built from the TensorBoard logs alone, so these figures are logged as scalars
(`run/parameters`, `run/train_images_per_s`, `run/epoch_train_seconds`, `run/fit_seconds`) like any metric.
A resumed fit's `run/fit_seconds` includes the time of the runs it continues (kept in the checkpoint).
Training time is counted from the first to the last training batch of each epoch: validation is excluded.
Under DDP, images/s is the sum over the ranks, and the epoch time is the slowest rank's.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L


class RunStats(L.Callback):
    def __init__(self) -> None:
        self.fit_start = time.perf_counter()
        self.earlier_seconds = 0.0  # fit time of the runs this one resumes

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.earlier_seconds = 0.0  # before a checkpoint is restored

    def state_dict(self) -> dict[str, float]:
        return {"fit_seconds": self.earlier_seconds + time.perf_counter() - self.fit_start}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self.earlier_seconds = float(state_dict.get("fit_seconds", 0.0))

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fit_start = time.perf_counter()
        parameters = sum(p.numel() for p in pl_module.parameters())
        for logger in trainer.loggers:
            logger.log_metrics({"run/parameters": parameters}, step=0)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.on_train_epoch_start(trainer, pl_module)  # a resume mid-epoch gets no epoch start

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_start, self.images, self.last_batch_end = time.perf_counter(), 0, None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.images += len(batch[1])
        self.last_batch_end = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.last_batch_end is None:
            return
        seconds = self.last_batch_end - self.epoch_start
        pl_module.log("run/epoch_train_seconds", seconds, sync_dist=True, reduce_fx="max")
        # Under DDP every rank trains on its own images at once: the run's rate is the sum over ranks.
        pl_module.log("run/train_images_per_s", self.images / max(seconds, 1e-9), sync_dist=True, reduce_fx="sum")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for logger in trainer.loggers:
            logger.log_metrics({"run/fit_seconds": self.state_dict()["fit_seconds"]}, step=trainer.global_step)
