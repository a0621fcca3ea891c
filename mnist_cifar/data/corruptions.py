"""Corrupted copies of a test split, regenerated here: CIFAR-10-C's algorithms and severities, not its files.

Hendrycks & Dietterich (2019) publish CIFAR-10-C as files made by `make_cifar_c.py` (hendrycks/robustness); they
cannot be downloaded here, so the corruptions are computed from the test split instead, with that script's
parameters for 32x32 images (severity 1-5), batched in torch and seeded by the corruption and severity: the same
images every time, on every machine with the same torch. They are *a regenerated copy*, not the published
files: the noise draws differ from Hendrycks', so figures are comparable in kind, not digit for digit.

Implemented (CIFAR-10-C's names): the four noises, Gaussian and defocus blur, contrast, brightness, saturation (RGB
only), JPEG and pixelation. Not implemented, because they need assets or libraries this project does not carry
(ImageMagick for motion blur, frost photographs, plasma fractals for fog) or per-pixel Python loops (glass blur):
glass, motion and zoom blur, fog, frost, snow, spatter and the elastic transform. Grayscale images (MNIST,
Fashion-MNIST) get the same algorithms on their one channel; MNIST-C (Mu & Gilmer, 2019) is a different set
(shear, rotation, stripes, zigzags, ...) and is not what this is. The maintained package `imagecorruptions`
installs from PyPI but implements ImageNet-C's parameters for 224-pixel images (its severities are wrong for 28-32
pixels) and depends on OpenCV and scikit-image, per image in NumPy; hence these few lines of torch instead.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.v2.functional import jpeg

SEVERITIES = (1, 2, 3, 4, 5)


def _noise_generator(name: str, severity: int) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(f"{name}:{severity}".encode()))


def gaussian_noise(x: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    c = [0.04, 0.06, 0.08, 0.09, 0.10][severity - 1]
    return x + c * torch.randn(x.shape, generator=generator)


def shot_noise(x: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    c = [500, 250, 100, 75, 50][severity - 1]
    return torch.poisson(x * c, generator=generator) / c


def impulse_noise(x: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """Salt and pepper on a share `c` of the values (scikit-image's `random_noise(mode="s&p")`, half each)."""
    c = [0.01, 0.02, 0.03, 0.05, 0.07][severity - 1]
    hit = torch.rand(x.shape, generator=generator) < c
    salt = torch.rand(x.shape, generator=generator) < 0.5
    return torch.where(hit, salt.to(x.dtype), x)


def speckle_noise(x: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    c = [0.06, 0.1, 0.12, 0.16, 0.2][severity - 1]
    return x + x * c * torch.randn(x.shape, generator=generator)


def _gaussian_kernel(sigma: float, truncate: float = 4.0) -> Tensor:
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return (kernel / kernel.sum()).float()


def _filter(x: Tensor, kernel: Tensor, mode: str) -> Tensor:
    """`x` (N, C, H, W) filtered per channel by a 2-D `kernel`, padded by `mode` (torch's names)."""
    channels, (kh, kw) = x.shape[1], kernel.shape
    padded = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2), mode=mode)
    return F.conv2d(padded, kernel.expand(channels, 1, kh, kw), groups=channels)


def gaussian_blur(x: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """scikit-image's `gaussian(sigma=c)`: radius 4 sigma, edges repeated (mode "nearest")."""
    c = [0.4, 0.6, 0.7, 0.8, 1.0][severity - 1]
    line = _gaussian_kernel(c)
    return _filter(x, line[:, None] * line[None, :], "replicate")


def _disk(radius: float, alias_blur: float) -> Tensor:
    """`make_cifar_c.disk`: a 17x17 aliased disk, normalized, then smoothed by a 3x3 Gaussian (OpenCV's)."""
    span = torch.arange(-8, 9, dtype=torch.float32)
    x, y = torch.meshgrid(span, span, indexing="xy")
    disk = ((x**2 + y**2) <= radius**2).float()
    disk /= disk.sum()
    line = torch.exp(-0.5 * (torch.arange(-1.0, 2.0) / alias_blur) ** 2)
    line /= line.sum()
    return _filter(disk[None, None], line[:, None] * line[None, :], "reflect")[0, 0]


def defocus_blur(x: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    c = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)][severity - 1]
    return _filter(x, _disk(*c), "reflect")  # OpenCV's filter2D border: reflect without the edge (torch's "reflect")


def contrast(x: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    c = [0.75, 0.5, 0.4, 0.3, 0.15][severity - 1]
    means = x.mean(dim=(2, 3), keepdim=True)
    return (x - means) * c + means


def brightness(x: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """HSV value + c, hue and saturation kept: every channel scales by v'/v (a black pixel turns gray)."""
    c = [0.05, 0.1, 0.15, 0.2, 0.3][severity - 1]
    value = x.amax(dim=1, keepdim=True)
    brighter = (value + c).clamp(0, 1)
    return torch.where(value > 0, x * brighter / value.clamp(min=1e-12), brighter.expand_as(x))


def saturate(x: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """HSV saturation * a + b, hue and value kept (RGB only: a gray image has no saturation to change)."""
    a, b = [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)][severity - 1]
    value, low = x.amax(dim=1, keepdim=True), x.amin(dim=1, keepdim=True)
    saturation = torch.where(value > 0, (value - low) / value.clamp(min=1e-12), torch.zeros_like(value))
    new = (saturation * a + b).clamp(0, 1)
    scaled = value - (value - x) * new / saturation.clamp(min=1e-12)
    hueless = torch.cat((value, value * (1 - new), value * (1 - new)), dim=1)  # scikit-image's hue 0 for gray
    return torch.where(saturation > 0, scaled, hueless)


def jpeg_compression(x: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    c = [80, 65, 58, 50, 40][severity - 1]
    return jpeg(_to_uint8(x), quality=c).float() / 255


def pixelate(x: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """Down to c of the side and back up with area averaging (PIL's BOX filter, both ways)."""
    c = [0.95, 0.9, 0.85, 0.75, 0.65][severity - 1]
    height, width = x.shape[-2:]
    small = F.interpolate(x, size=(int(height * c), int(width * c)), mode="area")
    return F.interpolate(small, size=(height, width), mode="area")


CORRUPTIONS: dict[str, Callable[[Tensor, int, torch.Generator], Tensor]] = {
    "gaussian_noise": gaussian_noise, "shot_noise": shot_noise, "impulse_noise": impulse_noise,
    "speckle_noise": speckle_noise, "gaussian_blur": gaussian_blur, "defocus_blur": defocus_blur,
    "contrast": contrast, "brightness": brightness, "saturate": saturate, "jpeg_compression": jpeg_compression,
    "pixelate": pixelate,
}
RGB_ONLY = {"saturate"}


def available(channels: int) -> list[str]:
    """The corruptions that exist for images of `channels` channels."""
    return [name for name in CORRUPTIONS if channels == 3 or name not in RGB_ONLY]


def _to_uint8(x: Tensor) -> Tensor:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def corrupt(images: Tensor, name: str, severity: int, chunk: int = 2048) -> Tensor:
    """`images` (uint8, N x C x H x W) with corruption `name` at `severity`, as uint8: the same for the same input,
    computed in chunks in a fixed order (so the draws do not depend on memory or threads)."""
    if name not in CORRUPTIONS or severity not in SEVERITIES:
        raise ValueError(f"unknown corruption {name!r} or severity {severity}")
    generator = _noise_generator(name, severity)
    parts = [_to_uint8(CORRUPTIONS[name](images[i : i + chunk].float() / 255, severity, generator))
             for i in range(0, len(images), chunk)]
    return torch.cat(parts) if parts else images.clone()


def severity_mean(accuracies: dict[tuple[str, int], float]) -> float:
    """The mean corruption accuracy over every (corruption, severity) measured (CIFAR-10-C's headline figure)."""
    return math.fsum(accuracies.values()) / len(accuracies) if accuracies else float("nan")
