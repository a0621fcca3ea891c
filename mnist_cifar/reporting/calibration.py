"""Whether a model's confidence can be trusted: calibration figures beside accuracy in every test, and temperature
scaling fitted on the validation split.

Every `test` logs, beside `test/acc`:
- `test/ece`: the expected calibration error, 15 equal-width confidence bins (torchmetrics'
  `MulticlassCalibrationError`, L1): the gap between confidence and accuracy, weighted by how many images fall in
  each bin. 0 is perfectly calibrated.
- `test/nll`: the mean negative log-likelihood of the true class (the cross-entropy without label smoothing).
- `test/brier`: the mean over images of the squared distance between the predicted probabilities and the one-hot
  label, summed over the classes (0 to 2).

Temperature scaling (Guo et al., 2017): one scalar T > 0 divides the logits; it changes no prediction (argmax is
the same), only confidence. T is fitted by minimizing the NLL on the validation split, with the weights being
tested, before the test starts: the test split is still read once and never used to fit anything. The figures
with it are logged as `test/temperature`, `test/ece_calibrated`, `test/nll_calibrated` and `test/brier_calibrated`.
A run without a validation split (`data.val_size: 0`) has nothing to fit T on and logs the raw figures only.

The reliability diagram (accuracy against confidence per bin, raw and calibrated) goes to TensorBoard's images and
the run folder (`reliability.png`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torchmetrics.classification import MulticlassCalibrationError

from mnist_cifar.errors import UserFacingError
from mnist_cifar.reporting.callbacks import render, write_image
from mnist_cifar.runs.folder import RunFolder, run_dir

BINS = 15


class Scores:
    """Sums for NLL, Brier and the reliability bins over the batches of one test, on the logits' device."""

    def __init__(self, num_classes: int, bins: int, device: torch.device) -> None:
        self.ece = MulticlassCalibrationError(num_classes=num_classes, n_bins=bins, norm="l1").to(device)
        self.sums = torch.zeros(2, device=device, dtype=torch.float64)  # NLL and Brier summed over images
        self.bins = torch.zeros(3, bins, device=device, dtype=torch.float64)  # count, confidence sum, correct sum
        self.count = 0

    def update(self, logits: Tensor, labels: Tensor) -> None:
        logits = logits.float()
        probabilities = logits.softmax(-1)
        self.ece.update(probabilities, labels)
        nll = F.cross_entropy(logits, labels, reduction="sum")
        brier = (probabilities - F.one_hot(labels, logits.shape[-1]).float()).pow(2).sum()
        self.sums += torch.stack((nll, brier)).double()
        confidence, predicted = probabilities.max(-1)
        index = (confidence * self.bins.shape[1]).long().clamp(max=self.bins.shape[1] - 1)
        for row, values in enumerate((torch.ones_like(confidence), confidence, (predicted == labels).float())):
            self.bins[row].index_add_(0, index, values.double())
        self.count += len(labels)

    def compute(self, strategy: Any) -> dict[str, float]:  # noqa: ANN401 (a Lightning strategy)
        """The figures over every rank's images (a collective under DDP: every rank calls it)."""
        ece = float(self.ece.compute())
        totals = strategy.reduce(torch.cat((self.sums, self.sums.new_tensor([self.count]))), reduce_op="sum")
        self.bins = strategy.reduce(self.bins, reduce_op="sum")
        nll, brier, count = totals.tolist()
        return {"ece": ece, "nll": nll / count, "brier": brier / count}


def fit_temperature(logits: Tensor, labels: Tensor, steps: int = 100) -> float:
    """The T > 0 minimizing the NLL of `logits / T` (L-BFGS on log T, from T = 1, in float64). Callable from a
    test loop: gradients are turned back on here, and tensors made under inference mode are copied out of it."""
    with torch.inference_mode(False), torch.enable_grad():
        logits, labels = logits.detach().double().clone(), labels.detach().clone()
        log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            optimizer.zero_grad()
            loss = F.cross_entropy(logits / log_t.exp(), labels)
            loss.backward()
            return loss

        optimizer.step(closure)
        return float(log_t.exp())


def validation_temperature(model: Any, data: Any, convert: Any = None) -> float:  # noqa: ANN401
    """T for `model`'s weights (an ImageClassifier), fitted on `data`'s validation split (set up here if it is not),
    on the logits `test` computes; `convert`: the precision plugin's input conversion. The whole split is used on
    every rank, so every rank gets the same T."""
    if data.val_set is None:
        data.setup("validate")
    images, labels = data.val_set.images, data.val_set.labels
    size = data.hparams.eval_batch_size or data.hparams.batch_size
    logits = []
    with torch.no_grad():
        for start in range(0, len(labels), size):
            batch = data.preprocess(images[start : start + size].to(model.device))
            logits.append(model.evaluation_logits(batch if convert is None else convert(batch)).float().cpu())
    return fit_temperature(torch.cat(logits), labels)


class Calibration(L.Callback):
    """Calibration figures in every test, with and without a temperature fitted on the validation split.

    Args:
        temperature_scaling: fit T on the validation split before each test and log the calibrated figures too.
        bins: equal-width confidence bins of the ECE and the reliability diagram (15, as Guo et al. and
            torch-uncertainty use).
        diagram: draw the reliability diagram (TensorBoard images and `reliability.png` in the run folder).
    """

    def __init__(self, temperature_scaling: bool = True, bins: int = BINS, diagram: bool = True) -> None:
        if bins < 1:
            raise ValueError(f"bins must be at least 1, got {bins}.")
        self.temperature_scaling, self.bins, self.diagram = temperature_scaling, bins, diagram
        self.temperature: float | None = None
        self._fitted: tuple[tuple[float, ...], float | None] | None = None  # (the weights' fingerprint, their T)
        self.raw: Scores | None = None
        self.calibrated: Scores | None = None

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        classes = int(pl_module.hparams.get("num_classes") or 10)
        self.temperature = self._fit(trainer, pl_module) if self.temperature_scaling else None
        self.raw = Scores(classes, self.bins, pl_module.device)
        self.calibrated = Scores(classes, self.bins, pl_module.device) if self.temperature is not None else None

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.raw is None or not isinstance(outputs, Tensor):
            return
        self.raw.update(outputs, batch[1])
        if self.calibrated is not None and self.temperature is not None:
            self.calibrated.update(outputs.float() / self.temperature, batch[1])

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.raw is None or self.raw.count == 0:
            return
        figures = {f"test/{k}": v for k, v in self.raw.compute(trainer.strategy).items()}
        if self.calibrated is not None:
            figures |= {f"test/{k}_calibrated": v for k, v in self.calibrated.compute(trainer.strategy).items()}
            figures["test/temperature"] = float(self.temperature)
        pl_module.log_dict(figures)  # identical on every rank: already summed over them

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.diagram or self.raw is None:
            return
        folder = Path(run_dir(trainer))  # a collective under DDP: every rank asks
        if self.raw.count == 0 or not trainer.is_global_zero:
            return
        image = reliability_diagram(self.raw.bins.cpu().numpy(), None if self.calibrated is None else
                                    self.calibrated.bins.cpu().numpy(), self.temperature)
        write_image(trainer, "test/reliability_diagram", image, trainer.global_step)
        if folder.is_dir():
            from PIL import Image

            Image.fromarray(image).save(RunFolder.at(folder).reliability_diagram)

    def _fit(self, trainer: L.Trainer, pl_module: L.LightningModule) -> float | None:
        """T from the validation split's logits under the weights being tested; None without a validation split.
        Fitted once for the same weights (the tests of `--data.corruption all` share the clean split's T)."""
        with torch.no_grad():
            fingerprint = tuple(float(t.double().sum()) for t in pl_module.state_dict().values() if t.is_floating_point())
        if self._fitted is not None and self._fitted[0] == fingerprint:
            return self._fitted[1]
        temperature = self._fit_on_validation(trainer, pl_module)
        self._fitted = (fingerprint, temperature)
        return temperature

    def _fit_on_validation(self, trainer: L.Trainer, pl_module: L.LightningModule) -> float | None:
        data = trainer.datamodule
        if data is None or not getattr(data.hparams, "val_size", 0):
            return None
        if data.val_set is None:
            try:
                data.setup("validate")  # a `test --ckpt_path` run: the same seeded split the run was validated on
            except UserFacingError as error:
                rank_zero_warn(f"No temperature scaling in this test: the validation split to fit it on cannot be "
                               f"built ({error})")
                return None
        with trainer.precision_plugin.forward_context():  # inputs as `test` gets them (64-true, bf16-true)
            return validation_temperature(pl_module, data, trainer.precision_plugin.convert_input)


def reliability_diagram(raw: np.ndarray, calibrated: np.ndarray | None, temperature: float | None) -> np.ndarray:
    """Accuracy against mean confidence per bin (bars), the diagonal of perfect calibration, and the share of
    images per bin; `raw` and `calibrated` are (count, confidence sum, correct sum) x bins."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 4.6))
    axis = figure.add_subplot()
    bins = raw.shape[1]
    edges = np.linspace(0, 1, bins + 1)
    series = [("raw", raw, "tab:blue")] + ([(f"T = {temperature:.2f}", calibrated, "tab:orange")]
                                           if calibrated is not None else [])
    width = 1 / bins / len(series)
    for index, (label, sums, color) in enumerate(series):
        filled = sums[0] > 0
        accuracy = np.where(filled, sums[2] / np.maximum(sums[0], 1), 0)
        ece = float(np.abs(sums[1] - sums[2]).sum() / max(sums[0].sum(), 1))
        axis.bar(edges[:-1] + index * width, accuracy, width=width, align="edge", color=color, alpha=0.8,
                 label=f"{label}: ECE {100 * ece:.2f} %")
    axis.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="perfect calibration")
    axis.set_xlabel("confidence (the top class's probability)")
    axis.set_ylabel("accuracy in the bin")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.legend(loc="upper left", fontsize=8)
    axis.set_title(f"Reliability diagram: {int(raw[0].sum()):,} test images, {bins} bins", fontsize=9)
    figure.tight_layout()
    return render(figure)
