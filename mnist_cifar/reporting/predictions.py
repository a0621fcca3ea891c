"""Write what `predict` found to a CSV: one row per image with its predicted class name and every probability.

Rows for the user's own files (`--data.predict_path`) name the file; rows for the test set name `test[i]` and
its true class. Files that were not readable images get a row with the reason, so nothing is silently lost.
Under DDP each rank predicts its own shard; the rows are gathered to rank zero, which writes them once, in
input order.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch.distributed as dist
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from mnist_cifar.runs.folder import RunFolder, run_dir


class PredictionCSVWriter(BasePredictionWriter):
    """Args:
    output: the CSV file; default `predictions.csv` in the run's log folder.
    """

    def __init__(self, output: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output = output
        self.rows: list[tuple[int, dict[str, Any]]] = []  # (input index, row)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.rows = []

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Tensor,
        batch_indices: list[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        dm = trainer.datamodule
        indices = batch_indices if batch_indices is not None else range(len(self.rows), len(self.rows) + len(prediction))
        for index, probabilities, label in zip(indices, prediction.float().cpu(), batch[1].cpu()):
            truth = dm.classes[int(label)] if dm.predict_has_labels else ""
            self.rows.append((int(index), prediction_row(dm.predict_sources[index], probabilities, dm.classes, truth)))

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rows = self.rows
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            every_rank: list[Any] = [None] * trainer.world_size
            dist.all_gather_object(every_rank, rows)
            rows = [row for part in every_rank for row in part]
        path = Path(self.output) if self.output else RunFolder.at(run_dir(trainer)).predictions  # a collective
        if not trainer.is_global_zero:
            return
        dm = trainer.datamodule
        rows.sort(key=lambda indexed: indexed[0])
        rank_zero_info(write_csv(path, [row for _, row in rows], dm.classes, dm.unreadable))


def prediction_row(source: str, probabilities: Tensor, classes: Sequence[str], true_class: str = "") -> dict[str, Any]:
    best = int(probabilities.argmax())
    row = {"source": source, "true_class": true_class, "predicted_class": classes[best],
           "confidence": f"{float(probabilities[best]):.4f}", "error": ""}
    row.update({f"p_{name}": f"{float(p):.4f}" for name, p in zip(classes, probabilities)})
    return row


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def as_text_cell(value: Any) -> str:
    """A cell a spreadsheet reads as text: a class name or file name starting like a formula (`=HYPERLINK(...)`)
    gets a leading apostrophe (OWASP's advice for CSV injection); numbers we format never start so."""
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def write_csv(path: Path, rows: list[dict[str, Any]], classes: Sequence[str], unreadable: Sequence[tuple[str, str]]) -> str:
    """Write the rows, then one row per unreadable file with its reason; returns the line that says so."""
    table = rows + [{"source": file, "error": why} for file, why in unreadable]
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = ["source", "true_class", "predicted_class", "confidence", "error"] + [f"p_{c}" for c in classes]
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow([as_text_cell(c) for c in columns])
        writer.writerows([as_text_cell(row.get(c, "")) for c in columns] for row in table)
    skipped = f"; {len(unreadable)} file(s) were not readable images (listed there)" if unreadable else ""
    return f"Wrote {len(rows)} predictions to {path}{skipped}."
