"""The notes' experiments as sweeps: named lists of configs and overrides, run for several seeds, then reported.

Each run is an ordinary LightningCLI `fit` (its own `lightning_logs/experiments/<experiment>/<variant>/seed<N>/`
folder with `config.yaml`, checkpoints and TensorBoard events), and the report is built from those logs
alone, so it can be rebuilt at any time and an interrupted sweep continues where it stopped.

    python -m mnist_cifar.experiments list
    python -m mnist_cifar.experiments run permuted_mnist --seeds 3 --data_dir ../shared/data
    python -m mnist_cifar.experiments report permuted_mnist
"""
