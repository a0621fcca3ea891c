"""Learning-rate schedules whose every number has one effect.

torch's `OneCycleLR` takes its own `max_lr` and sets every group's lr from `max_lr / div_factor` when it is built,
so the optimizer's `lr` in a config did nothing: `--model.optimizer.init_args.lr 0.5` trained at the same rates as
0.002 (Adam at 0.0004 either way), and a search over lr would have searched nothing. Here the optimizer's lr of
each parameter group is its peak, so the lr a user types is the lr the schedule reaches, and a network's groups
(e.g. a 64x lr on some biases) keep their ratios. The same holds for momentum: torch's `cycle_momentum` replaced
the optimizer's momentum (SGD) or beta1 (Adam) by its own `max_momentum` (0.95), so a configured momentum of 0.9
did nothing; here the optimizer's momentum is the top of the cycle (where it starts and ends).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch.optim import Optimizer


class OneCycleLR(torch.optim.lr_scheduler.OneCycleLR):
    """torch's one-cycle schedule, peaking at each parameter group's own lr (there is no `max_lr`), with the
    optimizer's own momentum as the top of the momentum cycle (there is no `max_momentum`).

    Args:
        optimizer: the optimizer; each group's `lr` when the schedule is built is that group's peak, and its
            `momentum` (SGD) or `betas[0]` (Adam) the momentum at the start and the end of the cycle.
        total_steps: the schedule's length; left out, the classifier fills it in from the trainer
            (`estimated_stepping_batches`, or `max_epochs` with `scheduler_interval: epoch`).
        epochs: with `steps_per_epoch`, the other way to give the length (torch's), instead of `total_steps`.
        steps_per_epoch: see `epochs`.
        pct_start: the fraction of the steps spent rising to the peak.
        anneal_strategy: "cos" or "linear".
        cycle_momentum: cycle the momentum inversely to the lr, from the optimizer's down to `base_momentum`
            at the peak lr and back; false leaves the optimizer's momentum constant.
        base_momentum: the momentum at the peak lr.
        div_factor: the schedule starts at peak / div_factor.
        final_div_factor: and ends at peak / (div_factor * final_div_factor).
        three_phase: torch's three-phase variant.
    """

    def __init__(self, optimizer: Optimizer, total_steps: int | None = None, epochs: int | None = None,
                 steps_per_epoch: int | None = None, pct_start: float = 0.3,
                 anneal_strategy: Literal["cos", "linear"] = "cos", cycle_momentum: bool = True,
                 base_momentum: float = 0.85, div_factor: float = 25.0, final_div_factor: float = 1e4,
                 three_phase: bool = False) -> None:
        peaks = [group["lr"] for group in optimizer.param_groups]
        tops = [_momentum(group) for group in optimizer.param_groups] if cycle_momentum else 0.95
        super().__init__(optimizer, max_lr=peaks, total_steps=total_steps, epochs=epochs,
                         steps_per_epoch=steps_per_epoch, pct_start=pct_start, anneal_strategy=anneal_strategy,
                         cycle_momentum=cycle_momentum, base_momentum=base_momentum, max_momentum=tops,
                         div_factor=div_factor, final_div_factor=final_div_factor, three_phase=three_phase)


def _momentum(group: dict) -> float:
    if "betas" in group:
        return group["betas"][0]
    if "momentum" in group:
        return group["momentum"]
    raise ValueError("OneCycleLR with cycle_momentum needs an optimizer with momentum (SGD) or betas (Adam); "
                     "set cycle_momentum: false for this one.")
