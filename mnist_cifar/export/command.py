"""`export`, and `predict` with an exported file: the commands that run without LightningCLI or the Trainer.

`python main.py predict --ckpt_path model.onnx --data.predict_path my_digits/` (or a .pt2): the file says what it
takes and what its classes are (its metadata), so no config or checkpoint is needed: images are read and resized as
`predict` reads them (`mnist_cifar.data.user_images`), given to the file as uint8, and the CSV has `predict`'s
columns. Without `--data.predict_path` it predicts the test split of its data set, read from `--data.data_dir`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from mnist_cifar.errors import UserFacingError, exits_on_user_errors
from mnist_cifar.export.exported import SUFFIXES, ExportedModel, open_exported


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
        from mnist_cifar.export.write import main as export_main

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
    from mnist_cifar.reporting.predictions import prediction_row, write_csv

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
    from mnist_cifar.data import CIFAR10DataModule, FashionMNISTDataModule, MNISTDataModule

    known = (MNISTDataModule, FashionMNISTDataModule, CIFAR10DataModule)
    modules = {module.name: module for module in known}  # chosen by a name, never an import
    name = model.metadata["data_set"]
    if name not in modules:
        raise UserFacingError(f"{model.path} was exported from a {name!r} run, whose test split this command cannot "
                              f"read: give --data.predict_path with the images to predict.")
    data = modules[name](data_dir=data_dir)
    data.prepare_data()
    return data.stored_split("test")


def main(argv: Sequence[str]) -> None:
    with exits_on_user_errors():
        print(predict(parse(argv)))
