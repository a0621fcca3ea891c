"""Read a run's folder back: its metrics, whether it finished, and the process's wall time."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnist_cifar.run_record import read_record
from mnist_cifar.runs.folder import RunFolder


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every metric of a run folder as (step, value) pairs: from its logger-neutral `metrics.jsonl` (whatever
    logger the run used), or, for runs made before that record existed, from its TensorBoard event files."""
    record = read_record(run_dir)
    if record is not None:
        return record
    scalars: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(run_dir.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return scalars


def is_complete(run_dir: Path) -> bool:
    """A run is complete once its best checkpoint was tested: `test/acc` is in its logs."""
    return run_dir.is_dir() and "test/acc" in read_scalars(run_dir)


def process_seconds(run_dir: Path) -> float:
    """The whole-process wall time the runner recorded for a run (summed over resumes); NaN when there is none."""
    path = RunFolder.at(run_dir).process
    return float(json.loads(path.read_text())["process_seconds"]) if path.is_file() else float("nan")


def add_process_seconds(folder: Path, seconds: float) -> None:
    """Add one `python main.py fit` process's wall time (start-up, data reading, training, the after-fit test, as
    `time` measures it) to the run's `process.json`; a resumed run adds up its processes. Each process writes its
    own figure as it exits, however it exits (a signal, an error), so a runner that dies loses no time."""
    earlier = process_seconds(folder)  # NaN before the run's first process ended
    total = seconds if math.isnan(earlier) else earlier + seconds
    RunFolder.at(folder).process.write_text(json.dumps({"process_seconds": total}))
