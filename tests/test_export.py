"""Export: every shipped network leaves as a file that takes raw uint8 images and gives the checkpoint's logits at
any batch size, checked against the checkpoint every time; `predict` runs such a file; a failed check writes nothing."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import DEFAULT_CONFIG, ROOT, cli, data_dir_for

from mnist_cifar.cli.main import build
from mnist_cifar.export import write as export
from mnist_cifar.export.command import run_without_the_trainer
from mnist_cifar.export.exported import ExportedModel

onnx = pytest.importorskip("onnx", reason="the export extra is not installed: pip install -e '.[export]'")

CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml") if p.name != "default.yaml")
# The preprocessing that lives in the DataModule, not the network: without it in the graph the parity check fails.
DATA_VARIANTS = {"lenet_cifar-grayscale": ("lenet_cifar", ["--data.grayscale", "true"]),
                 "lenet_mnist-permuted": ("lenet_mnist", ["--data.permute_pixels", "true"]),
                 "lenet_cifar-tta": ("lenet_cifar", ["--model.test_time_augmentation", "true"])}
CASES = {p.stem: (p.stem, []) for p in CONFIGS} | DATA_VARIANTS


def loaded_from_config(stem: str, extra: list[str], mnist_dir: Path, cifar_dir: Path,
                       fashion_dir: Path | None = None) -> export.Loaded:
    """A config's network at its initial weights, as `export.load` rebuilds a checkpoint's (tiny data sets)."""
    config = ROOT / "configs" / f"{stem}.yaml"
    data_dir = data_dir_for(config, mnist_dir, cifar_dir, fashion_dir or mnist_dir)
    cli = build(["--config", str(config), "--data.data_dir", str(data_dir), "--trainer.logger", "false", *extra],
                DEFAULT_CONFIG)
    return export.Loaded(cli.model.eval(), cli.datamodule, "0" * 64)


DEFAULT_TIER_CASES = {"lenet_mnist", "lenet_cifar-tta"}  # the rest run with the slow tier (`pytest -m ""`)


@pytest.mark.parametrize("case", [pytest.param(c, marks=() if c in DEFAULT_TIER_CASES else pytest.mark.slow)
                                  for c in sorted(CASES)])
def test_every_shipped_network_exports_to_onnx_with_its_preprocessing(case: str, mnist_dir: Path, cifar_dir: Path,
                                                                        fashion_dir: Path, tmp_path: Path) -> None:
    loaded = loaded_from_config(*CASES[case], mnist_dir, cifar_dir, fashion_dir)
    target = tmp_path / "model.onnx"
    parity = export.write(loaded, "onnx", target)
    assert parity.batch_sizes == (1, 60) and parity.images == 60  # one image, then the 60-image split as one batch
    assert parity.max_difference <= 1e-4 and parity.agreement == 1.0
    assert parity.exported_accuracy == parity.checkpoint_accuracy
    model = onnx.load(str(target))
    meta = {p.key: p.value for p in model.metadata_props}
    channels, height, width = loaded.data.image_shape
    assert json.loads(meta["input_shape"]) == [channels, height, width]  # raw images: RGB even for a grayscale run
    assert json.loads(meta["class_names"]) == list(loaded.data.classes)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.HasField("dim_value")  # dynamic batch
    assert not list(tmp_path.glob(".*partial*"))


def test_an_exported_program_matches_too(mnist_dir: Path, cifar_dir: Path, tmp_path: Path) -> None:
    loaded = loaded_from_config("speedrun_cifar", [], mnist_dir, cifar_dir)  # BatchNorm, GELU, test-time augmentation
    target = tmp_path / "model.pt2"
    parity = export.write(loaded, "exported_program", target)
    assert parity.max_difference <= 1e-4 and parity.agreement == 1.0
    model = ExportedModel(target)
    assert model.metadata["test_time_augmentation"] == "true" and model.classes == list(loaded.data.classes)
    assert model(torch.zeros(5, 3, 32, 32, dtype=torch.uint8)).shape == (5, 10)


def test_a_file_that_does_not_match_is_refused_and_an_existing_one_is_kept(mnist_dir: Path, cifar_dir: Path,
                                                                            tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = loaded_from_config("lenet_cifar", [], mnist_dir, cifar_dir)
    target = tmp_path / "model.onnx"
    target.write_bytes(b"the previous export")
    forgets_the_normalization = export.deployable

    def without_std(found: export.Loaded) -> export.RawImageClassifier:
        wrapper = forgets_the_normalization(found)
        wrapper.std.fill_(1.0)  # what a hand-made export that leaves the DataModule's std out computes
        return wrapper

    monkeypatch.setattr(export, "deployable", without_std)
    with pytest.raises(export.ExportError, match=r"does not match the checkpoint \(max \|logit difference\|"):
        export.write(loaded, "onnx", target)
    assert target.read_bytes() == b"the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]



def main_py(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], capture_output=True, text=True, timeout=300)


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


@pytest.mark.slow  # 16 s: ONNX's exporter; the .pt2 test below keeps export in the default tier
def test_export_a_checkpoint_then_predict_with_the_file(mnist_dir: Path, tmp_path: Path) -> None:
    config = str(ROOT / "configs" / "lenet_mnist.yaml")
    fitted = cli("fit", "--config", config, "--data.data_dir", str(mnist_dir), "--data.val_size", "50",
                 "--trainer.max_epochs", "1", "--test_after_fit", "false")
    best = Path(fitted.trainer.checkpoint_callback.best_model_path)
    exported = main_py("export", "--ckpt_path", str(best), "--data.data_dir", str(mnist_dir), "--batch_size", "16")
    assert exported.returncode == 0, exported.stderr
    target = best.parents[1] / "export" / f"{best.stem}.onnx"
    assert f"Wrote {target}" in exported.stdout and "top-1 agreement 100.0000%" in exported.stdout
    record = json.loads(target.with_name(target.name + ".parity.json").read_text())
    assert record["checkpoint_sha256"] == export.file_sha256(best) and record["batch_sizes"] == [1, 12, 16]
    assert record["git_commit"] and record["data_set"] == "MNIST"

    folder = tmp_path / "mine"
    folder.mkdir()
    from torchvision.io import write_png

    write_png(torch.randint(0, 256, (3, 40, 30), dtype=torch.uint8), str(folder / "photo.png"))
    (folder / "notes.txt").write_text("not an image")
    for source in ("--data.predict_path", "--data.data_dir"):
        where = folder if source == "--data.predict_path" else mnist_dir
        with pytest.raises(SystemExit, match="0"):  # as `python main.py predict ...` runs it
            run_without_the_trainer(["predict", "--ckpt_path", str(target), source, str(where),
                                     "--output", str(tmp_path / "f.csv")])
        from_checkpoint = cli("predict", "--ckpt_path", str(best), source, str(where), "--data.download", "false",
                              "--trainer.callbacks+=mnist_cifar.reporting.predictions.PredictionCSVWriter",
                              f"--trainer.callbacks.output={tmp_path / 'c.csv'}")
        assert from_checkpoint.trainer.state.finished
        got, expected = rows(tmp_path / "f.csv"), rows(tmp_path / "c.csv")
        assert [r["source"] for r in got] == [r["source"] for r in expected] and len(got) in (2, 60)
        for mine, theirs in zip(got, expected):
            assert (mine["predicted_class"], mine["true_class"], mine["error"]) == \
                   (theirs["predicted_class"], theirs["true_class"], theirs["error"])
            if not mine["error"]:
                assert float(mine["p_3"]) == pytest.approx(float(theirs["p_3"]), abs=2e-4)

    with pytest.raises(SystemExit, match="0"):
        run_without_the_trainer(["export", "--ckpt_path", str(best), "--data.data_dir", str(mnist_dir),
                                 "--format", "exported_program", "--output", str(tmp_path / "lenet.pt2")])
    assert ExportedModel(tmp_path / "lenet.pt2").metadata["checkpoint_sha256"] == record["checkpoint_sha256"]


def test_export_errors_are_one_paragraph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit, match="2"):
        run_without_the_trainer(["export", "--ckpt_path", str(tmp_path / "nothing.ckpt")])
    assert "nothing.ckpt does not exist" in capsys.readouterr().err

    fake = tmp_path / "model.onnx"
    fake.write_text("not a model")
    with pytest.raises(SystemExit, match="2"):
        run_without_the_trainer(["predict", "--ckpt_path", str(fake), "--data.predict_path", str(tmp_path)])
    error = capsys.readouterr().err
    assert "cannot be opened as an exported .onnx file" in error and len(error.strip().splitlines()) == 1

    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real_find_spec(name, *a))
    with pytest.raises(export.ExportError, match=r"onnxscript is not installed: pip install -e '\.\[export\]'"):
        export.export(str(tmp_path / "x.ckpt"), "onnx")
    with pytest.raises(export.ExportError, match="--batch_size must be at least 1, got 0"):
        export.export(str(tmp_path / "x.ckpt"), "exported_program", batch_size=0)
    with pytest.raises(export.ExportError, match="does not end in .pt2"):
        export.export(str(tmp_path / "x.ckpt"), "exported_program", output=str(tmp_path / "x.onnx"))
