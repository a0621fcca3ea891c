"""What the Trainer costs per step: LeNet-5 on MNIST through `main.py`'s Trainer vs a bare loop on the same data path.

Both sides train one epoch of the same network with the same Adam on the same in-memory uint8 MNIST, batches
taken by randperm index slices and normalized by the project's own `augment.normalize`; no augmentation, no
schedule, no validation. The bare loop has no DataLoader and no Lightning. The Trainer side runs as shipped
(default.yaml's logger, checkpointing, progress bar and callbacks), with the DataLoader or with
`--data.on_device true`. Rows run back to back in this process, alternating, and the best of `--repeats`
rounds is kept: compare the ratios, not the absolute figures. With a GPU both sides run on it (the bare loop
synchronizes before it reads the clock; the Trainer's per-step finite-loss check synchronizes every step).
Needs the real MNIST:

    python benchmarks/trainer_overhead.py --data_dir ../shared/data --repeats 3 [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from results_csv import append_rows  # benchmarks/ is on the path when a script here runs

from mnist_cifar.cli.main import build
from mnist_cifar.data import MNISTDataModule, augment
from mnist_cifar.models import LeNet5

ROOT = Path(__file__).resolve().parents[1]


def bare_epoch(images: torch.Tensor, labels: torch.Tensor, batch_size: int, device: torch.device) -> float:
    """Images/s of one epoch of the bare loop, on `device` (data copied there first, as `on_device` does)."""
    torch.manual_seed(0)
    net = LeNet5((1, 28, 28), 10, activation="relu", pooling="max").to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    mean, std = torch.tensor(MNISTDataModule.mean, device=device), torch.tensor(MNISTDataModule.std, device=device)
    images, labels = images.to(device), labels.to(device)
    order = torch.randperm(len(labels), device=device)
    synchronize(device)
    start = time.perf_counter()
    for first in range(0, len(order), batch_size):
        index = order[first : first + batch_size]
        x, y = augment.normalize(images[index], mean, std), labels[index]
        optimizer.zero_grad()
        F.cross_entropy(net(x), y).backward()
        optimizer.step()
    synchronize(device)
    return len(order) / (time.perf_counter() - start)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def trainer_epoch(data_dir: str, batch_size: int, threads: int, extra: list[str]) -> float:
    """Images/s of one epoch through the Trainer (RunStats: first to last training batch)."""
    with tempfile.TemporaryDirectory() as logs:
        cli = build(["--config", str(ROOT / "configs" / "lenet_mnist.yaml"), "--data.data_dir", data_dir,
                     "--data.batch_size", str(batch_size), "--data.crop_padding", "0", "--model.scheduler", "null",
                     "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "0", "--num_threads", str(threads),
                     "--trainer.logger.init_args.save_dir", logs, *extra],
                    default_config=ROOT / "configs" / "default.yaml")
        torch.set_num_threads(threads)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        return float(cli.trainer.callback_metrics["run/train_images_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=os.environ.get("MNIST_CIFAR_DATA", "data"))
    parser.add_argument("--repeats", type=int, default=3, help="rounds of all rows; the best of each is kept")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--csv", type=Path, help="also append the rows to this CSV file (with date, device, versions)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # the Trainer's `accelerator: auto` too
    dm = MNISTDataModule(data_dir=args.data_dir, val_size=5000)
    dm.prepare_data()
    dm.setup("fit")
    images, labels = dm.train_set.images, dm.train_set.labels
    rows = {}
    for batch in args.batch_sizes:
        rows[f"bare loop, batch {batch}"] = lambda b=batch: bare_epoch(images, labels, b, device)
        rows[f"Trainer (DataLoader), batch {batch}"] = lambda b=batch: trainer_epoch(args.data_dir, b, args.threads, [])
        rows[f"Trainer (on_device), batch {batch}"] = lambda b=batch: trainer_epoch(
            args.data_dir, b, args.threads, ["--data.on_device", "true"])
    best = dict.fromkeys(rows, 0.0)
    for _ in range(args.repeats):
        for name, measure in rows.items():
            torch.set_num_threads(args.threads)
            best[name] = max(best[name], measure())
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} thread(s)"
    print(f"\n{where}, best of {args.repeats} rounds")
    print(f"{'setting':<40} {'images/s':>10} {'vs bare loop':>13}")
    ratios = {}
    for name, speed in best.items():
        bare = best[f"bare loop, batch {name.rsplit(' ', 1)[1]}"]
        print(f"{name:<40} {speed:>10.0f} {speed / bare:>12.2f}x")
        ratios[name] = (speed, speed / bare)
    if args.csv:
        append_rows(args.csv, where, args.repeats, ratios, "vs_bare_loop")


if __name__ == "__main__":
    main()
