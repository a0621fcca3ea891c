"""From argv to a command: the LightningCLI every run goes through (`main`), its checks, and `summary`.

`mnist_cifar.cli` was one module before the subpackages; an attribute of it from then is handed on to `.main`
with a warning (`mnist_cifar.moved`)."""

from __future__ import annotations

from typing import Any

from mnist_cifar.moved import moved_attribute


def __getattr__(name: str) -> Any:  # noqa: ANN401
    return moved_attribute(__name__, "mnist_cifar.cli.main", name)
