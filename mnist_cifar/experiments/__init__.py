"""The notes' experiments as sweeps: named lists of configs and overrides, run for several seeds, then reported.

Each run is an ordinary `python main.py fit` process (its own `lightning_logs/experiments/<experiment>/<variant>/seed<N>/`
folder with `config.yaml`, checkpoints, TensorBoard events and the process's wall time), and the report is built
from those files alone, so it can be rebuilt at any time; an interrupted sweep resumes each unfinished run from
its `last.ckpt`. Runs go to a process pool on this machine (the default backend) or, with `--backend slurm`, to
a SLURM job array through submitit (`slurm.py`); `status` and `cancel` read and cancel what was submitted.

    python -m mnist_cifar.experiments list
    python -m mnist_cifar.experiments run permuted_mnist --seeds 3 --data_dir ../shared/data --jobs 2
    python -m mnist_cifar.experiments run permuted_mnist --backend slurm --partition gpu --time 60 --gpus_per_run 1
    python -m mnist_cifar.experiments status permuted_mnist
    python -m mnist_cifar.experiments report permuted_mnist
"""
