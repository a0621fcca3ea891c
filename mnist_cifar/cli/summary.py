"""Show a config's network the way the notes do: every layer's output shape for one input, and its parameters.

    python -m mnist_cifar.cli.summary --config configs/lenet_mnist.yaml [--depth N] [other main.py options]

Builds the model and data module exactly as `main.py fit` would (no data is read, nothing is trained) and
prints Lightning's `ModelSummary` with input and output sizes for one image of the data set's shape.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from lightning.pytorch.utilities.model_summary import ModelSummary

from mnist_cifar.cli.main import DEFAULT_CONFIG, build


def summarize(args: Sequence[str], depth: int = -1) -> ModelSummary:
    cli = build(args, default_config=DEFAULT_CONFIG)
    return ModelSummary(cli.model, max_depth=depth)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    depth = -1
    if "--depth" in args:
        at = args.index("--depth")
        depth = int(args[at + 1])
        del args[at : at + 2]
    print(summarize(args, depth))


if __name__ == "__main__":
    main()
