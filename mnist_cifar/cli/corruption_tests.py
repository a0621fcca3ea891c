"""`test --data.corruption all`: after the clean test, the same weights on every corrupted copy of the test split.

Each (corruption, severity) is one more `trainer.test` in the same process, with the loggers set aside so that
`test/acc` in every logger and record stays the clean split's. What they measured goes to `corruptions.csv` in the
test's folder (one row each, calibration figures included) and, as scalars, to the loggers: `corruption/<name>/acc`
at step = severity (TensorBoard draws accuracy against severity per corruption), `corruption/mean_acc` (the mean
over all of them, CIFAR-10-C's headline figure), `corruption/worst_acc` and, with temperature scaling,
`corruption/mean_ece` and `corruption/mean_ece_calibrated`. A figure shows one test image under every corruption
and severity (`corruption_examples.png` in the folder, and TensorBoard's images).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch
from lightning import LightningDataModule, LightningModule, Trainer
from PIL import Image

from mnist_cifar.data import corruptions
from mnist_cifar.files import atomic_write_table
from mnist_cifar.reporting.callbacks import image_grid, write_image
from mnist_cifar.runs.folder import RunFolder, run_dir

FIGURES = ("acc", "loss", "ece", "nll", "brier", "ece_calibrated", "nll_calibrated", "brier_calibrated")


def test_every_corruption(trainer: Trainer, model: LightningModule, data: LightningDataModule) -> Path | None:
    """Run the loop (the clean test has run); returns the CSV written, None on other ranks."""
    loggers, rows = trainer.loggers, []
    runs = data.corruption_runs()
    try:
        trainer.loggers = []
        for index, (name, severity) in enumerate(runs, 1):
            data.use_corruption((name, severity))
            trainer.test(model, datamodule=data, verbose=False)
            metrics = trainer.callback_metrics
            rows.append({"corruption": name, "severity": severity,
                         **{f: float(metrics[f"test/{f}"]) for f in FIGURES if f"test/{f}" in metrics}})
            print(f"corruption {index}/{len(runs)}: {name} severity {severity}: acc {rows[-1]['acc']:.4f}",
                  file=sys.stderr, flush=True)
    finally:
        trainer.loggers = loggers
        data.use_corruption(None)
    summary = summarize(rows)
    for logger in loggers:
        for row in rows:
            logger.log_metrics({f"corruption/{row['corruption']}/acc": row["acc"]}, step=row["severity"])
        logger.log_metrics(summary, step=0)
        logger.save()
    if not trainer.is_global_zero:
        return None
    folder = RunFolder.at(Path(run_dir(trainer)))
    examples = examples_figure(data)
    write_image(trainer, "test/corruption_examples", examples, 0)
    Image.fromarray(examples).save(folder.corruption_examples)
    atomic_write_table(folder.corruptions, rows, ["corruption", "severity", *FIGURES])
    worst = min(rows, key=lambda r: r["acc"])
    print(f"{len(rows)} corrupted test sets: mean accuracy {summary['corruption/mean_acc']:.4f}, worst "
          f"{worst['acc']:.4f} ({worst['corruption']} at severity {worst['severity']}); {folder.corruptions}",
          file=sys.stderr)
    return folder.corruptions


def examples_figure(data: LightningDataModule, index: int = 0) -> np.ndarray:
    """Test image `index` clean and under every corruption at severities 1-5: a row per corruption."""
    image = data.stored_split("test")[0][index : index + 1]
    tiles, titles = [], []
    for name in corruptions.available(image.shape[1]):
        tiles += [image] + [corruptions.corrupt(image, name, severity) for severity in corruptions.SEVERITIES]
        titles += [name] + [f"severity {severity}" for severity in corruptions.SEVERITIES]
    return image_grid(torch.cat(tiles), titles, columns=1 + len(corruptions.SEVERITIES))


def summarize(rows: list[dict]) -> dict[str, float]:
    """The mean and worst accuracy over every corrupted set, and the mean ECE before and after scaling."""
    summary = {"corruption/mean_acc": math.fsum(r["acc"] for r in rows) / len(rows),
               "corruption/worst_acc": min(r["acc"] for r in rows)}
    for figure in ("ece", "ece_calibrated"):
        values = [r[figure] for r in rows if figure in r]
        if len(values) == len(rows):
            summary[f"corruption/mean_{figure}"] = math.fsum(values) / len(values)
    return summary
