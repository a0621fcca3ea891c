"""Check a checkpoint path before Lightning opens it, so a wrong path fails with a message, not a traceback."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from mnist_cifar.checkpoint_io import verify
from mnist_cifar.errors import CheckpointError

# Values of --ckpt_path that Lightning resolves itself during fit.
SPECIAL_CKPT_PATHS = {"best", "last", "hpc", "registry"}
WHERE = "Checkpoints are saved as lightning_logs/<experiment>/version_<N>/checkpoints/*.ckpt (the best and last.ckpt)."


def check_checkpoint(path: str) -> None:
    """Raise `CheckpointError` unless `path` is a file holding a Lightning checkpoint (a dict with a state_dict)."""
    if path in SPECIAL_CKPT_PATHS or path.startswith("registry:"):
        return
    load_checkpoint(path)


def load_checkpoint(path: str) -> dict:
    """The checkpoint at `path` (memory-mapped, on the CPU), or a `CheckpointError` that says what is wrong."""
    file = Path(path).expanduser()
    if not file.is_file():
        what = "is a folder, not a file" if file.is_dir() else "does not exist"
        raise CheckpointError(f"The checkpoint {path} {what}. {WHERE} Pass one of them with --ckpt_path.")
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:
        raise CheckpointError(
            f"The checkpoint {path} cannot be read as a PyTorch checkpoint ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'no details'}). It may be truncated or not a checkpoint "
            f"at all. {WHERE} Pass one of them with --ckpt_path."
        ) from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(
            f"The file {path} is a PyTorch file but not a Lightning checkpoint (it has no 'state_dict'). {WHERE}"
        )
    verify(checkpoint, path)
    return checkpoint


TRUSTED_PACKAGES = ("mnist_cifar", "torch.nn", "torch.optim", "torchvision.models")
TRUST_ENV = "MNIST_CIFAR_TRUSTED_MODULES"
# Where to read data and write caches, and whether to download, are the user's choice (or the defaults), never the file's.
USER_ONLY_DATA_KEYS = ("data_dir", "cache_dir", "download", "predict_path")
LINKED_NET_KEYS = ("input_shape", "num_classes")  # main.py links these from the data set into the network
DOTTED_NAME = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")


def config_from_checkpoint(path: str, user_named: Iterable[str] = (), without_net: bool = False) -> dict:
    """The `model` and `data` config a checkpoint was trained with, read from its saved hyperparameters, as data.

    A checkpoint is a file from outside: its SHA-256 proves it is undamaged, not who made it. So the config it
    carries may name only classes of the trusted packages (`TRUSTED_PACKAGES`, the modules in the
    `MNIST_CIFAR_TRUSTED_MODULES` environment variable, or a class the user named on the command line or in a
    `--config`), checked before jsonargparse imports anything (`without_net`: the user gives `--model.net`, so the
    file's network is left out); its paths and `download` are dropped, so the
    user's values or the defaults apply; and a network's `weights` (pretrained weights to download) are not
    taken from it: the checkpoint's own weights replace them anyway.
    """
    checkpoint = load_checkpoint(path)
    config: dict = {}
    model = _model_config(checkpoint)
    named_net = model.get("net", {}).get("class_path") if isinstance(model.get("net"), dict) else None
    if without_net and named_net not in user_named:  # the user names another network: the file's is not read
        model.pop("net", None)
    net_args = model["net"].get("init_args") if isinstance(model.get("net"), dict) else None
    if isinstance(net_args, dict):
        for linked in LINKED_NET_KEYS:  # the CLI links them in from the data set again (the saved copy names them
            net_args.pop(linked, None)   # even for a user's network that does not take them)
        if "weights" in net_args:
            net_args["weights"] = None
    if model:
        config["model"] = model
    data = dict(checkpoint.get("datamodule_hyper_parameters", {}))
    if "_class_path" in data:
        config["data"] = {
            "class_path": data.pop("_class_path"),
            "init_args": {k: v for k, v in data.items() if not k.startswith("_") and k not in USER_ONLY_DATA_KEYS},
        }
    refuse_untrusted_names(config, path, set(user_named))
    return config


def refuse_untrusted_checkpoint(path: str) -> None:
    """For `ImageClassifier.load_from_checkpoint` from Python: the same rule as the CLI's, before Lightning rebuilds
    the network from the file's `class_path` (which imports it)."""
    refuse_untrusted_names({"model": _model_config(load_checkpoint(path))}, path, set())


def _model_config(checkpoint: dict) -> dict:
    """The classifier's saved hyperparameters, without LightningCLI's bookkeeping (`_instantiator`, `_class_path`)."""
    return {k: v for k, v in checkpoint.get("hyper_parameters", {}).items() if not k.startswith("_")}


def trusted_prefixes() -> tuple[str, ...]:
    extra = [m.strip() for m in os.environ.get(TRUST_ENV, "").split(",") if m.strip()]
    return (*TRUSTED_PACKAGES, *extra)


def is_trusted(name: str, user_named: set[str]) -> bool:
    return name in user_named or any(name == p or name.startswith(p + ".") for p in trusted_prefixes())


def dotted_names(value: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """(key, name) for every string in a config that reads as an import path: jsonargparse imports a
    `class_path`, and a plain string where a class or callable is expected, before it checks anything."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from dotted_names(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from dotted_names(item, f"{where}[{i}]")
    elif isinstance(value, str) and DOTTED_NAME.match(value):
        yield where, value


def refuse_untrusted_names(config: dict, path: str, user_named: set[str]) -> None:
    for key, name in dotted_names(config):
        if not is_trusted(name, user_named):
            raise CheckpointError(
                f"The checkpoint {path} names {name} (at {key}), which is outside the packages a checkpoint may "
                f"name ({', '.join(trusted_prefixes())}): a checkpoint is data and cannot choose what is imported, "
                f"so nothing was loaded. If the run used your own class, name it yourself: --{key.removesuffix('.class_path')} {name} on the "
                f"command line, a --config that names it, or {TRUST_ENV}={name.rpartition('.')[0]} in the environment."
            )


def user_named_classes(argv: Sequence[str]) -> set[str]:
    """Every dotted name the user typed (flags' values) or wrote in a `--config` file: what the user trusts."""
    named: set[str] = set()
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--") and "=" in arg else arg
        is_config = arg.startswith("--config=") or (i > 0 and argv[i - 1] == "--config")
        if is_config and Path(value).expanduser().is_file():
            try:
                content = yaml.safe_load(Path(value).expanduser().read_text())
            except (OSError, yaml.YAMLError):
                content = None
            named |= {name for _, name in dotted_names(content)}
        elif DOTTED_NAME.match(value):
            named.add(value)
    return named


PATH_KEYS = ("best_model_path", "last_model_path", "kth_best_model_path")


def confine_callback_paths(checkpoint: dict, folder: str | os.PathLike) -> list[str]:
    """Drop the saved checkpoint paths (ModelCheckpoint's best, last, k-th best and top-k) that do not resolve
    inside `folder`, the checkpoint's own folder; returns what was dropped.

    Lightning restores these and later deletes the previous best without checking where it is (it compares
    `absolute()` paths, so `<run>/checkpoints/../../x` passes): a crafted path would delete a folder outside the
    run. A dropped path only means the best-checkpoint tracking of that run restarts.
    """
    inside = Path(folder).resolve()
    dropped: list[str] = []

    def outside(candidate: Any) -> bool:
        if not isinstance(candidate, str) or not candidate:
            return False
        return inside not in Path(candidate).expanduser().resolve().parents

    for state in (checkpoint.get("callbacks") or {}).values():
        if not isinstance(state, dict):
            continue
        for key in PATH_KEYS:
            if outside(state.get(key)):
                dropped.append(state[key])
                state[key] = ""
        top_k = state.get("best_k_models")
        if isinstance(top_k, dict):
            for candidate in [c for c in top_k if outside(c)]:
                dropped.append(candidate)
                del top_k[candidate]
    return dropped


def run_folder_of(path: str) -> tuple[Path, str, str] | None:
    """(save_dir, name, version) of a checkpoint at `<save_dir>/<name>/<version>/checkpoints/x.ckpt`, else None."""
    file = Path(path).expanduser().resolve()
    if file.parent.name != "checkpoints" or len(file.parents) < 4:
        return None
    return file.parents[3], file.parents[2].name, file.parents[1].name


def find_last(save_dir: Path, name: str, version: str | int | None) -> Path:
    """The `last.ckpt` of run `version` of experiment `name`, or of its newest run that has one."""
    experiment = Path(save_dir).expanduser() / name
    if version is not None:
        candidates = [experiment / (version if isinstance(version, str) else f"version_{version}")]
    else:
        versions = [p for p in experiment.glob("version_*") if p.name.removeprefix("version_").isdigit()]
        candidates = sorted(versions, key=lambda p: int(p.name.removeprefix("version_")), reverse=True)
    for run in candidates:
        if (run / "checkpoints" / "last.ckpt").is_file():
            return run / "checkpoints" / "last.ckpt"
    where = candidates[0] if version is not None else experiment / "version_*"
    raise CheckpointError(
        f"--ckpt_path last found no checkpoint to resume: there is no {where}/checkpoints/last.ckpt. Start the run "
        f"without --ckpt_path, or pass the path of the checkpoint to resume from. {WHERE}"
    )


def logger_next_to(path: str) -> dict:
    """Log a `test`/`predict` of `<save_dir>/<name>/<version>/checkpoints/x.ckpt` as a new version of `<name>`.

    So the evaluation sits beside the run that made the checkpoint instead of under `lightning_logs/default`,
    and never inside that run's folder (whose config.yaml and events belong to the fit).
    """
    run = run_folder_of(path)
    if run is None:
        return {}
    return {"trainer": {"logger": {"init_args": {"save_dir": str(run[0]), "name": run[1]}}}}


def _ckpt_path_in(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--ckpt_path" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--ckpt_path="):
            return arg.split("=", 1)[1]
    return None


def with_checkpoint_config(argv: list[str]) -> list[str]:
    """For validate/test/predict with `--ckpt_path`, put the checkpoint's own config first in the arguments.

    So `python main.py test --ckpt_path X` needs no `--config`, and logs next to the run that made X; a
    `--config` or override given by the user comes later in the list and wins.
    """
    command = next((a for a in argv if not a.startswith("-")), None)
    ckpt_path = _ckpt_path_in(argv)
    if command not in ("validate", "test", "predict") or not ckpt_path or ckpt_path in SPECIAL_CKPT_PATHS:
        return argv
    gives_net = any(a == "--config" or a.startswith(("--config=", "--model.net")) for a in argv)
    replaces_net = any(a == "--model.net" or a.startswith("--model.net=") for a in argv)
    config = {**config_from_checkpoint(ckpt_path, user_named_classes(argv), replaces_net), **logger_next_to(ckpt_path)}
    if "net" not in config.get("model", {}) and not gives_net:
        raise CheckpointError(
            f"The checkpoint {ckpt_path} holds no network config: it was made from Python "
            f"(ImageClassifier(net=...) with Trainer.fit), where the network is a live object. Name the network "
            f"it was trained with: add --config <a config with that network> (e.g. configs/lenet_mnist.yaml) or "
            f"--model.net <class_path>."
        )
    at = argv.index(command) + 1
    return [*argv[:at], "--config", json.dumps(config, default=list), *argv[at:]]
