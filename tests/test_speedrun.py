"""The speedrun configs' pieces: airbench's network (whitening, identity init) and test-time augmentation, and
`speedrun_cifar` training on the CPU as shipped (bf16 autocast, channels_last, device-resident batches)."""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import DEFAULT_CONFIG, ROOT

from mnist_cifar.classifier import ImageClassifier
from mnist_cifar.cli import run
from mnist_cifar.data import augment
from mnist_cifar.models import AirbenchNet


def test_whitening_decorrelates_the_patches_it_was_computed_from() -> None:
    torch.manual_seed(0)
    mixing = torch.randn(3, 3)
    images = torch.einsum("dc,nchw->ndhw", mixing, torch.randn(64, 3, 16, 16))  # correlated channels
    net = AirbenchNet((3, 16, 16), 10, widths=(8, 8, 8))
    net.init_whitening(images)
    features = net.whiten(images)[:, : net.whiten.out_channels // 2] - net.whiten.bias[: net.whiten.out_channels // 2, None, None]
    flat = features.transpose(0, 1).flatten(1)
    covariance = flat @ flat.T / flat.shape[1]
    assert torch.allclose(covariance, torch.eye(len(covariance)), atol=0.05)
    assert bool(net.whitened)


def test_whitening_happens_once_and_travels_with_the_weights() -> None:
    net = AirbenchNet((3, 8, 8), 10, widths=(4, 4, 4)).train()
    net(torch.randn(16, 3, 8, 8))
    weights = net.whiten.weight.clone()
    net(torch.randn(16, 3, 8, 8) * 5)  # a second batch does not recompute it
    assert torch.equal(net.whiten.weight, weights)
    reloaded = AirbenchNet((3, 8, 8), 10, widths=(4, 4, 4)).train()
    reloaded.load_state_dict(net.state_dict())
    reloaded(torch.randn(16, 3, 8, 8))
    assert torch.equal(reloaded.whiten.weight, weights) and bool(reloaded.whitened)


def test_convolutions_start_as_identity_maps() -> None:
    net = AirbenchNet((3, 32, 32), 10)
    conv = net.body[1][4]  # the second convolution of the first group: 64 -> 64 channels
    x = torch.randn(2, 64, 8, 8)
    assert torch.allclose(conv(x), x)


def test_flip_translate_averages_six_views() -> None:
    images = torch.randn(4, 3, 8, 8)
    calls = []

    def net(x: torch.Tensor) -> torch.Tensor:
        calls.append(x)
        return x.mean(dim=(1, 2, 3))[:, None].expand(-1, 10)

    logits = augment.flip_translate_logits(net, images)
    assert len(calls) == 6 and logits.shape == (4, 10)
    up_left, _, down_right, _, plain, mirror = calls
    assert torch.equal(plain, images) and torch.equal(mirror, images.flip(-1))
    assert torch.equal(up_left[..., 1:, 1:], images[..., :-1, :-1])  # shifted by one pixel each way
    assert torch.equal(down_right[..., :-1, :-1], images[..., 1:, 1:])
    expected = 0.125 * sum(net(view) for view in calls[:4]) + 0.25 * (net(plain) + net(mirror))
    assert torch.allclose(logits, expected)


def test_classifier_uses_test_time_augmentation_for_test_and_predict_only() -> None:
    model = ImageClassifier(net=AirbenchNet((3, 8, 8), 10, widths=(4, 4, 4)), test_time_augmentation=True).eval()
    images = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model._logits(images, "test"), augment.flip_translate_logits(model, images))
        assert torch.allclose(model._logits(images, "val"), model(images))


def test_speedrun_cifar_learns_on_the_cpu_as_shipped(cifar_dir: Path) -> None:
    """The shipped recipe (bf16 autocast, channels_last, batches sliced on the device, whitening, TTA) on the
    tiny CIFAR copy, only the batch and the widths sized to it: accuracy must rise from chance to most images."""
    result = run(["fit", "--config", str(ROOT / "configs" / "speedrun_cifar.yaml"), "--data.data_dir", str(cifar_dir),
                  "--data.val_size", "40", "--data.batch_size", "32", "--data.eval_batch_size", "64",
                  "--model.net.init_args.widths", "[32, 64, 64]", "--trainer.max_epochs", "5",
                  "--trainer.enable_progress_bar", "false"], default_config=DEFAULT_CONFIG)
    assert result.model.net.whitened
    assert result.trainer.checkpoint_callback.best_model_score > 0.5  # validation; chance is 0.1
    assert result.trainer.callback_metrics["test/acc"] > 0.5  # the best checkpoint, with test-time augmentation
