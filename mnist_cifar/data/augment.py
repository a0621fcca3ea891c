"""Batched augmentation and normalization on uint8 image tensors, on whatever device they live.

These replace torchvision's per-sample PIL transforms on the training hot path: one call handles a
whole batch, on the CPU or after transfer to the GPU. Randomness comes from torch's global generator,
so `seed_everything` makes a run repeatable while each epoch still draws new crops and flips.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def random_crop(images: Tensor, padding: int) -> Tensor:
    """Zero-pad by `padding` on every side, then crop each image back to its size at a random offset.

    Same distribution as `torchvision.transforms.RandomCrop(size, padding=padding)` applied per image.
    """
    if padding <= 0:
        return images
    n, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, n, 1), device=images.device)
    rows = offsets[0] + torch.arange(h, device=images.device)  # (n, h)
    cols = offsets[1] + torch.arange(w, device=images.device)  # (n, w)
    # Two gathers (rows, then columns) instead of one 4-index lookup: the same pixels, half the time on the CPU.
    picked_rows = padded.gather(2, rows[:, None, :, None].expand(n, c, h, padded.shape[3]))
    return picked_rows.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def random_horizontal_flip(images: Tensor, p: float = 0.5) -> Tensor:
    flip = torch.rand(images.shape[0], device=images.device) < p
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def normalize(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 `(N, C, H, W)` to float32, scaled to [0, 1] then standardized per channel like `ToTensor` + `Normalize`."""
    return (images.float().div_(255) - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def resize(images: Tensor, side: int | None) -> Tensor:
    """Float images to `side` x `side` pixels, bilinear (`side` None: unchanged). Bilinear weights sum to one, so
    resizing after the per-channel normalization equals normalizing the resized image (d2l resizes the PIL image
    first: the same up to its rounding to 8 bits)."""
    if side is None or tuple(images.shape[-2:]) == (side, side):
        return images
    return F.interpolate(images, size=(side, side), mode="bilinear", align_corners=False, antialias=False)


def permute_pixels(images: Tensor, permutation: Tensor) -> Tensor:
    """Move every image's pixel positions by one fixed permutation (the same one for all channels)."""
    return images.flatten(2)[:, :, permutation].view_as(images)


def flip_translate_logits(net: Callable[[Tensor], Tensor], images: Tensor) -> Tensor:
    """airbench's test-time augmentation (its level 2): the mean of the logits of the image and its mirror, averaged
    half and half with those of the image shifted one pixel up-left and one pixel down-right (reflect-padded)."""

    def mirrored(x: Tensor) -> Tensor:
        return 0.5 * net(x) + 0.5 * net(x.flip(-1))

    h, w = images.shape[-2:]
    padded = F.pad(images, (1, 1, 1, 1), mode="reflect")
    shifted = 0.5 * mirrored(padded[..., :h, :w]) + 0.5 * mirrored(padded[..., 2:, 2:])
    return 0.5 * mirrored(images) + 0.5 * shifted
