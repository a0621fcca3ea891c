"""Entry point in a clone: `python main.py {fit,validate,test,predict} --config configs/<experiment>.yaml [overrides]`,
`python main.py export --ckpt_path X`, and `predict --ckpt_path <exported file>`. An installed package has the same
commands as `mnist-cifar` (mnist_cifar/__main__.py), where `--config lenet_mnist` names a shipped config."""

import sys
import time

STARTED = time.monotonic()  # before the imports: a run's process.json counts the whole process, start-up included

from mnist_cifar.__main__ import main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv[1:], started=STARTED)
