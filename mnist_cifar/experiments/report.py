"""Turn an experiment's run folders into a per-run CSV, a Markdown table (mean ± std over seeds), a plot of the final
figures and one of the learning curves: per epoch, the mean and the seed-to-seed spread (± one std) of the train loss,
the validation loss and the validation accuracy of every variant, overlaid (TensorBoard cannot average runs)."""

from __future__ import annotations

import csv
import math
import statistics
import textwrap
from dataclasses import asdict, dataclass
from pathlib import Path

from mnist_cifar.experiments.definition import Experiment
from mnist_cifar.experiments.logs import read_scalars
from mnist_cifar.files import atomic_write_table, atomic_write_text
from mnist_cifar.runs.folder import process_seconds


@dataclass
class RunResult:
    variant: str
    seed: int
    test_acc: float
    best_val_acc: float
    best_epoch: int  # 1-based: the epoch whose checkpoint was tested
    final_train_acc: float
    epochs: int
    parameters: int
    fit_seconds: float
    process_seconds: float  # the whole `python main.py fit` process, start to exit (process.json, by the runner)
    train_images_per_s: float
    epochs_to_target: int = 0  # the first epoch whose val acc reached the experiment's target (0: never)
    seconds_to_target: float = float("nan")  # training seconds up to the end of that epoch
    test_ece: float = float("nan")  # calibration of the tested checkpoint (nan: a run from before calibration)
    test_nll: float = float("nan")
    test_brier: float = float("nan")
    test_ece_calibrated: float = float("nan")  # after temperature scaling fitted on the validation split
    temperature: float = float("nan")


Scalars = dict[str, list[tuple[int, float]]]  # a run's logged metrics: tag -> (step, value)


def _values(scalars: dict, tag: str) -> list[float]:
    return [value for _, value in sorted(scalars.get(tag, []))]


def read_run(folder: Path, variant: str, target: float | None = None, scalars: Scalars | None = None) -> RunResult | None:
    """A finished run's figures (`scalars`: its metrics, when already read); None when it was not tested."""
    scalars = read_scalars(folder) if scalars is None else scalars
    if "test/acc" not in scalars:
        return None
    val = _values(scalars, "val/acc")
    speed = _values(scalars, "run/train_images_per_s")
    return RunResult(
        variant=variant,
        seed=int(folder.name.removeprefix("seed")),
        test_acc=_values(scalars, "test/acc")[-1],
        best_val_acc=max(val, default=float("nan")),
        best_epoch=val.index(max(val)) + 1 if val else 0,
        final_train_acc=(_values(scalars, "train/acc") or [float("nan")])[-1],
        epochs=len(_values(scalars, "run/epoch_train_seconds")) or len(val),
        parameters=int((_values(scalars, "run/parameters") or [0])[-1]),
        fit_seconds=(_values(scalars, "run/fit_seconds") or [float("nan")])[-1],
        process_seconds=process_seconds(folder),
        train_images_per_s=statistics.fmean(speed) if speed else float("nan"),
        **_time_to_target(val, _values(scalars, "run/epoch_train_seconds"), target),
        **{field: (_values(scalars, tag) or [float("nan")])[-1] for field, tag in CALIBRATION_TAGS.items()},
    )


CALIBRATION_TAGS = {"test_ece": "test/ece", "test_nll": "test/nll", "test_brier": "test/brier",
                    "test_ece_calibrated": "test/ece_calibrated", "temperature": "test/temperature"}


def _time_to_target(val: list[float], epoch_seconds: list[float], target: float | None) -> dict:
    reached = next((epoch for epoch, accuracy in enumerate(val, 1) if target is not None and accuracy >= target), 0)
    if not reached:
        return {}
    return {"epochs_to_target": reached, "seconds_to_target": sum(epoch_seconds[:reached])}


def finished_runs(experiment: Experiment, root: Path) -> list[tuple[str, Path, Scalars]]:
    """(variant, folder, metrics) of every run whose logs hold `test/acc`, each folder read once."""
    runs = []
    for variant in experiment.variants:
        for folder in sorted((root / "experiments" / experiment.name / variant.name).glob("seed*")):
            scalars = read_scalars(folder)
            if "test/acc" in scalars:
                runs.append((variant.name, folder, scalars))
    return runs


def collect(experiment: Experiment, root: Path,
            runs: list[tuple[str, Path, Scalars]] | None = None) -> list[RunResult]:
    runs = finished_runs(experiment, root) if runs is None else runs
    return [read_run(folder, variant, experiment.target, scalars) for variant, folder, scalars in runs]


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def markdown_table(experiment: Experiment, results: list[RunResult]) -> str:
    lines = [
        "| variant | seeds | test acc (mean ± std) | final train acc | best val acc | best epoch / epochs | parameters "
        "| wall time (whole process) | train images/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    calibrated = any(not math.isnan(r.test_ece) for r in results)  # runs since the Calibration callback
    if calibrated:
        lines[0] += " test ECE → with T |"
        lines[1] += "---|"
    if experiment.target is not None:
        lines[0] += f" val ≥ {100 * experiment.target:g} %: epochs, training s |"
        lines[1] += "---|"
    for variant in experiment.variants:
        runs = [r for r in results if r.variant == variant.name]
        if not runs:
            continue
        test_mean, test_std = _mean_std([r.test_acc for r in runs])
        spread = f" ± {100 * test_std:.2f}" if len(runs) > 1 else ""  # one seed has no spread to show
        train = statistics.fmean(r.final_train_acc for r in runs)
        lines.append(
            f"| {variant.name} | {len(runs)} | {100 * test_mean:.2f}{spread} % | {100 * train:.2f} % "
            f"| {_validation_cells(runs)} | {runs[0].parameters:,} "
            f"| {statistics.fmean(r.process_seconds for r in runs):.0f} s "
            f"| {statistics.fmean(r.train_images_per_s for r in runs):,.0f} |"
            + (_calibration_cell(runs) if calibrated else "")
            + (_target_cell(runs) if experiment.target is not None else "")
        )
    return "\n".join(lines)


def _calibration_cell(runs: list[RunResult]) -> str:
    """Mean test ECE (15 bins) of the tested checkpoints, and after temperature scaling when it was fitted."""
    ece = [r.test_ece for r in runs if not math.isnan(r.test_ece)]
    if not ece:
        return " — |"
    calibrated = [r.test_ece_calibrated for r in runs if not math.isnan(r.test_ece_calibrated)]
    after = f" → {100 * statistics.fmean(calibrated):.2f} %" if calibrated else ""
    return f" {100 * statistics.fmean(ece):.2f} %{after} |"


def _without_validation(runs: list[RunResult]) -> bool:
    """No val/acc was logged (`--data.val_size 0`): the run tested its last weights."""
    return all(r.best_epoch == 0 for r in runs)


def _validation_cells(runs: list[RunResult]) -> str:
    """Best val acc and best epoch, or what was tested instead."""
    if _without_validation(runs):
        return f"no validation split | last / {runs[0].epochs}"
    val = statistics.fmean(r.best_val_acc for r in runs)
    return f"{100 * val:.2f} % | {statistics.fmean(r.best_epoch for r in runs):.1f} / {runs[0].epochs}"


def _target_cell(runs: list[RunResult]) -> str:
    reached = [r for r in runs if r.epochs_to_target]
    if not reached:
        return " no validation split |" if _without_validation(runs) else " not reached |"
    epochs = statistics.fmean(r.epochs_to_target for r in reached)
    seconds = statistics.fmean(r.seconds_to_target for r in reached)
    return f" {epochs:.1f}, {seconds:.0f} s ({len(reached)} of {len(runs)} seeds) |"


CURVES = {"train/loss": "train loss", "val/loss": "validation loss", "val/acc": "validation accuracy"}
CURVE_FIELDS = ["variant", "seed", "epoch", *CURVES]


def curve_rows(experiment: Experiment, root: Path,
               runs: list[tuple[str, Path, Scalars]] | None = None) -> list[dict[str, object]]:
    """One row per variant, seed and epoch with the epoch's train loss, val loss and val acc (`curves.csv`), from the
    finished runs' folders; an epoch a metric was not logged for (no validation split) is left empty."""
    rows: list[dict[str, object]] = []
    for variant, folder, scalars in finished_runs(experiment, root) if runs is None else runs:
        series = {tag: _values(scalars, tag) for tag in CURVES}
        for epoch in range(1, max(map(len, series.values())) + 1):
            values = {tag: (s[epoch - 1] if epoch <= len(s) else "") for tag, s in series.items()}
            rows.append({"variant": variant, "seed": int(folder.name.removeprefix("seed")), "epoch": epoch, **values})
    return rows


def read_curve_rows(path: Path) -> list[dict[str, object]]:
    """`curves.csv` as `curve_rows` made it: a committed report's curves can be drawn again without its runs."""
    with open(path, newline="") as file:
        return [{**row, "seed": int(row["seed"]), "epoch": int(row["epoch"])} for row in csv.DictReader(file)]


def curve_bands(rows: list[dict[str, object]], variant: str, tag: str) -> tuple[list[int], list[float], list[float]]:
    """Epochs, mean and std over the seeds that logged `tag` at that epoch (std 0 where one seed did)."""
    by_epoch: dict[int, list[float]] = {}
    for row in rows:
        if row["variant"] == variant and row[tag] not in ("", None):
            by_epoch.setdefault(int(row["epoch"]), []).append(float(row[tag]))
    epochs = sorted(by_epoch)
    stats = [_mean_std(by_epoch[e]) for e in epochs]
    return epochs, [m for m, _ in stats], [s for _, s in stats]


def plot_curves(rows: list[dict[str, object]], variants: list[str], title: str, path: Path) -> None:
    """Train loss, validation loss and validation accuracy per epoch: each variant's mean over seeds as a line and
    ± one std as a band, all variants overlaid; the legend says how many seeds each line averages."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(CURVES), figsize=(15, 4.5))
    for index, variant in enumerate(v for v in variants if any(r["variant"] == v for r in rows)):
        seeds = len({r["seed"] for r in rows if r["variant"] == variant})
        color = f"C{index % 10}"
        for axis, tag in zip(axes, CURVES):
            epochs, mean, std = curve_bands(rows, variant, tag)
            scale = 100 if tag.endswith("acc") else 1
            mean, std = [scale * m for m in mean], [scale * s for s in std]
            axis.plot(epochs, mean, color=color, label=f"{variant} ({seeds} seed{'s' * (seeds != 1)})")
            axis.fill_between(epochs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                              color=color, alpha=0.2, linewidth=0)
    for axis, (tag, label) in zip(axes, CURVES.items()):
        axis.set_xlabel("epoch")
        axis.set_ylabel(label + (" (%)" if tag.endswith("acc") else ""))
        axis.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="lower right")
    figure.suptitle(textwrap.fill(f"{title}: mean ± std over seeds", 120), fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot(experiment: Experiment, results: list[RunResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [v.name for v in experiment.variants if any(r.variant == v.name for r in results)]
    groups = {name: [r for r in results if r.variant == name] for name in names}
    test = [_mean_std([100 * r.test_acc for r in groups[n]]) for n in names]
    train = [statistics.fmean(100 * r.final_train_acc for r in groups[n]) for n in names]
    speed = [statistics.fmean(r.train_images_per_s for r in groups[n]) for n in names]
    x = range(len(names))
    figure, (accuracy_axis, speed_axis) = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(names)), 4.5))
    accuracy_axis.bar([i - 0.2 for i in x], train, width=0.4, label="final train acc")
    accuracy_axis.bar([i + 0.2 for i in x], [m for m, _ in test], width=0.4, yerr=[s for _, s in test], capsize=3,
                      label="test acc (mean ± std)")
    low = min(min(train), min(m for m, _ in test))
    accuracy_axis.set_ylim(max(0.0, low - 5), 100)
    accuracy_axis.set_ylabel("accuracy (%)")
    accuracy_axis.legend(loc="lower right")
    speed_axis.bar(list(x), speed, color="tab:green")
    speed_axis.set_ylabel("training images/s")
    for axis in (accuracy_axis, speed_axis):
        axis.set_xticks(list(x), names, rotation=30, ha="right")
    figure.suptitle(textwrap.fill(experiment.description, 110), fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(experiment: Experiment, root: Path, out_dir: Path) -> Path | None:
    """Write results.csv, results.md and <name>.png into out_dir; None when no run has finished yet."""
    runs = finished_runs(experiment, root)
    if not runs:
        return None
    results, rows = collect(experiment, root, runs), curve_rows(experiment, root, runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_table(out_dir / "results.csv", (asdict(r) for r in results), list(asdict(results[0])))
    atomic_write_table(out_dir / "curves.csv", rows, CURVE_FIELDS)
    table = markdown_table(experiment, results)
    figure = f"![{experiment.name}]({experiment.name}.png)"
    curves = (f"\n\nLearning curves, mean ± std over seeds (per-epoch values in `curves.csv`):\n\n"
              f"![{experiment.name} learning curves]({experiment.name}_curves.png)")
    atomic_write_text(out_dir / "results.md",
                      f"## {experiment.name}\n\n{experiment.description}\n\n{table}\n\n{figure}{curves}\n")
    plot(experiment, results, out_dir / f"{experiment.name}.png")
    plot_curves(rows, [v.name for v in experiment.variants], experiment.description, out_dir / f"{experiment.name}_curves.png")
    return out_dir / "results.md"
