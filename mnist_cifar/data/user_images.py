"""The user's own image files, for `predict`: any size, format or colour, converted to the data set's shape.

Each readable image is decoded in the data set's colour mode (grayscale for MNIST, RGB for CIFAR-10) and
resized to its height x width, as the notes' last step does before asking a trained network. A file that
is not a readable image is set aside with the reason, so one bad file never stops the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms.v2.functional import resize

from mnist_cifar.errors import DataNotFoundError


@dataclass
class UserImages:
    images: Tensor  # uint8 (N, C, H, W)
    sources: list[str] = field(default_factory=list)  # the file of each image
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (file, why)


def list_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataNotFoundError(
            f"--data.predict_path {path} does not exist. Point it at an image file or a folder of images."
        )
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DataNotFoundError(f"The folder {path} (--data.predict_path) holds no files to predict.")
    return files


def read_user_images(path: Path, image_shape: tuple[int, int, int]) -> UserImages:
    channels, height, width = image_shape
    mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY
    result = UserImages(images=torch.empty((0, *image_shape), dtype=torch.uint8))
    decoded = []
    for file in list_files(path):
        try:
            image = decode_image(read_file(str(file)), mode=mode)
        except Exception as error:
            result.unreadable.append((str(file), f"not a readable image ({type(error).__name__})"))
            continue
        decoded.append(resize(image, [height, width], antialias=True))
        result.sources.append(str(file))
    if not decoded:
        raise DataNotFoundError(
            f"None of the {len(result.unreadable)} file(s) under {path} (--data.predict_path) is a readable image "
            f"(PNG, JPEG, GIF or WebP): {', '.join(f for f, _ in result.unreadable[:5])}."
        )
    result.images = torch.stack(decoded)
    return result
