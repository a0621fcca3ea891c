"""Every network: logits of the right shape on every data set's input, and a gradient on every parameter."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

import mnist_cifar.models as models

INPUT_SHAPES = {"mnist": (1, 28, 28), "cifar": (3, 32, 32), "cifar_gray": (1, 32, 32)}
MODEL_CLASSES = [getattr(models, name) for name in models.__all__]
# Variants whose code paths differ from the defaults, each checked on every input shape too.
VARIANTS = {
    "FCNet-no-hidden": (models.FCNet, {"hidden": []}),
    "FCNet-dropout": (models.FCNet, {"hidden": [32, 16, 8], "dropout": 0.5}),
    "CourseNet-original": (models.CourseNet, {"activation": None}),
    "LeNet5-relu-max": (models.LeNet5, {"activation": "relu", "pooling": "max"}),
    "VGG11": (models.VGGNet, {"depth": 11}),
    "CifarResNet20": (models.CifarResNet, {"depth": 20}),
    "RowRNN-rnn": (models.RowRNN, {"cell": "rnn"}),
    "RowRNN-gru-2-layers-bidirectional": (models.RowRNN, {"cell": "gru", "num_layers": 2, "bidirectional": True}),
    "RowRNN-pixelwise": (models.RowRNN, {"pixelwise": True, "hidden_size": 16}),
}
BUILDS = {cls.__name__: (cls, {}) for cls in MODEL_CLASSES} | VARIANTS


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("shape_name", INPUT_SHAPES)
@pytest.mark.parametrize("build", BUILDS)
def test_logits_shape_and_gradient_on_every_parameter(build: str, shape_name: str) -> None:
    model_class, kwargs = BUILDS[build]
    shape = INPUT_SHAPES[shape_name]
    smallest = getattr(model_class, "smallest_side", 0)  # d2l's ImageNet-sized networks: at their smallest input
    if smallest > min(shape[1:]):
        with pytest.raises(ValueError, match=f"at least {smallest} pixels a side.*--data.resize"):
            model_class(input_shape=shape, num_classes=7, **kwargs)
        shape = (shape[0], smallest, smallest)
    torch.manual_seed(0)
    net = model_class(input_shape=shape, num_classes=7, **kwargs)
    logits = net(torch.randn(3, *shape))
    assert logits.shape == (3, 7)
    logits.square().sum().backward()
    for name, parameter in net.named_parameters():
        if parameter.requires_grad:  # AirbenchNet freezes its whitening conv and BatchNorm scales by design
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


def test_notes_fc2layer_and_cnn_have_about_the_same_parameter_count() -> None:
    # FC2Layer(784, 8, 10): 784*8+8 + 8*8+8 + 8*10+10; CNN(n_feature=6): 156 + 906 + 96*50+50 + 50*10+10.
    assert count_parameters(models.FCNet(input_shape=(1, 28, 28), hidden=[8, 8])) == 6_442
    assert count_parameters(models.SmallCNN(input_shape=(1, 28, 28), n_feature=6)) == 6_422


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [({"depth": 20}, 272_474), ({"depth": 56}, 855_770), ({"depth": 18}, 11_173_962)],
    ids=["resnet20", "resnet56", "resnet18"],
)
def test_resnet_parameter_counts(kwargs: dict, expected: int) -> None:
    # ResNet-20 is 0.27 M and ResNet-56 0.85 M in He et al. (option A shortcuts; option B here adds the 1x1 convs).
    assert count_parameters(models.CifarResNet(**kwargs)) == expected


def test_vgg16_has_thirteen_convs_and_one_linear() -> None:
    net = models.VGGNet(depth=16)
    assert sum(isinstance(m, nn.Conv2d) for m in net.modules()) == 13
    assert [m.in_features for m in net.modules() if isinstance(m, nn.Linear)] == [512]


def test_resnet_refuses_an_unknown_depth() -> None:
    with pytest.raises(ValueError, match="depth must be 18, 34 or 6n\\+2"):
        models.CifarResNet(depth=19)


def test_row_rnn_reads_rows_of_all_channels() -> None:
    lstm = models.RowRNN(input_shape=(3, 32, 32), cell="lstm").rnn
    assert lstm.input_size == 96
    assert models.RowRNN(input_shape=(1, 28, 28), pixelwise=True).rnn.input_size == 1


def test_torchvision_net_replaces_the_head() -> None:
    net = models.TorchvisionNet(input_shape=(3, 32, 32), num_classes=10, name="resnet18")
    assert net.backbone.fc.out_features == 10
    assert models.TorchvisionNet(name="mobilenet_v3_small", num_classes=4)(torch.randn(2, 1, 28, 28)).shape == (2, 4)


def test_torchvision_net_weights_offline_give_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from mnist_cifar.errors import UserFacingError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(UserFacingError, match="weights IMAGENET1K_V1.*download.pytorch.org.*weights null"):
        models.TorchvisionNet(name="resnet18", weights="IMAGENET1K_V1")


@pytest.mark.parametrize(("kwargs", "match"), [({"name": "resnet_9000"}, "no classification model"),
                                               ({"weights": "NOPE"}, "has no weights 'NOPE'")])
def test_torchvision_net_bad_names_are_config_errors(kwargs: dict, match: str) -> None:
    from mnist_cifar.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        models.TorchvisionNet(**kwargs)


@pytest.mark.parametrize("cls", MODEL_CLASSES, ids=lambda c: c.__name__)
def test_every_network_explains_itself_and_each_argument(cls: type) -> None:
    """`python main.py fit --model.net.help <class>` shows the class docstring's `Args:` entries as each option's help."""
    from docstring_parser import parse

    doc = parse(inspect.getdoc(cls) or "")
    assert doc.short_description, f"{cls.__name__} has no docstring"
    documented = {param.arg_name for param in doc.params}
    arguments = [name for name in inspect.signature(cls.__init__).parameters if name != "self"]
    assert not set(arguments) - documented, f"{cls.__name__} leaves undocumented: {set(arguments) - documented}"
