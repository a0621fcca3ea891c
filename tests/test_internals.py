"""The framework internals this project depends on (mnist_cifar/internals.py) still exist where it reads them: an
upgrade of Lightning or Optuna that moves one fails here, naming it."""

from __future__ import annotations

import importlib

import pytest

from mnist_cifar import internals


@pytest.mark.parametrize("module, path", [*internals.READ, *internals.OVERRIDDEN],
                         ids=[f"{m}.{p}" for m, p in [*internals.READ, *internals.OVERRIDDEN]])
def test_every_private_name_we_use_still_exists(module: str, path: str) -> None:
    pytest.importorskip(module.split(".")[0])
    found = importlib.import_module(module)
    if path == "FrozenTrial._trial_id":  # an instance attribute: look at a real trial
        import optuna

        study = optuna.create_study()
        study.tell(study.ask(), 1.0)
        found, path = study.trials[0], "_trial_id"
    for part in path.split("."):
        assert hasattr(found, part), f"{module}.{path} is gone: see mnist_cifar/internals.py for what used it and why"
        found = getattr(found, part)


def test_every_private_name_in_the_package_is_listed_here() -> None:
    """No private name of lightning, jsonargparse or optuna is used outside mnist_cifar/internals.py."""
    import re
    from pathlib import Path

    root = Path(internals.__file__).parent
    pattern = re.compile(r"\b(?:lightning|jsonargparse|optuna)[\w.]*\.(_[A-Za-z]\w*)|import (_[A-Za-z]\w*)|"
                         r"fit_loop\.epoch_loop|\._trial_id")
    found = [f"{path.relative_to(root)}:{number}" for path in root.rglob("*.py") if path.name != "internals.py"
             for number, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not found, f"private framework names outside internals.py: {found}"
