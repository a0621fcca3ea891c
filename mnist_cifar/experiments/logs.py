"""Read a run's folder back: its metrics and whether it finished."""

from __future__ import annotations

import json
from pathlib import Path

from mnist_cifar.runs.folder import RunFolder


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every metric of a run folder as (step, value) pairs: from its logger-neutral `metrics.jsonl` (whatever
    logger the run used), or, for runs made before that record existed, from its TensorBoard event files."""
    record = read_record(run_dir)
    if record is not None:
        return record
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # old runs only: imported then

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


def read_record(run_dir: Path) -> dict[str, list[tuple[int, float]]] | None:
    """Every metric of a run folder's record as (step, value) pairs, or None when it has no record."""
    path = RunFolder.at(run_dir).metrics
    if not path.is_file():
        return None
    metrics: dict[str, list[tuple[int, float]]] = {}
    for text in path.read_text().splitlines():
        try:
            line = json.loads(text)
        except json.JSONDecodeError:  # the last line of a process killed while writing it
            continue
        step = line.pop("step", 0) or 0
        for key, value in line.items():
            if value is not None:
                metrics.setdefault(key, []).append((int(step), float(value)))
    return metrics
