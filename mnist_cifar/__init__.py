"""mnist-cifar: classic MNIST and CIFAR-10 experiments as LightningCLI configs."""

from mnist_cifar.classifier import ImageClassifier
from mnist_cifar.data import CIFAR10DataModule, ImageDataModule, MNISTDataModule
from mnist_cifar.errors import UserFacingError

__all__ = ["CIFAR10DataModule", "ImageClassifier", "ImageDataModule", "MNISTDataModule", "UserFacingError"]
