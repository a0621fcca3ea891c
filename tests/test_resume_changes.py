"""A resume that changes the run: a schedule cannot be stretched (refused before any step, nothing rewritten), a new
batch size counts the epoch's position in images (no image trained twice or skipped), and every changed key is
recorded beside the run's original config.yaml."""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import yaml
from conftest import DEFAULT_CONFIG, ROOT

from mnist_cifar.cli.main import run

CNN = str(ROOT / "configs" / "cnn_mnist.yaml")  # no schedule, no augmentation: an image is the same bytes each time
LENET = str(ROOT / "configs" / "lenet_mnist.yaml")  # one-cycle, sized from the trainer
QUIET = ["--trainer.enable_progress_bar", "false", "--test_after_fit", "false", "--data.val_size", "50"]


SEEN: list[str] = []  # a fingerprint of every image a training step saw, in this process


class TrainedImages(L.Callback):
    """Records the images of every training step in `SEEN`; with `stop_at`, sends this process SIGTERM at that step
    (`StopOnSignal` then saves last.ckpt mid-epoch and stops, exit 143)."""

    def __init__(self, stop_at: int = 0) -> None:
        self.stop_at = stop_at

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        SEEN.extend(hashlib.sha1(image.numpy().tobytes()).hexdigest() for image in batch[0])

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step == self.stop_at:
            os.kill(os.getpid(), signal.SIGTERM)


def fit_recording(*args: str, stop_at: int = 4) -> list[str]:
    SEEN.clear()
    run(["fit", "--config", CNN, *QUIET, "--trainer.callbacks+=test_resume_changes.TrainedImages",
         f"--trainer.callbacks.stop_at={stop_at}", *args], default_config=DEFAULT_CONFIG)
    return list(SEEN)


def test_a_new_batch_size_resumes_at_the_same_image(mnist_dir: Path, tmp_path: Path) -> None:
    data = ["--data.data_dir", str(mnist_dir), "--trainer.max_epochs", "1"]
    with pytest.raises(SystemExit) as stopped:
        fit_recording(*data, "--data.batch_size", "10")
    assert stopped.value.code == 143
    before = list(SEEN)
    assert len(before) == 50  # StopOnSignal stops after the step that follows the signal: 5 steps of 10 images
    run_dir = tmp_path / "lightning_logs" / "cnn_mnist" / "version_0"
    original = (run_dir / "config.yaml").read_bytes()

    after = fit_recording(*data, "--data.batch_size", "25", "--ckpt_path", "last")  # (from step 5: no second stop)
    assert len(before) + len(after) == 150
    assert len(set(before) | set(after)) == 150  # every one of the 150 training images once: none twice, none skipped

    assert (run_dir / "config.yaml").read_bytes() == original  # the run's own config is kept
    record = yaml.safe_load((run_dir / "resume_1.yaml").read_text())
    assert record["changed"] == {"data.init_args.batch_size": {"was": 10, "now": 25}}
    assert record["resumed_from"].endswith("last.ckpt") and record["provenance"]["packages"]["torch"]


@pytest.mark.parametrize("change", [["--trainer.max_epochs", "4"], ["--data.batch_size", "16"]],
                         ids=["max_epochs", "batch_size"])
def test_a_resume_that_would_resize_the_schedule_is_refused_before_any_step(
        change: list[str], mnist_dir: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["fit", "--config", LENET, *QUIET, "--data.data_dir", str(mnist_dir), "--data.batch_size", "32"]
    fitted = run([*base, "--trainer.max_epochs", "2"], default_config=DEFAULT_CONFIG)
    run_dir = Path(fitted.trainer.log_dir)
    before = {p.name: p.read_bytes() for p in [run_dir / "config.yaml", run_dir / "checkpoints" / "last.ckpt"]}
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run([*base, "--trainer.max_epochs", "2", *change, "--ckpt_path", "last"], default_config=DEFAULT_CONFIG)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "was sized for 10 steps" in err and "resume with the run's own settings" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in [run_dir / "config.yaml", run_dir / "checkpoints" / "last.ckpt"]} == before
    assert not list(run_dir.glob("resume_*.yaml"))


def test_a_schedule_that_does_not_depend_on_the_length_resumes_with_more_epochs(mnist_dir: Path) -> None:
    base = ["fit", "--config", CNN, *QUIET, "--data.data_dir", str(mnist_dir), "--data.batch_size", "32"]
    run([*base, "--trainer.max_epochs", "1"], default_config=DEFAULT_CONFIG)
    resumed = run([*base, "--trainer.max_epochs", "2", "--ckpt_path", "last"], default_config=DEFAULT_CONFIG)
    assert resumed.trainer.current_epoch == 2
    record = yaml.safe_load((Path(resumed.trainer.log_dir) / "resume_1.yaml").read_text())
    assert record["changed"] == {"trainer.max_epochs": {"was": 1, "now": 2}}


@pytest.mark.parametrize("old_world, new_world", [(2, 1), (1, 3), (2, 3)])
def test_a_resume_on_another_number_of_ranks_continues_at_the_same_image(old_world: int, new_world: int) -> None:
    """The epoch position is counted in images over all ranks: what the old ranks took plus what the new ranks take
    covers every image, and the new ranks repeat none the old ones took (beyond the padding that evens them out)."""
    from mnist_cifar.data.sampling import ShardSampler

    images, batch, steps = 150, 10, 3
    dataset = list(range(images))

    def ranks(world: int, skip: int = 0) -> list[list[int]]:
        samplers = [ShardSampler(dataset, shuffle=True, seed=7, num_replicas=world, rank=r, batch_size=batch)
                    for r in range(world)]
        for sampler in samplers:
            sampler.set_epoch(2)
            sampler.skip_images = skip
        return [list(sampler) for sampler in samplers]

    taken = [i for order in ranks(old_world) for i in order[: steps * batch]]
    rest = ranks(new_world, skip=len(taken))
    assert len({len(order) for order in rest}) == 1  # every new rank takes as many steps
    remaining = [i for order in rest for i in order]
    assert set(taken) | set(remaining) == set(dataset)
    repeated = len(remaining) - len(set(remaining) - set(taken))
    assert repeated < new_world  # only the padding of the last, uneven images
