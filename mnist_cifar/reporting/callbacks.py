"""TensorBoard beyond the loss curves: hyperparameters with results, augmented samples, and what the test got wrong.

The HParams row is TensorBoard's; the figures go to every logger that takes them (`TensorBoardLogger`, and
`mnist_cifar.reporting.loggers.MLFlowLogger` as PNG artifacts), and nothing is drawn when there is none (no logger, CSV
only, `fast_dev_run`). Under DDP every rank collects (metrics sync across ranks, the mistakes are
gathered), and rank zero alone draws and writes. Figures are drawn with matplotlib's Agg canvas directly, so
importing this module never changes the pyplot backend of a notebook.

- `HParamsWithResults`: the HParams tab, one row per run, with `val/acc_best` and `test/acc` filled in.
- `AugmentedSamples`: once per fit, the first training batch exactly as the network sees it, with class names.
- `ConfusionMatrix`: the test confusion matrix as a figure, and `test/acc_<class>` per class.
- `ConfidentMistakes`: the test images the network got wrong with the highest confidence, true and predicted class.
- `LearningRateLogger`: Lightning's learning-rate monitor, which does nothing instead of failing without a logger.

The test callbacks read the logits that `ImageClassifier.test_step` returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from torchmetrics.classification import MulticlassConfusionMatrix

from mnist_cifar.reporting.loggers import MLFlowLogger

# What the HParams row shows, and the scalar tag it reads each from.
RESULT_METRICS = {"val/acc_best": "results/val_acc_best", "test/acc": "results/test_acc"}
# Where data and caches are read, and loader settings: they change no result, so no HParams column.
NOT_HYPERPARAMETERS = ("data/data_dir", "data/cache_dir", "data/download", "data/predict_path", "data/num_workers")


def image_loggers(trainer: L.Trainer) -> list[Logger]:
    """The run's loggers that take figures (TensorBoard's, and MLflow's as PNG artifacts), on every rank."""
    return [logger for logger in trainer.loggers if isinstance(logger, (TensorBoardLogger, MLFlowLogger))]


def write_image(trainer: L.Trainer, tag: str, image: np.ndarray, step: int) -> None:
    """An RGB `(H, W, 3)` figure to every logger that takes figures, from rank zero."""
    if not trainer.is_global_zero:
        return
    for logger in image_loggers(trainer):
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, image, step, dataformats="HWC")
        else:
            logger.log_image(tag, image, step)


def tensorboard_logger(trainer: L.Trainer) -> TensorBoardLogger | None:
    """The run's TensorBoardLogger, on every rank (so all ranks agree on whether to collect)."""
    return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)


def tensorboard(trainer: L.Trainer) -> SummaryWriter | None:
    """The run's SummaryWriter; None without a TensorBoardLogger or off rank zero."""
    logger = tensorboard_logger(trainer)
    return logger.experiment if logger is not None and trainer.is_global_zero else None


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
    """uint8 `(N, C, H, W)` images with a title each, drawn as one RGB figure `(H, W, 3)`.

    The images are tiled into one picture shown on a single axes, titles written above each tile: one
    `imshow` instead of a subplot per image draws in a tenth of the time (1.2 s -> 0.1 s for 32 images).
    """
    n, _, h, w = images.shape
    rows, gap, band = -(-n // columns), max(2, w // 8), max(6, h // 2)  # `band`: room for a title above a tile
    canvas = torch.full((3, rows * (h + band), columns * (w + gap)), 255, dtype=torch.uint8)
    width = 1.4 * columns  # inches; the height follows the canvas, so nothing is letterboxed
    figure = Figure(figsize=(width, width * canvas.shape[1] / canvas.shape[2]))
    axes = figure.add_axes((0, 0, 1, 1))
    for i, (image, title) in enumerate(zip(images, titles)):
        row, column = divmod(i, columns)
        top, left = row * (h + band) + band, column * (w + gap) + gap // 2
        canvas[:, top : top + h, left : left + w] = image.expand(3, h, w)
        axes.text(left + w / 2, top - 0.5, title, ha="center", va="bottom", fontsize=8)
    axes.imshow(canvas.permute(1, 2, 0).numpy(), interpolation="nearest")
    axes.axis("off")
    return render(figure)


def render(figure: Figure) -> np.ndarray:
    """The figure as RGB pixels `(H, W, 3)`, drawn on an Agg canvas of its own (pyplot is never involved)."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def metric_name(class_name: str) -> str:
    """A class name as part of a metric's name: a "/" would nest it a level deeper in every logger's tree
    (Fashion-MNIST's "T-shirt/top" is logged as test/acc_T-shirt-top)."""
    return class_name.replace("/", "-")


def class_names(trainer: L.Trainer, num_classes: int) -> list[str]:
    """The DataModule's `classes`; the index as text for a class it does not name."""
    names = getattr(trainer.datamodule, "classes", None) or ()
    return [names[i] if i < len(names) else str(i) for i in range(num_classes)]


def normalization(trainer: L.Trainer) -> tuple[Sequence[float], Sequence[float]]:
    """The DataModule's (mean, std); a DataModule without one is taken to give images in [0, 1]."""
    return getattr(trainer.datamodule, "normalization", ((0.0,), (1.0,)))


def shown_checkpoint(trainer: L.Trainer) -> str:
    """The checkpoint a test evaluates, as `<name>/<version>/checkpoints/<file>` when it lies under the logs."""
    if not trainer.ckpt_path:
        return "the weights in memory"
    logger = tensorboard_logger(trainer)
    path = Path(trainer.ckpt_path).expanduser().resolve()
    logs = Path(logger.save_dir).expanduser().resolve() if logger is not None else None
    return str(path.relative_to(logs)) if logs is not None and path.is_relative_to(logs) else str(trainer.ckpt_path)


class HParamsWithResults(L.Callback):
    """One HParams row per training run: its model and data hparams, the best `val/acc` and the `test/acc` of the
    checkpoint `fit` tested; a `test --ckpt_path` from a checkpoint is a row of its own that says so (`Run: test of
    <checkpoint>`) and holds only the test figure it measured.
    Paths and loader settings are left out: they change no result.

    TensorBoard keeps the first hparams record of a run and reads each declared metric from the last scalar of
    that name, leaving the cell empty where there is none. So the record is written once, when training (or the
    evaluation) starts, with the metrics declared but no values: Lightning's `log_hyperparams(params, metrics)`
    would also write each metric as a 0 scalar at step 0, a placeholder that draws as a ramp to the final value
    and fills an evaluation's row with a 0 for what it never measured. The values are written once each, when
    they exist, as `results/val_acc_best` (at the end of fit) and `results/test_acc` (at the end of a test). The
    logger's own placeholder record (`default_hp_metric`) must be off (default.yaml does so).
    """

    def __init__(self) -> None:
        self.written: set[str] = set()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write_record(trainer, pl_module, "fit", resumed=trainer.global_step > 0)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step > 0:  # the test `fit` ends with (also in a spawned process): the fit's row holds it
            return
        self.write_record(trainer, pl_module, f"test of {shown_checkpoint(trainer)}")

    def write_record(self, trainer: L.Trainer, pl_module: L.LightningModule, kind: str, resumed: bool = False) -> None:
        """Once per run folder; a resumed fit continues a folder that has its record already."""
        from torch.utils.tensorboard.summary import hparams

        logger = tensorboard_logger(trainer)
        if logger is None or not trainer.is_global_zero or logger.log_dir in self.written:
            return
        self.written.add(logger.log_dir)
        if resumed:
            return
        params: dict[str, Any] = {"Run": kind, **flatten(pl_module.hparams, "model/")}  # capital: the first column
        datamodule = trainer.datamodule
        if datamodule is not None:
            params["data/class"] = type(datamodule).__name__
            params.update(flatten(datamodule.hparams, "data/"))
        for where in NOT_HYPERPARAMETERS:  # the table shows the first columns by name: keep paths out of them
            params.pop(where, None)
        logger.log_hyperparams(params)  # hparams.yaml; without metrics Lightning writes no summary and no scalar
        writer = logger.experiment.file_writer
        for summary in hparams(params, dict.fromkeys(RESULT_METRICS.values(), 0.0)):  # names only: no values
            writer.add_summary(summary)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = tensorboard(trainer)
        checkpoint = trainer.checkpoint_callback
        best = getattr(checkpoint, "best_model_score", None) if getattr(checkpoint, "monitor", None) == "val/acc" else None
        best = best if best is not None else trainer.callback_metrics.get("val/acc")
        if writer is not None and best is not None:
            writer.add_scalar(RESULT_METRICS["val/acc_best"], float(best), trainer.global_step)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = tensorboard(trainer)
        accuracy = trainer.callback_metrics.get("test/acc")
        if writer is not None and accuracy is not None:
            writer.add_scalar(RESULT_METRICS["test/acc"], float(accuracy), trainer.global_step)


class AugmentedSamples(L.Callback):
    """Once per fit, the first training batch as the network sees it: after the DataModule's
    `on_after_batch_transfer` (augmentation, and the pixel permutation when `permute_pixels` is on), only
    un-normalized for display, each image titled with its class name.

    The batch is kept at its step and drawn at the end of that epoch: drawing takes seconds (matplotlib), which
    would otherwise stall the first step and count against the epoch's images/s.
    """

    def __init__(self, count: int = 32) -> None:
        self.count = count
        self.done = False
        self.kept: tuple[Tensor, Tensor, int] | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.done, self.kept = False, None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self.done:
            return
        self.done = True
        if image_loggers(trainer) and trainer.is_global_zero:
            self.kept = (batch[0][: self.count].detach().clone(), batch[1][: self.count].clone(), trainer.global_step)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.kept is None:
            return
        images, labels, step = self.kept
        self.kept = None
        names = class_names(trainer, int(labels.max()) + 1)
        grid = image_grid(displayable(images, *normalization(trainer)), [names[int(y)] for y in labels])
        write_image(trainer, "samples/train_augmented", grid, step)


class ConfusionMatrix(L.Callback):
    """At test end: the confusion matrix (rows true, columns predicted; colour = share of the true class)
    as a figure, and each class's accuracy (its recall) logged as `test/acc_<class>`.

    The matrix is updated on every rank and its `compute()` sums the ranks' counts, so under DDP the figure
    and the per-class figures count every test image once, like `test/acc`.
    """

    def __init__(self) -> None:
        self.matrix: MulticlassConfusionMatrix | None = None
        self.counts: Tensor | None = None  # the synced matrix, computed once at the test epoch's end

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.matrix, self.counts = None, None

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        # The figure goes where figures go, the per-class accuracies to every logger (fast_dev_run logs nothing).
        if not isinstance(outputs, Tensor) or not trainer.loggers or getattr(trainer, "fast_dev_run", 0):
            return
        if self.matrix is None:
            self.matrix = MulticlassConfusionMatrix(num_classes=outputs.shape[1]).to(outputs.device)
        self.matrix.update(outputs, batch[1])

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.matrix is None:
            return
        counts = self.counts = self.matrix.compute().cpu()  # a collective under DDP: every rank gets here
        recall = counts.diag() / counts.sum(1).clamp(min=1)
        names = class_names(trainer, len(counts))
        supported = {f"test/acc_{metric_name(name)}": accuracy for name, accuracy, support in
                     zip(names, recall.tolist(), counts.sum(1).tolist()) if support}
        pl_module.log_dict(supported, sync_dist=True)  # identical on every rank: the mean changes nothing

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not image_loggers(trainer) or not trainer.is_global_zero or self.counts is None:
            return
        names = class_names(trainer, len(self.counts))
        write_image(trainer, "test/confusion_matrix", confusion_figure(self.counts, names), trainer.global_step)


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
        if not isinstance(outputs, Tensor) or not image_loggers(trainer):
            return
        self.num_classes = outputs.shape[1]
        confidence, predicted = outputs.float().softmax(1).max(1)
        wrong = (predicted != batch[1]).nonzero().squeeze(1)
        top = wrong[confidence[wrong].topk(min(self.count, len(wrong))).indices]
        self.keep_top(batch[0][top].float().cpu(), confidence[top].cpu(), batch[1][top].cpu(), predicted[top].cpu())

    def keep_top(self, images: Tensor, confidence: Tensor, true: Tensor, predicted: Tensor) -> None:
        """Merge these candidates into the kept ones and keep the `count` most confident."""
        images = images if self.images is None else torch.cat([self.images, images])
        confidence = torch.cat([self.confidence, confidence])
        keep = confidence.topk(min(self.count, len(confidence))).indices
        self.images, self.confidence = images[keep], confidence[keep]
        self.true = torch.cat([self.true, true])[keep]
        self.predicted = torch.cat([self.predicted, predicted])[keep]

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Under DDP, gather every rank's top `count` (padded to that size, so shapes agree) and keep the top."""
        if trainer.world_size == 1 or not image_loggers(trainer):
            return
        if self.images is None:  # this rank tested nothing; the others still wait for its part
            self.images = torch.empty(0, *getattr(trainer.datamodule, "input_shape", (1, 1, 1)))
        padding = self.count - len(self.images)
        mine = (
            torch.cat([self.images, self.images.new_zeros(padding, *self.images.shape[1:])]),
            torch.cat([self.confidence, torch.full((padding,), -1.0)]),  # -1 marks padding
            torch.cat([self.true, self.true.new_zeros(padding)]),
            torch.cat([self.predicted, self.predicted.new_zeros(padding)]),
        )
        images, confidence, true, predicted = (pl_module.all_gather(t.to(pl_module.device)).flatten(0, 1).cpu()
                                               for t in mine)
        real = confidence >= 0
        self.reset()
        self.num_classes = pl_module.hparams.get("num_classes", 0) or self.num_classes
        self.keep_top(images[real], confidence[real], true[real], predicted[real])

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not image_loggers(trainer) or not trainer.is_global_zero or self.images is None or len(self.images) == 0:
            return
        images = displayable(self.images, *normalization(trainer))
        permutation = getattr(trainer.datamodule, "permutation", None)
        if permutation is not None:
            images = images.flatten(2)[:, :, permutation.cpu().argsort()].view_as(images)
        names = class_names(trainer, self.num_classes)
        titles = [f"true {names[int(t)]}\npred {names[int(p)]} {c:.0%}" for t, p, c in
                  zip(self.true, self.predicted, self.confidence.tolist())]
        write_image(trainer, "test/confident_mistakes", image_grid(images, titles, columns=4), trainer.global_step)


class LearningRateLogger(LearningRateMonitor):
    """Lightning's LearningRateMonitor, quiet instead of failing when the run has no logger (`--trainer.logger false`)."""

    def on_train_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.loggers:
            super().on_train_start(trainer, *args, **kwargs)

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.loggers:
            super().on_train_batch_start(trainer, *args, **kwargs)

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.loggers:
            super().on_train_epoch_start(trainer, *args, **kwargs)
