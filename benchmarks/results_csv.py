"""Append a benchmark's rows to a CSV under docs/results/, stamped with date, device and versions, so every speed
figure the docs quote traces to a file the benchmark itself wrote."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import lightning
import torch


def stamp(device: str) -> dict[str, str]:
    """What every row says of where and when it was measured."""
    return {"date": time.strftime("%Y-%m-%d"), "device": device, "torch": torch.__version__,
            "lightning": lightning.__version__}


def append_rows(path: Path, device: str, rounds: int, rows: dict[str, tuple[float, float]], ratio_name: str) -> None:
    """`rows`: setting → (images/s, ratio to the script's baseline)."""
    append_records(path, [{**stamp(device), "rounds": rounds, "setting": name, "images_per_s": round(speed),
                           ratio_name: round(ratio, 3)} for name, (speed, ratio) in rows.items()])


def append_records(path: Path, records: list[dict]) -> None:
    """Append `records` to the CSV at `path`, with a header when the file is new."""
    new_file = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        if new_file:
            writer.writeheader()
        writer.writerows(records)
