"""DataModules for the data sets the notes use; each fits in memory as uint8 tensors."""

from mnist_cifar.data.base import ImageDataModule
from mnist_cifar.data.cifar10 import CIFAR10DataModule
from mnist_cifar.data.fashion_mnist import FashionMNISTDataModule
from mnist_cifar.data.mnist import MNISTDataModule

__all__ = ["CIFAR10DataModule", "FashionMNISTDataModule", "ImageDataModule", "MNISTDataModule"]
