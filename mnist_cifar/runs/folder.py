"""The run folder: its layout, its identity, and the one process that may write in it.

`<save_dir>/<name>/<version>/` holds one run: `config.yaml` (what it was started with), `provenance.json`,
`checkpoints/` (the best `epoch*.ckpt` and `last.ckpt`), `metrics.jsonl`, `process.json`, `resume_<N>.yaml`
(one per resume), TensorBoard's events, and `.lock`. `RunFolder` is the only code that
spells those names.

Symlinks are resolved once, the same way everywhere: a run is found from a checkpoint's path *as written*
(`<run>/checkpoints/x.ckpt`, so a `checkpoints/` that is a link still belongs to its run), loggers keep
that spelling, and every question of identity (is this the same run, is this file inside it, which lock)
is asked of the resolved folder (`real`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lightning import Trainer

from mnist_cifar.files import atomic_write_text

CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"
LOCK = ".lock"
METRICS = "metrics.jsonl"  # the logger-neutral record (mnist_cifar.reporting.run_record)
PROCESS = "process.json"  # each `fit` process's wall time (add_process_seconds)
OUTPUT_LOG = "output.log"  # what a launcher's run printed
KEPT_AFRESH = (LOCK, OUTPUT_LOG)  # what emptying a run folder for a fresh start leaves: the lock, the launcher's log


@dataclass(frozen=True)
class RunFolder:
    """One run's folder. `path` is absolute and spelled as the user or the logger spelled it (`..` collapsed,
    symlinks kept); `real` is where it is on disk."""

    path: Path

    @classmethod
    def at(cls, folder: str | os.PathLike) -> RunFolder:
        return cls(Path(os.path.abspath(Path(folder).expanduser())))

    @classmethod
    def of_checkpoint(cls, checkpoint: str | os.PathLike) -> RunFolder | None:
        """The run a checkpoint at `<run>/checkpoints/<file>` belongs to (by its path as written), else None."""
        file = Path(os.path.abspath(Path(checkpoint).expanduser()))
        if file.parent.name != CHECKPOINTS or len(file.parents) < 4:
            return None
        return cls(file.parents[1])

    @cached_property
    def real(self) -> Path:
        return self.path.resolve()

    # -- what the loggers need to write here again ---------------------------------------------------
    @property
    def save_dir(self) -> Path:
        return self.path.parents[1]

    @property
    def name(self) -> str:
        return self.path.parent.name

    @property
    def version(self) -> str:
        return self.path.name

    # -- the layout ----------------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def provenance(self) -> Path:
        return self.path / "provenance.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def last(self) -> Path:
        return self.checkpoints / LAST

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def process(self) -> Path:
        return self.path / PROCESS

    def resume_record(self, number: int) -> Path:
        return self.path / f"resume_{number}.yaml"

    def resume_records(self) -> list[Path]:
        return sorted(self.path.glob("resume_*.yaml"))

    @property
    def lock(self) -> Path:
        """In the folder, in the resolved one (every spelling of the run finds the same file); a run that starts
        afresh empties its folder but this file (`KEPT_AFRESH`), so the lock outlives that."""
        return self.real / LOCK

    @property
    def output_log(self) -> Path:
        return self.path / OUTPUT_LOG

    @property
    def exports(self) -> Path:
        return self.path / "export"

    @property
    def predictions(self) -> Path:
        return self.path / "predictions.csv"

    @property
    def reliability_diagram(self) -> Path:
        return self.path / "reliability.png"

    @property
    def corruptions(self) -> Path:
        return self.path / "corruptions.csv"

    @property
    def corruption_examples(self) -> Path:
        return self.path / "corruption_examples.png"


def run_dir(trainer: Trainer) -> str:
    """The run's folder: the first logger's `log_dir`, else the Trainer's `default_root_dir`.

    Lightning 2.6.6's `trainer.log_dir` gives any logger other than TensorBoard's or CSV's its `save_dir`: for
    MLflow the store's root, shared by every run. A collective under DDP, like `trainer.log_dir`: ask on every rank.
    """
    first = trainer.loggers[0] if trainer.loggers else None
    folder = getattr(first, "log_dir", None) if first is not None else None
    return trainer.strategy.broadcast(str(folder or trainer.default_root_dir))


def next_version(folder: Path) -> int:
    """The first free `version_N` in `folder`, as TensorBoardLogger counts."""
    taken = [int(p.name.removeprefix("version_")) for p in folder.glob("version_*")
             if p.name.removeprefix("version_").isdigit()] if folder.is_dir() else []
    return max(taken, default=-1) + 1


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
    atomic_write_text(RunFolder.at(folder).process, json.dumps({"process_seconds": total}))
