"""Gaussian diffusion for CLIP-guided sampling with OpenAI's ImageNet diffusion models (guided-diffusion).

The pieces, each small and free of the model and of CLIP:

- ``schedule``: beta schedules (``linear_betas``, ``cosine_betas``), the float64 tables of a process
  (``DiffusionSchedule``), respacing to fewer steps (``space_timesteps``, ``respaced``) and the times the model
  is called with (``rescale_timesteps``).
- ``sampling``: reading a model output (epsilon + learned-range variance) as a reverse step
  (``model_output_to_prediction``), ``q_sample``, and one reverse step, ``ddpm_step`` or ``ddim_step``, from a
  model output the caller computed, with an optional guidance gradient and an explicit RNG.
- ``guidance``: the notebooks' CLIP-guidance helpers (``blend_for_clip``, ``range_loss``, ``tv_loss``) and
  ``guided_gradient``: one forward and one backward per step, whose model output the step then reuses.

A sampler's state is ``(x, step index, RNG state)``; see ``sampling``.
"""

from .guidance import Guided, blend_for_clip, clamp_gradient, guided_gradient, range_loss, tv_loss
from .sampling import (
    Prediction,
    StepOutput,
    ddim_step,
    ddpm_step,
    denoise,
    extract,
    model_output_to_prediction,
    q_sample,
    timestep_batch,
)
from .schedule import (
    DiffusionSchedule,
    cosine_betas,
    linear_betas,
    linear_schedule,
    rescale_timesteps,
    respaced,
    sampling_timesteps,
    space_timesteps,
)

__all__ = [
    "DiffusionSchedule",
    "Guided",
    "Prediction",
    "StepOutput",
    "blend_for_clip",
    "clamp_gradient",
    "cosine_betas",
    "ddim_step",
    "ddpm_step",
    "denoise",
    "extract",
    "guided_gradient",
    "linear_betas",
    "linear_schedule",
    "model_output_to_prediction",
    "q_sample",
    "range_loss",
    "rescale_timesteps",
    "respaced",
    "sampling_timesteps",
    "space_timesteps",
    "timestep_batch",
    "tv_loss",
]
