"""`python -m mnist_cifar.experiments robustness <experiment>`: every finished run's tested checkpoint on every
corrupted copy of its test split, and a report of calibration and robustness over the seeds.

For each run (variant and seed) whose `fit` finished, `main.py test --ckpt_path <its best checkpoint>
--data.corruption all` runs once (a run that already has its `corruptions.csv` is skipped, so an interrupted
command continues), logging into `<root>/robustness/<experiment>/<variant>/seed<N>/`. The report, `robustness.md`
and `robustness.csv` beside the experiment's report, gives per variant (mean ± std over seeds): the clean test
accuracy, the mean accuracy over every corruption and severity, the worst corruption (the one with the lowest mean
accuracy over severities, averaged over seeds), and the clean test's ECE before and after temperature scaling
(fitted on the validation split), plus a figure of accuracy against severity.
"""

from __future__ import annotations

import csv
import statistics
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from mnist_cifar.experiments.definition import Experiment
from mnist_cifar.experiments.launch import FIT
from mnist_cifar.experiments.logs import is_complete, read_scalars
from mnist_cifar.experiments.runner import run_dir, seeds
from mnist_cifar.files import atomic_write_table, atomic_write_text
from mnist_cifar.runs.folder import CHECKPOINTS, RunFolder


@dataclass
class Robustness:
    variant: str
    seed: int
    clean_acc: float
    mean_corruption_acc: float
    ece: float
    ece_calibrated: float
    temperature: float
    mean_corruption_ece: float
    mean_corruption_ece_calibrated: float


def test_folder(root: Path, experiment: str, variant: str, seed: int) -> Path:
    return root / "robustness" / experiment / variant / f"seed{seed}"


def best_checkpoint(run: Path) -> Path | None:
    """The checkpoint the run's own test used: the best `epoch*.ckpt` (one is kept)."""
    found = sorted((run / CHECKPOINTS).glob("epoch*.ckpt"))
    return found[-1] if found else None


def test_runs(experiment: Experiment, root: Path, seed_count: int, extra: list[str]) -> list[str]:
    """Test every finished run on every corruption (skipping those already done); returns what failed."""
    failed = []
    for variant in experiment.variants:
        for seed in seeds(seed_count):
            run, out = run_dir(root, experiment.name, variant.name, seed), test_folder(root, experiment.name,
                                                                                        variant.name, seed)
            checkpoint = best_checkpoint(run) if is_complete(run) else None
            if checkpoint is None or RunFolder.at(out).corruptions.is_file():
                continue
            print(f"test {variant.name} seed {seed} on every corruption: {checkpoint}", flush=True)
            command = [*FIT, "test", "--ckpt_path", str(checkpoint), "--data.corruption", "all",
                       f"--trainer.logger.init_args.save_dir={out.parent.parent}",
                       f"--trainer.logger.init_args.name={variant.name}", f"--trainer.logger.init_args.version=seed{seed}",
                       "--trainer.enable_progress_bar=false", *extra]
            if subprocess.run(command, check=False).returncode != 0:
                failed.append(f"{variant.name} seed {seed}")
    return failed


def read_results(experiment: Experiment, root: Path) -> tuple[list[Robustness], list[dict]]:
    """Per run, the summary; and every corrupted test's row, with its variant and seed."""
    results, rows = [], []
    for variant in experiment.variants:
        for folder in sorted((root / "robustness" / experiment.name / variant.name).glob("seed*")):
            table = RunFolder.at(folder).corruptions
            if not table.is_file():
                continue
            seed = int(folder.name.removeprefix("seed"))
            own = [{**r, "variant": variant.name, "seed": seed} for r in csv.DictReader(table.open())]
            clean = _clean_figures(folder)
            results.append(Robustness(
                variant.name, seed, clean.get("test/acc", float("nan")),
                statistics.fmean(float(r["acc"]) for r in own), clean.get("test/ece", float("nan")),
                clean.get("test/ece_calibrated", float("nan")), clean.get("test/temperature", float("nan")),
                statistics.fmean(float(r["ece"]) for r in own),
                statistics.fmean(float(r["ece_calibrated"] or "nan") for r in own)))
            rows += own
    return results, rows


def _clean_figures(folder: Path) -> dict[str, float]:
    """The clean test's figures as the test logged them last."""
    return {tag: values[-1][1] for tag, values in read_scalars(folder).items() if tag.startswith("test/")}


def _cell(values: list[float], scale: float = 100, digits: int = 2) -> str:
    mean = statistics.fmean(values)
    spread = f" ± {scale * statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
    return f"{scale * mean:.{digits}f}{spread}"


def worst_corruption(rows: list[dict], variant: str) -> tuple[str, float]:
    """The corruption whose accuracy, averaged over severities and seeds, is lowest."""
    by_name: dict[str, list[float]] = {}
    for row in rows:
        if row["variant"] == variant:
            by_name.setdefault(row["corruption"], []).append(float(row["acc"]))
    name = min(by_name, key=lambda n: statistics.fmean(by_name[n]))
    return name, statistics.fmean(by_name[name])


def markdown(experiment: Experiment, results: list[Robustness], rows: list[dict]) -> str:
    lines = ["| variant | seeds | clean test acc | mean corruption acc | worst corruption (mean acc) | ECE | ECE with T "
             "| T | mean corruption ECE | … with T |", "|---|---|---|---|---|---|---|---|---|---|"]
    for variant in experiment.variants:
        runs = [r for r in results if r.variant == variant.name]
        if not runs:
            continue
        name, accuracy = worst_corruption(rows, variant.name)
        lines.append(
            f"| {variant.name} | {len(runs)} | {_cell([r.clean_acc for r in runs])} % "
            f"| {_cell([r.mean_corruption_acc for r in runs])} % | {name} ({100 * accuracy:.2f} %) "
            f"| {_cell([r.ece for r in runs])} % | {_cell([r.ece_calibrated for r in runs])} % "
            f"| {_cell([r.temperature for r in runs], 1)} | {_cell([r.mean_corruption_ece for r in runs])} % "
            f"| {_cell([r.mean_corruption_ece_calibrated for r in runs])} % |")
    return "\n".join(lines)


def per_corruption_table(experiment: Experiment, rows: list[dict]) -> str:
    """Each corruption's accuracy per variant: the mean over severities of each seed, then mean ± std over seeds."""
    variants = [v.name for v in experiment.variants if any(row["variant"] == v.name for row in rows)]
    by_seed: dict[tuple[str, str], dict[object, list[float]]] = {}
    for row in rows:
        by_seed.setdefault((row["corruption"], row["variant"]), {}).setdefault(row["seed"], []).append(float(row["acc"]))
    lines = [f"| corruption | {' | '.join(variants)} |", "|---|" + "---|" * len(variants)]
    for corruption in dict.fromkeys(row["corruption"] for row in rows):
        cells = [by_seed.get((corruption, variant)) for variant in variants]
        lines.append(f"| {corruption} | " + " | ".join(
            f"{_cell([statistics.fmean(v) for v in seeds.values()])} %" if seeds else "—" for seeds in cells) + " |")
    return "\n".join(lines)


def plot(experiment: Experiment, rows: list[dict], path: Path) -> None:
    """Accuracy against severity, averaged over corruptions and seeds, per variant (± std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4.5))
    for variant in experiment.variants:
        per_seed: dict[int, dict[int, list[float]]] = {}
        for row in rows:
            if row["variant"] == variant.name:
                per_seed.setdefault(int(row["severity"]), {}).setdefault(row["seed"], []).append(float(row["acc"]))
        if not per_seed:
            continue
        severities = sorted(per_seed)
        means = [[statistics.fmean(v) for v in per_seed[s].values()] for s in severities]
        mean = [100 * statistics.fmean(m) for m in means]
        std = [100 * statistics.stdev(m) if len(m) > 1 else 0 for m in means]
        axis.errorbar(severities, mean, yerr=std, marker="o", capsize=3, label=variant.name)
    axis.set_xlabel("severity (CIFAR-10-C's scale, regenerated)")
    axis.set_ylabel("test accuracy, mean over corruptions (%)")
    axis.set_xticks(list(range(1, 6)))
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title(f"{experiment.name}: accuracy under corruption (mean ± std over seeds)", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_robustness_report(experiment: Experiment, root: Path, out_dir: Path) -> Path | None:
    results, rows = read_results(experiment, root)
    if not results:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_table(out_dir / "robustness.csv", (asdict(r) for r in results), list(asdict(results[0])))
    atomic_write_table(out_dir / "corruptions.csv", rows,
                       ["variant", "seed", *(k for k in rows[0] if k not in ("variant", "seed"))])
    plot(experiment, rows, out_dir / f"{experiment.name}_robustness.png")
    text = (f"## {experiment.name}: calibration and robustness\n\n{markdown(experiment, results, rows)}\n\n"
            f"![accuracy under corruption]({experiment.name}_robustness.png)\n\n"
            f"Accuracy per corruption (mean over the 5 severities, mean ± std over seeds):\n\n"
            f"{per_corruption_table(experiment, rows)}\n")
    atomic_write_text(out_dir / "robustness.md", text)
    return out_dir / "robustness.md"
