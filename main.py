"""Entry point: `python main.py {fit,validate,test,predict} --config configs/<experiment>.yaml [overrides]`."""

from pathlib import Path

from mnist_cifar.cli import run

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "default.yaml"

if __name__ == "__main__":
    run(default_config=DEFAULT_CONFIG)
