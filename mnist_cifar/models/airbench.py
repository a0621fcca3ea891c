"""The airbench94 network (Keller Jordan, github.com/KellerJordan/cifar10-airbench): 94 % on CIFAR-10 in ~10 epochs.

A frozen 2x2 "whitening" convolution, then three groups of conv -> max-pool -> BatchNorm -> GELU -> conv ->
BatchNorm -> GELU (widths 64/256/256), a global max-pool and a linear layer scaled by 1/9. Its training tricks
that live in the network are here: convolutions start as identity maps where their shapes allow (dirac init),
BatchNorm learns only its bias, with eps 1e-12 and momentum 0.4 (airbench's 0.6 in its own convention).

The whitening convolution's weights are the eigenvectors of the covariance of 2x2 patches, scaled by the inverse
square root of their eigenvalues (and their negatives): they are computed from the first training batch the network
sees, once, and are part of the checkpoint (`whitened` records that it happened), so a resumed or reloaded
network never recomputes them. airbench computes them from 5,000 un-augmented training images instead.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from mnist_cifar.models._layers import pool_if_room


class BiasOnlyBatchNorm(nn.BatchNorm2d):
    def __init__(self, channels: int, momentum: float = 0.4) -> None:
        super().__init__(channels, eps=1e-12, momentum=momentum)
        self.weight.requires_grad_(False)


def identity_init_conv(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding="same", bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[: min(in_channels, out_channels)])
    return conv


class ConvGroup(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, pool: nn.Module) -> None:
        super().__init__(
            identity_init_conv(in_channels, out_channels), pool, BiasOnlyBatchNorm(out_channels), nn.GELU(),
            identity_init_conv(out_channels, out_channels), BiasOnlyBatchNorm(out_channels), nn.GELU(),
        )


class AirbenchNet(nn.Module):
    """airbench94's network: frozen whitening conv, three conv-pool-BN-GELU groups, global max-pool, scaled linear head.

    Args:
        input_shape: one image's (channels, height, width), linked from the data set by main.py.
        num_classes: the number of logits, linked from the data set.
        widths: the channels of the three groups.
        whitening_kernel: the size of the frozen whitening convolution, computed from the first training batch.
        output_scale: the factor on the logits (airbench's 1/9).
        whitening_eps: added to the patch covariance's eigenvalues before whitening.
        bias_lr_scale: BatchNorm biases train at this times the learning rate, with 1/this the weight decay.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int] = (3, 32, 32),
        num_classes: int = 10,
        widths: tuple[int, int, int] = (64, 256, 256),
        whitening_kernel: int = 2,
        output_scale: float = 1 / 9,
        whitening_eps: float = 5e-4,
        bias_lr_scale: float = 64.0,
    ) -> None:
        super().__init__()
        channels = input_shape[0]
        whitened_channels = 2 * channels * whitening_kernel**2
        self.whiten = nn.Conv2d(channels, whitened_channels, whitening_kernel, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)
        nn.init.zeros_(self.whiten.bias)
        self.register_buffer("whitened", torch.zeros((), dtype=torch.bool))
        # The buffer's value once read on the host: reading it at every forward would be a host-device sync per
        # step on a GPU (and a graph break under torch.compile). Loading a state dict forgets it.
        self.whitened_on_host = False
        self.register_load_state_dict_post_hook(_forget_whitened)
        self.whitening_eps = whitening_eps
        groups, previous, size = [], whitened_channels, min(input_shape[1:]) - whitening_kernel + 1
        for width in widths:
            pool, size = pool_if_room(size)  # small inputs (MNIST's 28x28 gives 27 -> 13 -> 6 -> 3) keep every group
            groups.append(ConvGroup(previous, width, pool))
            previous = width
        self.body = nn.Sequential(nn.GELU(), *groups, nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.head = nn.Linear(previous, num_classes, bias=False)
        self.output_scale = output_scale
        self.bias_lr_scale = bias_lr_scale

    def parameter_groups(self) -> list[dict]:
        """airbench's two groups: BatchNorm biases at `bias_lr_scale` times the learning rate, with the weight decay
        scaled down as much so that each step decays them as much as the rest; the other trainable parameters."""
        norm = [p for m in self.modules() if isinstance(m, BiasOnlyBatchNorm) for p in m.parameters() if p.requires_grad]
        ids = {id(p) for p in norm}
        rest = [p for p in self.parameters() if id(p) not in ids]  # frozen ones too: FreezeAfterEpochs may toggle them
        return [{"params": norm, "lr_scale": self.bias_lr_scale, "weight_decay_scale": 1 / self.bias_lr_scale},
                {"params": rest}]

    @torch.no_grad()
    def init_whitening(self, images: Tensor) -> None:
        """Set the whitening convolution from the 2x2 (kernel-sized) patches of `images` (normalized floats)."""
        c, (h, w) = images.shape[1], self.whiten.kernel_size
        with torch.autocast(images.device.type, enabled=False):  # eigh needs float32, whatever the precision
            patches = images.float().unfold(2, h, 1).unfold(3, w, 1).transpose(1, 3).reshape(-1, c * h * w)
            covariance = patches.T @ patches / len(patches)
            if dist.is_available() and dist.is_initialized():  # every DDP rank whitens alike: from all first batches
                dist.all_reduce(covariance)
                covariance /= dist.get_world_size()
            eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.T.flip(0).reshape(-1, c, h, w)
        scaled = eigenvectors / torch.sqrt(eigenvalues + self.whitening_eps).view(-1, 1, 1, 1)
        self.whiten.weight.copy_(torch.cat((scaled, -scaled)).to(self.whiten.weight.dtype))
        self.whitened.fill_(True)

    def forward(self, x: Tensor) -> Tensor:
        if self.training and not self.whitened_on_host:
            if not self.whitened:  # read once: after this, or after a checkpoint that holds it, never again
                self.init_whitening(x)
            self.whitened_on_host = True
        return self.head(self.body(self.whiten(x))) * self.output_scale


def _forget_whitened(module: AirbenchNet, incompatible_keys: object) -> None:
    """After `load_state_dict`: the `whitened` buffer may have changed, so it is read again at the next forward."""
    module.whitened_on_host = False
