"""airbench94 itself on the data `speedrun_cifar` reads, on the same GPU, as the reference for its accuracy and time.

Needs a GPU and the `airbench` package (pip sdist 0.1.8; pure Python, so its folder on PYTHONPATH will do). The image
folder (e.g. the JPEG copy) is decoded by mnist_cifar's own reader and written in airbench's `cifar10/train.pt` /
`test.pt` format in the working folder, so both sides see the same pixels. Prints each run's table and one summary line:
the mean ± std of airbench's TTA test accuracy and of its own CUDA-event training time.

    python benchmarks/airbench_side_by_side.py --data_dir DATA --runs 5
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
from pathlib import Path

import torch

from mnist_cifar.data.cifar10 import CIFAR10DataModule
from mnist_cifar.data.sources import read_image_folder


def write_airbench_data(data_dir: Path, cache_dir: Path) -> None:
    Path("cifar10").mkdir(exist_ok=True)
    for split in ("train", "test"):
        images, labels = read_image_folder(data_dir, split, CIFAR10DataModule.classes, (3, 32, 32), cache_dir)
        torch.save({"images": images.permute(0, 2, 3, 1).contiguous(), "labels": labels.long(),
                    "classes": list(CIFAR10DataModule.classes)}, f"cifar10/{split}.pt")


def timed_run(airbench, run: int) -> tuple[float, float]:
    """One `train94` run; its final table row holds the TTA accuracy and the training seconds."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        airbench.train94(run=run)
    print(printed.getvalue())
    final_row = [line for line in printed.getvalue().splitlines() if "eval" in line][-1]
    cells = [cell.strip() for cell in final_row.strip("|").split("|")]
    return float(cells[5]), float(cells[6])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", type=Path, required=True, help="holds train/<class>/* and test/<class>/*")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cache_dir", type=Path, default=Path("~/.cache/mnist_cifar").expanduser())
    args = parser.parse_args()
    write_airbench_data(args.data_dir, args.cache_dir)
    import airbench  # after the data: it reads cifar10/*.pt from the working folder

    airbench.warmup94(verbose=False)
    accuracies, seconds = zip(*(timed_run(airbench, run) for run in range(args.runs)))
    print(f"AIRBENCH94 {args.runs} runs: tta acc {statistics.mean(accuracies):.4f} +- {statistics.stdev(accuracies):.4f} "
          f"(min {min(accuracies):.4f}), time {statistics.mean(seconds):.3f} +- {statistics.stdev(seconds):.3f} s",
          torch.cuda.get_device_name())


if __name__ == "__main__":
    main()
