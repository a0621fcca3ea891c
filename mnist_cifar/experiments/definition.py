"""An experiment definition: `configs/experiments/<name>.yaml` holds a base config, shared overrides and variants.

    description: what the experiment shows
    target: 0.99                            # optional: report epochs and training seconds to this val accuracy
    config: configs/cnn_mnist.yaml          # the base config of every variant (relative to the repository)
    args: {trainer.max_epochs: 5}           # overrides for every variant, as LightningCLI keys
    slurm: {time: "30", cpus_per_run: 2}    # optional: what each run asks SLURM for (`run --backend slurm`)
    variants:
      cnn_permuted:
        config: configs/cnn_mnist.yaml      # optional, per variant
        args: {data.init_args.permute_pixels: true}

Overrides become ordinary command-line arguments (`--trainer.max_epochs=5`), so a variant is exactly what
`python main.py fit --config <config> <args>` would run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnist_cifar import CONFIGS
from mnist_cifar.errors import ConfigError
from mnist_cifar.runs.yaml_bounds import load_file

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS_DIR = CONFIGS / "experiments"


def shipped_path(config: str | Path) -> Path:
    """A config path as experiment and study files write it (`configs/x.yaml`, relative to the repository): the file in
    a clone, and the packaged copy where the package is installed without one."""
    path = Path(config)
    if path.is_absolute() or (REPO / path).exists() or not path.parts or path.parts[0] != "configs":
        return path if path.is_absolute() else REPO / path
    return CONFIGS.joinpath(*path.parts[1:])


def overrides(values: dict[str, Any]) -> list[str]:
    """Config keys and values as LightningCLI arguments: `--trainer.max_epochs=5`, non-text values as JSON."""
    return [f"--{key}={value if isinstance(value, str) else json.dumps(value)}" for key, value in values.items()]


@dataclass
class Variant:
    name: str
    config: Path
    args: dict[str, Any] = field(default_factory=dict)

    def cli_args(self) -> list[str]:
        return ["--config", str(self.config), *overrides(self.args)]


@dataclass
class Experiment:
    name: str
    description: str
    variants: list[Variant]
    target: float | None = None  # a validation accuracy: the report adds how many epochs and seconds reach it
    slurm: dict[str, Any] = field(default_factory=dict)  # resources of each run under `--backend slurm`


def available() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))


EXPERIMENT_KEYS = {"description", "config", "args", "variants", "target", "slurm"}
VARIANT_KEYS = {"config", "args"}


def load(name: str) -> Experiment:
    """The experiment `configs/experiments/<name>.yaml`, or the YAML file `name` names."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else EXPERIMENTS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"No experiment {name!r} in {EXPERIMENTS_DIR}; choose one of: {', '.join(available())}, "
                          f"or pass the path of an experiment .yaml file.")
    spec = load_file(path) or {}
    _check_keys(spec, EXPERIMENT_KEYS, f"{path}")
    if not isinstance(spec.get("variants"), dict) or not spec["variants"]:
        raise ConfigError(f"{path} has no variants: add a `variants:` mapping of variant names to their config/args.")
    shared = spec.get("args", {})
    variants = []
    for variant, body in spec["variants"].items():
        body = body or {}
        _check_keys(body, VARIANT_KEYS, f"{path}, variant {variant!r},")
        config = body.get("config", spec.get("config"))
        if config is None:
            raise ConfigError(f"{path}, variant {variant!r}, has no config: give `config:` at the top or in the variant.")
        variants.append(Variant(name=variant, config=shipped_path(config), args={**shared, **body.get("args", {})}))
    target = spec.get("target")
    if target is not None and not (isinstance(target, (int, float)) and 0 < target <= 1):
        raise ConfigError(f"{path}: target must be a validation accuracy between 0 and 1 (e.g. 0.99), got {target!r}.")
    slurm = spec.get("slurm") or {}
    if not isinstance(slurm, dict):
        raise ConfigError(f"{path}: slurm must be a mapping of resources, e.g. {{time: '30', cpus_per_run: 2}}.")
    return Experiment(name=path.stem, description=spec.get("description", ""), variants=variants, target=target,
                      slurm=slurm)


def _check_keys(spec: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ConfigError(f"{where} has unknown key(s) {', '.join(unknown)}; the keys it may have are "
                          f"{', '.join(sorted(allowed))}. Overrides of the run's config go under `args:`.")
