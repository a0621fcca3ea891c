"""The speed scripts run end to end on small data and write the CSV rows the docs quote (no timing is asserted).

5,600 training images: the scripts keep the recipes' 5,000-image validation hold-out."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, write_mnist


def run_script(name: str, *args: str, cwd: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], check=True, cwd=cwd,
                   capture_output=True, timeout=600)


@pytest.mark.slow
def test_trainer_overhead_writes_one_row_per_setting(tmp_path: Path) -> None:
    write_mnist(tmp_path / "data", n_train=5600, n_test=100)
    out = tmp_path / "overhead.csv"
    run_script("trainer_overhead.py", "--data_dir", str(tmp_path / "data"), "--batch_sizes", "64", "--threads", "1",
               "--csv", str(out), cwd=tmp_path)
    rows = list(csv.DictReader(out.open()))
    assert [r["setting"] for r in rows] == ["bare loop, batch 64", "Trainer (DataLoader), batch 64",
                                            "Trainer (on_device), batch 64"]
    assert rows[0]["vs_bare_loop"] == "1.0" and all(0 < float(r["vs_bare_loop"]) < 5 for r in rows)
    assert all(int(r["images_per_s"]) > 0 and r["device"] == "CPU, 1 thread(s)" for r in rows)


@pytest.mark.slow
def test_lenet_speed_compares_against_the_notes_loop(tmp_path: Path) -> None:
    write_mnist(tmp_path / "data", n_train=5600, n_test=100)
    out = tmp_path / "speed.csv"
    run_script("mnist_lenet_speed.py", "--data_dir", str(tmp_path / "data"), "--csv", str(out), cwd=tmp_path)
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 5 and "baseline" in rows[0]["setting"] and rows[0]["vs_baseline"] == "1.0"
    assert all(int(r["images_per_s"]) > 0 for r in rows)


@pytest.mark.slow
def test_export_speed_compares_the_files_with_the_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "export_speed.csv"
    run_script("export_speed.py", "--configs", "lenet_mnist", "--images", "512", "--rounds", "1", "--csv", str(out),
               cwd=tmp_path)
    rows = list(csv.DictReader(out.open()))
    assert [r["setting"] for r in rows] == [f"lenet_mnist: {name}, batch 256" for name in
                                            ("checkpoint (eager torch)", "ONNX in onnxruntime", "torch.export program")]
    assert rows[0]["vs_checkpoint"] == "1.0" and all(float(r["vs_checkpoint"]) > 0 for r in rows)


@pytest.mark.slow
def test_step_profile_times_the_steps_and_splits_them_by_lightning_range(tmp_path: Path) -> None:
    write_mnist(tmp_path / "data", n_train=400, n_test=20)
    out = tmp_path / "profile"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "step_profile.py"), "--out", str(out), "--steps", "8", "--skip", "3",
         "--", "--config", str(ROOT / "configs" / "lenet_mnist.yaml"), "--data.data_dir", str(tmp_path / "data"),
         "--data.val_size", "50", "--data.batch_size", "16", "--num_threads", "1"],
        check=True, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    (row,) = csv.DictReader((out / "step_profile.csv").open())
    assert row["config"] == "lenet_mnist" and row["steps"] == "8" and float(row["step_ms_median"]) > 0
    assert "lenet_mnist on cpu: 8 steps" in result.stdout
    assert "[Strategy]SingleDeviceStrategy.backward" in result.stdout
    assert "ImageClassifier.optimizer_step" in result.stdout
    assert list(out.glob("*.pt.trace.json")), "the chrome trace"
