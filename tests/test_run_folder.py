"""A run folder has one owner: deletions stay inside the run's own checkpoints folder whatever a checkpoint names
and wherever it lies, a resume finds its run through symlinks (one set of curves, its best-checkpoint tracking
kept), and one process at a time holds a run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY, cli, tiny_fit
from test_untrusted_checkpoints import craft

from mnist_cifar.cli.main import ExperimentCLI
from mnist_cifar.runs.checkpoint_io import AtomicCheckpointIO
from mnist_cifar.runs.folder import RunFolder
from mnist_cifar.runs.lock import try_lock

CNN = str(ROOT / "configs" / "cnn_mnist.yaml")
QUIET = ["--test_after_fit", "false"]



def fit(mnist_dir: Path, epochs: int, *extra: str) -> ExperimentCLI:
    return tiny_fit(CNN, mnist_dir, epochs, *QUIET, *extra)


def victim(root: Path) -> Path:
    folder = root / "victim"
    (folder / "inner").mkdir(parents=True)
    (folder / "precious.txt").write_text("keep me")
    return folder


def every_saved_path(path: str):  # noqa: ANN201 (an edit for `craft`)
    def edit(checkpoint: dict) -> None:
        for state in checkpoint["callbacks"].values():
            if "best_model_path" in state:
                state.update(best_model_path=path, last_model_path=path, kth_best_model_path=path,
                             best_k_models={path: torch.tensor(1.0)}, best_model_score=torch.tensor(1.0))
    return edit


def escapes(run_checkpoints: Path, target: Path) -> list[str]:
    """Spellings of `target` that a text check or a cwd-relative `resolve()` mistook for the run's own files."""
    dotted = f"{run_checkpoints}/{'/'.join(['..'] * len(run_checkpoints.parts))}{target}"
    relative = os.path.relpath(target)
    return [f"local://{target}", dotted, f"lightning_logs/x/version_0/checkpoints/../../../../{relative}", str(target)]


@pytest.mark.parametrize("where", ["current folder", "parent folder"])
def test_a_crafted_checkpoint_outside_its_run_deletes_nothing(where: str, mnist_dir: Path, tmp_path: Path) -> None:
    """`~/model.ckpt` used from `~/project` (or from `~`): none of its saved paths is removed, as text or URL."""
    first = fit(mnist_dir, 1, "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"))
    last = Path(first.trainer.checkpoint_callback.best_model_path).parent / "last.ckpt"
    project = tmp_path / "project"
    project.mkdir()
    os.chdir(project if where == "parent folder" else tmp_path)
    target = victim(tmp_path)
    for i, path in enumerate(escapes(last.parent, target)):
        crafted = craft(last, tmp_path / f"model{i}.ckpt", every_saved_path(path))
        fit(mnist_dir, 3, "--ckpt_path", str(crafted))
        assert (target / "precious.txt").read_text() == "keep me", path
        assert (target / "inner").is_dir(), path


def test_the_checkpoint_writer_removes_only_checkpoints_it_saved_in_its_own_folder(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    own = tmp_path / "run" / "checkpoints"
    io.save_checkpoint({"state_dict": {}}, own / "epoch000.ckpt")
    io.save_checkpoint({"state_dict": {}}, own / "epoch001.ckpt")
    other = tmp_path / "other" / "checkpoints"
    other.mkdir(parents=True)
    (other / "epoch000.ckpt").write_text("not ours")
    (own / "folder.ckpt").mkdir()
    (own / "notes.txt").write_text("not a checkpoint")
    refused = [other / "epoch000.ckpt", own / "folder.ckpt", own / "notes.txt", f"local://{own / 'epoch001.ckpt'}",
               own / ".." / "checkpoints" / ".." / ".." / "other" / "checkpoints" / "epoch000.ckpt"]
    for path in refused:
        with pytest.warns(UserWarning, match="Not removing"):
            io.remove_checkpoint(path)
    assert (other / "epoch000.ckpt").is_file() and (own / "folder.ckpt").is_dir() and (own / "notes.txt").is_file()
    assert (own / "epoch001.ckpt").is_file()
    io.remove_checkpoint(own / "epoch000.ckpt")
    assert not (own / "epoch000.ckpt").exists()


def _link(folder: Path, elsewhere: Path) -> None:
    """Move `folder` to `elsewhere` and leave a symlink in its place."""
    elsewhere.parent.mkdir(parents=True, exist_ok=True)
    folder.rename(elsewhere)
    folder.symlink_to(elsewhere, target_is_directory=True)


LAYOUTS = {
    "checkpoints": lambda run, tmp: _link(run / "checkpoints", tmp / "disk" / "checkpoints"),
    "version": lambda run, tmp: _link(run, tmp / "disk" / "somewhere" / "run0"),
    "save_dir": lambda run, tmp: _link(run.parents[1], tmp / "disk" / "logs"),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_a_resume_through_a_symlink_continues_its_run(layout: str, mnist_dir: Path, tmp_path: Path) -> None:
    """One run folder, one set of records, the best tracked across the resume (save_top_k 1: one best file)."""
    first = fit(mnist_dir, 1)
    run_dir = Path(first.trainer.log_dir)
    LAYOUTS[layout](run_dir, tmp_path)
    resumed = fit(mnist_dir, 3, "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt"))
    assert resumed.trainer.current_epoch == 3
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["version_0"]  # no version_1
    assert [p.name for p in run_dir.glob("resume_*.yaml")] == ["resume_1.yaml"]
    best = sorted(p.name for p in (run_dir / "checkpoints").glob("epoch*.ckpt"))
    assert len(best) == 1, best  # the old best was replaced, not left beside a restarted tracking
    assert Path(resumed.trainer.checkpoint_callback.best_model_path).name == best[0]
    assert not list((tmp_path / "disk").rglob("version_*")) or layout == "save_dir"  # nothing beside the link target


def test_a_fit_on_a_locked_run_is_refused_naming_the_holder(mnist_dir: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    first = fit(mnist_dir, 1)
    run_dir = Path(first.trainer.log_dir)
    before = sorted(p.name for p in run_dir.rglob("*"))
    handle = try_lock(RunFolder.at(run_dir))
    assert handle is not None
    try:
        with pytest.raises(SystemExit) as stopped:
            fit(mnist_dir, 3, "--ckpt_path", "last")
    finally:
        os.close(handle)
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "is in use" in err and f"pid {os.getpid()}" in err, err[-1500:]
    assert sorted(p.name for p in run_dir.rglob("*")) == before  # nothing written
    assert fit(mnist_dir, 2, "--ckpt_path", "last").trainer.current_epoch == 2  # free again once released


@pytest.mark.slow
def test_two_resumes_started_together_run_one_at_a_time(mnist_dir: Path, tmp_path: Path) -> None:
    first = fit(mnist_dir, 1)
    run_dir = Path(first.trainer.log_dir)
    command = [sys.executable, str(ROOT / "main.py"), "fit", "--config", CNN, "--data.data_dir", str(mnist_dir), *TINY,
               "--trainer.max_epochs", "30", "--ckpt_path", "last"]
    both = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in both]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], [err[-1500:] for _, err in results]
    refused = next(err for code, err in results if code == 2)
    assert "is in use" in refused and "Traceback" not in refused
    assert [p.name for p in run_dir.glob("resume_*.yaml")] == ["resume_1.yaml"]
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["version_0"]


BEFORE = Path(__file__).parent / "fixtures" / "run_before_issue_26"  # cnn_mnist, 2 epochs, written by e0f04ae


@pytest.mark.filterwarnings("ignore::mnist_cifar.moved.MovedModuleWarning")  # its paths: tests/test_moved.py
def test_a_checkpoint_written_before_the_run_folder_rules_still_tests_and_resumes(mnist_dir: Path,
                                                                                tmp_path: Path) -> None:
    """The fixture's run was made by the code before `mnist_cifar.runs` (tiny MNIST of conftest, seed 0)."""
    import shutil

    run_dir = tmp_path / "lightning_logs" / "cnn_mnist" / "version_0"
    shutil.copytree(BEFORE, run_dir)
    best = run_dir / "checkpoints" / "epoch001-val_acc0.6200.ckpt"
    tested = cli("test", "--ckpt_path", str(best), "--data.data_dir", str(mnist_dir))
    assert tested.trainer.callback_metrics["test/acc"].item() == pytest.approx(0.65, abs=1e-6)
    assert tested.trainer.callback_metrics["test/loss"].item() == pytest.approx(1.9411547, abs=1e-5)
    resumed = fit(mnist_dir, 4, "--ckpt_path", "last")
    assert resumed.trainer.current_epoch == 4 and Path(resumed.trainer.log_dir) == run_dir
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["version_0", "version_1"]  # version_1: the test's
    assert len(list((run_dir / "checkpoints").glob("epoch*.ckpt"))) == 1  # its best tracking continued
