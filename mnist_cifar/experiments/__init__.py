"""The notes' experiments as sweeps: named lists of configs and overrides, run for several seeds, then reported.

Each run is an ordinary `python main.py fit` process (its own `lightning_logs/experiments/<experiment>/<variant>/seed<N>/`
folder with `config.yaml`, checkpoints, TensorBoard events and the process's wall time), and the report is built
from those files alone, so it can be rebuilt at any time; an interrupted sweep resumes each unfinished run from
its `last.ckpt`.

    python -m mnist_cifar.experiments list
    python -m mnist_cifar.experiments run permuted_mnist --seeds 3 --data_dir ../shared/data --jobs 2
    python -m mnist_cifar.experiments report permuted_mnist
"""
