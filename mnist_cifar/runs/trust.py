"""A config read from a checkpoint is data: checked against a closed schema before anything is imported or built.

A checkpoint's SHA-256 proves it is undamaged, not who made it (anyone can recompute it), so the `model` and
`data` config it carries is handled as input from a stranger:

- **Only known keys.** The classifier's saved hyperparameters may hold the arguments of `ImageClassifier` and
  LightningCLI's two bookkeeping keys (`_instantiator`, which must be LightningCLI's own, and `_class_path`,
  which must be the classifier); the data module's, the arguments of its class.
- **Classes by what they resolve to, not by their text.** `net`, `optimizer`, `scheduler` and the data module's
  class path are walked one name at a time, importing only modules inside the allowed packages (or the parents
  of those), and every module passed on the way must be one of those too: `mnist_cifar.x.subprocess.Popen`
  stops at `subprocess`. The object at the end must be a class *defined* in an allowed module (its
  `__module__`) and a subclass of what that slot expects (`nn.Module`, `Optimizer`, `LRScheduler`,
  `ImageDataModule`). A class the user named (on the command line or in a `--config`) is theirs to trust.
- **Plain arguments.** Everything else is numbers, strings, booleans, None, lists and dicts of those; a dict
  holding a `class_path` anywhere below those four slots is refused (jsonargparse would build it, even in an
  untyped parameter such as `torch.nn.Linear`'s `device`), and so is a string that reads as an import path
  unless it resolves, by the same walk, to something defined in an allowed module.
- **Sized before memory is spent.** The network is first built on PyTorch's meta device with a budget of
  tensors and elements taken from the checkpoint's own weights; a network bigger than its weights, or of
  other shapes, is refused before one byte of it is allocated.
- **Resources are the user's.** Where data is read and cached, whether to download, batch sizes, loader
  workers, device placement and compilation come from the user's command line or the defaults, never the file.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch
from torch import nn

from mnist_cifar.errors import CheckpointError
from mnist_cifar.moved import new_name

TRUST_ENV = "MNIST_CIFAR_TRUSTED_MODULES"
DOTTED_NAME = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")
INSTANTIATOR = "lightning.pytorch.cli.instantiate_module"  # what LightningCLI stores; Lightning allows only it
# Taken from the user or the defaults, never from the file: where data is read or written, whether to download,
# and the resources a run uses.
USER_ONLY_DATA_KEYS = ("data_dir", "cache_dir", "download", "predict_path", "batch_size", "eval_batch_size",
                       "num_workers", "on_device",
                       "corruption", "severity")  # what to evaluate on is the user's choice, never the file's
USER_ONLY_MODEL_KEYS = ("compile", "compile_backend", "compile_mode")
LINKED_NET_KEYS = ("input_shape", "num_classes")  # the CLI links these from the data set into the network


@dataclass(frozen=True)
class Slot:
    """Where a checkpoint may name a class: the packages it must be defined in and the base it must subclass."""

    what: str
    packages: tuple[str, ...]
    base: str  # "module.Class", imported only when a check needs it


NET = Slot("network", ("mnist_cifar.models", "torch.nn", "torchvision.models"), "torch.nn.Module")
OPTIMIZER = Slot("optimizer", ("torch.optim", "mnist_cifar"), "torch.optim.Optimizer")
SCHEDULER = Slot("scheduler", ("torch.optim.lr_scheduler", "mnist_cifar"), "torch.optim.lr_scheduler.LRScheduler")
DATA = Slot("data module", ("mnist_cifar.data",), "mnist_cifar.data.ImageDataModule")
CLASSIFIER = Slot("training system", ("mnist_cifar",), "mnist_cifar.training.classifier.ImageClassifier")
MODEL_SLOTS = {"net": NET, "optimizer": OPTIMIZER, "scheduler": SCHEDULER}
ANY_TRUSTED = Slot("name", ("mnist_cifar", "torch.nn", "torch.optim", "torchvision.models"), "builtins.object")


def user_trusted_packages() -> tuple[str, ...]:
    return tuple(m.strip() for m in os.environ.get(TRUST_ENV, "").split(",") if m.strip())


def packages_of(slot: Slot) -> tuple[str, ...]:
    return (*slot.packages, *user_trusted_packages())


def _within(name: str, packages: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def _above(name: str, packages: Iterable[str]) -> bool:
    """`name` is a parent package of an allowed one (`torch` of `torch.nn`): importing it is part of importing them."""
    return any(p.startswith(name + ".") for p in packages)


class Refused(CheckpointError):
    """A file's config names something it may not."""


def resolve(name: str, slot: Slot, source: str, key: str) -> Any:
    """The object `name` resolves to, walking it one attribute at a time and importing only allowed modules.

    Raises `Refused` (one paragraph) when the walk would import or pass through a module outside `slot`'s
    packages, or ends on something that is not a class defined in them subclassing `slot.base`."""
    packages = packages_of(slot)
    parts = new_name(name).split(".")  # a path from before a module moved: through the closed table of moves
    current: Any = None
    for i, part in enumerate(parts):
        prefix = ".".join(parts[: i + 1])
        if current is None or (isinstance(current, ModuleType) and not hasattr(current, part)):
            if not (_within(prefix, packages) or _above(prefix, packages)):
                raise _refusal(source, key, name, f"reaching it would import {prefix}", slot)
            try:
                current = importlib.import_module(prefix)
            except ImportError:
                raise _refusal(source, key, name, f"{prefix} does not exist", slot) from None
        else:
            current = getattr(current, part)
        if isinstance(current, ModuleType) and not (_within(current.__name__, packages) or
                                                    _above(current.__name__, packages)):
            raise _refusal(source, key, name, f"it goes through the module {current.__name__}", slot)
    defined_in = getattr(current, "__module__", None) or ""
    if isinstance(current, ModuleType) or not _within(defined_in, packages):
        where = (f"it is {current.__name__}" if isinstance(current, ModuleType)
                 else f"it is defined in {defined_in or 'no module'}")
        raise _refusal(source, key, name, where, slot)
    base = _import_base(slot.base)
    if not (isinstance(current, type) and issubclass(current, base)):
        raise _refusal(source, key, name, f"it is not a subclass of {slot.base}", slot)
    return current


def _import_base(dotted: str) -> type:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _refusal(source: str, key: str, name: str, why: str, slot: Slot) -> Refused:
    return Refused(
        f"The checkpoint {source} names {name} at {key}, and {why}: a checkpoint is data and cannot choose what is "
        f"imported, so nothing was loaded. Its {slot.what} must be a class defined in {', '.join(packages_of(slot))}"
        f" (subclassing {slot.base}). If the run used your own class, name it yourself: "
        f"--{key.removesuffix('.class_path')} {name} on the command line, a --config that names it, or "
        f"{TRUST_ENV}=<its package> in the environment."
    )


def _plain(value: Any, source: str, key: str, user_named: set[str]) -> None:
    """Refuse anything in an argument value but plain data: no `class_path` dict, no unresolvable import path."""
    if isinstance(value, Mapping):
        if "class_path" in value:
            raise Refused(
                f"The checkpoint {source} holds an object to build ({value.get('class_path')!r}) at {key}.class_path, where only "
                f"plain values (numbers, strings, lists) belong: a checkpoint is data and cannot choose what is "
                f"imported or built, so nothing was loaded. If you trust the run, give that setting yourself with "
                f"--{key} on the command line or in a --config."
            )
        for name, item in value.items():
            if not isinstance(name, str):
                raise Refused(f"The checkpoint {source} has a non-text key {name!r} at {key}: it was not written by "
                              f"this project, and nothing was loaded.")
            _plain(item, source, f"{key}.{name}", user_named)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _plain(item, source, f"{key}[{i}]", user_named)
    elif isinstance(value, str):
        if DOTTED_NAME.match(value) and value not in user_named:
            resolve(value, ANY_TRUSTED, source, key)
    elif not (value is None or isinstance(value, (bool, int, float))):
        raise Refused(f"The checkpoint {source} holds a {type(value).__name__} at {key}, where only plain values "
                      f"belong: it was not written by this project, and nothing was loaded.")


def _named_class(value: Any, slot: Slot, source: str, key: str, user_named: set[str]) -> type | None:
    """Check a `{class_path, init_args}` slot (or a bare class path); returns the class, None when the user named it."""
    if isinstance(value, str):
        value = {"class_path": value}
    if not isinstance(value, Mapping) or not isinstance(value.get("class_path"), str) or \
            set(value) - {"class_path", "init_args"}:
        raise Refused(f"The checkpoint {source} has {value!r} at {key}, where a {{class_path, init_args}} of its "
                      f"{slot.what} belongs: it was not written by this project, and nothing was loaded.")
    _plain(value.get("init_args") or {}, source, f"{key}.init_args", user_named)
    if value["class_path"] in user_named:
        return None
    return resolve(value["class_path"], slot, source, f"{key}.class_path")


def _parameters(cls: type) -> set[str]:
    """The keyword arguments `cls` takes, following `**kwargs` up its bases (as jsonargparse does)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = inspect.signature(klass.__init__).parameters.values()
        names |= {p.name for p in parameters if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return names


def check_model_config(hyper_parameters: Mapping[str, Any], source: str, user_named: set[str],
                       without_net: bool = False) -> dict:
    """The classifier's saved hyperparameters, checked (see the module docstring), as a config to build from:
    bookkeeping keys and the user's resources dropped. `without_net`: the user gives the network; the file's is
    not read at all."""
    allowed = _parameters(_import_base(CLASSIFIER.base))  # by the slot's name: the run folder's code sits below training
    config: dict = {}
    for key, value in hyper_parameters.items():
        if key == "_instantiator":
            if value != INSTANTIATOR:
                raise Refused(f"The checkpoint {source} names the instantiator {value!r}; only LightningCLI's own "
                              f"({INSTANTIATOR}) builds a classifier, so nothing was loaded.")
            continue
        if key == "_class_path":
            if value not in user_named:
                resolve(str(value), CLASSIFIER, source, "model.class_path")
            continue
        if key not in allowed:
            raise Refused(f"The checkpoint {source} has a model setting {key!r} that ImageClassifier does not take "
                          f"(it takes {', '.join(sorted(allowed))}): it was not written by this project, and nothing "
                          f"was loaded.")
        if key in USER_ONLY_MODEL_KEYS or (key == "net" and without_net):
            continue
        if key in MODEL_SLOTS and value is not None:
            _named_class(value, MODEL_SLOTS[key], source, f"model.{key}", user_named)
        else:
            _plain(value, source, f"model.{key}", user_named)
        config[key] = value
    return config


def check_data_config(hyper_parameters: Mapping[str, Any], source: str, user_named: set[str]) -> dict | None:
    """The data module's saved hyperparameters as a `{class_path, init_args}` config, checked, the user's keys
    dropped; None when the file holds none."""
    saved = dict(hyper_parameters)
    class_path = saved.pop("_class_path", None)
    if class_path is None:
        return None
    instantiator = saved.pop("_instantiator", INSTANTIATOR)
    if instantiator != INSTANTIATOR:
        raise Refused(f"The checkpoint {source} names the instantiator {instantiator!r} for its data; only "
                      f"LightningCLI's own ({INSTANTIATOR}) is used, so nothing was loaded.")
    cls = _named_class(class_path, DATA, source, "data.class_path", user_named)
    allowed = _parameters(cls) if cls is not None else set(saved)
    unknown = sorted(set(saved) - allowed)
    if unknown:
        raise Refused(f"The checkpoint {source} has data settings {', '.join(unknown)} that {class_path} does not "
                      f"take: it was not written by this project, and nothing was loaded.")
    init_args = {k: v for k, v in saved.items() if k not in USER_ONLY_DATA_KEYS}
    _plain(init_args, source, "data.init_args", user_named)
    return {"class_path": class_path, "init_args": init_args}


class _OverBudget(Exception):
    """The network being sized registered more tensors, elements or modules than its checkpoint has weights."""


@contextmanager
def _construction_budget(tensors: int, elements: int) -> Iterator[None]:
    """Stop a network's construction as soon as it registers more than the budget (time and meta memory both)."""
    from torch.nn.modules import module as module_hooks

    counts = {"tensors": 0, "elements": 0, "modules": 0}

    def on_tensor(module: nn.Module, name: str, tensor: Any) -> None:
        if tensor is None:
            return
        counts["tensors"] += 1
        counts["elements"] += tensor.numel()
        if counts["tensors"] > tensors or counts["elements"] > elements:
            raise _OverBudget

    def on_module(module: nn.Module, name: str, child: Any) -> None:
        counts["modules"] += 1
        if counts["modules"] > 16 * tensors + 1000:
            raise _OverBudget

    handles = [module_hooks.register_module_parameter_registration_hook(on_tensor),
               module_hooks.register_module_buffer_registration_hook(on_tensor),
               module_hooks.register_module_module_registration_hook(on_module)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def check_network_size(net_config: Mapping[str, Any], state_dict: Mapping[str, Any], source: str,
                       prefix: str = "net.") -> None:
    """Build the file's network on the meta device, within a budget from the checkpoint's weights, and refuse it
    unless its weights have the checkpoint's names and shapes. Nothing is allocated on a real device."""
    from mnist_cifar.runs.checkpoint_io import state_dict_mismatch

    weights = {k.removeprefix(prefix): v for k, v in state_dict.items()
               if k.startswith(prefix) and isinstance(v, torch.Tensor)}
    cls = _import_base(net_config["class_path"])
    init_args = dict(net_config.get("init_args") or {})
    takes = inspect.signature(cls.__init__).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in takes.values()):  # the CLI links these only into what takes them
        init_args = {k: v for k, v in init_args.items() if k not in LINKED_NET_KEYS or k in takes}
    if "weights" in init_args:
        init_args["weights"] = None
    # Twice the file's weights: a network may build a layer and replace it (TorchvisionNet's head). The budget
    # bounds the time and meta memory construction takes; the shapes below are the real check.
    tensors = 2 * len(weights) + 64
    elements = 2 * sum(v.numel() for v in weights.values()) + 1_000_000
    try:
        with torch.device("meta"), _construction_budget(tensors, elements):
            net = cls(**init_args)
    except _OverBudget:
        raise CheckpointError(
            f"The checkpoint {source} describes a network ({net_config['class_path']} with {init_args}) larger than "
            f"the {sum(v.numel() for v in weights.values()):,} weights it holds: its config and its weights disagree "
            f"(an edited or foreign file), so nothing was built. Use a checkpoint this project wrote, or give the "
            f"network yourself with --model.net."
        ) from None
    except Exception as error:  # noqa: BLE001 (the network's own argument checks, in one paragraph)
        raise CheckpointError(
            f"The checkpoint {source} describes a network that cannot be built ({net_config['class_path']}: "
            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no details'}), so nothing was "
            f"loaded. Use a checkpoint this project wrote, or give the network yourself with --model.net."
        ) from None
    problems = state_dict_mismatch(net.state_dict(), weights)
    if problems:
        raise CheckpointError(
            f"The checkpoint {source} does not fit the network its own config describes "
            f"({net_config['class_path']}): {problems}. An edited or foreign file; nothing was built. Use a "
            f"checkpoint this project wrote, or give the network yourself with --model.net."
        )
