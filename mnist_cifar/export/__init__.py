"""Exported files: writing them with their parity checked (`write`), running them without the training stack
(`exported`), and the commands that need no Trainer (`command`: `export`, `predict` with an exported file).

`mnist_cifar.export` was one module before the subpackages; an attribute of it from then is handed on to `.write`
with a warning (`mnist_cifar.moved`)."""

from __future__ import annotations

from typing import Any

from mnist_cifar.moved import moved_attribute


def __getattr__(name: str) -> Any:  # noqa: ANN401
    return moved_attribute(__name__, "mnist_cifar.export.write", name)
