"""What a resumed run needs beyond weights and optimizer, so that it continues bit for bit where it stopped.

- `LatestCheckpoint`: `last.ckpt`, the run's true latest state, at every epoch end and, with
  `every_n_train_steps`, mid-epoch too. (Lightning's `save_last` only writes it when a top-k checkpoint is
  saved at the same step since 2.6.0: with `save_top_k: 1` it is a copy of the best.)
- `RandomState`: the torch (CPU and CUDA), Python and NumPy generators, saved with every checkpoint as plain
  values (so checkpoints stay `weights_only`-loadable) and put back when training restarts. Augmentation and
  dropout draw from them.
- `StopOnSignal`: SIGTERM (what a cluster or Colab sends before killing) or Ctrl-C saves `last.ckpt` at the end
  of the current step and stops with `RunStopped`, which `main.py` turns into one line and a non-zero exit.
- `StopOnNonFiniteLoss`: a NaN or infinite loss stops the run (on the CPU before its backward pass changes any
  weight; on a GPU within 100 batches, read without a per-step sync), and no checkpoint holds what came after it.

The sampler position lives in the DataModule's `state_dict` (batches done in the interrupted epoch), and the
run's folder is reused by the CLI (`fit --ckpt_path last`). Bit-identical holds on the same torch version,
platform and thread count.
"""

from __future__ import annotations

import math
import os
import random
import signal
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor

from mnist_cifar.errors import ConfigError, Interrupted, WorkFailed
from mnist_cifar.internals import batch_index
from mnist_cifar.runs.folder import CHECKPOINTS, RunFolder, run_dir
from mnist_cifar.runs.parent_death import die_with_parent

LAST = "last"


class LatestCheckpoint(ModelCheckpoint):
    """`last.ckpt` in the run's checkpoint folder, rewritten at every epoch end (after validation, so it holds
    the best-checkpoint tracking too) and, when `every_n_train_steps` > 0, every that many optimizer steps.

    Args:
        every_n_train_steps: also save mid-epoch every this many steps (0 = only at epoch ends).
    """

    def __init__(self, every_n_train_steps: int = 0) -> None:
        if every_n_train_steps < 0:
            raise ConfigError(f"last_checkpoint.every_n_train_steps must be 0 (off) or positive, got "
                              f"{every_n_train_steps}.")
        super().__init__(filename=LAST, monitor=None, save_top_k=1, enable_version_counter=False)
        self.step_interval = every_n_train_steps

    @property
    def state_key(self) -> str:
        return self._generate_state_key(filename=LAST, step_interval=self.step_interval)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        last_of_epoch = batch_idx + 1 >= trainer.num_training_batches
        if self.step_interval and trainer.global_step % self.step_interval == 0 and not last_of_epoch:
            trainer.save_checkpoint(self.last_path(trainer))

    def last_path(self, trainer: L.Trainer) -> str:
        return last_checkpoint_path(trainer, self.dirpath)


def last_checkpoint_path(trainer: L.Trainer, dirpath: str | None = None) -> str:
    """`last.ckpt` in `dirpath`, or in the run's `checkpoints/` folder as ModelCheckpoint places it."""
    return os.path.join(dirpath or os.path.join(run_dir(trainer), CHECKPOINTS), f"{LAST}.ckpt")


class RandomState(L.Callback):
    def __init__(self) -> None:
        self.restored: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        kind, keys, position, has_gauss, gauss = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": random.getstate(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.restored = state_dict  # applied at train start, after model set-up drew its own random numbers

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state, self.restored = self.restored, None
        if state is None:
            return
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        random.setstate(_as_tuples(state["python"]))
        kind, keys, position, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))


def _as_tuples(value: Any) -> Any:
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


class RunStopped(Interrupted):
    """Training stopped on a signal after saving `checkpoint`; the message says how to resume."""

    def __init__(self, signal_number: int, checkpoint: str, epoch: int, step: int) -> None:
        stopped = RunFolder.of_checkpoint(checkpoint)
        config = f"--config {stopped.config} " if stopped is not None and stopped.config.is_file() else ""
        super().__init__(signal_number, f"{self.name(signal_number)} at epoch {epoch}, step {step}; saved {checkpoint}. "
                                        f"Resume with: python main.py fit {config}--ckpt_path {checkpoint}")
        self.checkpoint, self.epoch, self.step = checkpoint, epoch, step


class StopOnSignal(L.Callback):
    """On SIGTERM or the first Ctrl-C: finish the current step, save `last.ckpt`, stop with `RunStopped`.

    A second Ctrl-C interrupts at once. Under DDP the ranks agree on stopping at the same step (one small
    all-reduce per step). A signal during validation stops at the end of that epoch, after its checkpoints, and
    the after-fit test is skipped. Signals are watched from the start of training to its end only: before it and
    during the after-fit test (no training state to lose) they act as Python's defaults do, killing the process
    at once (exit status 143 / 130), and the other ranks of a DDP run die with it (`die_with_the_launcher`).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: dict[int, Any] = {}
        self.stopped_at_epoch_end = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.received, self.stopped_at_epoch_end = None, False
        try:
            self.previous = {number: signal.signal(number, self._note) for number in self.SIGNALS}
        except ValueError:  # not the main thread (a notebook's background thread): leave the handlers alone
            self.previous = {}

    def _note(self, signal_number: int, frame: Any) -> None:
        if self.received is not None and signal_number == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.received = signal_number

    def _agreed(self, trainer: L.Trainer) -> bool:
        received = self.received is not None
        if trainer.world_size > 1:  # every rank reaches this hook: they agree to stop at the same point
            received = trainer.strategy.reduce_boolean_decision(received, all=False)
        return received

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self._agreed(trainer):
            return
        path = self.last_path(trainer)
        trainer.save_checkpoint(path)
        raise RunStopped(self.received or signal.SIGTERM, str(Path(path)), trainer.current_epoch, trainer.global_step)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A signal during validation: the epoch ends as usual (its checkpoints, last.ckpt among them, are written
        after this hook) and training stops there; `after_stop` then raises `RunStopped` instead of testing."""
        if trainer.sanity_checking or trainer.state.fn != "fit" or not self._agreed(trainer):
            return
        self.stopped_at_epoch_end = True
        trainer.should_stop = True

    def after_stop(self, trainer: L.Trainer) -> None:
        """Called by the CLI after `fit`: raise `RunStopped` if a signal ended training at an epoch end."""
        if self.stopped_at_epoch_end:
            self.stopped_at_epoch_end = False
            raise RunStopped(self.received or signal.SIGTERM, self.last_path(trainer), trainer.current_epoch,
                             trainer.global_step)

    @staticmethod
    def last_path(trainer: L.Trainer) -> str:
        latest = next((c for c in trainer.callbacks if isinstance(c, LatestCheckpoint)), None)
        return latest.last_path(trainer) if latest else last_checkpoint_path(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    def _restore(self) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        self.previous = {}


class NonFiniteLoss(WorkFailed):
    """The training loss became NaN or infinite."""


class StopOnNonFiniteLoss(L.Callback):
    """Stop at the first non-finite training loss; no checkpoint ever holds what came after it.

    Read on the host at every step, the loss would make the CPU wait for each step to finish before it queues the
    next one: on a GPU that host-device sync is a large share of a small network's step. So there are two ways:
    - every step (`check_every_n_batches` 1, the default on the CPU, where reading a float costs nothing): the run
      stops before the loss's backward pass, so no weight changes after it;
    - deferred (N > 1, the default on an accelerator: 100): each step folds `isfinite(loss)` and its step number
      into two tensors on the loss's device (no sync), read on the host every N training batches, at each epoch
      end and before every checkpoint is written. The run stops within N batches of the first non-finite loss,
      and since the check runs before a checkpoint's contents are gathered, no checkpoint holds weights
      from after it.

    Args:
        check_every_n_batches: read the verdict every this many training batches (optimizer steps, without
            gradient accumulation); `None` (default) means 1 on the CPU and 100 on an accelerator.
    """

    ACCELERATOR_INTERVAL = 100

    def __init__(self, check_every_n_batches: int | None = None) -> None:
        if check_every_n_batches is not None and check_every_n_batches < 1:
            raise ConfigError(f"nonfinite_loss.check_every_n_batches must be a positive number of batches or null "
                              f"(1 on the CPU, {self.ACCELERATOR_INTERVAL} on an accelerator), got "
                              f"{check_every_n_batches}.")
        self.check_every_n_batches = check_every_n_batches
        self._first_bad: tuple[Tensor, Tensor] | None = None  # (step, loss) of the first non-finite loss; step -1: none
        self._folded = self._checked = 0  # batches folded into `_first_bad`, and how many of them were read

    def interval(self, device: torch.device) -> int:
        if self.check_every_n_batches is not None:
            return self.check_every_n_batches
        return 1 if device.type == "cpu" else self.ACCELERATOR_INTERVAL

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._first_bad, self._folded, self._checked = None, 0, 0

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> None:
        loss = loss.detach()
        if self.interval(loss.device) == 1:
            if not math.isfinite(float(loss)):  # a Python float: a tenth of the cost of a tensor check on the CPU
                self._stop(trainer, float(loss), trainer.global_step)
            return
        if self._first_bad is None:
            self._first_bad = (torch.full((), -1, dtype=torch.long, device=loss.device),
                               torch.zeros((), dtype=loss.dtype, device=loss.device))
        step, value = self._first_bad
        first = torch.logical_and(step < 0, torch.logical_not(torch.isfinite(loss)))  # all on the device
        step.copy_(torch.where(first, trainer.global_step, step))
        value.copy_(torch.where(first, loss, value))
        self._folded += 1

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._first_bad is not None and self._folded - self._checked >= self.interval(self._first_bad[0].device):
            self.check(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self.check(trainer)  # Lightning calls this while it gathers the checkpoint, before anything is written

    def check(self, trainer: L.Trainer) -> None:
        """One host read of the deferred verdict (a sync), when batches were folded into it since the last read."""
        if self._first_bad is None or self._checked == self._folded:
            return
        self._checked = self._folded
        step, value = (float(tensor) for tensor in self._first_bad)
        if step >= 0:
            self._stop(trainer, value, int(step), checked_at=trainer.global_step)

    def _stop(self, trainer: L.Trainer, loss: float, step: int, checked_at: int | None = None) -> None:
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        where = (f"at epoch {trainer.current_epoch}, step {step} (batch {batch_index(trainer) + 1} of the epoch), so "
                 f"training stopped before it reached the weights" if checked_at is None else
                 f"at step {step}, found at step {checked_at} (epoch {trainer.current_epoch}; the loss is read every "
                 f"{self.interval(self._first_bad[0].device)} batches on this device, --nonfinite_loss."
                 f"check_every_n_batches), so training stopped there")
        raise NonFiniteLoss(
            f"The training loss became {loss} {where}; no checkpoint was written from that step on. The learning "
            f"rate was {lr:g}: lower it (--model.optimizer.init_args.lr), or clip gradients "
            f"(--trainer.gradient_clip_val 1.0), then start again or resume from the last good checkpoint "
            f"(--ckpt_path last)."
        )


LAUNCHER_ENV = "MNIST_CIFAR_LAUNCHER_PID"


def die_with_the_launcher() -> None:
    """In a DDP rank that Lightning (or torchrun) started: SIGKILL when the process that started it dies.

    Rank 0 saves the checkpoints, so a rank whose launcher is gone has nothing left to do, and it may be blocked
    inside a collective where no Python signal handler can run: without this, SIGTERM to the launcher before
    training left rank 1 orphaned and blocked for good. Linux only (prctl); elsewhere nothing changes."""
    if os.environ.get("LOCAL_RANK", "0") == "0":
        os.environ[LAUNCHER_ENV] = str(os.getpid())  # the ranks this process launches inherit it
        return
    launcher = int(os.environ.get(LAUNCHER_ENV, 0)) or os.getppid()  # torchrun's ranks: their agent
    die_with_parent(signal.SIGKILL, launcher)  # (this rank may still have been starting when the launcher died)
