"""The exponential moving average of a network's weights that every trainer exports (diffusion, SD, GANs).

Its rate follows the warm-up of k-diffusion and diffusers' ``EMAModel`` (inv_gamma 1, power 2/3): ``1 - (1 +
update)^(-2/3)``, capped at the trainer's ``--ema``. Early, while the weights move fast, the average follows them
(0.37 after the first update, 0.99 after 1,000); later it averages as long as ``--ema`` asks. A fixed rate would
keep a share ``rate^steps`` of the random initial weights: 0.999^1500 = 22 %, and a short CPU run's pictures
came out as noise.
"""

from __future__ import annotations

import torch

EMA_WARMUP_POWER = 2 / 3


def ema_rate(ceiling: float, update: int) -> float:
    """The moving average's rate at its ``update``-th update (from 1), at most ``ceiling``."""
    return min(ceiling, 1 - (1 + update) ** -EMA_WARMUP_POWER)


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, rate: float) -> None:
    """``ema = rate * ema + (1 - rate) * weights``, parameter by parameter; buffers (batch-norm statistics, which
    are averages already) are copied."""
    for average, weight in zip(ema.parameters(), model.parameters(), strict=True):
        average.mul_(rate).add_(weight, alpha=1 - rate)
    for average, buffer in zip(ema.buffers(), model.buffers(), strict=True):
        average.copy_(buffer)
