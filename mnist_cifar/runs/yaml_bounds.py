"""YAML from a file is read with a bound on its size and on what its aliases expand to.

A few hundred bytes of nested aliases (`a: &a [x, x]`, `b: &b [*a, *a]`, ...) expand to billions of nodes: a
config, a study file or the config inside a checkpoint could make `yaml.safe_load`, jsonargparse or the
Optuna journal use all memory. PyYAML's composer keeps an alias as a reference to the node it names, so the
expanded size can be counted on the composed graph in linear time (each node's size computed once) before any
Python object is built. jsonargparse reads every YAML through the loader this module registers
(`jsonargparse.set_loader`), so `--config`, values typed on the command line and checkpoint configs are bounded
alike.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from mnist_cifar.errors import ConfigError

MAX_BYTES = 16 * 1024 * 1024  # a config is a few KB; a study journal line a few hundred bytes
MAX_NODES = 1_000_000  # nodes after expanding every alias (the largest shipped config has about 300)


class YamlTooLarge(ConfigError):
    """A YAML document larger than the bounds, or whose aliases expand beyond them."""


def expanded_size(node: yaml.Node, limit: int = MAX_NODES) -> int:
    """The number of nodes `node` stands for once every alias is expanded; stops counting past `limit`."""
    sizes: dict[int, int] = {}

    def size(current: yaml.Node) -> int:
        known = sizes.get(id(current))
        if known is not None:
            return known
        sizes[id(current)] = limit + 1  # a node met again while being counted is a cycle: too large
        total = 1
        if isinstance(current, yaml.SequenceNode):
            for child in current.value:
                total += size(child)
                if total > limit:
                    break
        elif isinstance(current, yaml.MappingNode):
            for key, value in current.value:
                total += size(key) + size(value)
                if total > limit:
                    break
        sizes[id(current)] = min(total, limit + 1)
        return sizes[id(current)]

    return size(node)


def check_bounds(text: str, source: str) -> None:
    """Raise `YamlTooLarge`, naming `source`, when `text` is larger than the bounds or expands beyond them."""
    if len(text) > MAX_BYTES:
        raise YamlTooLarge(f"{source} is {len(text) / 1e6:.1f} MB of YAML, more than the {MAX_BYTES // 2**20} MiB a "
                           f"config or study file may hold; nothing was read. Check that it is the file you meant.")
    if "*" not in text:  # no alias: nothing can expand
        return
    try:
        for node in yaml.compose_all(text, Loader=yaml.SafeLoader):
            if node is not None and expanded_size(node) > MAX_NODES:
                raise YamlTooLarge(
                    f"{source} uses YAML aliases (*name) that expand to more than {MAX_NODES:,} values (an alias "
                    f"bomb, or a config far larger than any experiment needs); nothing was read. Write the values "
                    f"out, or use fewer nested aliases.")
    except yaml.YAMLError:
        return  # not valid YAML: the loader that follows says so in its own words


def safe_load(text: str, source: str) -> Any:
    """`yaml.safe_load` within the bounds."""
    check_bounds(text, source)
    return yaml.safe_load(text)


def _read_bounded(path: str | Path) -> str:
    """A file's text, read no further than one byte past the size bound (enough for `check_bounds` to refuse it)."""
    with Path(path).expanduser().open("rb") as handle:
        return handle.read(MAX_BYTES + 1).decode("utf-8", errors="replace")


def load_file(path: str | Path) -> Any:
    """A YAML file's content within the bounds (the file's name in the error)."""
    return safe_load(_read_bounded(path), str(path))


def bounded(loader: Callable[[str], Any]) -> Callable[[str], Any]:
    """`loader` (jsonargparse's YAML loader) checking the bounds first."""
    if getattr(loader, "bounded", False):
        return loader

    def load(value: str) -> Any:
        if isinstance(value, str):
            check_bounds(value, "A YAML value or --config file")
        return loader(value)

    load.bounded = True  # type: ignore[attr-defined]
    return load


def bound_jsonargparse() -> None:
    """Make jsonargparse read every YAML document through the bounds (its public `set_loader`)."""
    from jsonargparse import get_loader, set_loader

    set_loader("yaml", bounded(get_loader("yaml")), exceptions=(yaml.YAMLError, YamlTooLarge))


def check_config_files(argv: list[str]) -> None:
    """Check every `--config` in `argv` (a file, or YAML given inline) against the bounds before jsonargparse reads it."""
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        elif arg == "--config" and i + 1 < len(argv):
            value = argv[i + 1]
        else:
            continue
        if _is_file(Path(value).expanduser()):
            check_bounds(_read_bounded(value), str(value))
        else:
            check_bounds(value, "the YAML given to --config")


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name too long for a file: YAML given inline
        return False
