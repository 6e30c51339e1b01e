"""CLIP guidance through Disco Diffusion's secondary model instead of the big UNet.

With ``use_secondary_model`` Disco runs the guided-diffusion UNet without gradients and asks the small
``dreamcanvas.models.secondary.SecondaryModel`` for the clean image CLIP judges; only that network is
differentiated. Its continuous time comes from the step's noise level: ``alpha, sigma = sqrt(alpha_bar),
sqrt(1 - alpha_bar)`` and ``t = atan2(sigma, alpha) * 2 / pi``. The rest follows ``guidance.guided_gradient``: the
loss sees ``blend_for_clip(pred, x_t, alpha_bar)`` and ``pred``, one backward reaches ``x_t``, ``-grad`` comes back
with the (unchanged) UNet output for the step to reuse.
"""

from __future__ import annotations

import torch

from dreamcanvas.models.secondary import SecondaryModel, alpha_sigma_to_t

from .guidance import GuidanceLoss, Guided, blend_for_clip
from .sampling import extract
from .schedule import DiffusionSchedule


def secondary_time(schedule: DiffusionSchedule, t: torch.Tensor) -> torch.Tensor:
    """The secondary model's continuous time for step ``t`` of ``schedule``, per sample, float32.

    As Disco: the float64 ``sqrt(alpha_bar)`` and ``sqrt(1 - alpha_bar)`` are rounded to float32, then ``atan2``.
    """
    alpha = extract(schedule.sqrt_alphas_cumprod, t, t.shape)
    sigma = extract(schedule.sqrt_one_minus_alphas_cumprod, t, t.shape)
    return alpha_sigma_to_t(alpha, sigma)


def secondary_gradient(
    schedule: DiffusionSchedule,
    loss_fn: GuidanceLoss,
    x_t: torch.Tensor,
    t: torch.Tensor,
    unet_out: torch.Tensor,
    secondary: SecondaryModel,
) -> Guided:
    """The guidance gradient at ``x_t`` from one forward and one backward of the secondary model alone.

    ``unet_out`` is the big model's output at ``(x_t, t)``, computed without gradients (``sampling.denoise``); it
    is handed back detached, for ``ddim_step``/``ddpm_step``. ``t`` holds the schedule's own (long) step per
    sample. Only ``x_t`` gets a gradient: neither network's parameters are touched.
    """
    with torch.enable_grad():
        x = x_t.detach().requires_grad_()
        pred = secondary(x, secondary_time(schedule, t.to(x.device))).pred
        alpha_bar = schedule.alphas_cumprod[t.to(schedule.alphas_cumprod.device)]
        loss = loss_fn(blend_for_clip(pred, x, alpha_bar), pred)
        (grad,) = torch.autograd.grad(loss, x)
    return Guided(unet_out.detach(), -grad, loss.detach())
