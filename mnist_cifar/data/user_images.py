"""The user's own image files, for `predict`: any size, format or colour, converted to the data set's shape.

Each file is decoded on its own (Pillow), converted to RGB (a gray file stays gray), turned into one luma channel
for a grayscale data set (the same `rgb_to_grayscale` the data sets use) and resized to the data set's height x width,
as the notes' last
step does before asking a trained network; only the small resized image is kept, so memory stays bounded by
the largest single file. Palette, 16-bit, CMYK and alpha images are converted; an animated GIF is read by its
first frame. A file that is not a readable image is set aside with the specific reason, so one bad file never
stops the others.
"""

from __future__ import annotations

import errno
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torchvision.transforms.v2.functional import resize, rgb_to_grayscale

from mnist_cifar.errors import DataNotFoundError

MAX_PIXELS = 100_000_000  # 10000 x 10000; a larger file is named as too large instead of exhausting memory
WIDE_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}  # more than 8 bits per pixel


class UnreadableImage(Exception):
    """Why one file cannot be predicted, in words for the CSV's `error` column."""


@dataclass
class UserImages:
    images: Tensor  # uint8 (N, C, H, W)
    sources: list[str] = field(default_factory=list)  # the file of each image
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (file, why)


def list_files(path: Path) -> list[Path]:
    """Every entry under `path` that is not a folder (broken and looping links included, to be named)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataNotFoundError(
            f"--data.predict_path {path} does not exist. Point it at an image file or a folder of images."
        )
    files = sorted(p for p in path.rglob("*") if not p.name.startswith(".") and not _is_dir(p))
    if not files:
        raise DataNotFoundError(f"The folder {path} (--data.predict_path) holds no files to predict.")
    return files


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def decode(file: Path, image_shape: tuple[int, int, int]) -> Tensor:
    """One file as a uint8 `image_shape` tensor, or `UnreadableImage` saying why not."""
    try:
        size = file.stat().st_size
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnreadableImage("a symbolic link loop") from error
        if file.is_symlink():
            raise UnreadableImage("a broken symbolic link (its target does not exist)") from error
        raise UnreadableImage(f"cannot be read ({error.strerror})") from error
    if size == 0:
        raise UnreadableImage("an empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # MAX_PIXELS is our own limit
            image = Image.open(file)
        with image:
            if image.width * image.height > MAX_PIXELS:
                raise UnreadableImage(f"too large ({image.width}x{image.height} pixels, over {MAX_PIXELS:,}): "
                                      f"downscale it first")
            image.seek(0)  # an animated GIF or WebP: its first frame
            pixels = _pixels(image)
    except UnidentifiedImageError as error:
        head = file.read_bytes()[:8]
        raise UnreadableImage(f"not an image file (it starts with the bytes {head!r}, which no image format "
                              f"Pillow reads does)") from error
    except Image.DecompressionBombError as error:
        raise UnreadableImage(f"too large to decode safely ({error})") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise UnreadableImage(f"truncated or damaged image data ({error})") from error
    tensor = torch.from_numpy(pixels).permute(2, 0, 1)
    if image_shape[0] == 1 and tensor.shape[0] == 3:
        tensor = rgb_to_grayscale(tensor)
    elif image_shape[0] == 3 and tensor.shape[0] == 1:
        tensor = tensor.expand(3, -1, -1)
    return resize(tensor, list(image_shape[1:]), antialias=True).contiguous()


def _pixels(image: Image.Image) -> np.ndarray:
    """The decoded frame as an 8-bit `(H, W, C)` array: one channel for a gray image, else RGB.

    16-bit and float images are scaled to 8 bits, not clipped; a gray image stays gray (no round trip through RGB).
    """
    if image.mode in WIDE_MODES:
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        if image.mode == "F":
            top = max(float(values.max()), 1e-12)
        return np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)[..., None]
    if image.mode in ("1", "L", "LA"):
        return np.array(image.convert("L"))[..., None]  # a writable copy, as torch.from_numpy wants
    return np.array(image.convert("RGB"))


def read_user_images(path: Path, image_shape: tuple[int, int, int]) -> UserImages:
    result = UserImages(images=torch.empty((0, *image_shape), dtype=torch.uint8))
    decoded = []
    for file in list_files(path):
        try:
            decoded.append(decode(file, image_shape))
        except UnreadableImage as why:
            result.unreadable.append((str(file), str(why)))
            continue
        result.sources.append(str(file))
    if not decoded:
        raise DataNotFoundError(
            f"None of the {len(result.unreadable)} file(s) under {path} (--data.predict_path) is a readable image: "
            + "; ".join(f"{file}: {why}" for file, why in result.unreadable[:5]) + "."
        )
    result.images = torch.stack(decoded)
    return result
