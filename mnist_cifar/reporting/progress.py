"""Lightning's tqdm progress bar, redrawn at most five times a second instead of after every batch.

Lightning's `TQDMProgressBar` (refresh rate 1) redraws the bar and rebuilds its metrics after every batch:
on a LeNet-5 step of a few milliseconds that was a tenth of the step (benchmarks/trainer_overhead.py). A
refresh rate in batches would be too slow on a CPU and still too fast on a GPU, so this bar counts time
instead. It shows the same things; the last batch of every loop is always drawn, so the counts end exact.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar


class ProgressBar(TQDMProgressBar):
    """`TQDMProgressBar` that redraws after a batch only when `min_interval` seconds passed since its last redraw
    (or on the loop's last batch)."""

    def __init__(self, min_interval: float = 0.2, leave: bool = False) -> None:
        super().__init__(refresh_rate=1, leave=leave)
        self.min_interval = min_interval
        self._last_draw = 0.0

    def _due(self, bar: Any, batch_idx: int) -> bool:
        now = time.monotonic()
        if now - self._last_draw >= self.min_interval or (bar is not None and batch_idx + 1 == bar.total):
            self._last_draw = now
            return True
        return False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._due(self.train_progress_bar, batch_idx):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._due(self.val_progress_bar, batch_idx):
            super().on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._due(self.test_progress_bar, batch_idx):
            super().on_test_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def on_predict_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._due(self.predict_progress_bar, batch_idx):
            super().on_predict_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
