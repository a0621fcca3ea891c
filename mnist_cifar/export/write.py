"""Export a trained run: `python main.py export --ckpt_path X [--format onnx|exported_program] [--output F]`.

The file takes what a camera or `torchvision.io.decode_image` gives, raw images as uint8 `(N, C, H, W)` tensors
(0-255, RGB for CIFAR-10, one gray channel for MNIST, any batch size N), and returns the checkpoint's logits
`(N, num_classes)` as float32 (softmax them for the probabilities `predict` writes). Everything the DataModule
does to an evaluated image is inside the graph: the luma conversion of a grayscale run, the scaling and
mean/std normalization, a permuted-pixel run's permutation, the resize of a resized run, and test-time
augmentation when the run used it.
A file without them would give wrong answers with no error, so the parity checks below feed it raw images.

Parity is checked every time, against the checkpoint evaluated as `python main.py test` evaluates it, and the
export fails (status 1, no file written, an existing one kept) unless it holds: ONNX's full checker; max |logit
difference| <= 1e-4 on single images and on whole batches; top-1 agreement >= 99.9 % over the whole test split,
both accuracies printed. The file's metadata (ONNX `metadata_props`, or `mnist_cifar.json` inside the .pt2)
holds the class names, input layout and size, mean/std, the checkpoint's SHA-256 and the git commit.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.transforms.v2.functional import rgb_to_grayscale

from mnist_cifar.data import augment
from mnist_cifar.errors import CheckpointError, WorkFailed, exits_on_user_errors
from mnist_cifar.export.exported import EXTRA, METADATA_FILE, SUFFIXES, ExportedModel
from mnist_cifar.files import atomic_write, atomic_write_text
from mnist_cifar.runs.folder import RunFolder

MAX_LOGIT_DIFFERENCE = 1e-4
MIN_AGREEMENT = 0.999
SINGLE_IMAGES = 4  # parity at batch size 1 on this many test images, besides the whole split in batches


class ExportError(WorkFailed):
    """The export or its parity check failed."""


class RawImageClassifier(nn.Module):
    """uint8 images in, logits out: the DataModule's evaluation preprocessing and the network, as one graph."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float], grayscale: bool,
                 permutation: Tensor | None, test_time_augmentation: bool, resize: int | None = None,
                 temperature: float = 1.0) -> None:
        super().__init__()
        self.net, self.grayscale, self.test_time_augmentation = net, grayscale, test_time_augmentation
        self.resize, self.temperature = resize, temperature
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        self.register_buffer("permutation", permutation)

    def forward(self, images: Tensor) -> Tensor:
        if self.grayscale:
            images = rgb_to_grayscale(images)
        x = augment.normalize(images, self.mean, self.std)
        if self.permutation is not None:
            x = augment.permute_pixels(x, self.permutation)
        x = augment.resize(x, self.resize)
        logits = augment.flip_translate_logits(self.net, x) if self.test_time_augmentation else self.net(x)
        return logits if self.temperature == 1.0 else logits / self.temperature


@dataclass
class Loaded:
    """A checkpoint rebuilt from its own config: the model in eval mode, its data module, and the file's hash."""

    model: Any  # ImageClassifier
    data: Any  # ImageDataModule
    sha256: str
    temperature: float = 1.0  # logits are divided by it (`--calibrate`: fitted on the validation split)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load(ckpt_path: str, cli_args: Sequence[str]) -> Loaded:
    """The checkpoint's model and data module, built by the same CLI as `test --ckpt_path` (so the same checks of
    an untrusted file apply), with the checkpoint's weights."""
    from mnist_cifar.cli.main import DEFAULT_CONFIG, build
    from mnist_cifar.runs.checkpoint_io import state_dict_mismatch
    from mnist_cifar.runs.checkpoints import load_checkpoint, with_checkpoint_config

    # The checkpoint's config first, yours after; float32, which the exported graph computes in (a run trained in
    # 16-mixed on a GPU would otherwise be refused on the CPU before anything is built).
    argv = with_checkpoint_config(["test", "--ckpt_path", ckpt_path, "--trainer.precision", "32-true", *cli_args])
    at = argv.index("--ckpt_path")
    with _quiet_trainer():
        cli = build([*argv[1:at], *argv[at + 2 :], "--trainer.logger", "false"], DEFAULT_CONFIG)
    checkpoint = load_checkpoint(ckpt_path)
    model = cli.model
    problems = state_dict_mismatch(model.state_dict(), checkpoint["state_dict"])
    if problems:
        raise CheckpointError(f"The checkpoint {ckpt_path} does not fit the network its config names: {problems}.")
    model.load_state_dict(checkpoint["state_dict"])
    return Loaded(model.eval(), cli.datamodule, file_sha256(Path(ckpt_path)))


def deployable(loaded: Loaded) -> RawImageClassifier:
    data, model = loaded.data, loaded.model
    mean, std = data.normalization
    grayscale = bool(data.hparams.grayscale) and data.image_shape[0] == 3
    permutation = None if data.permutation is None else data.permutation.clone()
    tta = bool(model.hparams.get("test_time_augmentation"))
    resize = data.hparams.get("resize")
    return RawImageClassifier(model.net, mean, std, grayscale, permutation, tta, resize, loaded.temperature).eval()


def metadata(loaded: Loaded, wrapper: RawImageClassifier) -> dict[str, str]:
    from mnist_cifar.runs.provenance import provenance

    data = loaded.data
    channels, height, width = data.image_shape
    found = provenance()
    return {
        "class_names": json.dumps(list(data.classes)),
        "input": f"uint8 (N, {channels}, {height}, {width}), values 0-255, "
                 f"{'RGB' if channels == 3 else 'one gray channel'}, any batch size N",
        "input_shape": json.dumps([channels, height, width]),
        "output": f"float32 (N, {len(data.classes)}) logits; softmax gives the class probabilities",
        "mean": json.dumps(list(map(float, wrapper.mean))),
        "std": json.dumps(list(map(float, wrapper.std))),
        "grayscale": json.dumps(wrapper.grayscale),
        "permuted_pixels": json.dumps(wrapper.permutation is not None),
        "resized_to": json.dumps(wrapper.resize),
        "temperature": json.dumps(wrapper.temperature),  # 1.0: the raw logits; else calibrated (--calibrate)
        "test_time_augmentation": json.dumps(wrapper.test_time_augmentation),
        "data_set": data.name,
        "network": type(loaded.model.net).__name__,
        "checkpoint_sha256": loaded.sha256,
        "git_commit": str(found["git_commit"]) + (" (with uncommitted changes)" if found["git_dirty"] else ""),
        "torch": torch.__version__,
    }


def example_input(data: Any, batch: int = 2) -> Tensor:  # noqa: ANN401
    return torch.randint(0, 256, (batch, *data.image_shape), dtype=torch.uint8)


def export_onnx(wrapper: RawImageClassifier, example: Tensor, path: Path, meta: dict[str, str]) -> None:
    import onnx

    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(wrapper, (example,), dynamo=True, input_names=["images"], output_names=["logits"],
                                dynamic_shapes=({0: batch},), verbose=False)
    program.save(str(path))
    model = onnx.load(str(path))
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path), full_check=True)


def export_program(wrapper: RawImageClassifier, example: Tensor, path: Path, meta: dict[str, str]) -> None:
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(wrapper, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path), extra_files={METADATA_FILE: json.dumps(meta, indent=1)})


@dataclass
class Parity:
    max_difference: float
    agreement: float
    checkpoint_accuracy: float
    exported_accuracy: float
    images: int
    batch_sizes: tuple[int, ...]

    def failures(self) -> list[str]:
        found = []
        if not self.max_difference <= MAX_LOGIT_DIFFERENCE:  # (also catches NaN)
            found.append(f"max |logit difference| {self.max_difference:.2e} > {MAX_LOGIT_DIFFERENCE:.0e}")
        if self.agreement < MIN_AGREEMENT:
            found.append(f"top-1 agreement {self.agreement:.4%} < {MIN_AGREEMENT:.1%}")
        return found

    def summary(self) -> str:
        return (f"{self.images} test images, batch sizes {', '.join(map(str, self.batch_sizes))}: max |logit "
                f"difference| {self.max_difference:.2e}, top-1 agreement {self.agreement:.4%}, test accuracy "
                f"{self.checkpoint_accuracy:.4%} (checkpoint) / {self.exported_accuracy:.4%} (exported)")


def check_parity(loaded: Loaded, run_exported: Any, batch_size: int) -> Parity:  # noqa: ANN401
    """The exported file against the checkpoint evaluated as `test` evaluates it, on raw test images: a few at batch
    size 1, then the whole split in batches of `batch_size` (its last batch is smaller, a third size)."""
    loaded.data.prepare_data()
    images, labels = loaded.data.stored_split("test")
    n = len(labels)
    worst = 0.0
    for i in range(min(SINGLE_IMAGES, n)):
        expected, got = _both(loaded, run_exported, images[i : i + 1])
        worst = max(worst, float((got - expected).abs().max()))
    agree = right_checkpoint = right_exported = 0
    sizes = {1}
    for start in range(0, n, batch_size):
        expected, got = _both(loaded, run_exported, images[start : start + batch_size])
        truth = labels[start : start + batch_size]
        sizes.add(len(truth))
        worst = max(worst, float((got - expected).abs().max()))
        agree += int((got.argmax(1) == expected.argmax(1)).sum())
        right_checkpoint += int((expected.argmax(1) == truth).sum())
        right_exported += int((got.argmax(1) == truth).sum())
    return Parity(worst, agree / n, right_checkpoint / n, right_exported / n, n, tuple(sorted(sizes)))


def checkpoint_logits(loaded: Loaded, raw: Tensor) -> Tensor:
    """What `test` computes for raw uint8 images: the DataModule's evaluation preprocessing, then the model."""
    data = loaded.data
    with torch.no_grad():
        return loaded.model.evaluation_logits(data.preprocess(data._to_input_channels(raw))) / loaded.temperature


def _both(loaded: Loaded, run_exported: Any, raw: Tensor) -> tuple[Tensor, Tensor]:  # noqa: ANN401
    expected = checkpoint_logits(loaded, raw).float()
    got = run_exported(raw).float()
    if got.shape != expected.shape:
        raise ExportError(f"The exported file gave logits of shape {tuple(got.shape)} for a batch of {len(raw)}, "
                          f"the checkpoint {tuple(expected.shape)}.")
    return expected, got


def default_output(ckpt_path: str, fmt: str) -> Path:
    """Beside the checkpoint's run: `<run>/export/<checkpoint name>.onnx` (or .pt2)."""
    checkpoint = Path(ckpt_path).expanduser()
    run = RunFolder.of_checkpoint(checkpoint)
    folder = run.exports if run is not None else checkpoint.parent / "export"
    if not checkpoint.is_absolute():  # spelled as the user spelled the checkpoint
        folder = Path(os.path.relpath(folder))
    return folder / (checkpoint.stem + SUFFIXES[fmt])


def export(ckpt_path: str, fmt: str = "onnx", output: str | None = None, batch_size: int = 256,
           cli_args: Sequence[str] = (), calibrate: bool = False) -> tuple[Path, Parity]:
    """Write the export of `ckpt_path` and return its path and parity; raise `ExportError` (writing nothing) when
    the export or its parity fails. `calibrate`: divide the logits by a temperature fitted on the run's validation
    split (`mnist_cifar.reporting.calibration`), so the file's probabilities are the calibrated ones."""
    _require(fmt)
    if batch_size < 1:
        raise ExportError(f"--batch_size must be at least 1, got {batch_size}.")
    target = Path(output).expanduser() if output else default_output(ckpt_path, fmt)
    if target.suffix != SUFFIXES[fmt]:
        raise ExportError(f"--output {target} does not end in {SUFFIXES[fmt]}, the suffix of --format {fmt}.")
    loaded = load(ckpt_path, cli_args)
    if calibrate:
        loaded.temperature = validation_temperature(loaded)
    return target, write(loaded, fmt, target, batch_size, ckpt_path)


def validation_temperature(loaded: Loaded) -> float:
    """The temperature `test` fits for these weights: on the run's seeded validation split."""
    from mnist_cifar.reporting.calibration import validation_temperature as fitted

    if not loaded.data.hparams.val_size:
        raise ExportError("--calibrate fits its temperature on the validation split, and this run has none "
                          "(data.val_size 0). Export without --calibrate, or give --data.val_size.")
    loaded.data.prepare_data()
    return fitted(loaded.model, loaded.data)


def write(loaded: Loaded, fmt: str, target: Path, batch_size: int = 256, source: str = "the model") -> Parity:
    """Export `loaded` to `target` through a temporary file that becomes `target` only once its parity holds."""
    wrapper = deployable(loaded)
    writer = export_onnx if fmt == "onnx" else export_program
    meta = metadata(loaded, wrapper)
    checked: list[Parity] = []

    def write_and_check(partial: Path) -> None:
        try:
            with _quiet_exporter():
                writer(wrapper, example_input(loaded.data), partial, meta)
        except Exception as error:
            raise ExportError(f"Exporting {type(loaded.model.net).__name__} from {source} to {fmt} failed "
                              f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). "
                              f"Try the other --format.") from error
        checked.append(check_parity(loaded, ExportedModel(partial), batch_size))
        failures = checked[0].failures()
        if failures:
            raise ExportError(f"The {fmt} export of {source} does not match the checkpoint ({'; '.join(failures)};"
                              f" {checked[0].summary()}). Nothing was written to {target}.")

    atomic_write(target, write_and_check)  # the file becomes `target` only once its parity holds
    record = {"file": target.name, "format": fmt, "source": source, **asdict(checked[0]), **meta}
    atomic_write_text(target.with_name(target.name + ".parity.json"), json.dumps(record, indent=1) + "\n")
    return checked[0]


@contextlib.contextmanager
def _quiet_trainer() -> Iterator[None]:
    """The Trainer is built only to rebuild model and data as `test` does: its start-up lines say nothing here."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The `srun` command is available")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """torch.onnx prints its progress ("[torch.onnx] Obtain model graph ... ✅") on stdout: kept for a failure."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            yield
    except Exception:
        sys.stdout.write(captured.getvalue())
        raise


def _require(fmt: str) -> None:
    needed = ["onnx", "onnxscript", "onnxruntime"] if fmt == "onnx" else []
    missing = [name for name in needed if _missing(name)]
    if missing:
        raise ExportError(f"--format onnx needs onnx, onnxscript and onnxruntime; {', '.join(missing)} "
                          f"{'is' if len(missing) == 1 else 'are'} not installed: {EXTRA}.")


def _missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python main.py export",
        description="Export a checkpoint as a file that takes raw uint8 images (N, C, H, W) and returns its logits, "
                    "with the run's preprocessing inside, after checking it against the checkpoint on the test split. "
                    "Other --key value options (e.g. --data.data_dir DIR) go to the checkpoint's config.")
    parser.add_argument("--ckpt_path", required=True, help="the checkpoint to export")
    parser.add_argument("--format", choices=sorted(SUFFIXES), default="onnx",
                        help="onnx (run with onnxruntime) or exported_program (torch.export .pt2)")
    parser.add_argument("--output", help="the file to write; default <run>/export/<checkpoint>.onnx or .pt2")
    parser.add_argument("--batch_size", type=int, default=256, help="batch size of the parity check on the test split")
    parser.add_argument("--num_threads", type=int, help="CPU threads for torch and onnxruntime")
    parser.add_argument("--calibrate", action="store_true",
                        help="divide the logits by a temperature fitted on the run's validation split (calibrated "
                             "probabilities; the predictions are the same)")
    return parser.parse_known_args(list(argv))


def main(argv: Sequence[str]) -> None:
    args, rest = parse(argv)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    started = time.monotonic()
    with exits_on_user_errors():
        target, parity = export(args.ckpt_path, args.format, args.output, args.batch_size, rest, args.calibrate)
    print(f"Wrote {target} ({args.format}, {target.stat().st_size / 1e6:.2f} MB) in {time.monotonic() - started:.0f} s. "
          f"Parity: {parity.summary()}.")


TABLE_HEADER = ("| network | data set | format | test images | batch sizes | max abs logit diff | top-1 agreement | "
                "checkpoint acc | exported acc | checkpoint sha256 |\n|---|---|---|---|---|---|---|---|---|---|")


def parity_table(records: Sequence[Path]) -> str:
    """The docs' parity table, one row per `<file>.parity.json` that `export` wrote (`python -m mnist_cifar.export.write
    <json> ...`): figures copied from a command's output, never typed."""
    rows = [TABLE_HEADER]
    for path in records:
        r = json.loads(Path(path).read_text())
        rows.append(f"| {r['network']} | {r['data_set']} | {r['format']} | {r['images']:,} | "
                    f"{', '.join(map(str, r['batch_sizes']))} | {r['max_difference']:.2e} | {r['agreement']:.2%} | "
                    f"{r['checkpoint_accuracy']:.2%} | {r['exported_accuracy']:.2%} | {r['checkpoint_sha256'][:12]} |")
    return "\n".join(rows)



if __name__ == "__main__":
    print(parity_table([Path(a) for a in sys.argv[1:]]))
