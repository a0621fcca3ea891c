"""An experiment definition: `configs/experiments/<name>.yaml` holds a base config, shared overrides and variants.

    description: what the experiment shows
    config: configs/cnn_mnist.yaml          # the base config of every variant (relative to the repository)
    args: {trainer.max_epochs: 5}           # overrides for every variant, as LightningCLI keys
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

import yaml

from mnist_cifar.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS_DIR = REPO / "configs" / "experiments"


@dataclass
class Variant:
    name: str
    config: Path
    args: dict[str, Any] = field(default_factory=dict)

    def cli_args(self) -> list[str]:
        overrides = [f"--{key}={value if isinstance(value, str) else json.dumps(value)}" for key, value in self.args.items()]
        return ["--config", str(self.config), *overrides]


@dataclass
class Experiment:
    name: str
    description: str
    variants: list[Variant]


def available() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))


def load(name: str) -> Experiment:
    path = EXPERIMENTS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"No experiment {name!r} in {EXPERIMENTS_DIR}; choose one of: {', '.join(available())}.")
    spec = yaml.safe_load(path.read_text())
    shared = spec.get("args", {})
    variants = [
        Variant(name=variant, config=REPO / (body or {}).get("config", spec["config"]), args={**shared, **(body or {}).get("args", {})})
        for variant, body in spec["variants"].items()
    ]
    return Experiment(name=name, description=spec.get("description", ""), variants=variants)
