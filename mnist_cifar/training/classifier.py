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

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from mnist_cifar.data import augment
from mnist_cifar.errors import CheckpointError, ConfigError
from mnist_cifar.runs.checkpoint_io import state_dict_mismatch, verify
from mnist_cifar.runs.checkpoints import refuse_untrusted_checkpoint
from mnist_cifar.runs.saved_paths import adopt_saved_paths

Batch = tuple[Tensor, Tensor]
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


def _built_class(factory: Any) -> type | None:
    """The class a callable builds: itself, or the class inside jsonargparse's `functools.partial` (4.5x wraps it
    as `partial(call_without_instantiate_context, instantiator, cls, **init_args)`)."""
    if isinstance(factory, type):
        return factory
    if isinstance(factory, functools.partial):
        return next((a for a in (factory.func, *factory.args) if isinstance(a, type)), None)
    return None


def refuse_torch_one_cycle(scheduler_class: type | str | None) -> None:
    """torch's `OneCycleLR` ignores the optimizer's lr (it sets every group from its own `max_lr`): refused for
    training, so that no lr in a config is silently without effect; `mnist_cifar.training.schedules.OneCycleLR` peaks at the
    lr. (Checkpoints trained with it still test and predict: the schedule plays no part there.)"""
    torch_one_cycle = torch.optim.lr_scheduler.OneCycleLR
    if scheduler_class is torch_one_cycle or scheduler_class == f"{torch_one_cycle.__module__}.OneCycleLR":
        raise ConfigError(
            "model.scheduler is torch.optim.lr_scheduler.OneCycleLR, which sets every group's learning rate from "
            "its own max_lr and ignores the optimizer's lr (model.optimizer.init_args.lr would do nothing). Use "
            "--model.scheduler mnist_cifar.training.schedules.OneCycleLR: the same schedule, peaking at the optimizer's lr; "
            "set the peak with --model.optimizer.init_args.lr."
        )


def weight_initializer(spec: str) -> Callable[[nn.Module], None]:
    """What `net.apply` runs for `weight_init` (see `ImageClassifier`); a spec it does not know is refused."""
    kind, _, argument = spec.partition(":")
    std = _positive_float(argument) if kind == "normal" else None
    if spec not in ("default", "xavier_uniform") and std is None:
        raise ConfigError(f"model.weight_init must be default, xavier_uniform or normal:<std> (e.g. normal:0.01), got "
                          f"{spec!r}.")

    def initialize(module: nn.Module) -> None:
        if spec == "default" or not isinstance(module, (nn.Linear, nn.Conv2d)):
            return
        if std is None:
            nn.init.xavier_uniform_(module.weight)
        else:
            nn.init.normal_(module.weight, std=std)

    return initialize


def _positive_float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value > 0 and math.isfinite(value) else None


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
        compile_mode: `torch.compile`'s mode, with `compile` and the inductor backend only: "reduce-overhead"
            replays the compiled network as CUDA graphs (one launch for all its kernels: what pays on a GPU bound by
            kernel launches, at a fixed batch shape), "max-autotune" also tunes its kernels (a longer compile).
        channels_last: NHWC memory layout for network and inputs (faster convolutions with bf16/fp16 on GPUs).
        test_time_augmentation: test and predict on the mean logits of each image, its mirror and one-pixel shifts
            (airbench's flip + translate; for CIFAR-like photos, not for digits). Validation stays plain.
        weight_init: "default" keeps each layer's PyTorch initialization; "xavier_uniform" draws every Linear and
            Conv2d weight again from Glorot's uniform distribution, as d2l's `train_ch6` does; "normal:<std>" from
            a normal distribution of that std (d2l's softmax regression and MLPs: "normal:0.01"). Biases unchanged.

    `mnist_cifar.training.schedules.OneCycleLR` peaks at the optimizer's `lr` (torch's, which ignores that lr, is refused), and
    given without `total_steps` or `epochs` gets its length from the trainer
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
        compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default",
        channels_last: bool = False,
        test_time_augmentation: bool = False,
        weight_init: str = "default",
    ) -> None:
        super().__init__()
        if compile_mode != "default" and (not compile or compile_backend != "inductor"):
            raise ConfigError(f"--model.compile_mode {compile_mode} takes effect only with --model.compile true and "
                              f"the inductor backend (other backends ignore it; this has compile {compile}, backend "
                              f"{compile_backend}); set both, or leave compile_mode at default.")
        self.save_hyperparameters()
        net.apply(weight_initializer(weight_init))  # before anything else draws: a seed gives the same weights
        for name in LIVE_OBJECT_ARGS:  # see the module docstring: checkpoints hold plain config only
            if not _is_plain(self.hparams.get(name)):
                del self.hparams[name]
        self.net = net
        self.optimizer = optimizer
        self.scheduler = scheduler
        self._sums: dict[str, tuple[Tensor, int]] = {}  # per stage: (summed loss, correct predictions), images
        if input_shape is not None:
            self.example_input_array = torch.zeros(1, *input_shape)
        self._step_loss: Tensor | None = None
        self._step_logged = -1
        self._compiled: Any = None  # not a submodule: checkpoints keep the plain `net.*` names
        self._restored_schedule_lengths: list[int | None] = []  # from a checkpoint being resumed

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> ImageClassifier:  # type: ignore[override]
        """Lightning's, after checking that the file's config names only trusted classes (see
        `mnist_cifar.runs.checkpoints.config_from_checkpoint`) unless the network is given: Lightning would import the
        saved `class_path` to rebuild it."""
        if "net" not in kwargs:
            refuse_untrusted_checkpoint(str(checkpoint_path))
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def configure_model(self) -> None:
        """`channels_last` and `torch.compile`, applied once the model is on its device. Neither changes the
        checkpoint: it holds the plain network's weights, so it loads with or without them."""
        if self.hparams.get("channels_last") and self._compiled is None:
            self.net.to(memory_format=torch.channels_last)
        if self.hparams.get("compile") and self._compiled is None:
            mode = self.hparams.get("compile_mode", "default")
            object.__setattr__(self, "_compiled", torch.compile(self.net, backend=self.hparams.compile_backend,
                                                                mode=None if mode == "default" else mode))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse, in one paragraph, a checkpoint that is damaged or was made by another network."""
        where = self._checkpoint_name()
        verify(checkpoint, where)
        self._restored_schedule_lengths = [state.get("total_steps") if isinstance(state, dict) else None
                                           for state in checkpoint.get("lr_schedulers", [])]
        if where != "being loaded" and self.trainer.state.fn == "fit":  # only fit restores the callbacks' state
            dropped = adopt_saved_paths(checkpoint, where, self.trainer.checkpoint_callbacks)
            if dropped:
                rank_zero_warn(
                    f"The checkpoint {where} named saved checkpoints outside its own folder ({', '.join(dropped[:3])}): "
                    f"they were ignored, so nothing outside the run is read or deleted, and the tracking of the "
                    f"best checkpoint restarts from here. A checkpoint resumed from outside its run's checkpoints "
                    f"folder does this too."
                )
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

    def _logits(self, images: Tensor, stage: str) -> Tensor:
        if stage in ("test", "predict") and self.hparams.get("test_time_augmentation"):
            return augment.flip_translate_logits(self, images)
        return self(images)

    def evaluation_logits(self, images: Tensor) -> Tensor:
        """The logits `test` computes for preprocessed images (with test-time augmentation when the run uses it)."""
        return self._logits(images, "test")

    def _shared_step(self, batch: Batch, stage: str) -> tuple[Tensor, Tensor]:
        images, labels = batch
        logits = self._logits(images, stage)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.hparams.label_smoothing)
        count = len(labels)  # counted on the host: no tensor made from a Python number, so no copy to the device
        batch_sums = torch.stack((loss.detach().float() * count, (logits.argmax(-1) == labels).sum().float()))
        sums, seen = self._sums.get(stage, (0, 0))
        self._sums[stage] = (batch_sums + sums, seen + count)
        if stage == "train":
            self._step_loss = loss.detach()
        return loss, logits

    def on_train_batch_end(self, outputs: Any, batch: Batch, batch_idx: int) -> None:
        """The per-step curve `train/loss_step` (this rank's own), written straight to the loggers every
        `log_every_n_steps` optimizer steps, at the steps Lightning would use.

        `self.log(..., on_step=True)` would do the same at about half a millisecond a step (lightning 2.6.6 moves
        its whole result record to the value's device on every call), the largest per-step cost the Trainer
        added to a LeNet-5 step (benchmarks/trainer_overhead.py).
        """
        trainer, step = self.trainer, self.trainer.global_step - 1  # the step just taken
        every = trainer.log_every_n_steps
        if not every or (step + 1) % every or step == self._step_logged or self._step_loss is None:
            return  # (with gradient accumulation several batches end on one step: it is logged once)
        self._step_logged = step
        for logger in trainer.loggers:
            logger.log_metrics({"train/loss_step": float(self._step_loss)}, step=step)

    def _log_epoch(self, stage: str) -> None:
        """`{stage}/loss` and `{stage}/acc` over every image of every rank, logged once per epoch.

        Each step adds its summed loss and correct predictions to one tensor and its image count to an int; here
        they are added across ranks (`strategy.reduce`), so every image counts once whatever the shard sizes. That is what
        torchmetrics' `MeanMetric` and micro `MulticlassAccuracy` compute, but their per-step `update` cost
        0.18 ms on a LeNet-5 step (1.5 % of it, benchmarks/trainer_overhead.py) against 0.02 ms for the sums.
        (`self.log(..., sync_dist=True)` of a per-step loss is no option either: lightning 2.6.6 averages the
        ranks' image counts as integers, off when the total is odd.)
        """
        if stage not in self._sums:
            return
        sums, seen = self._sums.pop(stage)
        totals = torch.cat((sums, sums.new_tensor([seen])))
        loss_sum, correct, count = self.trainer.strategy.reduce(totals, reduce_op="sum").tolist()
        self.log_dict({f"{stage}/loss": loss_sum / count, f"{stage}/acc": correct / count}, prog_bar=True)

    def on_train_epoch_start(self) -> None:
        self._sums.pop("train", None)  # what an interrupted earlier epoch left

    def on_validation_epoch_start(self) -> None:
        self._sums.pop("val", None)

    def on_test_epoch_start(self) -> None:
        self._sums.pop("test", None)

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
        return self._logits(batch[0], "predict").float().softmax(dim=-1)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer(self._parameter_groups())
        for group in optimizer.param_groups:  # a network's own groups scale the configured lr and weight decay
            group["lr"] *= group.pop("lr_scale", 1.0)
            decay_scale = group.pop("weight_decay_scale", 1.0)
            if "weight_decay" in group:
                group["weight_decay"] *= decay_scale
        if self.scheduler is None:
            return optimizer
        refuse_torch_one_cycle(_built_class(self.scheduler))
        length = self._open_schedule_length()
        self._refuse_a_resized_schedule(length)
        scheduler = self.scheduler(optimizer, **length)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.hparams.scheduler_interval, "monitor": "val/loss"},
        }

    def _parameter_groups(self) -> Any:
        """The network's `parameter_groups()` when it has one (torch param-group dicts whose `lr_scale` and
        `weight_decay_scale` multiply the optimizer's settings, e.g. AirbenchNet's faster BatchNorm biases); else
        all parameters in one group."""
        groups = getattr(self.net, "parameter_groups", None)
        return groups() if callable(groups) else self.parameters()

    def _refuse_a_resized_schedule(self, length: dict[str, int]) -> None:
        """A resume whose schedule would have another length than the run's is refused before any step.

        The restored scheduler keeps the length the run started with, so a longer `max_epochs` (or a batch size,
        device count or `limit_train_batches` that changes the steps) would crash one-cycle at the first step past
        the old end ("Tried to step N times") or silently bend a triangular schedule."""
        restored = self._restored_schedule_lengths
        if not length or not restored or restored[0] is None or restored[0] == length["total_steps"]:
            return
        name = getattr(_built_class(self.scheduler), "__name__", "the schedule")
        unit = "steps" if self.hparams.scheduler_interval == "step" else "epochs"
        raise ConfigError(
            f"--ckpt_path {self._checkpoint_name()}: this run's learning-rate schedule ({name}) was sized for "
            f"{restored[0]} {unit} when the run started, and with the settings given now it would need "
            f"{length['total_steps']} (--trainer.max_epochs, --data.batch_size, the number of devices or "
            f"--trainer.limit_train_batches differ from the run's). A resume continues the schedule it started, so "
            f"it cannot be made longer or shorter: resume with the run's own settings (its config.yaml), or start a "
            f"new run without --ckpt_path. A schedule that does not depend on the run's length (StepLR, or none) "
            f"resumes with more epochs."
        )

    def _open_schedule_length(self) -> dict[str, int]:
        given = getattr(self.scheduler, "keywords", {})  # jsonargparse hands callables over as functools.partial
        if "total_steps" not in given or given["total_steps"] is not None or given.get("epochs") is not None:
            return {}
        if self.hparams.scheduler_interval == "step":
            return {"total_steps": int(self.trainer.estimated_stepping_batches)}
        return {"total_steps": int(self.trainer.max_epochs)}
