"""One reverse step of the diffusion process, from a model output the caller has already computed.

The steps never call the model: the caller runs it once per step (with gradients when guiding, see
``guidance.guided_gradient``) and hands the output in, with the guidance gradient if any. A sampler's whole state
is then ``(x, step index, RNG state)``: each step draws its noise from an explicit ``torch.Generator`` (or takes
a noise tensor), so a run can be stopped after any step and resumed bit for bit.

Numerics follow guided-diffusion: tables are gathered in float64 and rounded to float32 after gathering; what
guided-diffusion computes from gathered values (DDIM's sigma, the score conditioning's ``sqrt(1 - alpha_bar)``)
is computed here from the float32 values too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from .schedule import DiffusionSchedule, rescale_timesteps

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``model(x, times) -> (N, 2C, H, W)``: epsilon in the first C channels (the clean image instead for a model
trained with guided-diffusion's ``predict_xstart``), the variance interpolation in the rest."""


class Prediction(NamedTuple):
    """What one model output says about step ``t``: the reverse step's Gaussian and the implied clean image."""

    mean: torch.Tensor
    variance: torch.Tensor
    log_variance: torch.Tensor
    pred_xstart: torch.Tensor
    eps: torch.Tensor
    """The model's epsilon, before ``clip_denoised`` (after it, it no longer matches ``pred_xstart``)."""


class StepOutput(NamedTuple):
    """The next, less noisy ``x`` and the model's (unguided) clean-image prediction, for previews."""

    sample: torch.Tensor
    pred_xstart: torch.Tensor


def extract(arr: torch.Tensor, t: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """``arr[t]`` per sample, broadcast to ``shape``: gathered in float64, then rounded to float32.

    Lands on ``t``'s device; a table kept elsewhere (e.g. on the CPU for MPS, which lacks float64) is gathered
    where it lives. Move the schedule with ``DiffusionSchedule.to`` to avoid the copy.
    """
    if arr.device == t.device:
        res = arr[t].float()
    else:
        res = arr[t.to(arr.device)].float().to(t.device)
    return res.view(-1, *([1] * (len(shape) - 1))).expand(shape)


def timestep_batch(t: int, batch: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Step ``t`` for every sample of a batch, as the long tensor the functions here index with."""
    return torch.full((batch,), int(t), dtype=torch.long, device=device)


def denoise(schedule: DiffusionSchedule, model: Model, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The model's output at step ``t``, without gradients, called with the original process's times."""
    with torch.no_grad():
        return model(x_t, rescale_timesteps(schedule, t))


def predict_xstart_from_eps(
    schedule: DiffusionSchedule, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor
) -> torch.Tensor:
    """The clean image that ``x_t`` would be if ``eps`` were its noise."""
    return (
        extract(schedule.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t
        - extract(schedule.sqrt_recipm1_alphas_cumprod, t, x_t.shape) * eps
    )


def predict_eps_from_xstart(
    schedule: DiffusionSchedule, x_t: torch.Tensor, t: torch.Tensor, pred_xstart: torch.Tensor
) -> torch.Tensor:
    """The noise in ``x_t`` if its clean image were ``pred_xstart``: inverts ``predict_xstart_from_eps``."""
    return (extract(schedule.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t - pred_xstart) / extract(
        schedule.sqrt_recipm1_alphas_cumprod, t, x_t.shape
    )


def q_posterior_mean(
    schedule: DiffusionSchedule, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """The mean of q(x_{t-1} | x_t, x_0): the reverse step's mean once x_0 is estimated."""
    return (
        extract(schedule.posterior_mean_coef1, t, x_t.shape) * x_start
        + extract(schedule.posterior_mean_coef2, t, x_t.shape) * x_t
    )


def learned_range_log_variance(schedule: DiffusionSchedule, var_values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The model's log variance: its output in [-1, 1] interpolates, in log space, posterior variance to beta."""
    min_log = extract(schedule.posterior_log_variance_clipped, t, var_values.shape)
    max_log = extract(schedule.log_betas, t, var_values.shape)
    frac = (var_values + 1) / 2
    return frac * max_log + (1 - frac) * min_log


def model_output_to_prediction(
    schedule: DiffusionSchedule,
    model_out: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    clip_denoised: bool = True,
    predict_xstart: bool = False,
) -> Prediction:
    """Read an epsilon + learned-range-variance output (OpenAI's ImageNet models) as the reverse step.

    ``predict_xstart``: the first channels are the clean image itself (guided-diffusion's ``START_X`` models);
    its gradient then reaches ``x_t`` without passing through ``1 / sqrt(alpha_bar)``. ``clip_denoised``
    clamps the clean image to [-1, 1] before the mean is formed from it; the CLIP guidance notebooks turn it off.
    """
    channels = x_t.shape[1]
    if model_out.shape != (x_t.shape[0], 2 * channels, *x_t.shape[2:]):
        raise ValueError(f"model output {tuple(model_out.shape)} is not twice the channels of x {tuple(x_t.shape)}")
    first, var_values = torch.split(model_out, channels, dim=1)
    log_variance = learned_range_log_variance(schedule, var_values, t)
    if predict_xstart:
        pred_xstart, eps = first, predict_eps_from_xstart(schedule, x_t, t, first)
    else:
        pred_xstart, eps = predict_xstart_from_eps(schedule, x_t, t, first), first
    if clip_denoised:
        pred_xstart = pred_xstart.clamp(-1, 1)
    mean = q_posterior_mean(schedule, pred_xstart, x_t, t)
    return Prediction(mean, torch.exp(log_variance), log_variance, pred_xstart, eps)


def q_sample(schedule: DiffusionSchedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``x0`` diffused to step ``t`` in one jump (how an init image enters the chain)."""
    return (
        extract(schedule.sqrt_alphas_cumprod, t, x0.shape) * x0
        + extract(schedule.sqrt_one_minus_alphas_cumprod, t, x0.shape) * noise
    )


def _step_noise(x: torch.Tensor, generator: torch.Generator | None, noise: torch.Tensor | None) -> torch.Tensor:
    """The step's standard normal noise: given, or drawn from ``generator`` only (never the global RNG by accident)."""
    if noise is not None:
        if noise.shape != x.shape:
            raise ValueError(f"noise {tuple(noise.shape)} does not match x {tuple(x.shape)}")
        return noise
    if generator is None:
        raise ValueError("a stochastic step needs a generator or a noise tensor, for reproducible sampling")
    return torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)


def _nonzero_mask(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """1 per sample except where ``t == 0``: the last step adds no noise."""
    return (t != 0).float().view(-1, *([1] * (ndim - 1)))


def condition_score(
    schedule: DiffusionSchedule, pred_xstart: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, grad: torch.Tensor
) -> torch.Tensor:
    """The clean image after guiding the score (Song et al.): eps moves by ``-sqrt(1 - alpha_bar) * grad``.

    The result is not clamped again, also with ``clip_denoised``, as in guided-diffusion.
    """
    alpha_bar = extract(schedule.alphas_cumprod, t, x_t.shape)
    eps = predict_eps_from_xstart(schedule, x_t, t, pred_xstart)
    eps = eps - (1 - alpha_bar).sqrt() * grad
    return predict_xstart_from_eps(schedule, x_t, t, eps)


def ddpm_step(
    schedule: DiffusionSchedule,
    model_out: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    *,
    grad: torch.Tensor | None = None,
    clip_denoised: bool = True,
    predict_xstart: bool = False,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> StepOutput:
    """Ancestral sampling of x_{t-1} (guided-diffusion's ``p_sample``); noise is drawn even at ``t == 0``.

    A guidance ``grad`` (of the log-probability, i.e. minus the loss gradient) shifts the mean by
    ``variance * grad`` (Sohl-Dickstein et al.'s conditioning).
    """
    x_t = x_t.detach()
    pred = model_output_to_prediction(schedule, model_out.detach(), x_t, t, clip_denoised, predict_xstart)
    noise = _step_noise(x_t, generator, noise)
    mean = pred.mean
    if grad is not None:
        mean = mean.float() + pred.variance * grad.float()
    sample = mean + _nonzero_mask(t, x_t.ndim) * torch.exp(0.5 * pred.log_variance) * noise
    return StepOutput(sample, pred.pred_xstart)


def ddim_sigma(schedule: DiffusionSchedule, t: torch.Tensor, shape: torch.Size, eta: float) -> torch.Tensor:
    """DDIM's noise scale: ``eta`` times the ancestral sampler's (eta = 1 is DDPM-like, 0 deterministic)."""
    alpha_bar = extract(schedule.alphas_cumprod, t, shape)
    alpha_bar_prev = extract(schedule.alphas_cumprod_prev, t, shape)
    return eta * torch.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * torch.sqrt(1 - alpha_bar / alpha_bar_prev)


def ddim_step(
    schedule: DiffusionSchedule,
    model_out: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    *,
    eta: float = 0.0,
    grad: torch.Tensor | None = None,
    clip_denoised: bool = True,
    predict_xstart: bool = False,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> StepOutput:
    """DDIM's x_{t-1} (Song et al. eq. 12, guided-diffusion's ``ddim_sample``); draws noise only if ``eta != 0``.

    A guidance ``grad`` conditions the score (``condition_score``); epsilon is then re-derived from the
    (guided, possibly clipped) clean image, as the original does. The returned ``pred_xstart`` is the
    unguided one, as in Crowson's with-grad sampler.
    """
    x_t = x_t.detach()
    pred = model_output_to_prediction(schedule, model_out.detach(), x_t, t, clip_denoised, predict_xstart)
    pred_xstart = pred.pred_xstart if grad is None else condition_score(schedule, pred.pred_xstart, x_t, t, grad)
    eps = predict_eps_from_xstart(schedule, x_t, t, pred_xstart)
    alpha_bar_prev = extract(schedule.alphas_cumprod_prev, t, x_t.shape)
    sigma = ddim_sigma(schedule, t, x_t.shape, eta)
    sample = pred_xstart * torch.sqrt(alpha_bar_prev) + torch.sqrt(1 - alpha_bar_prev - sigma**2) * eps
    if eta != 0:
        sample = sample + _nonzero_mask(t, x_t.ndim) * sigma * _step_noise(x_t, generator, noise)
    return StepOutput(sample, pred.pred_xstart)
