"""Entry point: `python main.py {fit,validate,test,predict} --config configs/<experiment>.yaml [overrides]`, and
`python main.py export --ckpt_path X` (mnist_cifar.export); `predict --ckpt_path <exported file>` runs that file."""

import sys
import time

STARTED = time.monotonic()  # before the imports: a run's process.json counts the whole process, start-up included

from mnist_cifar.exported import run_without_the_trainer  # noqa: E402

if __name__ == "__main__":
    run_without_the_trainer(sys.argv[1:])  # export, or predict with an exported file: then it exits

from mnist_cifar.cli import DEFAULT_CONFIG, run  # noqa: E402

if __name__ == "__main__":
    run(default_config=DEFAULT_CONFIG, started=STARTED)
