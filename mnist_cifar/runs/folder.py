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

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"
LOCK = ".lock"
METRICS = "metrics.jsonl"  # the logger-neutral record (mnist_cifar.run_record)
PROCESS = "process.json"  # each `fit` process's wall time (mnist_cifar.experiments.logs)
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
