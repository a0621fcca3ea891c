"""An exported file (`python main.py export`) as a function of uint8 images, without the training stack: onnxruntime
for .onnx, torch for .pt2, and the metadata that says what it takes and what its classes are."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from mnist_cifar.errors import UserFacingError

EXTRA = "pip install -e '.[export]'"
SUFFIXES = {"onnx": ".onnx", "exported_program": ".pt2"}
METADATA_FILE = "mnist_cifar.json"  # inside a .pt2 (torch.export.save's extra_files)
# The raw image shapes of the data sets this project knows, by name (a test keeps it equal to the DataModules'),
# so an exported file cannot declare an input that makes `predict` allocate what it likes.
KNOWN_INPUT_SHAPES = {(1, 28, 28): "MNIST and Fashion-MNIST", (3, 32, 32): "CIFAR-10"}
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
