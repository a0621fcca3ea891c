"""Run every variant of an experiment for each seed, skipping runs whose logs show they already finished."""

from __future__ import annotations

import gc
import shutil
import sys
from pathlib import Path

from mnist_cifar.cli import DEFAULT_CONFIG, run
from mnist_cifar.experiments.definition import Experiment, Variant
from mnist_cifar.experiments.logs import is_complete

FIRST_SEED = 42


def seeds(count: int) -> list[int]:
    return [FIRST_SEED + i for i in range(count)]


def run_dir(root: Path, experiment: str, variant: str, seed: int) -> Path:
    return root / "experiments" / experiment / variant / f"seed{seed}"


def fit_args(root: Path, experiment: Experiment, variant: Variant, seed: int, extra: list[str]) -> list[str]:
    return [
        "fit",
        *variant.cli_args(),
        f"--seed_everything={seed}",
        f"--trainer.logger.init_args.save_dir={root / 'experiments' / experiment.name}",
        f"--trainer.logger.init_args.name={variant.name}",
        f"--trainer.logger.init_args.version=seed{seed}",
        *extra,
    ]


def run_experiment(
    experiment: Experiment, seed_count: int, root: Path, extra: list[str], only: list[str] | None = None
) -> list[tuple[str, int, str]]:
    """Run what is missing; returns (variant, seed, outcome) for every planned run."""
    outcomes = []
    for seed in seeds(seed_count):
        for variant in experiment.variants:
            if only and variant.name not in only:
                continue
            folder = run_dir(root, experiment.name, variant.name, seed)
            if is_complete(folder):
                outcomes.append((variant.name, seed, "done before"))
                continue
            shutil.rmtree(folder, ignore_errors=True)  # an interrupted run restarts from scratch, not mixed in
            print(f"[{experiment.name}] {variant.name}, seed {seed}", file=sys.stderr, flush=True)
            try:
                run(fit_args(root, experiment, variant, seed, extra), default_config=DEFAULT_CONFIG)
                outcomes.append((variant.name, seed, "ran" if is_complete(folder) else "incomplete"))
            except (Exception, SystemExit) as error:  # one failing run must not stop the sweep
                outcomes.append((variant.name, seed, f"failed: {type(error).__name__}: {error}"))
            gc.collect()
    return outcomes
