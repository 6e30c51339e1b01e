"""Samplers by the names AUTOMATIC1111's users know, each a diffusers scheduler class and a few config overrides.

A scheduler is always built from the pipeline's own scheduler config (``from_config``), so what the model was
trained with (its beta schedule, ``prediction_type``, SD-Turbo's ``"trailing"`` timestep spacing) is kept and
only the sampling method changes. Names are matched without regard to case, spaces, dashes or underscores, and
``++`` may be written ``pp``: ``"DPM++ 2M Karras"``, ``dpmpp-2m-karras`` and ``dpmpp_2m_karras`` are one
sampler. k-diffusion's ``k_`` prefix (``k_euler_a``) is accepted too.

diffusers itself is imported only when a scheduler is built, so the table is cheap to read (settings checks).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from dreamcanvas.errors import DreamcanvasError


@dataclass(frozen=True)
class Sampler:
    """One sampler: its AUTOMATIC1111 name, the diffusers scheduler class, and the config it overrides."""

    name: str
    scheduler_class: str
    overrides: dict[str, Any] = field(default_factory=dict)


def _karras_pair(name: str, scheduler_class: str, **overrides: Any) -> tuple[Sampler, Sampler]:
    """A sampler and its ``Karras`` twin: the same method on Karras et al.'s noise levels."""
    return (
        Sampler(name, scheduler_class, {**overrides, "use_karras_sigmas": False}),
        Sampler(f"{name} Karras", scheduler_class, {**overrides, "use_karras_sigmas": True}),
    )


SAMPLERS: tuple[Sampler, ...] = (
    Sampler("Euler a", "EulerAncestralDiscreteScheduler"),
    Sampler("Euler", "EulerDiscreteScheduler", {"use_karras_sigmas": False}),
    Sampler("Heun", "HeunDiscreteScheduler", {"use_karras_sigmas": False}),
    *_karras_pair("LMS", "LMSDiscreteScheduler"),
    *_karras_pair("DPM2", "KDPM2DiscreteScheduler"),
    *_karras_pair("DPM2 a", "KDPM2AncestralDiscreteScheduler"),
    *_karras_pair("DPM++ 2M", "DPMSolverMultistepScheduler", algorithm_type="dpmsolver++", solver_order=2),
    # diffusers' own SDE variant of the multistep solver draws its noise with torch: no torchsde needed.
    *_karras_pair("DPM++ 2M SDE", "DPMSolverMultistepScheduler", algorithm_type="sde-dpmsolver++", solver_order=2),
    Sampler("DDIM", "DDIMScheduler"),
    Sampler("PLMS", "PNDMScheduler", {"skip_prk_steps": True}),
    Sampler("UniPC", "UniPCMultistepScheduler"),
    Sampler("LCM", "LCMScheduler"),
)

ALIASES: dict[str, str] = {
    "pndm": "PLMS",
    "eulerancestral": "Euler a",
    "dpmsolverpp": "DPM++ 2M",
    "dpmsolverppkarras": "DPM++ 2M Karras",
}
"""Other names in use (the scheduler's diffusers name, spelled out names), keyed by :func:`_key`."""


def _key(name: str) -> str:
    """``"DPM++ 2M Karras"`` -> ``"dpmpp2mkarras"``: the form in which names are compared."""
    lowered = name.strip().lower()
    lowered = lowered.removeprefix("k_")
    return re.sub(r"[^a-z0-9]", "", lowered.replace("+", "p"))


def _by_key() -> dict[str, Sampler]:
    samplers = {_key(sampler.name): sampler for sampler in SAMPLERS}
    samplers.update({alias: samplers[_key(target)] for alias, target in ALIASES.items()})
    return samplers


def sampler_names() -> list[str]:
    """The AUTOMATIC1111 names of every sampler, in the order users know them."""
    return [sampler.name for sampler in SAMPLERS]


def find_sampler(name: str) -> Sampler:
    """The sampler called ``name`` (any case, dashes or spaces); one line listing the names if there is none."""
    sampler = _by_key().get(_key(name))
    if sampler is None:
        raise DreamcanvasError(f"--sampler {name!r} is not a sampler; choose one of: {', '.join(sampler_names())}")
    return sampler


def canonical_name(name: str) -> str:
    """``"dpmpp-2m-karras"`` -> ``"DPM++ 2M Karras"``: the spelling stored in settings and PNG text."""
    return find_sampler(name).name


def make_scheduler(name: str, base_config: Any) -> Any:
    """A fresh diffusers scheduler for sampler ``name``, from a pipeline's ``scheduler.config``.

    Returns a ``diffusers.SchedulerMixin``. Keeping the base config keeps what the model was trained with;
    only the method (and the Karras noise levels, for ``... Karras``) change.
    """
    import diffusers

    sampler = find_sampler(name)
    scheduler_class = getattr(diffusers, sampler.scheduler_class)
    return scheduler_class.from_config(dict(base_config), **sampler.overrides)


def a1111_name(scheduler: Any) -> str:
    """The AUTOMATIC1111 name of a scheduler (``"DPM++ 2M Karras"``), for the PNG's ``Sampler:`` field.

    The most specific sampler whose class and overrides the scheduler matches; a scheduler none of them
    describes (a model's own, unusual configuration) is named by its diffusers class instead.
    """
    config = getattr(scheduler, "config", {})
    matches = [
        sampler
        for sampler in SAMPLERS
        if type(scheduler).__name__ == sampler.scheduler_class
        and all(config.get(key) == value for key, value in sampler.overrides.items())
    ]
    if not matches:
        return type(scheduler).__name__
    return max(matches, key=lambda sampler: len(sampler.overrides)).name
