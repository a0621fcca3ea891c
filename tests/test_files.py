"""The one atomic write: whole or not at all, nothing left behind, and only dead writers' leftovers cleared."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_cifar.files import HOST, PARTIAL, atomic_write, atomic_write_text


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    atomic_write_text(target, "old")

    def half_then_fail(partial: Path) -> None:
        assert partial.suffix == ".onnx" and partial.parent == tmp_path  # writers that go by the suffix work
        partial.write_text("half")
        partial.with_name(partial.name + ".data").write_text("a writer's side file")
        raise RuntimeError("the parity check failed")

    with pytest.raises(RuntimeError, match="parity"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_only_a_dead_writers_leftovers_on_this_machine_are_removed(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftovers = {
        "dead": tmp_path / f".last{PARTIAL}{HOST}.{int(dead.stdout)}.abcd1234.ckpt",
        "alive": tmp_path / f".last{PARTIAL}{HOST}.{os.getpid()}.abcd1234.ckpt",  # a save in flight
        "elsewhere": tmp_path / f".last{PARTIAL}another-host.{int(dead.stdout)}.abcd1234.ckpt",  # a shared folder
    }
    for path in leftovers.values():
        path.write_text("x")
    atomic_write_text(tmp_path / "last.ckpt", "whole")
    assert not leftovers["dead"].exists() and leftovers["alive"].exists() and leftovers["elsewhere"].exists()
