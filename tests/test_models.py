"""Every network: logits of the right shape on every data set's input, and a gradient on every parameter."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

import mnist_cifar.models as models

INPUT_SHAPES = {"mnist": (1, 28, 28), "cifar": (3, 32, 32), "cifar_gray": (1, 32, 32)}
MODEL_CLASSES = [getattr(models, name) for name in models.__all__]


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("shape_name", INPUT_SHAPES)
@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=lambda c: c.__name__)
def test_logits_shape_and_gradient_on_every_parameter(model_class: type[nn.Module], shape_name: str) -> None:
    shape = INPUT_SHAPES[shape_name]
    net = model_class(input_shape=shape, num_classes=7)
    logits = net(torch.randn(3, *shape))
    assert logits.shape == (3, 7)
    logits.square().sum().backward()
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, f"no gradient reaches {name}"


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=lambda c: c.__name__)
def test_every_model_is_sized_from_the_data_set(model_class: type[nn.Module]) -> None:
    parameters = inspect.signature(model_class).parameters
    assert {"input_shape", "num_classes"} <= set(parameters)
    assert model_class.__doc__ or inspect.getmodule(model_class).__doc__


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_classic_lenet5_has_61706_parameters_on_mnist(activation: str) -> None:
    assert count_parameters(models.LeNet5(input_shape=(1, 28, 28), activation=activation)) == 61_706


def test_lenet5_classic_form_uses_sigmoid_and_average_pooling() -> None:
    layers = [type(m) for m in models.LeNet5().modules()]
    assert nn.Sigmoid in layers and nn.AvgPool2d in layers and nn.ReLU not in layers
    relu = [type(m) for m in models.LeNet5(activation="relu", pooling="max").modules()]
    assert nn.ReLU in relu and nn.MaxPool2d in relu and nn.Sigmoid not in relu


def test_cifar_lenet_layer_sizes() -> None:
    net = models.CifarLeNet()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(16, (3, 3)), (32, (3, 3))]
    assert [layer.out_features for layer in linears] == [224, 96, 10]
    assert linears[0].in_features == 32 * 6 * 6
