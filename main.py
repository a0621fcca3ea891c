"""Entry point: `python main.py {fit,validate,test,predict} --config configs/<experiment>.yaml [overrides]`."""

import time

STARTED = time.monotonic()  # before the imports: a run's process.json counts the whole process, start-up included

from mnist_cifar.cli import DEFAULT_CONFIG, run  # noqa: E402

if __name__ == "__main__":
    run(default_config=DEFAULT_CONFIG, started=STARTED)
