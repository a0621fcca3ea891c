"""Where a training step's time goes through the Trainer: step times, then one profiled stretch of steps.

For one config (any `main.py fit` arguments after `--`), two short fits on the same data, back to back:
1. **timed**: `--steps` training batches after `--skip` warm-up ones, each step timed from one batch start to the
   next (CUDA events on a GPU, read once at the end, so timing adds no sync; `perf_counter` on the CPU). This is
   the step as training sees it, host gaps included.
2. **profiled**: the same stretch under Lightning's `PyTorchProfiler` (`torch.profiler` with Lightning's own
   ranges around every hook: `[Callback]...`, `[Strategy]...backward`, `[LightningModule]...optimizer_step`).
   It prints the Lightning ranges by host time per step (where the Python goes) and the operators by device time
   per step (where the GPU goes), and writes the chrome trace and the full table into `--out`.
Profiling slows each step; read the split from 2 and the step time from 1. Validation and the after-fit test are
switched off, and the one checkpoint, at the epoch's end, lies outside the timed steps: this is the training step
alone.

    python benchmarks/step_profile.py --out prof --steps 50 --skip 20 -- --config configs/speedrun_cifar.yaml \
        --data.data_dir DATA --data.on_device true
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.profilers import PyTorchProfiler
from results_csv import append_records, stamp  # benchmarks/ is on the path when a script here runs

from mnist_cifar.cli.main import build

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["--trainer.max_epochs", "1", "--trainer.limit_val_batches", "0",
         "--trainer.enable_progress_bar", "false", "--test_after_fit", "false", "--trainer.num_sanity_val_steps", "0"]


class StepClock(L.Callback):
    """A mark at every training batch's start: CUDA events on a GPU (no sync until `step_ms`), else the host clock."""

    def __init__(self) -> None:
        self.marks: list[Any] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if pl_module.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def step_ms(self, skip: int) -> list[float]:
        marks = self.marks[skip:]
        if marks and isinstance(marks[0], torch.cuda.Event):
            torch.cuda.synchronize()
            return [start.elapsed_time(end) for start, end in zip(marks, marks[1:])]
        return [(end - start) * 1000 for start, end in zip(marks, marks[1:])]


def fit(args: list[str], steps: int, skip: int, logs: str, callbacks: list[L.Callback],
        profiler: PyTorchProfiler | None = None) -> L.Trainer:
    cli = build([*args, *QUIET, "--trainer.limit_train_batches", str(skip + steps + 1),
                 "--trainer.logger.init_args.save_dir", logs], default_config=ROOT / "configs" / "default.yaml")
    trainer = cli.trainer
    trainer.callbacks.extend(callbacks)
    if profiler is not None:
        trainer.profiler = profiler  # read by every hook call from here on (`trainer.profiler.profile(name)`)
    trainer.fit(cli.model, datamodule=cli.datamodule)
    return trainer


def per_step_rows(profiler: PyTorchProfiler, steps: int, device: bool) -> list[tuple[str, float, int]]:
    """(name, ms a step, calls a step) of Lightning's ranges by host time, or of the operators by device time."""
    events = profiler.function_events
    rows = []
    for event in events.key_averages():
        lightning_range = event.key.startswith("[")
        if device and not lightning_range:
            total = getattr(event, "self_device_time_total", getattr(event, "self_cuda_time_total", 0))
        elif not device and lightning_range:
            total = event.cpu_time_total
        else:
            continue
        rows.append((event.key, total / 1000 / steps, round(event.count / steps)))
    return sorted(rows, key=lambda row: -row[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50, help="training steps timed and profiled")
    parser.add_argument("--skip", type=int, default=20, help="warm-up steps first (allocations, cuDNN tuning)")
    parser.add_argument("--out", type=Path, default=Path("step_profile"), help="chrome trace, tables, CSV rows")
    parser.add_argument("--rows", type=int, default=15, help="rows printed of each table")
    parser.add_argument("fit_args", nargs="+", help="after `--`: main.py fit arguments (--config ... )")
    options = parser.parse_args()
    options.out.mkdir(parents=True, exist_ok=True)
    name = next((Path(a).stem for a in options.fit_args if a.endswith(".yaml")), "run")
    with tempfile.TemporaryDirectory() as logs:
        clock = StepClock()
        trainer = fit(options.fit_args, options.steps, options.skip, logs, [clock])
        step_ms = clock.step_ms(options.skip)
        on_gpu = trainer.strategy.root_device.type == "cuda"
        schedule = torch.profiler.schedule(wait=options.skip, warmup=2, active=options.steps - 2)
        profiler = PyTorchProfiler(dirpath=str(options.out), filename=f"{name}_profile", export_to_chrome=True,
                                   row_limit=60, sort_by_key="cuda_time_total" if on_gpu else "cpu_time_total",
                                   schedule=schedule)
        fit(options.fit_args, options.steps, options.skip, logs, [], profiler)
    active = options.steps - 2
    print(f"{name} on {trainer.strategy.root_device}: {len(step_ms)} steps, {statistics.mean(step_ms):.2f} ms a step "
          f"(median {statistics.median(step_ms):.2f}, min {min(step_ms):.2f}; unprofiled, CUDA events on a GPU)")
    tables = [("Lightning ranges, host ms a step (profiled)", False)] + ([("operators, device ms a step", True)]
                                                                         if on_gpu else [])
    for title, device in tables:
        print(f"\n{title}:")
        for key, ms, calls in per_step_rows(profiler, active, device)[:options.rows]:
            print(f"  {ms:8.3f} ms  x{calls:<4d} {key[:100]}")
    device = torch.cuda.get_device_name() if on_gpu else f"CPU, {torch.get_num_threads()} thread(s)"
    append_records(options.out / "step_profile.csv", [{
        **stamp(device), "config": name, "steps": len(step_ms), "step_ms_mean": round(statistics.mean(step_ms), 3),
        "step_ms_median": round(statistics.median(step_ms), 3), "args": " ".join(options.fit_args)}])


if __name__ == "__main__":
    main()
