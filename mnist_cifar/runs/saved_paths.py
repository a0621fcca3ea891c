"""The checkpoint paths a resumed run's `ModelCheckpoint` restores: kept only where they name its own files.

Lightning restores `best_model_path` (always), and the top-k, k-th best and last paths when the saved
`dirpath` equals today's as text; it later deletes the previous best without asking where it is (a URL such
as `local:///x` skips even its own folder check). So before the callbacks load their state, each saved path
is either moved onto the run's checkpoint folder as it is spelled today — when the checkpoint being resumed
lies in that folder and the path names a `.ckpt` file directly in the folder the run saved into — or
dropped. That also keeps the best-checkpoint tracking across symlinks, a moved run folder and another
current folder, where the text of the saved `dirpath` no longer matches.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint

PATH_KEYS = ("best_model_path", "last_model_path", "kth_best_model_path")


def _same_folder(file: str, folder: str) -> bool:
    return Path(os.path.abspath(file)).parent.resolve() == Path(folder).resolve()


def _moved(path: Any, saved_dir: Any, target: str | None) -> str | None:
    """`path` re-spelled inside `target`, or None when it is not a `.ckpt` directly in the saved folder."""
    if target is None or not isinstance(path, str) or not isinstance(saved_dir, str):
        return None
    if "://" in path or "://" in saved_dir or not path.endswith(".ckpt"):
        return None
    if os.path.dirname(os.path.normpath(path)) != os.path.normpath(saved_dir):
        return None
    return os.path.join(target, os.path.basename(path))


def adopt_saved_paths(checkpoint: dict, loaded_from: str | None, callbacks: Iterable[ModelCheckpoint]) -> list[str]:
    """Move or drop every saved path of every `ModelCheckpoint` state in `checkpoint`; returns the dropped ones."""
    by_key = {callback.state_key: callback for callback in callbacks}
    dropped: list[str] = []
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if not isinstance(state, dict) or not any(k in state for k in (*PATH_KEYS, "best_k_models")):
            continue
        callback = by_key.get(key)
        target = callback.dirpath if callback is not None else None
        if target is None or "://" in str(target) or loaded_from is None or not _same_folder(loaded_from, target):
            target = None  # not resumed from inside the folder this run saves into: nothing to adopt
        saved_dir = state.get("dirpath")
        for name in PATH_KEYS:
            path = state.get(name)
            if isinstance(path, str) and path:
                moved = _moved(path, saved_dir, target)
                if moved is None:
                    dropped.append(path)
                state[name] = moved or ""
        top_k = state.get("best_k_models")
        if isinstance(top_k, dict):
            kept = {}
            for path, score in top_k.items():
                moved = _moved(path, saved_dir, target)
                if moved is None:
                    dropped.append(str(path))
                else:
                    kept[moved] = score
            state["best_k_models"] = kept
        state["dirpath"] = target  # None when nothing was adopted: Lightning then restores no tracking
    return dropped
