"""The networks: plain `nn.Module`s sized by `input_shape` and `num_classes`. Importing each here lists them."""

from mnist_cifar.models.cifar_lenet import CifarLeNet
from mnist_cifar.models.lenet5 import LeNet5

__all__ = ["CifarLeNet", "LeNet5"]
