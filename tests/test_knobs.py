"""Every knob does what it says: the learning rate typed for a config is the one its first steps train at."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import DEFAULT_CONFIG, ROOT

from mnist_cifar.cli.main import build, run

CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml") if p.name != "default.yaml")
STEPS = 4


def first_step_lrs(config: Path, *overrides: str) -> tuple[float, list[list[float]]]:
    """The configured lr, and every parameter group's lr over the first `STEPS` scheduler steps."""
    built = build(["--config", str(config), "--trainer.logger", "false", *overrides], default_config=DEFAULT_CONFIG)
    model = built.model
    model.trainer = SimpleNamespace(estimated_stepping_batches=1000, max_epochs=10)
    configured = model.optimizer.keywords["lr"]
    setup = model.configure_optimizers()
    optimizer = setup["optimizer"] if isinstance(setup, dict) else setup
    scheduler = setup["lr_scheduler"]["scheduler"] if isinstance(setup, dict) else None
    lrs = []
    for _ in range(STEPS):
        lrs.append([group["lr"] for group in optimizer.param_groups])
        if scheduler is not None:
            with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": no training here
                warnings.simplefilter("ignore")
                scheduler.step()
    return configured, lrs


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_the_typed_learning_rate_scales_the_first_steps(config: Path) -> None:
    configured, base = first_step_lrs(config)
    factor = 3.0
    _, scaled = first_step_lrs(config, f"--model.optimizer.init_args.lr={configured * factor!r}")
    for step, (groups, scaled_groups) in enumerate(zip(base, scaled)):
        for group, (lr, scaled_lr) in enumerate(zip(groups, scaled_groups)):
            assert scaled_lr == pytest.approx(lr * factor, rel=1e-9), f"step {step}, group {group}: {lr} -> {scaled_lr}"


def test_one_cycle_peaks_at_the_optimizers_lr() -> None:
    configured, lrs = first_step_lrs(ROOT / "configs" / "lenet_mnist.yaml", "--model.optimizer.init_args.lr=0.5")
    assert configured == 0.5
    assert lrs[0][0] == pytest.approx(0.5 / 25)  # OneCycleLR starts at max_lr / div_factor


def test_torchs_one_cycle_and_a_max_lr_are_refused(mnist_dir: Path, capsys: pytest.CaptureFixture) -> None:
    """torch's OneCycleLR would ignore the optimizer's lr; ours has no max_lr to type beside it."""
    base = ["fit", "--config", str(ROOT / "configs" / "lenet_mnist.yaml"), "--data.data_dir", str(mnist_dir),
            "--trainer.fast_dev_run=1"]
    for extra, named in ((["--model.scheduler.init_args.max_lr=0.05"], "max_lr"),
                         (["--model.scheduler=torch.optim.lr_scheduler.OneCycleLR",
                           "--model.scheduler.init_args.max_lr=0.05"], "mnist_cifar.training.schedules.OneCycleLR")):
        with pytest.raises(SystemExit) as exit_info:
            run([*base, *extra], default_config=DEFAULT_CONFIG)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert named in err and "Traceback" not in err


@pytest.mark.parametrize("args, names", [
    (["--optimizer", "torch.optim.SGD", "--optimizer.lr", "0.1"], "--model.optimizer"),
    (["--optimizer.lr=0.1"], "--model.optimizer.init_args.lr"),
    (["--lr_scheduler", "torch.optim.lr_scheduler.StepLR"], "--model.scheduler"),
], ids=["optimizer", "optimizer-lr", "lr_scheduler"])
def test_lightnings_top_level_optimizer_keys_are_refused_with_the_key_to_use(
        args: list[str], names: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(["fit", "--config", str(ROOT / "configs" / "lenet_mnist.yaml"), *args], default_config=DEFAULT_CONFIG)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert names in err and "arguments of the model" in err


@pytest.mark.parametrize("config, override, read", [
    ("resnet20_cifar", "--model.optimizer.init_args.momentum=0.9", lambda group: group["momentum"]),
    ("lenet_mnist", "--model.optimizer.init_args.betas=[0.9, 0.999]", lambda group: group["betas"][0]),
], ids=["sgd-momentum", "adam-beta1"])
def test_the_typed_momentum_is_where_one_cycle_starts(config: str, override: str, read: Callable) -> None:
    """torch's cycle_momentum replaced the optimizer's momentum with its own 0.95; here it is the cycle's top."""
    built = build(["--config", str(ROOT / "configs" / f"{config}.yaml"), "--trainer.logger", "false", override],
                  default_config=DEFAULT_CONFIG)
    built.model.trainer = SimpleNamespace(estimated_stepping_batches=1000, max_epochs=10)
    setup = built.model.configure_optimizers()
    assert read(setup["optimizer"].param_groups[0]) == pytest.approx(0.9)


def test_a_checkpoint_trained_with_torchs_one_cycle_still_tests(mnist_dir: Path, tmp_path: Path) -> None:
    """Checkpoints from before `mnist_cifar.training.schedules.OneCycleLR` name torch's class: evaluating them needs
    no schedule."""
    import torch

    from mnist_cifar.runs.checkpoint_io import HASH_KEY, content_hash

    fitted = run(["fit", "--config", str(ROOT / "configs" / "lenet_mnist.yaml"), "--data.data_dir", str(mnist_dir),
                  "--data.val_size", "50", "--trainer.max_epochs", "1", "--test_after_fit", "false",
                  "--trainer.enable_progress_bar", "false"], default_config=DEFAULT_CONFIG)
    best = Path(fitted.trainer.checkpoint_callback.best_model_path)
    checkpoint = torch.load(best, weights_only=True)
    checkpoint["hyper_parameters"]["scheduler"] = {"class_path": "torch.optim.lr_scheduler.OneCycleLR",
                                                   "init_args": {"max_lr": 0.01}}
    checkpoint[HASH_KEY] = content_hash(checkpoint)
    old = best.parent / "old_style.ckpt"
    torch.save(checkpoint, old)
    tested = run(["test", "--ckpt_path", str(old), "--data.data_dir", str(mnist_dir)], default_config=DEFAULT_CONFIG)
    assert 0 <= tested.trainer.callback_metrics["test/acc"].item() <= 1
