"""Module paths from before the subpackages (issue 27) keep working, with a warning: what checkpoints, run configs,
study trial configs and committed results wrote still loads."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml
from conftest import cli

from mnist_cifar.moved import MOVED, MovedModuleWarning, new_name
from mnist_cifar.runs.resume import StopOnNonFiniteLoss

BEFORE = Path(__file__).parent / "fixtures" / "run_before_issue_26"


@pytest.mark.parametrize("old", sorted(MOVED))
def test_every_old_module_is_its_new_module_with_a_warning(old: str) -> None:
    import importlib

    new = importlib.import_module(MOVED[old])
    sys.modules.pop(old, None)
    with pytest.warns(MovedModuleWarning, match=f"{old} moved to {MOVED[old]}"):
        aliased = importlib.import_module(old)
    assert aliased is new  # the same module object: classes compare equal, isinstance holds


def test_an_attribute_of_a_module_that_became_a_package_is_handed_on() -> None:
    import mnist_cifar.cli
    import mnist_cifar.export
    from mnist_cifar.cli.main import run
    from mnist_cifar.export.write import export

    with pytest.warns(MovedModuleWarning, match="mnist_cifar.cli.run moved to mnist_cifar.cli.main.run"):
        assert mnist_cifar.cli.run is run
    with pytest.warns(MovedModuleWarning, match="mnist_cifar.export.export moved"):
        assert mnist_cifar.export.export is export
    with pytest.raises(AttributeError):
        mnist_cifar.cli.no_such_name  # noqa: B018


def test_new_name_maps_only_what_the_table_holds() -> None:
    assert new_name("mnist_cifar.classifier.ImageClassifier") == "mnist_cifar.training.classifier.ImageClassifier"
    assert new_name("mnist_cifar.schedules.OneCycleLR") == "mnist_cifar.training.schedules.OneCycleLR"
    assert new_name("mnist_cifar.classifiers.X") == "mnist_cifar.classifiers.X"  # a prefix, not a module: unchanged
    assert new_name("os.system") == "os.system"


def test_a_checkpoint_and_a_config_written_before_the_move_test_and_resume(mnist_dir: Path, tmp_path: Path) -> None:
    """The run kept from before the move (`fixtures/run_before_issue_26`, cnn_mnist on conftest's tiny MNIST) names
    `mnist_cifar.loggers`, `mnist_cifar.resume`, `mnist_cifar.callbacks`, ... in its config: it still loads, with the
    warning, tests to the same figures and resumes in its folder."""
    run_dir = tmp_path / "lightning_logs" / "cnn_mnist" / "version_0"
    shutil.copytree(BEFORE, run_dir)
    config = run_dir / "config.yaml"
    old = [p for p in _class_paths(yaml.safe_load(config.read_text())) if new_name(p) != p]
    assert len(old) >= 5, "the fixture no longer names moved modules: this test would test nothing"
    best = run_dir / "checkpoints" / "epoch001-val_acc0.6200.ckpt"
    for name in MOVED:  # imported by an earlier test of this process: the warning comes with a first import
        sys.modules.pop(name, None)
    with pytest.warns(MovedModuleWarning):
        tested = cli("test", "--config", str(config), "--ckpt_path", str(best), "--data.data_dir", str(mnist_dir),
                     "--trainer.enable_progress_bar", "false")
    assert tested.trainer.callback_metrics["test/acc"].item() == pytest.approx(0.65, abs=1e-6)
    resumed = cli("fit", "--config", str(config), "--ckpt_path", "last", "--data.data_dir", str(mnist_dir),
                      "--trainer.max_epochs", "3", "--test_after_fit", "false", "--trainer.enable_progress_bar", "false")
    assert resumed.trainer.current_epoch == 3 and Path(resumed.trainer.log_dir).resolve() == run_dir.resolve()
    stops = [c for c in resumed.trainer.callbacks if isinstance(c, StopOnNonFiniteLoss)]
    assert len(stops) == 1  # the config's own entry (from before the `nonfinite_loss` group) is that group's


def _class_paths(value: object) -> list[str]:
    if isinstance(value, dict):
        found = [value["class_path"]] if isinstance(value.get("class_path"), str) else []
        return found + [p for v in value.values() for p in _class_paths(v)]
    if isinstance(value, list):
        return [p for v in value for p in _class_paths(v)]
    return []
