"""How checkpoints reach the disk and come back: atomically, with a content hash, never with non-finite weights.

Lightning's own writer can leave a half-written `last.ckpt` when the process is killed or the disk fills
during a save. `AtomicCheckpointIO` (the Trainer's `plugins` in default.yaml) writes to a temporary file in
the destination folder, fsyncs it, renames it over the old file and fsyncs the folder: a kill at any moment
leaves either the old checkpoint or the new one, whole. Each checkpoint carries the SHA-256 of its content
(`content_sha256`: every tensor's dtype, shape and bytes and every other value, in key order), checked on
every load, so a flipped bit, a truncated file or a mixed-up file is refused with its name instead of
loading wrong weights. Loads stay `weights_only`.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_warn

from mnist_cifar.errors import CheckpointError
from mnist_cifar.files import atomic_write_bytes

HASH_KEY = "content_sha256"


def content_hash(checkpoint: Mapping[str, Any]) -> str:
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in checkpoint.items() if k != HASH_KEY})
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"tensor {tensor.dtype} {tuple(tensor.shape)}:".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    elif isinstance(value, Mapping):
        digest.update(f"dict {len(value)}:".encode())
        for key in sorted(value, key=repr):
            digest.update(f"{key!r}=".encode())
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"{type(value).__name__} {len(value)}:".encode())
        for item in value:
            _feed(digest, item)
    else:
        digest.update(f"{type(value).__name__} {value!r};".encode())


def verify(checkpoint: Mapping[str, Any], path: str) -> None:
    """Raise `CheckpointError` when the checkpoint's content is not what was written (checkpoints without a
    hash, made before it existed or by other tools, are accepted as they are)."""
    expected = checkpoint.get(HASH_KEY)
    if expected is not None and content_hash(checkpoint) != expected:
        raise CheckpointError(
            f"The checkpoint {path} is damaged: its content no longer matches the SHA-256 recorded when it was "
            f"saved (a flipped bit, a partial copy or an edited file). Use another checkpoint of the run (the "
            f"best epoch*.ckpt or last.ckpt in the same folder) or copy this one again from where it was made."
        )


def state_dict_mismatch(expected: Mapping[str, torch.Tensor], found: Mapping[str, Any]) -> str:
    """What differs between a network's state_dict and a checkpoint's, in a few words; "" when they fit."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [f"{k} is {tuple(found[k].shape)} in the checkpoint, {tuple(v.shape)} in the network"
              for k, v in expected.items() if k in found and isinstance(found[k], torch.Tensor) and found[k].shape != v.shape]
    parts = [f"{len(missing)} weight(s) missing ({', '.join(missing[:3])})" if missing else "",
             f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])})" if unexpected else "",
             "; ".join(shapes[:3])]
    return "; ".join(part for part in parts if part)


def non_finite_weights(checkpoint: Mapping[str, Any]) -> list[str]:
    return [name for name, tensor in checkpoint.get("state_dict", {}).items()
            if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all()]


def atomic_save(checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
    """Write `checkpoint` with its content hash to `path` so that `path` is always a whole checkpoint."""
    bad = non_finite_weights(checkpoint)
    if bad:
        raise CheckpointError(
            f"Refusing to save {path}: the weights {', '.join(bad[:3])} hold NaN or infinite values, so the run has "
            f"diverged. Lower the learning rate or clip gradients (--trainer.gradient_clip_val 1.0), and restart "
            f"from the last good checkpoint."
        )
    checkpoint[HASH_KEY] = content_hash(checkpoint)
    target = Path(path)
    buffer = io.BytesIO()  # serialized first, so a full disk is an OSError of our own write, of a known size
    torch.save(checkpoint, buffer)
    try:
        atomic_write_bytes(target, buffer.getbuffer())
    except OSError as error:
        if error.errno in NO_ROOM:
            raise no_room_error(target, buffer.getbuffer().nbytes, error) from None
        raise


NO_ROOM = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def no_room_error(target: Path, size: int, error: OSError) -> CheckpointError:
    """One paragraph for a save that did not fit: where, how much, what is kept, what to do."""
    free = shutil.disk_usage(target.parent).free
    why = ("a file-size limit stops the write (ulimit -f)" if error.errno == errno.EFBIG
           else "the disk quota is used up" if error.errno == errno.EDQUOT else "the disk is full")
    return CheckpointError(
        f"Could not save the checkpoint {target.name} in {target.parent.resolve()}: {why} ({error.strerror}). It needs "
        f"{size / 1e6:.1f} MB and {free / 1e6:.1f} MB are free there. Nothing was lost: saves are atomic, so every "
        f"checkpoint already in that folder (last.ckpt among them) is whole. Free "
        f"space there (or raise the limit), or write the run elsewhere with --trainer.logger.init_args.save_dir, then "
        f"continue with --ckpt_path last."
    )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint plugin with atomic, hashed saves, which deletes only what it wrote.

    Loads are verified once, where every load of a classifier ends: `ImageClassifier.on_load_checkpoint` (Trainer
    restores and `load_from_checkpoint` alike). Removal is Lightning's one way to delete (a superseded best or
    top-k checkpoint, the previous `last.ckpt`): here it removes a single `.ckpt` file, never a URL or a folder,
    and only in a folder this process has saved a checkpoint into (the run's own resolved `checkpoints/`),
    whatever paths a restored checkpoint named and whatever the current folder is."""

    def __init__(self) -> None:
        super().__init__()
        self.folders_written: set[Path] = set()

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        atomic_save(checkpoint, path)
        self.folders_written.add(Path(os.path.abspath(path)).parent.resolve())

    def remove_checkpoint(self, path: Any) -> None:
        text = os.fspath(path)
        file = Path(os.path.abspath(Path(text).expanduser())) if "://" not in text else None
        if file is None or file.suffix != ".ckpt" or file.parent.resolve() not in self.folders_written or \
                (file.exists() and not (file.is_file() or file.is_symlink())):
            rank_zero_warn(f"Not removing {text}: a run removes only the .ckpt files it saved in its own checkpoints "
                           f"folder ({', '.join(map(str, sorted(self.folders_written))) or 'none yet'}).")
            return
        file.unlink(missing_ok=True)
