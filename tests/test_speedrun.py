"""The speedrun configs' pieces: airbench's network (whitening, identity init) and test-time augmentation, and
`speedrun_cifar` training on the CPU as shipped (bf16 autocast, channels_last, device-resident batches)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import DEFAULT_CONFIG, ROOT

from mnist_cifar.cli.main import build, run
from mnist_cifar.data import augment
from mnist_cifar.models import AirbenchNet
from mnist_cifar.training.classifier import ImageClassifier


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


def test_after_its_first_batch_the_network_never_reads_its_whitening_flag_on_the_host(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`if not self.whitened` on a tensor is a host-device sync at every step on a GPU: read once, then remembered;
    a loaded state dict is read again (here one saved before whitening: the network whitens on its next batch)."""
    net = AirbenchNet((3, 8, 8), 10, widths=(4, 4, 4)).train()
    unwhitened = {name: tensor.clone() for name, tensor in net.state_dict().items()}
    net(torch.randn(16, 3, 8, 8))
    with monkeypatch.context() as patch:
        patch.setattr(torch.Tensor, "__bool__", lambda self: pytest.fail("a host read of a tensor's truth"))
        for _ in range(3):
            net(torch.randn(16, 3, 8, 8))
    net.load_state_dict(unwhitened)
    assert not net.whitened_on_host and not bool(net.whitened)
    net(torch.randn(16, 3, 8, 8))
    assert bool(net.whitened) and net.whitened_on_host


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


HOST_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


def test_the_speedrun_training_path_reads_no_tensor_on_the_host_between_steps(cifar_dir: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU each host read of a tensor is a sync that stops the CPU from queueing the next step. Forced into
    the GPU's settings (the NaN check deferred, the step loss logged rarely), `speedrun_cifar` reads no tensor from
    one batch's start to the next's: data slicing, augmentation, whitening, forward, backward, SGD, lookahead,
    schedule and every callback. (The epoch's ends read their sums once; they are outside the counted stretch.)"""
    reads: list[list[str]] = []

    class Stretches(L.Callback):
        def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: object, index: int) -> None:
            reads.append([])

    def counting(name: str) -> object:
        original = getattr(torch.Tensor, name)

        def read(self: torch.Tensor, *args: object, **kwargs: object) -> object:
            if reads:
                reads[-1].append(name)
            return original(self, *args, **kwargs)
        return read

    built = build(["--config", str(ROOT / "configs" / "speedrun_cifar.yaml"), "--data.data_dir", str(cifar_dir),
                   "--data.val_size", "40", "--data.batch_size", "16", "--model.net.init_args.widths", "[16, 16, 16]",
                   "--trainer.max_epochs", "1", "--trainer.precision", "32-true", "--trainer.enable_progress_bar",
                   "false", "--trainer.log_every_n_steps", "1000", "--nonfinite_loss.check_every_n_batches", "1000",
                   "--test_after_fit", "false"], default_config=DEFAULT_CONFIG)
    built.trainer.callbacks.append(Stretches())
    with monkeypatch.context() as patch:
        for name in HOST_READS:
            patch.setattr(torch.Tensor, name, counting(name))
        built.trainer.fit(built.model, datamodule=built.datamodule)
    assert len(reads) == built.trainer.num_training_batches >= 8
    assert reads[0], "the first step reads (whitening's one check): the probe sees reads"
    assert reads[2:-1] == [[]] * (len(reads) - 3), reads  # from the third batch's start to the last one's


def test_triangular_schedule_keeps_each_groups_own_rate() -> None:
    from mnist_cifar.training.tricks import TriangularLR

    weights = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.SGD([{"params": weights[:1], "lr": 64.0}, {"params": weights[1:], "lr": 1.0}], lr=1.0)
    schedule = TriangularLR(optimizer, total_steps=100, start=0.2, peak_at=0.25, end=0.1)
    rates = []
    for _ in range(100):
        rates.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        schedule.step()
    rates.append([group["lr"] for group in optimizer.param_groups])
    assert rates[0] == pytest.approx([64 * 0.2, 0.2]) and rates[25] == pytest.approx([64.0, 1.0])
    assert rates[100] == pytest.approx([64 * 0.1, 0.1]) and rates[60][0] / rates[60][1] == pytest.approx(64)


def test_airbench_groups_scale_bias_lr_up_and_decay_down() -> None:
    from functools import partial

    model = ImageClassifier(net=AirbenchNet((3, 16, 16), 10, widths=(8, 8, 8)),
                            optimizer=partial(torch.optim.SGD, lr=0.5, weight_decay=0.01))
    biases, rest = model.configure_optimizers().param_groups
    assert biases["lr"] == 32.0 and biases["weight_decay"] == pytest.approx(0.01 / 64)
    assert rest["lr"] == 0.5 and rest["weight_decay"] == 0.01
    assert len(biases["params"]) == 6 and all(p.requires_grad for p in biases["params"])  # 2 BN per group, 3 groups
    assert sum(p.numel() for g in (biases, rest) for p in g["params"]) == sum(p.numel() for p in model.net.parameters())


def test_lookahead_pulls_the_weights_to_their_average_and_keeps_it_in_its_state() -> None:
    from types import SimpleNamespace

    from mnist_cifar.training.tricks import Lookahead

    module = ImageClassifier(net=torch.nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        module.net.weight.fill_(1.0)
    lookahead = Lookahead(start_epoch=0, every_n_steps=1, decay_base=0.5, decay_power=0.0)
    trainer = SimpleNamespace(global_step=1, current_epoch=0, estimated_stepping_batches=10)
    lookahead.on_train_batch_end(trainer, module, None, None, 0)  # first: remembers the weights
    with torch.no_grad():
        module.net.weight.fill_(3.0)
    trainer.global_step = 2
    lookahead.on_train_batch_end(trainer, module, None, None, 1)  # decay 0.5: halfway, copied back
    assert torch.allclose(module.net.weight, torch.full((2, 2), 2.0))
    restored = Lookahead()
    restored.load_state_dict(lookahead.state_dict())
    assert torch.equal(restored.average["net.weight"], module.net.weight)


def test_freeze_after_epochs_toggles_and_names_a_missing_parameter() -> None:
    from types import SimpleNamespace

    from mnist_cifar.errors import ConfigError
    from mnist_cifar.training.tricks import FreezeAfterEpochs

    module = ImageClassifier(net=AirbenchNet((3, 16, 16), 10, widths=(8, 8, 8)))
    freeze = FreezeAfterEpochs(["net.whiten.bias"], epochs=3)
    freeze.on_train_epoch_start(SimpleNamespace(current_epoch=2), module)
    assert module.net.whiten.bias.requires_grad
    freeze.on_train_epoch_start(SimpleNamespace(current_epoch=3), module)
    assert not module.net.whiten.bias.requires_grad
    with pytest.raises(ConfigError, match="net.nothing"):
        FreezeAfterEpochs(["net.nothing"], epochs=1).on_train_epoch_start(SimpleNamespace(current_epoch=0), module)


class StopAtStep(L.Callback):
    """After optimizer step `step`: crash (as a killed run would) or ask the trainer to stop (as `max_time` does)."""

    def __init__(self, step: int, crash: bool = True) -> None:
        self.step, self.crash = step, crash

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            if self.crash:
                raise RuntimeError(f"crashed at step {self.step}")
            trainer.should_stop = True


def speedrun_args(cifar_dir: Path, logs: Path, name: str, *extra: str) -> list[str]:
    """A tiny speedrun_cifar fit: 5 steps an epoch, 6 epochs, fp32 (bit-exact), lookahead from epoch 3 (step 15)."""
    return ["fit", "--config", str(ROOT / "configs" / "speedrun_cifar.yaml"), "--data.data_dir", str(cifar_dir),
            "--data.val_size", "40", "--data.batch_size", "32", "--model.net.init_args.widths", "[8, 16, 16]",
            "--trainer.precision", "32-true", "--trainer.enable_progress_bar", "false", "--test_after_fit", "false",
            "--trainer.max_epochs", "6", "--trainer.logger.init_args.save_dir", str(logs),
            "--trainer.logger.init_args.name", name, *extra]


@pytest.mark.slow
def test_speedrun_cifar_resumes_bit_identically_with_its_lookahead(cifar_dir: Path, tmp_path: Path) -> None:
    """A crash at step 22 (mid-epoch 4, the lookahead average running), then `--ckpt_path last`: the same weights
    as a run straight through."""
    straight = run(speedrun_args(cifar_dir, tmp_path, "straight"), default_config=DEFAULT_CONFIG)
    crash = '{"class_path": "test_speedrun.StopAtStep", "init_args": {"step": 22}}'
    with pytest.raises(RuntimeError, match="crashed at step 22"):
        run(speedrun_args(cifar_dir, tmp_path, "crashed", "--last_checkpoint.every_n_train_steps", "1",
                          f"--trainer.callbacks+={crash}"), default_config=DEFAULT_CONFIG)
    resumed = run(speedrun_args(cifar_dir, tmp_path, "crashed", "--ckpt_path", "last"), default_config=DEFAULT_CONFIG)
    assert resumed.trainer.global_step == straight.trainer.global_step == 30
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name


def test_a_run_stopped_mid_epoch_by_the_trainer_resumes_at_the_next_whole_epoch(cifar_dir: Path, tmp_path: Path) -> None:
    """`trainer.should_stop` mid-epoch (as `--trainer.max_time` does) ends that epoch for Lightning, which resumes at
    the next one: the resumed run must train all of it, not skip the stopped epoch's done batches there."""
    stop = '{"class_path": "test_speedrun.StopAtStep", "init_args": {"step": 12, "crash": false}}'
    first = run(speedrun_args(cifar_dir, tmp_path, "stopped", f"--trainer.callbacks+={stop}"),
                default_config=DEFAULT_CONFIG)
    assert first.trainer.global_step == 12  # two batches into epoch 2
    resumed = run(speedrun_args(cifar_dir, tmp_path, "stopped", "--ckpt_path", "last"), default_config=DEFAULT_CONFIG)
    assert resumed.trainer.global_step == 12 + 3 * 5  # epochs 3, 4 and 5, whole


def test_triangular_schedule_without_a_length_says_what_it_needs() -> None:
    from mnist_cifar.training.tricks import TriangularLR

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="needs total_steps"):
        TriangularLR(optimizer)
