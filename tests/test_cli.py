"""The command line as users run it: every shipped config, fit -> test from a checkpoint, and its errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import DEFAULT_CONFIG, ROOT, TINY, cli, data_dir_for

from mnist_cifar.data import CIFAR10DataModule, MNISTDataModule
from mnist_cifar.training.classifier import ImageClassifier

CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml") if p.name != "default.yaml")



def test_configs_exist() -> None:
    assert {"lenet_mnist.yaml", "lenet_cifar.yaml"} <= {p.name for p in CONFIGS}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_every_config_runs_fast_dev_run(config: Path, mnist_dir: Path, cifar_dir: Path, fashion_dir: Path) -> None:
    data_dir = data_dir_for(config, mnist_dir, cifar_dir, fashion_dir)
    result = cli("fit", "--config", str(config), "--data.data_dir", str(data_dir), *TINY, "--trainer.fast_dev_run", "2")
    assert result.trainer.state.finished
    assert torch.isfinite(result.trainer.callback_metrics["train/loss"])


def test_links_size_the_network_from_the_data_set(mnist_dir: Path) -> None:
    config = str(ROOT / "configs" / "lenet_cifar.yaml")
    result = cli("fit", "--config", config, "--data", "mnist_cifar.data.MNISTDataModule", "--data.data_dir", str(mnist_dir),
                 *TINY, "--trainer.fast_dev_run", "1")
    assert result.model.net.features[0].in_channels == 1
    assert result.model.hparams.net["init_args"]["input_shape"] == (1, 28, 28)


def test_overrides_reach_the_components(mnist_dir: Path) -> None:
    result = cli("fit", "--config", str(ROOT / "configs" / "lenet_mnist.yaml"), "--data.data_dir", str(mnist_dir),
                 "--data.val_size", "50", "--data.batch_size", "256", "--model.optimizer.init_args.lr", "0.01",
                 "--model.scheduler", "null",
                 "--trainer.max_epochs", "3", "--trainer.fast_dev_run", "1")
    assert result.datamodule.hparams.batch_size == 256
    assert result.trainer.optimizers[0].param_groups[0]["lr"] == 0.01
    assert result.config.fit.trainer.max_epochs == 3  # fast_dev_run itself runs one epoch


def _evaluate(model: ImageClassifier, dm: MNISTDataModule | CIFAR10DataModule) -> float:
    model.eval()
    with torch.no_grad():
        logits = model(dm.preprocess(dm.test_set.images))
    return (logits.argmax(1) == dm.test_set.labels).float().mean().item()


def test_fit_then_test_from_checkpoint_reproduces_the_test_accuracy(cifar_dir: Path) -> None:
    config = str(ROOT / "configs" / "lenet_cifar.yaml")
    fitted = cli("fit", "--config", config, "--data.data_dir", str(cifar_dir), *TINY, "--trainer.max_epochs", "2")
    best = fitted.trainer.checkpoint_callback.best_model_path
    assert Path(best).is_file() and (Path(best).parent / "last.ckpt").is_file()
    after_fit = fitted.trainer.callback_metrics["test/acc"].item()  # the test that ends `fit`

    tested = cli("test", "--config", config, "--data.data_dir", str(cifar_dir), "--ckpt_path", best)
    reported = tested.trainer.callback_metrics["test/acc"].item()

    reloaded = ImageClassifier.load_from_checkpoint(best)  # no config needed
    dm = CIFAR10DataModule(data_dir=str(cifar_dir))
    dm.setup("test")
    assert reported == pytest.approx(_evaluate(reloaded, dm), abs=1e-6)
    assert reported == pytest.approx(after_fit, abs=1e-6)

    without_config = cli("test", "--ckpt_path", best, "--data.data_dir", str(cifar_dir))
    assert without_config.trainer.callback_metrics["test/acc"].item() == pytest.approx(reported, abs=1e-6)


def test_validate_and_predict_from_a_checkpoint(mnist_dir: Path) -> None:
    config = str(ROOT / "configs" / "lenet_mnist.yaml")
    fitted = cli("fit", "--config", config, "--data.data_dir", str(mnist_dir), *TINY, "--trainer.max_epochs", "1")
    last = str(Path(fitted.trainer.checkpoint_callback.best_model_path).parent / "last.ckpt")
    validated = cli("validate", "--ckpt_path", last, "--data.data_dir", str(mnist_dir))
    assert 0 <= validated.trainer.callback_metrics["val/acc"].item() <= 1
    predicted = cli("predict", "--ckpt_path", last, "--data.data_dir", str(mnist_dir))
    probabilities = torch.cat(predicted.trainer.predict_loop.predictions)
    assert probabilities.shape == (60, 10)
    torch.testing.assert_close(probabilities.sum(1), torch.ones(60))


def run_main(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], capture_output=True, text=True, timeout=300)


def test_missing_checkpoint_is_a_one_paragraph_error(tmp_path: Path) -> None:
    result = run_main("test", "--config", str(ROOT / "configs" / "lenet_mnist.yaml"), "--ckpt_path", str(tmp_path / "no.ckpt"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "no.ckpt" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("content", [b"", b"garbage", None], ids=["empty", "garbage", "not-a-lightning-checkpoint"])
def test_broken_checkpoint_is_named(tmp_path: Path, content: bytes | None, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "broken.ckpt"
    if content is None:
        torch.save({"weights": torch.zeros(2)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(SystemExit) as exit_info:
        cli("test", "--config", str(ROOT / "configs" / "lenet_mnist.yaml"), "--ckpt_path", str(path))
    assert exit_info.value.code == 2
    assert "broken.ckpt" in capsys.readouterr().err


def test_missing_data_is_a_one_paragraph_error(tmp_path: Path) -> None:
    result = run_main("fit", "--config", str(ROOT / "configs" / "lenet_mnist.yaml"),
                      "--data.data_dir", str(tmp_path / "empty"), "--data.download", "false")
    assert result.returncode == 2
    assert "No MNIST data found" in result.stderr and "--data.data_dir" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_config_value_is_a_one_paragraph_error(mnist_dir: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli("fit", "--config", str(ROOT / "configs" / "lenet_mnist.yaml"), "--data.data_dir", str(mnist_dir),
            "--data.batch_size", "0")
    assert exit_info.value.code == 2
    assert "data.batch_size must be at least 1" in capsys.readouterr().err


@pytest.mark.slow
def test_help_and_print_config() -> None:
    help_text = run_main("fit", "--help")
    assert help_text.returncode == 0 and "--num_threads" in help_text.stdout
    printed = run_main("fit", "--config", str(ROOT / "configs" / "lenet_cifar.yaml"), "--print_config")
    config = yaml.safe_load(printed.stdout)
    assert config["model"]["net"]["class_path"] == "mnist_cifar.models.CifarLeNet"
    assert config["trainer"]["max_epochs"] == 14 and config["data"]["init_args"]["batch_size"] == 64


def _net_class_path(config: Path) -> str:
    return yaml.safe_load(config.read_text())["model"]["net"]["class_path"]


def test_every_model_has_a_config_and_every_config_names_a_model() -> None:
    import mnist_cifar.models as models

    configured = {_net_class_path(config) for config in CONFIGS}
    available = {f"mnist_cifar.models.{name}" for name in models.__all__}
    assert available <= configured, f"models without a config: {available - configured}"
    assert configured <= available, f"configs naming unknown models: {configured - available}"


def test_one_cycle_schedule_length_comes_from_the_trainer(cifar_dir: Path) -> None:
    result = cli("fit", "--config", str(ROOT / "configs" / "improved_cnn_cifar.yaml"), "--data.data_dir", str(cifar_dir),
                 *TINY, "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3",
                 "--trainer.limit_val_batches", "1", "--test_after_fit", "false")
    scheduler = result.trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.total_steps == 6
    assert result.trainer.lr_scheduler_configs[0].interval == "step"


def test_summary_shows_each_layers_output_shape_and_parameters() -> None:
    from mnist_cifar.cli.summary import summarize

    table = str(summarize(["--config", str(ROOT / "configs" / "lenet_mnist.yaml")]))
    assert "[1, 6, 28, 28]" in table and "[1, 16, 5, 5]" in table and "[1, 10]" in table
    assert "61.7 K" in table
    cifar_table = str(summarize(["--config", str(ROOT / "configs" / "lenet_mnist.yaml"),
                                 "--data", "mnist_cifar.data.CIFAR10DataModule"]))
    assert "[1, 3, 32, 32]" in cifar_table


def _predictions(path: Path) -> list[dict[str, str]]:
    import csv

    with open(path) as file:
        return list(csv.DictReader(file))


def test_predict_own_images_writes_class_names_and_reports_unreadable_files(mnist_dir: Path, tmp_path: Path) -> None:
    from torchvision.io import write_jpeg, write_png

    config = str(ROOT / "configs" / "lenet_mnist.yaml")
    fitted = cli("fit", "--config", config, "--data.data_dir", str(mnist_dir), *TINY, "--trainer.max_epochs", "1")
    best = fitted.trainer.checkpoint_callback.best_model_path
    folder = tmp_path / "mine"
    (folder / "more").mkdir(parents=True)
    write_png(torch.randint(0, 256, (3, 60, 45), dtype=torch.uint8), str(folder / "photo.png"))
    write_jpeg(torch.randint(0, 256, (1, 20, 20), dtype=torch.uint8), str(folder / "more" / "small.jpg"))
    (folder / "notes.txt").write_text("not an image")

    out = tmp_path / "out.csv"
    predicted = cli("predict", "--ckpt_path", best, "--data.predict_path", str(folder),
                    "--trainer.callbacks+=mnist_cifar.reporting.predictions.PredictionCSVWriter",
                    f"--trainer.callbacks.output={out}")
    assert predicted.datamodule.predict_set.images.shape == (2, 1, 28, 28)
    rows = {Path(row["source"]).name: row for row in _predictions(out)}
    assert set(rows) == {"photo.png", "small.jpg", "notes.txt"}
    assert "not an image file" in rows["notes.txt"]["error"] and rows["notes.txt"]["predicted_class"] == ""
    for name in ("photo.png", "small.jpg"):
        probabilities = [float(rows[name][f"p_{digit}"]) for digit in "0123456789"]
        assert sum(probabilities) == pytest.approx(1, abs=1e-3)
        assert rows[name]["predicted_class"] == str(max(range(10), key=probabilities.__getitem__))

    single = cli("predict", "--ckpt_path", best, "--data.predict_path", str(folder / "photo.png"),
                 "--data.data_dir", str(tmp_path / "no_data_set_here"), "--data.download", "false")
    written = Path(single.trainer.log_dir) / "predictions.csv"
    assert [Path(r["source"]).name for r in _predictions(written)] == ["photo.png"]


def test_predict_on_the_test_set_records_the_true_class(cifar_dir: Path) -> None:
    config = str(ROOT / "configs" / "lenet_cifar.yaml")
    fitted = cli("fit", "--config", config, "--data.data_dir", str(cifar_dir), *TINY, "--trainer.max_epochs", "1")
    predicted = cli("predict", "--ckpt_path", fitted.trainer.checkpoint_callback.best_model_path,
                    "--data.data_dir", str(cifar_dir))
    rows = _predictions(Path(predicted.trainer.log_dir) / "predictions.csv")
    assert len(rows) == 60 and rows[0]["source"] == "test[0]"
    assert {row["true_class"] for row in rows} == set(CIFAR10DataModule.classes)


def test_predict_path_that_does_not_exist_is_named(mnist_dir: Path, tmp_path: Path) -> None:
    config = str(ROOT / "configs" / "lenet_mnist.yaml")
    fitted = cli("fit", "--config", config, "--data.data_dir", str(mnist_dir), *TINY, "--trainer.fast_dev_run", "1",
                 "--trainer.enable_checkpointing", "true")
    path = tmp_path / "model.ckpt"
    fitted.trainer.save_checkpoint(path)
    result = run_main("predict", "--ckpt_path", str(path), "--data.predict_path", str(tmp_path / "nothing_here"))
    assert result.returncode == 2 and "nothing_here does not exist" in result.stderr


def test_denormals_are_flushed_on_every_intra_op_thread(mnist_dir: Path) -> None:
    """A denormal product is zero after `build`, on the worker threads too (a late setting reaches only the main
    thread: half of a two-thread multiply would stay denormal). Its own process, so the thread pool starts fresh."""
    script = (
        "import sys, torch; from mnist_cifar.cli.main import build; "
        f"build(['--config', 'configs/lenet_mnist.yaml', '--data.data_dir', {str(mnist_dir)!r}, '--num_threads', '2', "
        "'--trainer.logger', 'false'], "
        f"default_config={str(DEFAULT_CONFIG)!r}); "
        "product = torch.full((1_000_000,), 1e-39) * torch.full((1_000_000,), 0.5); "
        "survivors = int(torch.count_nonzero(product)); print(survivors); sys.exit(1 if survivors else 0)"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"denormal products survived: {result.stdout[-200:]} {result.stderr[-2000:]}"
