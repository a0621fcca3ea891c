"""Run an exported file (`python main.py export`) without the codebase's training stack, and `predict` with it:
`python main.py predict --ckpt_path model.onnx --data.predict_path my_digits/` (or a .pt2).

The file says what it takes and what its classes are (its metadata), so no config or checkpoint is needed: images
are read and resized as `predict` reads them (`mnist_cifar.data.user_images`), given to the file as uint8, and the
CSV has `predict`'s columns. Without `--data.predict_path` it predicts the test split of its data set, read from
`--data.data_dir`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from mnist_cifar.errors import UserFacingError

EXTRA = "pip install -e '.[export]'"
SUFFIXES = {"onnx": ".onnx", "exported_program": ".pt2"}
METADATA_FILE = "mnist_cifar.json"  # inside a .pt2 (torch.export.save's extra_files)
# The raw image shapes of the data sets this project knows, by name (a test keeps it equal to the DataModules'),
# so an exported file cannot declare an input that makes `predict` allocate what it likes.
KNOWN_INPUT_SHAPES = {(1, 28, 28): "MNIST", (3, 32, 32): "CIFAR-10"}
MAX_CLASS_NAME = 100


class ExportedModel:
    """An exported file as a function of uint8 `(N, C, H, W)` batches: onnxruntime for .onnx, torch for .pt2."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        self.path = path
        self.session = None
        if path.suffix == ".onnx":
            try:
                import onnxruntime
            except ImportError:
                raise UserFacingError(f"Running {path} needs onnxruntime, which is not installed: {EXTRA}.") from None
            options = onnxruntime.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        else:
            extra = {METADATA_FILE: ""}
            self.module = torch.export.load(str(path), extra_files=extra).module()
            self.metadata = json.loads(extra[METADATA_FILE] or "{}")

    def __call__(self, images: Tensor) -> Tensor:
        if self.session is not None:
            return torch.from_numpy(self.session.run(["logits"], {"images": images.numpy()})[0])
        with torch.no_grad():
            return self.module(images)

    @property
    def classes(self) -> list[str]:
        return json.loads(self.metadata["class_names"])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(json.loads(self.metadata["input_shape"]))

    def check_metadata(self) -> None:
        """Refuse, in one paragraph, metadata that this project would not have written: class names that are not as
        many unique short texts as the file has logits, an input shape of no data set this project knows."""
        try:
            classes, shape = self.classes, self.input_shape
        except (ValueError, TypeError) as error:
            raise self._bad(f"its class_names or input_shape are not JSON lists ({error})") from None
        if not (isinstance(classes, list) and classes and all(isinstance(c, str) and 0 < len(c) <= MAX_CLASS_NAME
                                                               for c in classes)):
            raise self._bad(f"its class_names must be a list of names of 1-{MAX_CLASS_NAME} characters")
        if len(set(classes)) != len(classes):
            raise self._bad(f"its {len(classes)} class names are not all different (each is a column of the CSV)")
        if shape not in KNOWN_INPUT_SHAPES:
            raise self._bad(f"its input shape {list(shape)} is none of the data sets this project knows "
                            f"({', '.join(f'{n} {list(s)}' for s, n in KNOWN_INPUT_SHAPES.items())})")
        try:
            width = self(torch.zeros(1, *shape, dtype=torch.uint8)).shape
        except Exception as error:  # noqa: BLE001 (the file's own graph failing on its declared input)
            raise self._bad(f"it fails on one image of its declared shape ({type(error).__name__})") from None
        if tuple(width) != (1, len(classes)):
            raise self._bad(f"it gives {tuple(width)[1:]} logits per image for {len(classes)} class names")

    def _bad(self, why: str) -> UserFacingError:
        return UserFacingError(f"{self.path} does not hold what `python main.py export` writes: {why}. It was edited or "
                               f"made elsewhere, so nothing was predicted. Export the checkpoint again with "
                               f"`python main.py export --ckpt_path <checkpoint>`.")


def open_exported(path: Path, threads: int | None = None) -> ExportedModel:
    """The file, or a one-paragraph error when it is missing or not an export of this codebase."""
    if not path.is_file():
        raise UserFacingError(f"The exported file {path} does not exist. Make one with `python main.py export "
                              f"--ckpt_path <checkpoint>` (it goes to <run>/export/).")
    try:
        model = ExportedModel(path, threads)
    except UserFacingError:
        raise
    except Exception as error:
        raise UserFacingError(f"{path} cannot be opened as an exported {path.suffix} file ({type(error).__name__}: "
                              f"{str(error).splitlines()[0] if str(error) else 'no details'}). It may be truncated; "
                              f"export the checkpoint again.") from error
    if not {"class_names", "input_shape", "data_set"} <= set(model.metadata):
        raise UserFacingError(f"{path} holds no mnist_cifar metadata (class names, input shape): it was not written "
                              f"by `python main.py export`. Export the checkpoint with it.")
    model.check_metadata()
    return model


def exported_file_in(argv: Sequence[str]) -> bool:
    """Whether `--ckpt_path` names an exported file rather than a checkpoint."""
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--ckpt_path=") else None
        if arg == "--ckpt_path" and i + 1 < len(argv):
            value = argv[i + 1]
        if value is not None:
            return Path(value).suffix in SUFFIXES.values()
    return False


def run_without_the_trainer(argv: Sequence[str]) -> None:
    """`export`, and `predict` with an exported file, which need no LightningCLI: run them and exit; else return."""
    if argv[:1] == ["export"]:
        from mnist_cifar.export import main as export_main

        export_main(argv[1:])
        raise SystemExit(0)
    if argv[:1] == ["predict"] and exported_file_in(argv[1:]):
        main(argv[1:])
        raise SystemExit(0)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python main.py predict --ckpt_path <file>.onnx|.pt2",
        description="Predict with an exported file (python main.py export): one CSV row per image, as predict writes.")
    parser.add_argument("--ckpt_path", required=True, help="the exported .onnx or .pt2 file")
    parser.add_argument("--data.predict_path", dest="predict_path", help="an image file or a folder of them")
    parser.add_argument("--data.data_dir", dest="data_dir", help="without predict_path: where the test split is")
    parser.add_argument("--output", help="the CSV; default <file>.predictions.csv beside the file")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--num_threads", type=int, help="CPU threads for onnxruntime / torch")
    return parser.parse_args(list(argv))


def predict(args: argparse.Namespace) -> str:
    """Write the CSV; returns the line that says where."""
    from mnist_cifar.data.user_images import read_user_images
    from mnist_cifar.prediction_writer import prediction_row, write_csv

    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    model = open_exported(Path(args.ckpt_path).expanduser(), args.num_threads)
    classes = model.classes
    if args.predict_path:
        found = read_user_images(Path(args.predict_path).expanduser(), model.input_shape)
        images, sources, truths, unreadable = found.images, found.sources, None, found.unreadable
    else:
        images, labels = _test_split(model, args.data_dir)
        sources, truths, unreadable = [f"test[{i}]" for i in range(len(labels))], labels.tolist(), []
    rows = []
    for start in range(0, len(images), args.batch_size):
        probabilities = model(images[start : start + args.batch_size]).float().softmax(-1)
        for offset, p in enumerate(probabilities):
            index = start + offset
            truth = classes[truths[index]] if truths is not None else ""
            rows.append(prediction_row(sources[index], p, classes, truth))
    output = Path(args.output) if args.output else model.path.with_name(model.path.name + ".predictions.csv")
    return write_csv(output, rows, classes, unreadable)


def _test_split(model: ExportedModel, data_dir: str | None) -> tuple[Tensor, Tensor]:
    from mnist_cifar.data import CIFAR10DataModule, MNISTDataModule

    modules = {module.name: module for module in (MNISTDataModule, CIFAR10DataModule)}  # a name, never an import
    name = model.metadata["data_set"]
    if name not in modules:
        raise UserFacingError(f"{model.path} was exported from a {name!r} run, whose test split this command cannot "
                              f"read: give --data.predict_path with the images to predict.")
    data = modules[name](data_dir=data_dir)
    data.prepare_data()
    return data.stored_split("test")


def main(argv: Sequence[str]) -> None:
    try:
        print(predict(parse(argv)))
    except UserFacingError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
