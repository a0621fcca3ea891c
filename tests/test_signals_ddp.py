"""SIGTERM at any moment of a DDP run stops every rank and leaves no process behind: before training (nothing to
save), and during the last epoch's validation (the epoch's checkpoints are written, the after-fit test is not run,
exit 143)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT

DDP = ["--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.devices", "2"]


def fit(data: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "main.py"), "fit", "--config", str(ROOT / "configs" / "cnn_mnist.yaml"),
            "--data.data_dir", str(data), "--data.val_size", "50", "--data.batch_size", "16",
            "--trainer.enable_progress_bar", "false", *DDP, *extra]


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def wait_for_ranks(launcher: subprocess.Popen, log: Path, seconds: float = 180) -> list[int]:
    """The launcher's children that run `main.py fit` (its other DDP rank), once one has started. The launcher
    starts short-lived helpers first (jsonargparse's typeshed probe runs `python -c ...`, ctypes runs ldconfig):
    they are not ranks, and signalling the launcher while only they exist would test nothing. A launcher that
    ends first fails the test with its own stderr."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ranks = [pid for pid in children(launcher.pid) if f"{ROOT / 'main.py'} fit" in command_line(pid)]
        if ranks:
            return ranks
        if launcher.poll() is not None:
            pytest.fail(f"the launcher ended (exit {launcher.returncode}) before starting rank 1:\n"
                        f"{log.read_text()[-3000:]}")
        time.sleep(0.05)
    launcher.kill()
    pytest.fail(f"no rank 1 within {seconds:.0f} s; the launcher's stderr:\n{log.read_text()[-3000:]}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] if Path(f"/proc/{pid}").exists() else "X"
    return state != "Z"


def wait_gone(pids: list[int], seconds: float = 60) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.2)
    return [p for p in pids if alive(p)]


@pytest.mark.slow
def test_sigterm_to_the_launcher_before_training_leaves_no_rank_behind(mnist_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "launcher.stderr"
    with log.open("w") as stderr:  # a file, not a pipe nobody reads while waiting: the launcher never blocks on it
        launcher = subprocess.Popen(fit(mnist_dir, "--trainer.max_epochs", "50"), cwd=tmp_path,
                                    stdout=subprocess.DEVNULL, stderr=stderr, text=True)
    ranks = wait_for_ranks(launcher, log)  # rank 1 started, training not yet
    launcher.send_signal(signal.SIGTERM)
    launcher.wait(timeout=60)
    assert launcher.returncode in (-signal.SIGTERM, 143)
    assert not wait_gone(ranks), "a rank outlived its launcher"


@pytest.mark.slow
def test_sigterm_in_the_last_validation_saves_the_epoch_and_skips_the_test(mnist_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(fit(mnist_dir, "--trainer.max_epochs", "2",
                                "--trainer.callbacks+=signal_helpers.SignalDuringValidation",
                                "--trainer.callbacks.epoch=1"),
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 143, result.stderr[-3000:]
    assert "stopped: SIGTERM" in result.stderr and "Resume with" in result.stderr
    run_dir = tmp_path / "lightning_logs" / "cnn_mnist" / "version_0"
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 1 and last["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"] == 1
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert not any("test/acc" in line for line in logged)  # the after-fit test did not run
    assert any("val/acc" in line and line.get("epoch") == 1 for line in logged)  # the interrupted validation ended
    again = subprocess.run(fit(mnist_dir, "--trainer.max_epochs", "2", "--ckpt_path", "last"), cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert any("test/acc" in line for line in (run_dir / "metrics.jsonl").read_text().splitlines())  # tested now
