"""TensorBoard beyond the loss curves: hyperparameters with results, augmented samples, and what the test got wrong.

Each callback writes to the run's `TensorBoardLogger` only and does nothing when there is none (no logger,
another logger, `fast_dev_run`) or on other ranks than zero. Figures are drawn with matplotlib's Agg canvas
directly, so importing this module never changes the pyplot backend of a notebook.

- `HParamsWithResults`: the HParams tab, one row per run, with `val/acc_best` and `test/acc` filled in.
- `AugmentedSamples`: once per fit, the first training batch exactly as the network sees it, with class names.
- `ConfusionMatrix`: the test confusion matrix as a figure, and `test/acc_<class>` per class.
- `ConfidentMistakes`: the test images the network got wrong with the highest confidence, true and predicted class.

The test callbacks read the logits that `ImageClassifier.test_step` returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary
from torchmetrics.classification import MulticlassConfusionMatrix

RESULT_METRICS = ("val/acc_best", "test/acc")


def tensorboard(trainer: L.Trainer) -> SummaryWriter | None:
    """The run's SummaryWriter; None without a TensorBoardLogger or off rank zero."""
    if not trainer.is_global_zero:
        return None
    return next((lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, int | float | str]:
    """Nested hparams as `a/b/c` keys with numbers and text; anything else (bools, None, tuples) as its text."""
    flat: dict[str, int | float | str] = {}
    for key, value in params.items():
        if str(key).startswith("_"):  # LightningCLI bookkeeping such as `_instantiator`
            continue
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}/"))
        else:
            flat[name] = value if isinstance(value, (int, float, str)) and not isinstance(value, bool) else str(value)
    return flat


def displayable(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Undo the DataModule's normalization: float `(N, C, H, W)` to uint8 on the CPU, clipped to [0, 255]."""
    images = images.detach().float().cpu()
    mean_t, std_t = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    return (images * std_t + mean_t).mul(255).round().clamp(0, 255).to(torch.uint8)


def image_grid(images: Tensor, titles: Sequence[str], columns: int = 8) -> np.ndarray:
    """uint8 `(N, C, H, W)` images with a title each, drawn as one RGB figure `(H, W, 3)`."""
    rows = -(-len(images) // columns)
    figure = Figure(figsize=(1.4 * columns, 1.6 * rows))
    for i, (image, title) in enumerate(zip(images, titles)):
        axes = figure.add_subplot(rows, columns, i + 1)
        if image.shape[0] == 1:
            axes.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=255)
        else:
            axes.imshow(image.permute(1, 2, 0).numpy())
        axes.set_title(title, fontsize=8)
        axes.axis("off")
    figure.tight_layout()
    return render(figure)


def render(figure: Figure) -> np.ndarray:
    """The figure as RGB pixels `(H, W, 3)`, drawn on an Agg canvas of its own (pyplot is never involved)."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def class_names(trainer: L.Trainer, num_classes: int) -> list[str]:
    """The DataModule's `classes`; the index as text for a class it does not name."""
    names = getattr(trainer.datamodule, "classes", None) or ()
    return [names[i] if i < len(names) else str(i) for i in range(num_classes)]


def normalization(trainer: L.Trainer) -> tuple[Sequence[float], Sequence[float]]:
    """The DataModule's (mean, std); a DataModule without one is taken to give images in [0, 1]."""
    return getattr(trainer.datamodule, "normalization", ((0.0,), (1.0,)))


class HParamsWithResults(L.Callback):
    """One HParams row per run: model and data hparams, with the best `val/acc` and the `test/acc` as metrics.

    TensorBoard keeps only the *first* hparams record of a run and reads a metric's value from the
    last scalar of that name, so the record is written once at the start (declaring both metrics) and the
    values arrive as scalars: `test/acc` is the test's own, `val/acc_best` (the checkpoint callback's best
    `val/acc`, else the last) is logged at the end of fit. For the same reason the logger's placeholder
    `hp_metric` record (`default_hp_metric`), which Lightning would write first, is switched off.
    """

    def __init__(self) -> None:
        self.written: set[str] = set()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        writer = tensorboard(trainer)
        if writer is None or stage not in ("fit", "test") or writer.log_dir in self.written:
            return
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger._default_hp_metric = False  # its constructor argument; Lightning's own record would win
        params = flatten(pl_module.hparams, "model/")
        datamodule = trainer.datamodule
        if datamodule is not None:
            params["data/class"] = type(datamodule).__name__
            params.update(flatten(datamodule.hparams, "data/"))
        file_writer = writer._get_file_writer()  # as TensorBoardLogger.log_hyperparams does; add_hparams makes a sub-run
        for summary in hparams_summary(params, dict.fromkeys(RESULT_METRICS, 0.0)):
            file_writer.add_summary(summary)
        self.written.add(writer.log_dir)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = tensorboard(trainer)
        checkpoint = trainer.checkpoint_callback
        best = getattr(checkpoint, "best_model_score", None) if getattr(checkpoint, "monitor", None) == "val/acc" else None
        best = best if best is not None else trainer.callback_metrics.get("val/acc")
        if writer is not None and best is not None:
            writer.add_scalar("val/acc_best", float(best), trainer.global_step)


class AugmentedSamples(L.Callback):
    """Once per fit, the first training batch as the network sees it: after the DataModule's
    `on_after_batch_transfer` (augmentation, and the pixel permutation when `permute_pixels` is on), only
    un-normalized for display, each image titled with its class name.
    """

    def __init__(self, count: int = 32) -> None:
        self.count = count
        self.done = False

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.done = False

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        writer = tensorboard(trainer)
        if self.done or writer is None:
            return
        self.done = True
        images, labels = batch[0][: self.count], batch[1][: self.count]
        names = class_names(trainer, int(labels.max()) + 1)
        grid = image_grid(displayable(images, *normalization(trainer)), [names[int(y)] for y in labels])
        writer.add_image("samples/train_augmented", grid, trainer.global_step, dataformats="HWC")


class ConfusionMatrix(L.Callback):
    """At test end: the confusion matrix (rows true, columns predicted; colour = share of the true class)
    as a figure, and each class's accuracy (its recall) as the scalar `test/acc_<class>`.
    """

    def __init__(self) -> None:
        self.matrix: MulticlassConfusionMatrix | None = None

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.matrix = None

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        if not isinstance(outputs, Tensor) or tensorboard(trainer) is None:
            return
        if self.matrix is None:
            self.matrix = MulticlassConfusionMatrix(num_classes=outputs.shape[1]).to(outputs.device)
        self.matrix.update(outputs, batch[1])

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = tensorboard(trainer)
        if writer is None or self.matrix is None:
            return
        counts = self.matrix.compute().cpu()
        names = class_names(trainer, len(counts))
        recall = counts.diag() / counts.sum(1).clamp(min=1)
        for name, accuracy, support in zip(names, recall.tolist(), counts.sum(1).tolist()):
            if support:
                writer.add_scalar(f"test/acc_{name}", accuracy, trainer.global_step)
        writer.add_image("test/confusion_matrix", confusion_figure(counts, names), trainer.global_step, dataformats="HWC")


def confusion_figure(counts: Tensor, names: Sequence[str]) -> np.ndarray:
    """Counts in the cells, coloured by the share of the row's (true class's) images."""
    shares = counts / counts.sum(1, keepdim=True).clamp(min=1)
    size = 1.5 + 0.55 * len(names)
    figure = Figure(figsize=(size, size))
    axes = figure.add_subplot()
    axes.imshow(shares.numpy(), cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(names))
    axes.set_xticks(ticks, names, rotation=45, ha="right")
    axes.set_yticks(ticks, names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for (row, col), count in np.ndenumerate(counts.numpy()):
        colour = "white" if shares[row, col] > 0.5 else "black"
        axes.text(col, row, str(int(count)), ha="center", va="center", fontsize=7, color=colour)
    axes.set_title(f"test: {int(counts.diag().sum())} of {int(counts.sum())} right")
    figure.tight_layout()
    return render(figure)


class ConfidentMistakes(L.Callback):
    """At test end: the `count` wrong test predictions made with the highest confidence, titled with true and
    predicted class and the confidence. Only the current top `count` images are kept while testing.
    Permuted pixels (`permute_pixels`) are put back in place here, so the images can be read.
    """

    def __init__(self, count: int = 16) -> None:
        self.count = count
        self.reset()

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.reset()

    def reset(self) -> None:
        self.images: Tensor | None = None
        self.confidence = torch.empty(0)
        self.true = self.predicted = torch.empty(0, dtype=torch.long)
        self.num_classes = 0

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        if not isinstance(outputs, Tensor) or tensorboard(trainer) is None:
            return
        self.num_classes = outputs.shape[1]
        confidence, predicted = outputs.float().softmax(1).max(1)
        wrong = (predicted != batch[1]).nonzero().squeeze(1)
        top = wrong[confidence[wrong].topk(min(self.count, len(wrong))).indices]
        images = batch[0][top].cpu() if self.images is None else torch.cat([self.images, batch[0][top].cpu()])
        confidence = torch.cat([self.confidence, confidence[top].cpu()])
        keep = confidence.topk(min(self.count, len(confidence))).indices
        self.images, self.confidence = images[keep], confidence[keep]
        self.true = torch.cat([self.true, batch[1][top].cpu()])[keep]
        self.predicted = torch.cat([self.predicted, predicted[top].cpu()])[keep]

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = tensorboard(trainer)
        if writer is None or self.images is None or len(self.images) == 0:
            return
        images = displayable(self.images, *normalization(trainer))
        permutation = getattr(trainer.datamodule, "permutation", None)
        if permutation is not None:
            images = images.flatten(2)[:, :, permutation.cpu().argsort()].view_as(images)
        names = class_names(trainer, self.num_classes)
        titles = [f"true {names[int(t)]}\npred {names[int(p)]} {c:.0%}" for t, p, c in
                  zip(self.true, self.predicted, self.confidence.tolist())]
        writer.add_image("test/confident_mistakes", image_grid(images, titles, columns=4), trainer.global_step,
                         dataformats="HWC")
