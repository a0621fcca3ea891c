"""Check a checkpoint path before Lightning opens it, so a wrong path fails with a message, not a traceback."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from mnist_cifar.errors import CheckpointError
from mnist_cifar.runs.checkpoint_io import verify
from mnist_cifar.runs.folder import RunFolder
from mnist_cifar.runs.trust import DOTTED_NAME, LINKED_NET_KEYS, check_data_config, check_model_config, check_network_size
from mnist_cifar.runs.yaml_bounds import load_file

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


def config_from_checkpoint(path: str, user_named: Iterable[str] = (), without_net: bool = False) -> dict:
    """The `model` and `data` config a checkpoint was trained with, read from its saved hyperparameters, as data.

    Checked against a closed schema before anything is imported or built (`mnist_cifar.runs.trust`): only known
    keys, classes that resolve to what their slot expects in the allowed packages (or that the user named),
    plain arguments, a network no larger than the file's own weights; where data lives, downloads and resources
    come from the user or the defaults. `without_net`: the user gives `--model.net`, so the file's network is
    left out unless it is the class the user named.
    """
    checkpoint = load_checkpoint(path)
    named = set(user_named)
    check_bookkeeping(checkpoint, path)
    hyper_parameters = checkpoint.get("hyper_parameters") or {}
    file_net = hyper_parameters.get("net")
    net_named = isinstance(file_net, dict) and file_net.get("class_path") in named
    model = check_model_config(hyper_parameters, path, named, without_net=without_net and not net_named)
    net = model.get("net")
    if isinstance(net, dict):
        check_network_size(net, checkpoint.get("state_dict", {}), path)
        net_args = net.get("init_args")
        if isinstance(net_args, dict):
            for linked in LINKED_NET_KEYS:  # the CLI links them in from the data set again (the saved copy names
                net_args.pop(linked, None)  # them even for a user's network that does not take them)
            if "weights" in net_args:  # pretrained weights to download: the checkpoint's own replace them anyway
                net_args["weights"] = None
    config: dict = {"model": model} if model else {}
    data = check_data_config(checkpoint.get("datamodule_hyper_parameters") or {}, path, named)
    if data is not None:
        config["data"] = data
    return config


def check_bookkeeping(checkpoint: dict, path: str) -> None:
    """Lightning wraps the saved hyperparameters under the argument `hparams_name` names: only "kwargs" is ours."""
    for key in ("hparams_name", "datamodule_hparams_name"):
        if checkpoint.get(key) not in (None, "kwargs"):
            raise CheckpointError(f"The checkpoint {path} has {key} {checkpoint.get(key)!r}; this project writes "
                                  f"'kwargs' there. It was not written by this project, and nothing was loaded.")


def refuse_untrusted_checkpoint(path: str) -> None:
    """For `ImageClassifier.load_from_checkpoint` from Python: the CLI's closed check of the whole file (its model and
    data config, the network's size), before Lightning rebuilds the network from it."""
    config_from_checkpoint(path)


def user_named_classes(argv: Sequence[str]) -> set[str]:
    """Every dotted name the user typed (flags' values) or wrote in a `--config` file: what the user trusts."""
    named: set[str] = set()
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--") and "=" in arg else arg
        is_config = arg.startswith("--config=") or (i > 0 and argv[i - 1] == "--config")
        if is_config and Path(value).expanduser().is_file():
            try:
                content = load_file(value)
            except (OSError, yaml.YAMLError):
                content = None
            named |= set(_dotted_strings(content))
        elif DOTTED_NAME.match(value):
            named.add(value)
    return named


def _dotted_strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _dotted_strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _dotted_strings(item)
    elif isinstance(value, str) and DOTTED_NAME.match(value):
        yield value


def find_last(save_dir: Path, name: str, version: str | int | None) -> Path:
    """The `last.ckpt` of run `version` of experiment `name`, or of its newest run that has one."""
    experiment = Path(save_dir).expanduser() / name
    if version is not None:
        candidates = [experiment / (version if isinstance(version, str) else f"version_{version}")]
    else:
        versions = [p for p in experiment.glob("version_*") if p.name.removeprefix("version_").isdigit()]
        candidates = sorted(versions, key=lambda p: int(p.name.removeprefix("version_")), reverse=True)
    for run in map(RunFolder.at, candidates):
        if run.last.is_file():
            return run.last
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
    run = RunFolder.of_checkpoint(path)
    if run is None:
        return {}
    return {"trainer": {"logger": {"init_args": {"save_dir": str(run.save_dir), "name": run.name}}}}


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
