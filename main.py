"""Entry point: `python main.py {fit,validate,test,predict} --config configs/<experiment>.yaml [overrides]`."""

from mnist_cifar.cli import DEFAULT_CONFIG, run

if __name__ == "__main__":
    run(default_config=DEFAULT_CONFIG)
