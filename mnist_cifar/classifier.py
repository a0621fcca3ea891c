"""The one training system for classification: any network, cross-entropy, accuracy, optimizer and schedule.

Networks are plain `nn.Module`s injected as `net` (a `class_path` in the config), so adding an
architecture never touches this file. Under LightningCLI, `save_hyperparameters` records the network's
`class_path`/`init_args`, and `ImageClassifier.load_from_checkpoint(path)` rebuilds it with no config.
Built from Python (`ImageClassifier(net=LeNet5(...))`), the network, optimizer and scheduler are live
objects that a `weights_only` load refuses, so they are left out of the saved hyperparameters: such a
checkpoint loads with the network given again, `ImageClassifier.load_from_checkpoint(path, net=LeNet5(...))`
or `python main.py test --config <config with that network> --ckpt_path path`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from mnist_cifar.checkpoint_io import state_dict_mismatch, verify
from mnist_cifar.errors import CheckpointError

Batch = tuple[Tensor, Tensor]
STAGES = ("train", "val", "test")
LIVE_OBJECT_ARGS = ("net", "optimizer", "scheduler")


def _is_plain(value: Any) -> bool:
    """A value a `weights_only` load can read back: None, numbers, text, and lists/dicts of them."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


class ImageClassifier(L.LightningModule):
    """Train, validate and test an image classifier; logs `{train,val,test}/{loss,acc}` per epoch.

    Args:
        net: the network; maps `(N, C, H, W)` floats to `(N, num_classes)` logits.
        optimizer: called with the parameters, e.g. `torch.optim.Adam` with its `init_args`.
        scheduler: optional, called with the optimizer; stepped every epoch or every step (`scheduler_interval`).
        scheduler_interval: "epoch" for StepLR-like schedules, "step" for per-batch ones such as OneCycleLR.
        label_smoothing: cross-entropy label smoothing (0 = plain cross-entropy).
        num_classes: number of classes, linked from the data set by `main.py`.
        input_shape: one image's shape, linked from the data set; gives the model summary its layer output sizes.
        compile: run the network through `torch.compile` (with `compile_backend`); worth it on a GPU.
        channels_last: NHWC memory layout for network and inputs (faster convolutions with bf16/fp16 on GPUs).

    A `OneCycleLR` scheduler given without `total_steps` or `epochs` gets its length from the trainer
    (`estimated_stepping_batches`, or `max_epochs` with `scheduler_interval: epoch`), so overriding
    `--trainer.max_epochs` keeps the schedule whole.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        label_smoothing: float = 0.0,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] | None = None,
        compile: bool = False,
        compile_backend: str = "inductor",
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        for name in LIVE_OBJECT_ARGS:  # see the module docstring: checkpoints hold plain config only
            if not _is_plain(self.hparams.get(name)):
                del self.hparams[name]
        self.net = net
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.accuracy = nn.ModuleList(MulticlassAccuracy(num_classes=num_classes, average="micro") for _ in STAGES)
        self.mean_loss = nn.ModuleList(MeanMetric() for _ in STAGES)
        if input_shape is not None:
            self.example_input_array = torch.zeros(1, *input_shape)
        self._compiled: Any = None  # not a submodule: checkpoints keep the plain `net.*` names

    def configure_model(self) -> None:
        """`channels_last` and `torch.compile`, applied once the model is on its device. Neither changes the
        checkpoint: it holds the plain network's weights, so it loads with or without them."""
        if self.hparams.get("channels_last") and self._compiled is None:
            self.net.to(memory_format=torch.channels_last)
        if self.hparams.get("compile") and self._compiled is None:
            object.__setattr__(self, "_compiled", torch.compile(self.net, backend=self.hparams.compile_backend))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse, in one paragraph, a checkpoint that is damaged or was made by another network."""
        where = self._checkpoint_name()
        verify(checkpoint, where)
        problems = state_dict_mismatch(self.state_dict(), checkpoint.get("state_dict", {}))
        if problems:
            raise CheckpointError(
                f"The checkpoint {where} does not fit this network ({type(self.net).__name__}): {problems}. It was "
                f"trained with another architecture or data set. Test it with the config it was trained with, or "
                f"with no --config at all (the checkpoint carries its own model and data settings)."
            )

    def _checkpoint_name(self) -> str:
        try:
            return str(self.trainer.ckpt_path or "being loaded")
        except RuntimeError:  # not attached to a Trainer: `load_from_checkpoint`
            return "being loaded"

    def forward(self, x: Tensor) -> Tensor:
        if self.hparams.get("channels_last") and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return (self._compiled if self._compiled is not None else self.net)(x)

    def _shared_step(self, batch: Batch, stage: str) -> tuple[Tensor, Tensor]:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.hparams.label_smoothing)
        index = STAGES.index(stage)
        self.accuracy[index].update(logits, labels)
        self.mean_loss[index].update(loss.detach(), weight=len(labels))
        if stage == "train":  # the per-step curve; this rank's own (syncing it would cost a collective a step)
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, batch_size=len(labels))
        return loss, logits

    def _log_epoch(self, stage: str) -> None:
        """`{stage}/loss` and `{stage}/acc` over every image of every rank, logged once per epoch.

        The metrics' `compute()` syncs plain sums across ranks, so every image counts once whatever the shard
        sizes. (`self.log(..., sync_dist=True)` of a per-step loss would average the ranks' image counts as
        integers in lightning 2.6.6, off when the total is odd; and a `self.log` per step costs more than the
        metric updates.) The values are the same on every rank, so the sync below changes nothing.
        """
        index = STAGES.index(stage)
        loss, accuracy = self.mean_loss[index], self.accuracy[index]
        if not accuracy.update_called:
            return
        self.log_dict({f"{stage}/loss": loss.compute(), f"{stage}/acc": accuracy.compute()}, prog_bar=True,
                      sync_dist=True)
        loss.reset()
        accuracy.reset()

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")[0]

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """Returns the logits, so callbacks (confusion matrix, worst mistakes) need no second forward pass."""
        return self._shared_step(batch, "test")[1]

    def predict_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """Class probabilities for each image of the batch."""
        return self(batch[0]).float().softmax(dim=-1)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer(self.parameters())
        if self.scheduler is None:
            return optimizer
        scheduler = self.scheduler(optimizer, **self._open_schedule_length())
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.hparams.scheduler_interval, "monitor": "val/loss"},
        }

    def _open_schedule_length(self) -> dict[str, int]:
        given = getattr(self.scheduler, "keywords", {})  # jsonargparse hands callables over as functools.partial
        if "total_steps" not in given or given["total_steps"] is not None or given.get("epochs") is not None:
            return {}
        if self.hparams.scheduler_interval == "step":
            return {"total_steps": int(self.trainer.estimated_stepping_batches)}
        return {"total_steps": int(self.trainer.max_epochs)}
