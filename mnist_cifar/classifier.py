"""The one training system for classification: any network, cross-entropy, accuracy, optimizer and schedule.

Networks are plain `nn.Module`s injected as `net` (a `class_path` in the config), so adding an
architecture never touches this file. Under LightningCLI, `save_hyperparameters` records the network's
`class_path`/`init_args`, and `ImageClassifier.load_from_checkpoint(path)` rebuilds it with no config.
"""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

Batch = tuple[Tensor, Tensor]
STAGES = ("train", "val", "test")


class ImageClassifier(L.LightningModule):
    """Train, validate and test an image classifier; logs `{train,val,test}/{loss,acc}` per epoch.

    Args:
        net: the network; maps `(N, C, H, W)` floats to `(N, num_classes)` logits.
        optimizer: called with the parameters, e.g. `torch.optim.Adam` with its `init_args`.
        scheduler: optional, called with the optimizer; stepped every epoch or every step (`scheduler_interval`).
        scheduler_interval: "epoch" for StepLR-like schedules, "step" for per-batch ones such as OneCycleLR.
        label_smoothing: cross-entropy label smoothing (0 = plain cross-entropy).
        num_classes: number of classes, linked from the data set by `main.py`.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        label_smoothing: float = 0.0,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = net
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.accuracy = nn.ModuleList(MulticlassAccuracy(num_classes=num_classes, average="micro") for _ in STAGES)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _shared_step(self, batch: Batch, stage: str) -> Tensor:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.hparams.label_smoothing)
        accuracy = self.accuracy[STAGES.index(stage)]
        accuracy(logits, labels)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, batch_size=len(labels))
        self.log(f"{stage}/acc", accuracy, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(labels))
        return loss

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def predict_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """Class probabilities for each image of the batch."""
        return self(batch[0]).softmax(dim=-1)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer(self.parameters())
        if self.scheduler is None:
            return optimizer
        scheduler = self.scheduler(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.hparams.scheduler_interval, "monitor": "val/loss"},
        }
