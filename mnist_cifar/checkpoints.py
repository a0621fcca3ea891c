"""Check a checkpoint path before Lightning opens it, so a wrong path fails with a message, not a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import torch

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


def config_from_checkpoint(path: str) -> dict:
    """The `model` and `data` config a checkpoint was trained with, read from its saved hyperparameters."""
    checkpoint = load_checkpoint(path)
    config: dict = {}
    model = {k: v for k, v in checkpoint.get("hyper_parameters", {}).items() if not k.startswith("_")}
    if model:
        config["model"] = model
    data = dict(checkpoint.get("datamodule_hyper_parameters", {}))
    if "_class_path" in data:
        config["data"] = {
            "class_path": data.pop("_class_path"),
            "init_args": {k: v for k, v in data.items() if not k.startswith("_")},
        }
    return config


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
    config = {**config_from_checkpoint(ckpt_path), **logger_next_to(ckpt_path)}
    gives_net = any(a == "--config" or a.startswith(("--config=", "--model.net")) for a in argv)
    if "net" not in config.get("model", {}) and not gives_net:
        raise CheckpointError(
            f"The checkpoint {ckpt_path} holds no network config: it was made from Python "
            f"(ImageClassifier(net=...) with Trainer.fit), where the network is a live object. Name the network "
            f"it was trained with: add --config <a config with that network> (e.g. configs/lenet_mnist.yaml) or "
            f"--model.net <class_path>."
        )
    at = argv.index(command) + 1
    return [*argv[:at], "--config", json.dumps(config, default=list), *argv[at:]]
