"""CLIP guidance for diffusion sampling, as in Crowson's CLIP-guided diffusion notebooks and Disco Diffusion.

Nothing here knows CLIP: the caller's loss sees the image CLIP should judge and the model's clean-image
prediction, and returns a scalar. ``guided_gradient`` runs the model once with gradients, backpropagates that
loss once to ``x_t`` and hands back the model output too, so the sampling step reuses it instead of running
the model a second time (the "cond_fn_with_grad" way).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .sampling import Model, model_output_to_prediction
from .schedule import DiffusionSchedule, rescale_timesteps

GuidanceLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss(x_in, pred_xstart) -> scalar``, summed over the batch so each sample's gradient is its own."""


class Guided(NamedTuple):
    """One guided model call: the (detached) output for the step, the guidance gradient, and the loss."""

    model_out: torch.Tensor
    grad: torch.Tensor
    loss: torch.Tensor


def blend_for_clip(pred_xstart: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """The image CLIP judges: the clean prediction, mixed with ``x_t`` in proportion to how noisy the step is.

    ``fac = sqrt(1 - alpha_bar)`` per sample: early (noisy) steps show CLIP mostly the prediction, late ones
    mostly ``x_t``. ``fac`` is computed in ``alpha_bar``'s precision (float64 from the schedule) and then cast.
    """
    alpha_bar = torch.as_tensor(alpha_bar)
    alpha_bar = alpha_bar.reshape(-1, *([1] * (x_t.ndim - 1))) if alpha_bar.ndim else alpha_bar
    fac = torch.sqrt(1 - alpha_bar)
    keep = fac.to(device=x_t.device, dtype=pred_xstart.dtype)
    return pred_xstart * keep + x_t * (1 - fac).to(device=x_t.device, dtype=x_t.dtype)


def range_loss(x: torch.Tensor) -> torch.Tensor:
    """Per sample, the mean square by which pixels leave [-1, 1]: keeps the prediction in the image range."""
    return (x - x.clamp(-1, 1)).pow(2).mean(dim=(1, 2, 3))


def tv_loss(x: torch.Tensor) -> torch.Tensor:
    """Per sample, squared (L2) total variation, right/bottom edges padded by replication: discourages speckle."""
    padded = F.pad(x, (0, 1, 0, 1), mode="replicate")
    x_diff = padded[..., :-1, 1:] - padded[..., :-1, :-1]
    y_diff = padded[..., 1:, :-1] - padded[..., :-1, :-1]
    return (x_diff**2 + y_diff**2).mean(dim=(1, 2, 3))


def clamp_gradient(grad: torch.Tensor, max_rms: float) -> torch.Tensor:
    """``grad`` scaled down, if needed, to a root-mean-square of at most ``max_rms`` (Disco's ``clamp_grad`` /
    ``clamp_max``): only its direction is kept when it is large. Early, noisy steps differentiate through
    ``1 / sqrt(alpha_bar)`` (about 150 at the first step), and an unclamped DDIM step then multiplies ``x``
    instead of nudging it. ``max_rms`` 0 leaves ``grad`` as it is (the first notebook's)."""
    if max_rms <= 0:
        return grad
    rms = grad.square().mean().sqrt()
    return grad * (rms.clamp(max=max_rms) / rms.clamp(min=torch.finfo(grad.dtype).tiny))


def guided_gradient(
    schedule: DiffusionSchedule,
    loss_fn: GuidanceLoss,
    x_t: torch.Tensor,
    t: torch.Tensor,
    model: Model,
    *,
    clip_denoised: bool = False,
    predict_xstart: bool = False,
) -> Guided:
    """One model forward with ``x_t`` requiring grad, one backward of ``loss_fn`` to it; returns ``-grad``.

    The loss sees ``blend_for_clip(pred_xstart, x_t, alpha_bar)`` and ``pred_xstart`` (unclamped unless
    ``clip_denoised``: clamping would cut the gradient of out-of-range pixels). Only ``x_t`` gets a gradient:
    the model's parameters are left untouched. Pass ``model_out`` and ``grad`` to ``ddim_step``/``ddpm_step``.
    ``predict_xstart``: the model outputs the clean image (see ``sampling.model_output_to_prediction``).
    """
    with torch.enable_grad():
        x = x_t.detach().requires_grad_()
        model_out = model(x, rescale_timesteps(schedule, t))
        pred_xstart = model_output_to_prediction(schedule, model_out, x, t, clip_denoised, predict_xstart).pred_xstart
        alpha_bar = schedule.alphas_cumprod[t.to(schedule.alphas_cumprod.device)]
        loss = loss_fn(blend_for_clip(pred_xstart, x, alpha_bar), pred_xstart)
        (grad,) = torch.autograd.grad(loss, x)
    return Guided(model_out.detach(), -grad, loss.detach())
