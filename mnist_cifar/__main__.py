"""`mnist-cifar` (the console script) and `python -m mnist_cifar`: every `main.py` subcommand, and the experiment
commands, from an installed package in any folder.

    mnist-cifar fit --config lenet_mnist            # a shipped config by its name
    mnist-cifar test --ckpt_path <run>/checkpoints/<best>.ckpt
    mnist-cifar export --ckpt_path X                # and predict --ckpt_path <exported file>
    mnist-cifar experiments run notes_mlp --seeds 3 # python -m mnist_cifar.experiments ...
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

from mnist_cifar import CONFIGS

STARTED = time.monotonic()  # a run's process.json counts the process from here (after the package's own imports)


def shipped_config(value: str) -> str:
    """`lenet_mnist` → the shipped `configs/lenet_mnist.yaml` when no file of that name exists here; else `value`."""
    if Path(value).expanduser().exists() or "/" in value or value.startswith("{"):
        return value
    candidate = CONFIGS / (value if value.endswith((".yaml", ".yml")) else f"{value}.yaml")
    return str(candidate) if candidate.is_file() else value


def with_shipped_configs(argv: Sequence[str]) -> list[str]:
    """Every `--config NAME` of `argv` with a shipped config's name replaced by its path."""
    result = list(argv)
    for i, arg in enumerate(result):
        if arg.startswith("--config="):
            result[i] = "--config=" + shipped_config(arg.split("=", 1)[1])
        elif arg == "--config" and i + 1 < len(result):
            result[i + 1] = shipped_config(result[i + 1])
    return result


def main(argv: Sequence[str] | None = None, started: float = STARTED) -> None:
    args = with_shipped_configs(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["experiments"]:
        from mnist_cifar.experiments.__main__ import main as experiments

        experiments(args[1:])
        return
    from mnist_cifar.export.command import run_without_the_trainer

    run_without_the_trainer(args)  # export, or predict with an exported file: then it exits
    from mnist_cifar.cli.main import DEFAULT_CONFIG, run

    run(args, default_config=DEFAULT_CONFIG, started=started)


if __name__ == "__main__":
    main()
