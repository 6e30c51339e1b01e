"""Noise schedules of the Gaussian diffusion process, the numbers OpenAI's guided-diffusion models were trained with.

Every table is computed once, in float64 with numpy exactly as guided-diffusion does, and kept as float64 tensors:
the per-step values are only rounded to float32 when a sampler gathers them (see ``sampling.extract``). Respacing
keeps a subset of the original steps and derives new betas from the kept ``alphas_cumprod``, so a 250- or
50-step sampler walks the same noise levels as the 1000-step process the model was trained on.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

TRAINED_STEPS = 1000
"""The models' timestep embedding expects times on the scale of a 1000-step process."""


def linear_betas(steps: int = TRAINED_STEPS) -> torch.Tensor:
    """Ho et al.'s 1e-4..0.02 betas, scaled by ``1000 / steps`` so any step count ends near the same noise."""
    scale = TRAINED_STEPS / steps
    return torch.from_numpy(np.linspace(scale * 1e-4, scale * 0.02, steps, dtype=np.float64))


def betas_for_alpha_bar(steps: int, alpha_bar: Callable[[float], float], max_beta: float = 0.999) -> torch.Tensor:
    """Betas that follow a continuous ``alpha_bar(t)`` on ``t`` in [0, 1]; capped to avoid a singular last step."""
    betas = [min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), max_beta) for i in range(steps)]
    return torch.tensor(betas, dtype=torch.float64)


def cosine_betas(steps: int = TRAINED_STEPS) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule (the 64x64 and upsampler models use it, the 256/512 ones do not)."""
    return betas_for_alpha_bar(steps, lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2)


@dataclass(frozen=True, eq=False, repr=False)
class DiffusionSchedule:
    """The per-step tables of one diffusion process, float64, indexed by the process's own step ``t``.

    ``timestep_map[t]`` is the step of the original (trained) process that step ``t`` stands for, and
    ``original_num_steps`` that process's length: the model must be told those times, not ``t``.
    """

    betas: torch.Tensor
    log_betas: torch.Tensor
    alphas_cumprod: torch.Tensor
    alphas_cumprod_prev: torch.Tensor
    alphas_cumprod_next: torch.Tensor
    sqrt_alphas_cumprod: torch.Tensor
    sqrt_one_minus_alphas_cumprod: torch.Tensor
    log_one_minus_alphas_cumprod: torch.Tensor
    sqrt_recip_alphas_cumprod: torch.Tensor
    sqrt_recipm1_alphas_cumprod: torch.Tensor
    posterior_variance: torch.Tensor
    posterior_log_variance_clipped: torch.Tensor
    posterior_mean_coef1: torch.Tensor
    posterior_mean_coef2: torch.Tensor
    timestep_map: torch.Tensor
    original_num_steps: int

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.shape[0])

    def __repr__(self) -> str:
        first, last = int(self.timestep_map[0]), int(self.timestep_map[-1])
        return (
            f"DiffusionSchedule(num_timesteps={self.num_timesteps}, original_num_steps={self.original_num_steps}, "
            f"timesteps {first}..{last}, device={self.betas.device})"
        )

    @classmethod
    def from_betas(
        cls,
        betas: torch.Tensor | Sequence[float],
        timestep_map: torch.Tensor | Sequence[int] | None = None,
        original_num_steps: int | None = None,
    ) -> DiffusionSchedule:
        """All tables from the betas, computed in float64 numpy in the order guided-diffusion uses."""
        b = np.asarray(torch.as_tensor(betas, dtype=torch.float64).cpu().numpy(), dtype=np.float64)
        if b.ndim != 1 or b.size < 2:
            raise ValueError("betas must be a 1-D sequence of at least 2 steps")
        if not ((b > 0).all() and (b <= 1).all()):
            raise ValueError("betas must lie in (0, 1]")
        steps = b.shape[0]
        tmap = torch.arange(steps) if timestep_map is None else torch.as_tensor(timestep_map, dtype=torch.long).cpu()
        if tmap.shape != (steps,):
            raise ValueError(f"timestep_map needs {steps} entries, got {tuple(tmap.shape)}")

        alphas = 1.0 - b
        ac = np.cumprod(alphas, axis=0)
        ac_prev = np.append(1.0, ac[:-1])
        ac_next = np.append(ac[1:], 0.0)
        post_var = b * (1.0 - ac_prev) / (1.0 - ac)
        # The posterior variance is 0 at t = 0: its log borrows step 1's value there.
        post_log_var = np.log(np.append(post_var[1], post_var[1:]))
        tables = {
            "betas": b,
            "log_betas": np.log(b),
            "alphas_cumprod": ac,
            "alphas_cumprod_prev": ac_prev,
            "alphas_cumprod_next": ac_next,
            "sqrt_alphas_cumprod": np.sqrt(ac),
            "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
            "log_one_minus_alphas_cumprod": np.log(1.0 - ac),
            "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
            "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1),
            "posterior_variance": post_var,
            "posterior_log_variance_clipped": post_log_var,
            "posterior_mean_coef1": b * np.sqrt(ac_prev) / (1.0 - ac),
            "posterior_mean_coef2": (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac),
        }
        return cls(
            **{name: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64)) for name, v in tables.items()},
            timestep_map=tmap,
            original_num_steps=steps if original_num_steps is None else int(original_num_steps),
        )

    def to(self, device: torch.device | str) -> DiffusionSchedule:
        """The same tables on ``device`` (still float64), so gathering them per step copies nothing."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in dataclasses.fields(self)
            if torch.is_tensor(getattr(self, f.name))
        }
        return dataclasses.replace(self, **moved)


def linear_schedule(steps: int = TRAINED_STEPS) -> DiffusionSchedule:
    """The schedule of OpenAI's 256x256 and 512x512 ImageNet models."""
    return DiffusionSchedule.from_betas(linear_betas(steps))


def _ddim_stride_steps(num_timesteps: int, desired_count: int) -> list[int]:
    """The DDIM paper's even striding: the smallest integer stride giving exactly ``desired_count`` steps."""
    for stride in range(1, num_timesteps):
        steps = range(0, num_timesteps, stride)
        if len(steps) == desired_count:
            return list(steps)
    raise ValueError(f"cannot create exactly {desired_count} steps with an integer stride")


def _section_steps(start: int, size: int, count: int) -> list[int]:
    """``count`` steps spread over ``size`` steps, ends included; Python's round and a running float sum."""
    if size < count:
        raise ValueError(f"cannot divide section of {size} steps into {count}")
    stride = 1 if count <= 1 else (size - 1) / (count - 1)
    steps, position = [], 0.0
    for _ in range(count):
        steps.append(start + round(position))
        position += stride
    return steps


def space_timesteps(num_timesteps: int, section_counts: str | int | Sequence[int]) -> list[int]:
    """The original steps a shorter sampler keeps, ascending (guided-diffusion's ``timestep_respacing``).

    ``"250"`` spreads 250 steps over the whole process; ``"10,15,20"`` cuts it into equal sections (the first
    ones one step longer when it does not divide) and spreads that many steps over each; ``"ddim50"`` uses
    a single integer stride instead, as the DDIM paper does.
    """
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            return _ddim_stride_steps(num_timesteps, int(section_counts[len("ddim") :]))
        counts = [int(part) for part in section_counts.split(",")]
    elif isinstance(section_counts, int):
        counts = [section_counts]
    else:
        counts = [int(c) for c in section_counts]
    size_per, extra = divmod(num_timesteps, len(counts))
    start, kept = 0, []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        kept += _section_steps(start, size, count)
        start += size
    return sorted(set(kept))


def respaced(schedule: DiffusionSchedule, use_timesteps: Iterable[int]) -> DiffusionSchedule:
    """A shorter process over the kept steps, each with the same ``alpha_bar`` as in ``schedule``.

    A kept step's beta is whatever makes the cumulative product land on the original ``alphas_cumprod``
    there; ``timestep_map`` goes on pointing at the original process, also when respacing twice.
    """
    keep = {int(t) for t in use_timesteps}
    if len(keep) < 2:
        raise ValueError("respacing needs at least 2 kept steps")
    if min(keep) < 0 or max(keep) >= schedule.num_timesteps:
        raise ValueError(f"use_timesteps must lie in [0, {schedule.num_timesteps})")
    new_betas, new_map, last = [], [], 1.0
    for i, alpha_cumprod in enumerate(schedule.alphas_cumprod.cpu().numpy()):
        if i in keep:
            new_betas.append(1 - alpha_cumprod / last)
            last = alpha_cumprod
            new_map.append(int(schedule.timestep_map[i]))
    return DiffusionSchedule.from_betas(
        np.array(new_betas, dtype=np.float64), timestep_map=new_map, original_num_steps=schedule.original_num_steps
    )


def rescale_timesteps(schedule: DiffusionSchedule, t: torch.Tensor, rescale: bool = True) -> torch.Tensor:
    """The times the model is called with for steps ``t``: the original step, as float on a 0..1000 scale.

    With ``rescale=False`` the original step itself (long), as guided-diffusion does with
    ``rescale_timesteps=False``; the ImageNet notebooks use ``True``, which for a 1000-step base is the same number.
    """
    mapped = schedule.timestep_map.to(t.device)[t]
    if not rescale:
        return mapped
    return mapped.float() * (1000.0 / schedule.original_num_steps)


def sampling_timesteps(schedule: DiffusionSchedule, skip: int = 0) -> list[int]:
    """The steps a sampler visits, noisiest first; ``skip`` drops the noisiest ones (init-image strength)."""
    if not 0 <= skip < schedule.num_timesteps:
        raise ValueError(f"skip must lie in [0, {schedule.num_timesteps})")
    return list(range(schedule.num_timesteps - skip))[::-1]
