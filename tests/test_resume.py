"""Nothing lost: a killed run resumes into the same run bit for bit, signals save a checkpoint, NaN stops.

The runs are real `python main.py fit` processes on tiny CIFAR-10 batches with augmentation (random crop and
flip draw from the RNG every step) and a shuffled sampler, so resuming has to restore both to match.
"""

from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import DEFAULT_CONFIG, ROOT

from mnist_cifar.cli.main import run
from mnist_cifar.experiments.logs import read_scalars
from mnist_cifar.runs.checkpoint_io import HASH_KEY, content_hash, non_finite_weights
from mnist_cifar.runs.resume import NonFiniteLoss, StopOnNonFiniteLoss

LENET = str(ROOT / "configs" / "lenet_cifar.yaml")


def fit_command(data: Path, version: str, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "main.py"), "fit", "--config", LENET, "--data.data_dir", str(data),
            "--data.val_size", "50", "--data.batch_size", "8", "--trainer.max_epochs", "3",
            "--trainer.enable_progress_bar", "false", "--test_after_fit", "false",
            "--trainer.logger.init_args.version", version, *extra]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True, map_location="cpu")["state_dict"]


def global_step(path: Path) -> int:
    try:
        return torch.load(path, weights_only=True, map_location="cpu")["global_step"]
    except Exception:  # noqa: BLE001 (only whole files are ever at this path; a reader may race a rename)
        return -1


def kill_when(process: subprocess.Popen, ready: callable, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if ready():
            process.kill()  # SIGKILL: no handler runs, nothing is flushed
            break
        time.sleep(0.002)
    process.wait()


@pytest.mark.slow
def test_kill_9_mid_epoch_and_mid_save_then_resume_is_bit_identical(cifar_dir: Path, tmp_path: Path) -> None:
    steps = ["--last_checkpoint.every_n_train_steps", "1"]  # a checkpoint every step: kills land mid-save too
    subprocess.run(fit_command(cifar_dir, "full", *steps), cwd=tmp_path, check=True, capture_output=True)
    run_dir = tmp_path / "lightning_logs" / "lenet_cifar"
    total = global_step(run_dir / "full" / "checkpoints" / "last.ckpt")
    last = run_dir / "cut" / "checkpoints" / "last.ckpt"

    kill_at = random.Random(7).randrange(3, total // 2)  # a seeded step inside the first half
    first = subprocess.Popen(fit_command(cifar_dir, "cut", *steps), cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    kill_when(first, lambda: global_step(last) >= kill_at)
    assert first.returncode == -signal.SIGKILL and 0 < global_step(last) < total

    resumed_at = global_step(last)  # then a second kill, the moment a save has its temporary file open
    second = subprocess.Popen(fit_command(cifar_dir, "cut", *steps, "--ckpt_path", "last"), cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(second, lambda: any(last.parent.glob(".last.partial-*")) and global_step(last) > resumed_at)
    assert second.returncode == -signal.SIGKILL
    checkpoint = torch.load(last, weights_only=True)  # the previous last.ckpt, whole and verified
    assert checkpoint[HASH_KEY] == content_hash(checkpoint) and global_step(last) < total

    subprocess.run(fit_command(cifar_dir, "cut", *steps, "--ckpt_path", "last"), cwd=tmp_path, check=True,
                   capture_output=True)
    full, cut = weights(run_dir / "full" / "checkpoints" / "last.ckpt"), weights(last)
    assert global_step(last) == total and full.keys() == cut.keys()
    assert all(torch.equal(full[name], cut[name]) for name in full)
    assert sorted(p.name for p in run_dir.iterdir()) == ["cut", "full"]  # resumed in its own folder
    assert sorted(p.name for p in last.parent.iterdir() if not p.name.startswith(".")) == sorted(
        p.name for p in (run_dir / "full" / "checkpoints").iterdir())  # best tracking kept: the same best file


@pytest.mark.slow
def test_resume_at_an_epoch_end_continues_the_same_curves(cifar_dir: Path, tmp_path: Path) -> None:
    subprocess.run(fit_command(cifar_dir, "full"), cwd=tmp_path, check=True, capture_output=True)
    subprocess.run(fit_command(cifar_dir, "cut", "--trainer.max_epochs", "1"), cwd=tmp_path, check=True,
                   capture_output=True)
    subprocess.run(fit_command(cifar_dir, "cut", "--ckpt_path", "last"), cwd=tmp_path, check=True, capture_output=True)
    run_dir = tmp_path / "lightning_logs" / "lenet_cifar"
    full, cut = read_scalars(run_dir / "full"), read_scalars(run_dir / "cut")
    for tag in ("val/acc", "val/loss", "train/loss", "train/acc"):
        assert [step for step, _ in cut[tag]] == [step for step, _ in full[tag]], tag  # one curve, no restart
        assert [value for _, value in cut[tag]] == [value for _, value in full[tag]], tag
    # the total over both processes, not the resumed part: at least both epochs' training time (the first epoch's
    # was measured by the first process)
    assert cut["run/fit_seconds"][-1][1] >= sum(seconds for _, seconds in cut["run/epoch_train_seconds"])


@pytest.mark.slow
@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_saves_a_resumable_checkpoint_and_exits_non_zero(signal_number: int, cifar_dir: Path,
                                                                 tmp_path: Path) -> None:
    process = subprocess.Popen(fit_command(cifar_dir, "run", "--trainer.max_epochs", "500"), cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoints = tmp_path / "lightning_logs" / "lenet_cifar" / "run" / "checkpoints"
    deadline = time.monotonic() + 120
    while not (checkpoints / "last.ckpt").is_file() and time.monotonic() < deadline:  # one epoch done
        time.sleep(0.05)
    process.send_signal(signal_number)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal_number
    (line,) = [line for line in err.splitlines() if line.startswith("stopped:")]
    assert signal.Signals(signal_number).name in line
    assert "--ckpt_path lightning_logs/lenet_cifar/run/checkpoints/last.ckpt" in line
    step = global_step(checkpoints / "last.ckpt")
    assert step > 0 and f"step {step};" in line

    resumed = subprocess.run(fit_command(cifar_dir, "run", "--ckpt_path", "last", "--trainer.max_epochs",
                                         str(step // 19 + 2)), cwd=tmp_path, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert global_step(checkpoints / "last.ckpt") > step


def test_a_diverging_run_stops_at_the_first_nan_and_saves_no_nan(mnist_dir: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(["fit", "--config", str(ROOT / "configs" / "lenet_mnist.yaml"), "--data.data_dir", str(mnist_dir),
             "--data.val_size", "50", "--data.batch_size", "32", "--trainer.max_epochs", "3",
             "--model.optimizer", "torch.optim.SGD", "--model.optimizer.init_args.lr", "1e6", "--model.scheduler", "null",
             "--last_checkpoint.every_n_train_steps", "1"],
            default_config=DEFAULT_CONFIG)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "loss became nan" in err or "loss became inf" in err
    assert "epoch" in err and "step" in err and "gradient_clip_val" in err
    saved = list(tmp_path.rglob("*.ckpt"))
    assert all(not non_finite_weights(torch.load(path, weights_only=True)) for path in saved)


def test_a_deferred_nan_check_stops_within_its_interval_and_saves_no_nan(mnist_dir: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    """The GPU's way (an on-device verdict read every N batches), forced on the CPU: the run stops within N batches
    of the first non-finite loss, and no checkpoint, even one written every step, holds weights from after it."""
    with pytest.raises(SystemExit) as exit_info:
        run(["fit", "--config", str(ROOT / "configs" / "lenet_mnist.yaml"), "--data.data_dir", str(mnist_dir),
             "--data.val_size", "50", "--data.batch_size", "32", "--trainer.max_epochs", "3",
             "--model.optimizer", "torch.optim.SGD", "--model.optimizer.init_args.lr", "1e6", "--model.scheduler", "null",
             "--last_checkpoint.every_n_train_steps", "1", "--nonfinite_loss.check_every_n_batches", "4"],
            default_config=DEFAULT_CONFIG)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    match = re.search(r"loss became (nan|inf|-inf) at step (\d+), found at step (\d+)", err)
    assert match, err[-2000:]
    first, found = int(match[2]), int(match[3])
    assert first < found <= first + 4
    assert "read every 4 batches" in err and "--nonfinite_loss.check_every_n_batches" in err
    saved = list(tmp_path.rglob("*.ckpt"))
    assert saved, "a checkpoint every step until the stop"
    assert all(not non_finite_weights(torch.load(path, weights_only=True)) for path in saved)
    assert max(global_step(path) for path in saved) <= first


def test_the_deferred_nan_check_reads_nothing_on_the_host_between_its_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Folding a loss into the verdict makes no host read (`item`, `float`, `bool`): none of the syncs a GPU pays."""
    stop = StopOnNonFiniteLoss(check_every_n_batches=3)
    trainer = SimpleNamespace(global_step=0, optimizers=[], current_epoch=0)

    def refuse(*args: object) -> None:
        raise AssertionError("a host read of a tensor")

    losses = [torch.tensor(1.0), torch.tensor(float("nan")), torch.tensor(2.0)]
    with monkeypatch.context() as patch:
        for name in ("item", "__float__", "__bool__", "tolist"):
            patch.setattr(torch.Tensor, name, refuse)
        for step, loss in enumerate(losses):
            trainer.global_step = step
            stop.on_before_backward(trainer, None, loss)
    with pytest.raises(NonFiniteLoss, match="became nan at step 1, found at step 2"):
        stop.check(trainer)


def test_a_nonfinite_stop_listed_with_a_value_in_the_callbacks_is_refused_for_its_group(
        capsys: pytest.CaptureFixture) -> None:
    """Listed with defaults (old run configs) it is folded into the group: tests/test_moved.py resumes such a run."""
    with pytest.raises(SystemExit) as exit_info:
        run(["fit", "--config", str(ROOT / "configs" / "lenet_mnist.yaml"),
             "--trainer.callbacks+=mnist_cifar.runs.resume.StopOnNonFiniteLoss",
             "--trainer.callbacks.check_every_n_batches=5", "--trainer.fast_dev_run", "true"],
            default_config=DEFAULT_CONFIG)
    assert exit_info.value.code == 2
    assert "pass --nonfinite_loss.check_every_n_batches 5 instead" in capsys.readouterr().err


@pytest.mark.parametrize(("knob", "value", "says"), [
    ("nonfinite_loss.check_every_n_batches", "0", "must be a positive number of batches"),
    ("nonfinite_loss.check_every_n_batches", "-3", "must be a positive number of batches"),
    ("last_checkpoint.every_n_train_steps", "-1", "must be 0 (off) or positive"),
])
def test_a_checking_interval_out_of_range_is_refused_by_name(knob: str, value: str, says: str,
                                                             capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(["fit", "--config", str(ROOT / "configs" / "lenet_mnist.yaml"), f"--{knob}", value,
             "--trainer.fast_dev_run", "true"], default_config=DEFAULT_CONFIG)
    assert exit_info.value.code == 2
    assert f"{knob} {says}" in capsys.readouterr().err
