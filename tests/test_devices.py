"""Device placement and precision: DDP on 2 CPU processes (gloo) gives one process's numbers, and every CPU
precision trains and tests with inputs in the network's own dtype.

The DDP runs are real `python main.py` processes, as a user starts them: Lightning relaunches that command once
per rank. The test set has an odd number of images (101), so any padding or uneven weighting shows.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import DEFAULT_CONFIG, ROOT, assert_one_process_test_figures, write_mnist

from mnist_cifar.cli.main import build, run
from mnist_cifar.experiments.logs import read_scalars

LENET = str(ROOT / "configs" / "lenet_mnist.yaml")
SMALL = ["--data.val_size", "50", "--data.batch_size", "32", "--trainer.enable_progress_bar", "false"]
DDP = ["--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.devices", "2"]
TEST_IMAGES = 101


@pytest.fixture(scope="module")
def odd_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("odd_mnist")
    write_mnist(root, n_train=250, n_test=TEST_IMAGES)
    return root


def main(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), *args], capture_output=True, text=True,
                            timeout=600, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def last_values(run_dir: Path, prefix: str) -> dict[str, float]:
    return {tag: values[-1][1] for tag, values in read_scalars(run_dir).items() if tag.startswith(prefix)}


@pytest.mark.slow
def test_fit_validate_test_and_predict_under_ddp_match_one_process(odd_mnist: Path, tmp_path: Path) -> None:
    main("fit", "--config", LENET, "--data.data_dir", str(odd_mnist), *SMALL, "--trainer.max_epochs", "2", *DDP,
         cwd=tmp_path)
    runs = list((tmp_path / "lightning_logs" / "lenet_mnist").iterdir())
    assert [r.name for r in runs] == ["version_0"]  # fit and its test: one run folder
    run_dir = runs[0]
    (best,) = (run_dir / "checkpoints").glob("epoch*.ckpt")
    after_fit = last_values(run_dir, "test/")

    one = run(["test", "--ckpt_path", str(best), "--data.data_dir", str(odd_mnist)], default_config=DEFAULT_CONFIG)
    single = {name: value.item() for name, value in one.trainer.callback_metrics.items() if name.startswith("test/")}
    assert set(single) == set(after_fit) and {"test/acc", "test/loss", "test/acc_0"} <= set(single)
    for name, value in single.items():  # every image once, losses weighted by image, per-class synced
        assert after_fit[name] == pytest.approx(value, abs=1e-6), name

    main("test", "--ckpt_path", str(best), "--data.data_dir", str(odd_mnist), *DDP, "--trainer.logger.init_args.version",
         "ddp_test", cwd=tmp_path)
    ddp_test = last_values(tmp_path / "lightning_logs" / "lenet_mnist" / "ddp_test", "test/")
    assert ddp_test == pytest.approx(after_fit, abs=1e-6)

    main("validate", "--ckpt_path", str(best), "--data.data_dir", str(odd_mnist), *DDP,
         "--trainer.logger.init_args.version", "ddp_validate", cwd=tmp_path)
    ddp_val = last_values(tmp_path / "lightning_logs" / "lenet_mnist" / "ddp_validate", "val/")
    one_val = run(["validate", "--ckpt_path", str(best), "--data.data_dir", str(odd_mnist)], default_config=DEFAULT_CONFIG)
    assert ddp_val == pytest.approx({k: v.item() for k, v in one_val.trainer.callback_metrics.items()}, abs=1e-6)

    printed = main("predict", "--ckpt_path", str(best), "--data.data_dir", str(odd_mnist), *DDP,
                   "--trainer.logger.init_args.version", "ddp_predict", cwd=tmp_path)
    with open(tmp_path / "lightning_logs" / "lenet_mnist" / "ddp_predict" / "predictions.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["source"] for row in rows] == [f"test[{i}]" for i in range(TEST_IMAGES)]  # each once, input order
    assert f"Wrote {TEST_IMAGES} predictions" in printed.stdout + printed.stderr
    right = sum(row["true_class"] == row["predicted_class"] for row in rows)
    assert right / TEST_IMAGES == pytest.approx(single["test/acc"], abs=1e-6)


@pytest.mark.slow
def test_ddp_spawn_keeps_fit_and_its_test_in_one_run_folder(odd_mnist: Path, tmp_path: Path) -> None:
    main("fit", "--config", LENET, "--data.data_dir", str(odd_mnist), *SMALL, "--trainer.max_epochs", "1",
         "--trainer.accelerator", "cpu", "--trainer.strategy", "ddp_spawn", "--trainer.devices", "2", cwd=tmp_path)
    runs = list((tmp_path / "lightning_logs" / "lenet_mnist").iterdir())
    assert [r.name for r in runs] == ["version_0"]
    assert "test/acc" in last_values(runs[0], "test/")


PRECISIONS = {"32-true": torch.float32, "64-true": torch.float64, "bf16-mixed": torch.float32,
              "bf16-true": torch.bfloat16}


@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_cpu_precision_fits_and_tests(precision: str, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[torch.dtype, torch.dtype]] = []  # (input dtype, first layer's weight dtype) at each forward
    from mnist_cifar.models import LeNet5

    forward = LeNet5.forward
    monkeypatch.setattr(LeNet5, "forward", lambda self, x: seen.append((x.dtype, next(self.parameters()).dtype))
                        or forward(self, x))
    result = run(["fit", "--config", LENET, "--data.data_dir", str(mnist_dir), *SMALL, "--trainer.max_epochs", "1",
                  "--trainer.limit_train_batches", "3", "--trainer.precision", precision], default_config=DEFAULT_CONFIG)
    assert {inputs for inputs, _ in seen} == {PRECISIONS[precision]}
    assert all(inputs == weights for inputs, weights in seen) or precision == "bf16-mixed"  # autocast casts inside
    assert 0 <= result.trainer.callback_metrics["test/acc"].item() <= 1
    assert torch.isfinite(result.trainer.callback_metrics["test/loss"])


@pytest.mark.parametrize("precision", ["16-mixed", "16-true"])
def test_float16_on_the_cpu_is_refused_with_what_to_use(precision: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(["fit", "--config", LENET, "--trainer.accelerator", "cpu", "--trainer.precision", precision],
            default_config=DEFAULT_CONFIG)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert precision in err and "bf16-mixed" in err and "Traceback" not in err


def test_device_resident_batches_train_exactly_like_the_dataloader(cifar_dir: Path) -> None:
    common = ["fit", "--config", str(ROOT / "configs" / "lenet_cifar.yaml"), "--data.data_dir", str(cifar_dir), *SMALL,
              "--trainer.max_epochs", "2", "--test_after_fit", "false"]
    loader = run(common, default_config=DEFAULT_CONFIG)
    on_device = run([*common, "--data.on_device", "true"], default_config=DEFAULT_CONFIG)
    assert type(on_device.trainer.train_dataloader).__name__ == "DeviceBatches"
    for name, tensor in loader.model.state_dict().items():  # same shuffles, crops, flips: the same weights
        assert torch.equal(tensor, on_device.model.state_dict()[name]), name


@pytest.mark.parametrize("mode", ["reduce-overhead", "max-autotune"])
def test_the_compile_mode_reaches_torch_compile(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(torch, "compile", lambda net, **options: calls.append(options) or net)
    built = build(["--config", LENET, "--model.compile", "true", "--model.compile_mode", mode],
                  default_config=DEFAULT_CONFIG)
    built.model.configure_model()
    assert calls == [{"backend": "inductor", "mode": mode}]


@pytest.mark.parametrize("others", [[], ["--model.compile", "true", "--model.compile_backend", "eager"]])
def test_a_compile_mode_without_compile_or_inductor_is_refused(others: list[str], capsys: pytest.CaptureFixture) -> None:
    """Without compile the mode would do nothing; torch.compile's other backends ignore it with a log line."""
    with pytest.raises(SystemExit) as exit_info:
        run(["fit", "--config", LENET, "--model.compile_mode", "reduce-overhead", *others], default_config=DEFAULT_CONFIG)
    assert exit_info.value.code == 2
    assert ("--model.compile_mode reduce-overhead takes effect only with --model.compile true and the inductor backend"
            in capsys.readouterr().err)


@pytest.mark.slow
def test_compiled_channels_last_checkpoints_load_without_them(mnist_dir: Path) -> None:
    fitted = run(["fit", "--config", LENET, "--data.data_dir", str(mnist_dir), *SMALL, "--trainer.max_epochs", "1",
                  "--trainer.limit_train_batches", "2", "--model.compile", "true", "--model.compile_backend", "eager",
                  "--model.channels_last", "true"], default_config=DEFAULT_CONFIG)
    assert fitted.model._compiled is not None
    best = fitted.trainer.checkpoint_callback.best_model_path
    plain = run(["test", "--ckpt_path", best, "--data.data_dir", str(mnist_dir), "--model.compile", "false",
                 "--model.channels_last", "false"], default_config=DEFAULT_CONFIG)
    assert plain.model._compiled is None
    assert plain.trainer.callback_metrics["test/acc"].item() == pytest.approx(
        fitted.trainer.callback_metrics["test/acc"].item(), abs=1e-6)


@pytest.mark.slow
def test_two_node_ranks_under_torchrun_give_one_process_figures(odd_mnist: Path, tmp_path: Path) -> None:
    """`torchrun --nnodes 2` on localhost, one launcher per node rank (as two machines would start it)."""
    port = 29500 + (os.getpid() % 1000)
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(rank), "--nproc_per_node",
         "1", "--master_addr", "127.0.0.1", "--master_port", str(port), str(ROOT / "main.py"), "fit", "--config",
         LENET, "--data.data_dir", str(odd_mnist), *SMALL, "--trainer.max_epochs", "1", "--trainer.accelerator", "cpu",
         "--trainer.strategy", "ddp", "--trainer.num_nodes", "2", "--trainer.devices", "1", "--num_threads", "1"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "MEMBER: 2/2" in outputs[0] + outputs[1]  # two processes, one per node rank
    (run_dir,) = (tmp_path / "lightning_logs" / "lenet_mnist").iterdir()
    assert_one_process_test_figures(run_dir, odd_mnist)
