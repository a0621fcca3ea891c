"""Hostile input in one paragraph: YAML alias bombs (configs, a checkpoint test's --config, study files), exported
files whose metadata this project would not have written, and CSV cells a spreadsheet would run as formulas."""

from __future__ import annotations

import csv
import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import DEFAULT_CONFIG, ROOT

from mnist_cifar.reporting.predictions import write_csv
from mnist_cifar.runs.yaml_bounds import MAX_NODES, YamlTooLarge, expanded_size, safe_load

MAIN = str(ROOT / "main.py")


def bomb(levels: int = 12) -> str:
    """A few hundred bytes that expand to 10**levels values."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_the_expanded_size_is_counted_without_expanding() -> None:
    import yaml

    # the map, key a, [1, 2] (3 nodes), key b, and [*a, *a] (1 + 2 * 3 nodes once expanded)
    assert expanded_size(yaml.compose("a: &a [1, 2]\nb: [*a, *a]\n")) == 1 + 1 + 3 + 1 + 7
    assert expanded_size(yaml.compose(bomb(12))) > MAX_NODES
    with pytest.raises(YamlTooLarge, match="the-file.yaml"):
        safe_load(bomb(12), "the-file.yaml")
    shipped = (ROOT / "configs" / "speedrun_cifar.yaml").read_text()
    assert safe_load(shipped, "speedrun_cifar.yaml") == yaml.safe_load(shipped)


def _limited_memory() -> None:  # in the child: 4 GB of address space, as the measurement had
    resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))


def refused_quickly(args: list[str], cwd: Path) -> str:
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=180, cwd=cwd,
                            preexec_fn=_limited_memory)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "alias" in result.stderr, result.stderr[-2000:]
    return result.stderr


def test_a_bomb_as_a_config_is_refused_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "bomb.yaml").write_text(bomb())
    err = refused_quickly([MAIN, "fit", "--config", "bomb.yaml"], tmp_path)
    assert "bomb.yaml" in err
    assert not (tmp_path / "lightning_logs").exists()


@pytest.mark.slow
def test_a_bomb_beside_a_checkpoint_is_refused(mnist_dir: Path, tmp_path: Path) -> None:
    from mnist_cifar.cli.main import run

    fitted = run(["fit", "--config", str(ROOT / "configs" / "cnn_mnist.yaml"), "--data.data_dir", str(mnist_dir),
                  "--data.val_size", "50", "--trainer.max_epochs", "1", "--test_after_fit", "false",
                  "--trainer.enable_progress_bar", "false"], default_config=DEFAULT_CONFIG)
    best = fitted.trainer.checkpoint_callback.best_model_path
    (tmp_path / "bomb.yaml").write_text(bomb())
    err = refused_quickly([MAIN, "test", "--ckpt_path", best, "--config", "bomb.yaml"], tmp_path)
    assert "bomb.yaml" in err


@pytest.mark.slow
def test_a_bomb_in_a_study_file_is_refused(tmp_path: Path) -> None:
    study = tmp_path / "study.yaml"
    study.write_text(f"config: {ROOT / 'configs' / 'lenet_mnist.yaml'}\ntrials: 2\nspace:\n"
                     + "".join(f"  {line}\n" for line in bomb().splitlines()))
    err = refused_quickly(["-m", "mnist_cifar.experiments", "tune", str(study), "--root", str(tmp_path / "out")],
                          tmp_path)
    assert "study.yaml" in err
    assert not list(tmp_path.rglob("*.log"))  # no journal written


# -- exported files -----------------------------------------------------------------------------------------------

EXPORT_EXTRA = "the export extra is not installed: pip install -e '.[export]'"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ONNX export of an untrained lenet_mnist (the real export path, parity check included)."""
    from conftest import write_mnist

    from mnist_cifar.cli.main import build
    from mnist_cifar.export import write as export

    pytest.importorskip("onnx", reason=EXPORT_EXTRA)
    root = tmp_path_factory.mktemp("exported")
    write_mnist(root / "mnist")
    cli = build(["--config", str(ROOT / "configs" / "lenet_mnist.yaml"), "--data.data_dir", str(root / "mnist"),
                 "--trainer.logger", "false"], DEFAULT_CONFIG)
    target = root / "model.onnx"
    export.write(export.Loaded(cli.model.eval(), cli.datamodule, "0" * 64), "onnx", target)
    return target


def with_metadata(source: Path, target: Path, **changes: str) -> Path:
    onnx = pytest.importorskip("onnx", reason=EXPORT_EXTRA)
    model = onnx.load(str(source))
    meta = {p.key: p.value for p in model.metadata_props} | changes
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(target))
    return target


DIGITS = [str(i) for i in range(10)]
BAD_METADATA = {
    "repeated-names": ({"class_names": json.dumps(["same"] * 10)}, "not all different"),
    "too-few-names": ({"class_names": json.dumps(DIGITS[:3])}, "for 3 class names"),
    "not-json": ({"class_names": "zero, one, two"}, "not JSON"),
    "not-names": ({"class_names": json.dumps([[1], 2] + DIGITS[2:])}, "list of names"),
    "huge-input": ({"input_shape": json.dumps([1, 20000, 20000])}, "none of the data sets"),
}


@pytest.mark.parametrize("case", list(BAD_METADATA))
def test_exported_metadata_this_project_would_not_write_is_refused(case: str, exported: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    from mnist_cifar.export.command import main as predict_with_file

    changes, words = BAD_METADATA[case]
    crafted = with_metadata(exported, tmp_path / f"{case}.onnx", **changes)
    (tmp_path / "images").mkdir()
    torch.manual_seed(0)
    from torchvision.io import write_png
    write_png(torch.randint(0, 255, (1, 28, 28), dtype=torch.uint8), str(tmp_path / "images" / "digit.png"))
    with pytest.raises(SystemExit) as stopped:
        predict_with_file(["--ckpt_path", str(crafted), "--data.predict_path", str(tmp_path / "images")])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and words in err and str(crafted) in err, err
    assert len(err.strip().splitlines()) == 1
    assert not list(tmp_path.glob("*.csv"))


def test_class_names_and_file_names_cannot_be_spreadsheet_formulas(exported: Path, tmp_path: Path) -> None:
    from mnist_cifar.export.command import main as predict_with_file

    names = ['=HYPERLINK("http://x","y")', "+1", "-1", "@SUM(A1)"] + [f"={i}+1" for i in range(4, 10)]
    crafted = with_metadata(exported, tmp_path / "formulas.onnx", class_names=json.dumps(names))
    (tmp_path / "images").mkdir()
    from torchvision.io import write_png
    write_png(torch.zeros(1, 28, 28, dtype=torch.uint8), str(tmp_path / "images" / "=cmd.png"))
    output = tmp_path / "out.csv"
    predict_with_file(["--ckpt_path", str(crafted), "--data.predict_path", str(tmp_path / "images"),
                       "--output", str(output)])
    rows = list(csv.reader(output.open()))
    cells = [cell for row in rows for cell in row]
    assert not [cell for cell in cells if cell.startswith(("=", "+", "-", "@"))], cells
    assert rows[1][2].startswith("'=") or rows[1][2] in ("'+1", "'-1", "'@SUM(A1)")  # the predicted class, as text


def test_a_csv_cell_that_reads_as_a_formula_is_written_as_text(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    write_csv(path, [{"source": "=1+1", "true_class": "@x", "predicted_class": "-2", "confidence": "0.5000",
                      "error": "", "p_a": "0.5000"}], ["a"], [("+evil.png", "not an image")])
    rows = list(csv.reader(path.open()))
    assert rows[1][:4] == ["'=1+1", "'@x", "'-2", "0.5000"] and rows[2][0] == "'+evil.png"
