"""The networks: plain `nn.Module`s sized by `input_shape` and `num_classes`. Importing each here lists them."""

from mnist_cifar.models.airbench import AirbenchNet
from mnist_cifar.models.alexnet import SmallAlexNet
from mnist_cifar.models.basic_cnn import BasicCNN
from mnist_cifar.models.cifar_lenet import CifarLeNet
from mnist_cifar.models.course_net import CourseNet
from mnist_cifar.models.d2l_alexnet import D2LAlexNet
from mnist_cifar.models.d2l_nin import D2LNiN
from mnist_cifar.models.d2l_resnet import D2LResNet18
from mnist_cifar.models.d2l_vgg import D2LVGG
from mnist_cifar.models.fcnet import FCNet
from mnist_cifar.models.improved_cnn import ImprovedCNN
from mnist_cifar.models.lenet5 import LeNet5
from mnist_cifar.models.nin import NiN
from mnist_cifar.models.resnet import CifarResNet
from mnist_cifar.models.row_rnn import RowRNN
from mnist_cifar.models.small_cnn import SmallCNN
from mnist_cifar.models.torchvision_net import TorchvisionNet
from mnist_cifar.models.tutorial_net import TutorialNet
from mnist_cifar.models.vgg import VGGNet

__all__ = [
    "AirbenchNet",
    "BasicCNN",
    "CifarLeNet",
    "CifarResNet",
    "CourseNet",
    "D2LAlexNet",
    "D2LNiN",
    "D2LResNet18",
    "D2LVGG",
    "FCNet",
    "ImprovedCNN",
    "LeNet5",
    "NiN",
    "RowRNN",
    "SmallAlexNet",
    "SmallCNN",
    "TorchvisionNet",
    "TutorialNet",
    "VGGNet",
]
