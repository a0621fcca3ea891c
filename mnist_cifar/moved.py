"""Module paths from before the package was laid out in subpackages (issue 27), still importable with a warning.

Checkpoints, run configs (`config.yaml`), study trial configs and committed results name classes by their module
path, e.g. `mnist_cifar.classifier.ImageClassifier` or `mnist_cifar.loggers.TensorBoardLogger`. Each old module
name below is an alias of its new module (the same module object, so `isinstance` and pickled references hold),
made on first import with a `MovedModuleWarning`. The table is closed: a name not in it is not aliased, and the
checkpoint check (`mnist_cifar.runs.trust`) maps an old path through this same table before its allowlist.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import Any

MOVED = {
    "mnist_cifar.summary": "mnist_cifar.cli.summary",
    "mnist_cifar.classifier": "mnist_cifar.training.classifier",
    "mnist_cifar.schedules": "mnist_cifar.training.schedules",
    "mnist_cifar.training_tricks": "mnist_cifar.training.tricks",
    "mnist_cifar.checkpoint_io": "mnist_cifar.runs.checkpoint_io",
    "mnist_cifar.checkpoints": "mnist_cifar.runs.checkpoints",
    "mnist_cifar.resume": "mnist_cifar.runs.resume",
    "mnist_cifar.provenance": "mnist_cifar.runs.provenance",
    "mnist_cifar.parent_death": "mnist_cifar.runs.parent_death",
    "mnist_cifar.callbacks": "mnist_cifar.reporting.callbacks",
    "mnist_cifar.loggers": "mnist_cifar.reporting.loggers",
    "mnist_cifar.run_record": "mnist_cifar.reporting.run_record",
    "mnist_cifar.run_stats": "mnist_cifar.reporting.run_stats",
    "mnist_cifar.progress": "mnist_cifar.reporting.progress",
    "mnist_cifar.profiling": "mnist_cifar.reporting.profiling",
    "mnist_cifar.recipes": "mnist_cifar.reporting.recipes",
    "mnist_cifar.prediction_writer": "mnist_cifar.reporting.predictions",
    "mnist_cifar.tuning": "mnist_cifar.reporting.optuna_trial",
    "mnist_cifar.exported": "mnist_cifar.export.exported",
}
"""Old module -> new module. `mnist_cifar.cli` and `mnist_cifar.export` are packages now, under their old names: their
`__init__` hands an old attribute on to `.main` and `.write` with the same warning."""


class MovedModuleWarning(DeprecationWarning):
    """An old module path was imported; shown by default (not only under `-W`), since configs name them."""


warnings.simplefilter("default", MovedModuleWarning)


def new_name(dotted: str) -> str:
    """`dotted` (a module or `module.Attribute` path) with an old module prefix replaced by its new one."""
    for old, new in MOVED.items():
        if dotted == old or dotted.startswith(old + "."):
            return new + dotted[len(old):]
    return dotted


class _Alias(importlib.abc.Loader):
    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(f"{spec.name} moved to {self.new}; the old path still works for now. Rename it where you wrote "
                      f"it (a config's class_path, an import).", MovedModuleWarning, stacklevel=2)
        return importlib.import_module(self.new)  # the new module itself: import then binds it under the old name

    def exec_module(self, module: ModuleType) -> None:
        """Nothing: the module was run once, under its new name."""


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        new = MOVED.get(name)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(name, _Alias(new))


def moved_attribute(package: str, new: str, name: str) -> Any:  # noqa: ANN401
    """A package's PEP 562 `__getattr__` for a name its old one-module self had: taken from `new`, with a warning."""
    if name.startswith("__"):
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    if importlib.util.find_spec(f"{package}.{name}") is not None:  # a submodule of the package wins over an old name
        return importlib.import_module(f"{package}.{name}")
    module = importlib.import_module(new)
    if not hasattr(module, name):
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    warnings.warn(f"{package}.{name} moved to {new}.{name}; the old path still works for now. Rename it where you "
                  f"wrote it (a config's class_path, an import).", MovedModuleWarning, stacklevel=3)
    return getattr(module, name)


def install() -> None:
    """Put the finder first on `sys.meta_path`, once (the package's `__init__` calls this)."""
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _MovedFinder())
