"""Inference images/s on the CPU: the checkpoint (eager torch, preprocessing + network as `test` runs them) against
its ONNX export in onnxruntime and its torch.export program, same weights, same raw uint8 batches.

Each config's network is taken at its initial weights (speed does not depend on them) and exported with
`mnist_cifar.export.write`, parity check included, so no data set is needed: the check runs on a few random images
through a tiny data folder this script writes. Rows run back to back in this process, rounds alternating, the best
round kept: compare the ratios, not the absolute figures.

    python benchmarks/export_speed.py [--configs lenet_mnist resnet20_cifar] [--threads 1] [--csv F]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from results_csv import append_rows  # benchmarks/ is on the path when a script here runs

from mnist_cifar.cli.main import DEFAULT_CONFIG, build
from mnist_cifar.export.exported import ExportedModel
from mnist_cifar.export.write import Loaded, checkpoint_logits, write

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import write_cifar_batches, write_mnist  # noqa: E402 (the tests' writers of the real on-disk formats)


def loaded(config: str, folder: Path) -> Loaded:
    path = ROOT / "configs" / f"{config}.yaml"
    mnist = yaml.safe_load(path.read_text())["data"]["class_path"].endswith("MNISTDataModule")
    data_dir = folder / ("mnist" if mnist else "cifar")
    if not data_dir.exists():
        (write_mnist if mnist else write_cifar_batches)(data_dir)
    cli = build(["--config", str(path), "--data.data_dir", str(data_dir), "--trainer.logger", "false"], DEFAULT_CONFIG)
    return Loaded(cli.model.eval(), cli.datamodule, "benchmark")


def images_per_s(run: object, images: torch.Tensor, batch_size: int) -> float:
    start = time.perf_counter()
    for first in range(0, len(images), batch_size):
        run(images[first : first + batch_size])
    return len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["lenet_mnist", "resnet20_cifar"])
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--csv", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for config in args.configs:
            model = loaded(config, Path(tmp))
            files = {fmt: Path(tmp) / f"{config}{suffix}" for fmt, suffix in (("onnx", ".onnx"), ("exported_program", ".pt2"))}
            for fmt, path in files.items():
                write(model, fmt, path)
            data = model.data
            runners = {"checkpoint (eager torch)": lambda raw, model=model: checkpoint_logits(model, raw),
                       "ONNX in onnxruntime": ExportedModel(files["onnx"], threads=args.threads),
                       "torch.export program": ExportedModel(files["exported_program"])}
            images = torch.randint(0, 256, (args.images, *data.image_shape), dtype=torch.uint8)
            best = {name: 0.0 for name in runners}
            for _ in range(args.rounds):
                for name, run in runners.items():
                    best[name] = max(best[name], images_per_s(run, images, args.batch_size))
            baseline = best["checkpoint (eager torch)"]
            for name, speed in best.items():
                rows[f"{config}: {name}, batch {args.batch_size}"] = (speed, speed / baseline)
                print(f"{config:16s} {name:26s} {speed:10,.0f} images/s  {speed / baseline:5.2f}x the checkpoint")
    if args.csv:
        append_rows(args.csv, f"CPU, {args.threads} thread(s)", args.rounds, rows, "vs_checkpoint")


if __name__ == "__main__":
    main()
