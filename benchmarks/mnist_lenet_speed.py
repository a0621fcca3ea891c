"""Training speed of LeNet-5 on MNIST: the course notes' plain PyTorch loop vs this project through its Trainer.

The baseline is the notes' loop: torchvision `MNIST` with per-sample `ToTensor` + `Normalize`,
`DataLoader(batch_size=64, shuffle=True)`, Adam, forward/backward/step. Each row times one training
epoch (start-up, data loading and validation excluded) and all rows run back to back in this process,
so compare the ratios, not the absolute figures. Needs the real MNIST:

    python benchmarks/mnist_lenet_speed.py --data_dir ../shared/data [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from results_csv import append_rows  # benchmarks/ is on the path when a script here runs
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from mnist_cifar.cli.main import build
from mnist_cifar.models import LeNet5

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_THREADS = torch.get_num_threads()
# what the notes' loop does, so the rows compare pipelines, not recipes: batch 64, constant-lr Adam 1e-3, no shifts
NOTES_RECIPE = ["--data.batch_size", "64", "--data.crop_padding", "0", "--model.optimizer.init_args.lr", "1e-3",
                "--model.scheduler", "null", "--model.scheduler_interval", "epoch"]


def make_net() -> torch.nn.Module:
    return LeNet5(input_shape=(1, 28, 28), num_classes=10, activation="relu", pooling="max")


def baseline_epoch(data_dir: str, threads: int) -> float:
    """Images/s of one epoch of the notes' loop."""
    torch.set_num_threads(threads)
    to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    train = datasets.MNIST(data_dir, train=True, download=False, transform=to_tensor)
    loader = DataLoader(train, batch_size=64, shuffle=True)
    net = make_net()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    start, images = time.perf_counter(), 0
    for x, y in loader:
        optimizer.zero_grad()
        F.cross_entropy(net(x), y).backward()
        optimizer.step()
        images += len(y)
    return images / (time.perf_counter() - start)


def project_epoch(data_dir: str, overrides: list[str]) -> float:
    """Images/s of one epoch of `configs/lenet_mnist.yaml` through the Trainer, with its logger and callbacks."""
    torch.set_num_threads(DEFAULT_THREADS)  # undo an earlier row's --num_threads; the config may set its own
    cli = build(
        ["--config", str(ROOT / "configs" / "lenet_mnist.yaml"), "--data.data_dir", data_dir,
         "--trainer.max_epochs", "1", "--trainer.logger.init_args.name", "benchmark", *overrides],
        default_config=ROOT / "configs" / "default.yaml",
    )
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return float(cli.trainer.callback_metrics["run/train_images_per_s"])  # RunStats: first to last training batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=os.environ.get("MNIST_CIFAR_DATA", "data"))
    parser.add_argument("--repeats", type=int, default=1, help="rounds of all rows; the best of each is kept")
    parser.add_argument("--csv", type=Path, help="also append the rows to this CSV file (with date, device, versions)")
    args = parser.parse_args()
    default_threads = DEFAULT_THREADS
    rows = {
        f"notes' loop, batch 64, {default_threads} threads (baseline)": lambda: baseline_epoch(args.data_dir, default_threads),
        "notes' loop, batch 64, 1 thread": lambda: baseline_epoch(args.data_dir, 1),
        f"project Trainer, the notes' recipe, {default_threads} threads": lambda: project_epoch(
            args.data_dir, [*NOTES_RECIPE, "--num_threads", str(default_threads)]),
        "project Trainer, the notes' recipe, 1 thread": lambda: project_epoch(
            args.data_dir, [*NOTES_RECIPE, "--num_threads", "1"]),
        f"project Trainer, lenet_mnist.yaml as shipped (batch 256, shifts, {default_threads} threads)":
            lambda: project_epoch(args.data_dir, []),
    }
    best = {name: 0.0 for name in rows}
    for _ in range(args.repeats):
        for name, measure in rows.items():
            best[name] = max(best[name], measure())
    baseline = next(iter(best.values()))
    print(f"\n{'setting':<70} {'images/s':>10} {'vs baseline':>12}")
    for name, speed in best.items():
        print(f"{name:<70} {speed:>10.0f} {speed / baseline:>11.2f}x")
    if args.csv:
        append_rows(args.csv, f"CPU, {default_threads} thread(s) by default", args.repeats,
                    {name: (speed, speed / baseline) for name, speed in best.items()}, "vs_baseline")


if __name__ == "__main__":
    main()
