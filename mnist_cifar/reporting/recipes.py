"""The recipe table of docs/running.md, generated from the shipped configs, so it states every recipe as it runs.

    python -m mnist_cifar.reporting.recipes            # prints the Markdown table (tests/test_docs.py compares docs/running.md's)

Read from each config file with the classes' own defaults filled in (e.g. CIFAR-10's crop + flip), without
building anything: what a config says is what the run uses, because every lr-like value has one effect
(`mnist_cifar.training.schedules.OneCycleLR` peaks at the optimizer's lr).
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import yaml

from mnist_cifar import CONFIGS

HEADER = ("| config | network | optimizer | schedule | batch | epochs | training augmentation | also |\n"
          "|---|---|---|---|---|---|---|---|")


def _defaults(class_path: str) -> dict[str, Any]:
    module, _, name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    merged: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):  # a subclass's defaults (CIFAR-10's crop + flip) over its base's
        if "__init__" in vars(klass):
            merged |= {k: p.default for k, p in inspect.signature(klass.__init__).parameters.items()
                       if p.default is not inspect.Parameter.empty}
    return merged


def _number(value: float) -> str:
    return f"{value:g}"


def network(net: dict) -> str:
    args = {k: v for k, v in (net.get("init_args") or {}).items() if v is not None}
    shown = ", ".join(f"{k} {v}" for k, v in args.items())
    return net["class_path"].rpartition(".")[2] + (f" ({shown})" if shown else "")


def optimizer(spec: dict, scheduler: dict | None) -> str:
    args = {**_defaults(spec["class_path"]), **(spec.get("init_args") or {})}
    cycle = _momentum_cycle(scheduler)
    parts = [f"{spec['class_path'].rpartition('.')[2]} lr {_number(args['lr'])}"]
    if args.get("momentum"):
        parts.append(f"momentum {_number(args['momentum'])}" + (f" (cycled to {cycle})" if cycle else "")
                     + (" Nesterov" if args.get("nesterov") else ""))
    elif cycle and args.get("betas"):
        parts.append(f"beta1 {_number(args['betas'][0])} (cycled to {cycle})")
    if args.get("weight_decay"):
        parts.append(f"weight decay {_number(args['weight_decay'])}")
    return ", ".join(parts)


def _momentum_cycle(scheduler: dict | None) -> str:
    """The low point of one-cycle's momentum cycle, or "" when the momentum stays as the optimizer has it."""
    if not scheduler or not scheduler["class_path"].endswith("OneCycleLR"):
        return ""
    args = {**_defaults(scheduler["class_path"]), **(scheduler.get("init_args") or {})}
    return _number(args["base_momentum"]) if args.get("cycle_momentum") else ""


def schedule(spec: dict | None, interval: str) -> str:
    if not spec:
        return "constant"
    name = spec["class_path"].rpartition(".")[2]
    args = {**_defaults(spec["class_path"]), **(spec.get("init_args") or {})}
    if name == "OneCycleLR":
        return (f"one-cycle per {interval}, peak = the lr at {_number(100 * args['pct_start'])} % of the run, "
                f"from lr / {_number(args['div_factor'])}")
    if name == "TriangularLR":
        return f"triangular per {interval}: {_number(args['start'])} → 1 → {_number(args['end'])} × lr"
    if name == "StepLR":
        return f"StepLR × {_number(args['gamma'])} every {args['step_size']} {interval}s"
    return name


def augmentation(data: dict) -> str:
    args = {**_defaults(data["class_path"]), **(data.get("init_args") or {})}
    if not args.get("augment", True):
        return "none"
    parts = [f"±{args['crop_padding']}-pixel crop"] if args.get("crop_padding") else []
    parts += ["horizontal flip"] if args.get("horizontal_flip") else []
    return " + ".join(parts) or "none"


def also(config: dict) -> str:
    model, trainer = config.get("model", {}), config.get("trainer", {})
    data = config.get("data", {}).get("init_args") or {}
    parts = [f"{model['weight_init']} init"] if model.get("weight_init", "default") != "default" else []
    parts += ["pixels in [0, 1]"] if data.get("normalize") is False else []
    parts += [f"resized to {data['resize']}"] if data.get("resize") else []
    parts += [f"label smoothing {_number(model['label_smoothing'])}"] if model.get("label_smoothing") else []
    parts += [f"gradient clip {_number(trainer['gradient_clip_val'])}"] if trainer.get("gradient_clip_val") else []
    parts += [trainer["precision"]] if trainer.get("precision") else []
    parts += ["TTA"] if model.get("test_time_augmentation") else []
    return ", ".join(parts)


def row(path: Path) -> str:
    config = yaml.safe_load(path.read_text())
    default = yaml.safe_load((CONFIGS / "default.yaml").read_text())
    model, data = config["model"], config["data"]
    epochs = config.get("trainer", {}).get("max_epochs", default["trainer"]["max_epochs"])
    batch = {**_defaults(data["class_path"]), **(data.get("init_args") or {})}["batch_size"]
    cells = [f"`{path.stem}`", network(model["net"]), optimizer(model["optimizer"], model.get("scheduler")),
             schedule(model.get("scheduler"), model.get("scheduler_interval", "epoch")), str(batch), str(epochs),
             augmentation(data), also(config)]
    return "| " + " | ".join(cells) + " |"


def table() -> str:
    return "\n".join([HEADER, *(row(p) for p in sorted(CONFIGS.glob("*.yaml")) if p.name != "default.yaml")])


if __name__ == "__main__":
    print(table())
