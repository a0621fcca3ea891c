"""The notebooks run top to bottom on tiny generated data and a tiny training run; the committed copies carry their
outputs from the real data (a report to read without running), which these runs never touch."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DEFAULT_CONFIG, ROOT, write_cifar_batches, write_mnist

import mnist_cifar.models as models
from mnist_cifar.cli.main import run
from mnist_cifar.experiments import definition
from mnist_cifar.experiments.__main__ import main as experiments_main

TEST_EXTRA = "the test extra is not installed: pip install -e '.[test]'"
nbformat = pytest.importorskip("nbformat", reason=TEST_EXTRA)
NotebookClient = pytest.importorskip("nbclient", reason=TEST_EXTRA).NotebookClient

NOTEBOOKS = ROOT / "notebooks"
NAMES = ("01-data.ipynb", "02-models.ipynb", "03-results.ipynb")
KERNEL = "mnist-cifar-tests"  # a kernelspec for this interpreter, installed by the `jupyter_path` fixture
RUN = Path("experiments") / "tiny" / "lenet_cifar" / "seed42"  # the tiny run, relative to the logs folder


@pytest.fixture(scope="module")
def jupyter_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Jupyter data folder whose kernelspec starts this interpreter (the venv), whatever else is installed."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec_json = {"argv": argv, "display_name": "mnist-cifar tests", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(spec_json))
    return root


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Tiny MNIST + CIFAR-10 in one folder, and a logs folder holding a 2-epoch CIFAR run with its experiment report.

    Beside it: an older run with a checkpoint and a newer one without any, which the results notebook must not pick.
    """
    root = tmp_path_factory.mktemp("notebooks")
    data, work = root / "data", root / "work"
    write_mnist(data)
    write_cifar_batches(data)
    work.mkdir()
    logs = work / "lightning_logs"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        patch.setenv("MNIST_CIFAR_CACHE", str(root / "cache"))
        patch.setattr("sys.argv", ["main.py"])
        run(["fit", "--config", str(DEFAULT_CONFIG.parent / "lenet_cifar.yaml"), "--data.data_dir", str(data),
             "--data.val_size", "50", "--data.batch_size", "32", "--trainer.max_epochs", "2",
             "--trainer.enable_progress_bar", "false",
             f"--trainer.logger.init_args.save_dir={logs / RUN.parent.parent}",
             f"--trainer.logger.init_args.name={RUN.parent.name}", f"--trainer.logger.init_args.version={RUN.name}"],
            default_config=DEFAULT_CONFIG)
        experiments_dir = root / "experiment_definitions"
        experiments_dir.mkdir()
        (experiments_dir / "tiny.yaml").write_text(
            "description: one tiny CIFAR LeNet\nconfig: configs/lenet_cifar.yaml\nvariants:\n  lenet_cifar: {}\n"
        )
        patch.setattr(definition, "EXPERIMENTS_DIR", experiments_dir)
        experiments_main(["report", "tiny", "--root", str(logs)])
    assert (logs / RUN.parent.parent / "results.md").is_file()

    day_ago = time.time() - 86_400
    older = logs / "zz_older" / "version_0"
    (older / "checkpoints").mkdir(parents=True)
    for source in (logs / RUN / "checkpoints").glob("*.ckpt"):
        target = older / "checkpoints" / source.name
        target.write_bytes(source.read_bytes())
        os.utime(target, (day_ago, day_ago))
    crashed = logs / "zz_crashed" / "version_0"
    (crashed / "checkpoints").mkdir(parents=True)  # started after the others, killed before its first checkpoint
    yield {"data": data, "work": work, "logs": logs}


def execute(name: str, cwd: Path, monkeypatch: pytest.MonkeyPatch, jupyter_path: Path, **env: str) -> tuple[str, int]:
    """Run a notebook in `cwd` with `env` set; return its text outputs joined and how many PNG images it showed."""
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))  # searched before the user's and the venv's kernelspecs
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the notebooks ask for the inline backend
    committed = (NOTEBOOKS / name).read_bytes()
    notebook = nbformat.reads(committed.decode(), as_version=4)
    for cell in notebook.cells:  # start from a clean copy: the committed outputs are the real data's
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    NotebookClient(notebook, timeout=300, kernel_name=KERNEL, resources={"metadata": {"path": str(cwd)}}).execute()
    assert (NOTEBOOKS / name).read_bytes() == committed, f"running {name} in a test changed the committed file"
    texts, images = [], 0
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            assert output.output_type != "error", f"{name}: {output.ename}: {output.evalue}"
            if output.output_type == "stream":
                texts.append(output.text)
            elif "data" in output:
                texts += [output.data.get("text/plain", ""), output.data.get("text/markdown", "")]
                images += "image/png" in output.data
    return "\n".join(texts), images


REAL_DATA_MARKS = {  # what each committed notebook's outputs show when it ran on the real data sets
    "01-data.ipynb": ("MNIST: 10,000 test images of (1, 28, 28)", "CIFAR-10: 10,000 test images of (3, 32, 32)"),
    "02-models.ipynb": ("| LeNet5 | 61,706 |",),
    "03-results.ipynb": ("10,000 CIFAR-10 test images, accuracy", "newest run: "),
}


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebooks_carry_their_outputs_from_the_real_data(name: str) -> None:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and "mnist_cifar" in code[0].source, f"{name} should import the package, not copy its code"
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), f"{name}: not run top to bottom"
    outputs = [output for cell in code for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"], f"{name} is committed with an error in its outputs"
    text = "\n".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") + o.get("data", {}).get("text/markdown", "")
                     for o in outputs)
    for mark in REAL_DATA_MARKS[name]:
        assert mark in text, f"{name}'s committed outputs do not show {mark!r}: run it on the real data and commit it"
    if name != "02-models.ipynb":
        assert any("image/png" in o.get("data", {}) for o in outputs), f"{name} is committed without its figures"


@pytest.mark.slow
def test_data_notebook_shows_samples_augmentation_permutation_and_grayscale(
    workspace: dict[str, Path], monkeypatch: pytest.MonkeyPatch, jupyter_path: Path
) -> None:
    text, images = execute("01-data.ipynb", workspace["work"], monkeypatch, jupyter_path,
                           MNIST_CIFAR_DATA=str(workspace["data"]))
    assert "classes: airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck" in text
    assert "classes: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9" in text
    assert "MNIST: 60 test images of (1, 28, 28)" in text and "CIFAR-10: 60 test images of (3, 32, 32)" in text
    assert "crop padding 4, horizontal flip True" in text
    assert "inverting it restores the images exactly: True" in text
    assert "grayscale: input shape (1, 32, 32)" in text
    assert images == 5  # MNIST and CIFAR samples, augmentation, permutation, grayscale


def test_models_notebook_counts_parameters_and_layer_shapes(
    workspace: dict[str, Path], monkeypatch: pytest.MonkeyPatch, jupyter_path: Path
) -> None:
    text, _ = execute("02-models.ipynb", workspace["work"], monkeypatch, jupyter_path)
    table = [line for line in text.splitlines() if line.startswith("| ")]
    for name in models.__all__:
        assert any(line.startswith(f"| {name} | ") for line in table), f"{name} missing from the parameter table"
    assert "| LeNet5 | 61,706 |" in text and "| CifarLeNet | 206,794 | 285,930 |" in text
    assert "n/a" not in text  # every model builds on both shapes
    assert "Out sizes" in text and "[1, 6, 28, 28]" in text and "[1, 16, 30, 30]" in text  # LeNet5 / CifarLeNet conv1


def test_results_notebook_shows_the_newest_run_with_a_checkpoint(
    workspace: dict[str, Path], monkeypatch: pytest.MonkeyPatch, jupyter_path: Path
) -> None:
    text, images = execute("03-results.ipynb", workspace["work"], monkeypatch, jupyter_path,
                           MNIST_CIFAR_DATA=str(workspace["data"]), MNIST_CIFAR_LOGS=str(workspace["logs"]))
    assert f"newest run: {workspace['logs'] / RUN}\n" in text
    assert "epoch | train loss | val loss | train acc | val acc" in text and "\n    2 | " in text  # two epochs
    assert "| lenet_cifar | 1 |" in text  # the experiment report's table
    assert "test[0]: true   airplane, predicted" in text
    assert "Confusion matrix of epoch" in text and "60 CIFAR-10 test images, accuracy" in text
    assert images == 5  # curves, report plot, the report's curves across seeds, predictions, confusion matrix


@pytest.mark.slow  # kept out of the 5-minute default tier (2026-12-06: it was at 4:27-4:52)
def test_results_notebook_without_runs_says_what_to_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        jupyter_path: Path) -> None:
    text, images = execute("03-results.ipynb", tmp_path, monkeypatch, jupyter_path,
                           MNIST_CIFAR_LOGS=str(tmp_path / "no_logs"))
    assert "No training run with a checkpoint under" in text
    assert "python main.py fit --config configs/lenet_mnist.yaml" in text
    assert "No experiment report under" in text
    assert images == 0
