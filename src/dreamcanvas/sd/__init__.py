"""Stable Diffusion through diffusers: ``dreamcanvas sd``'s library, one idea per module.

* :mod:`~dreamcanvas.sd.settings` - :class:`SDSettings`, every setting of a picture, checked one way.
* :mod:`~dreamcanvas.sd.samplers` - AUTOMATIC1111's sampler names ("Euler a", "DPM++ 2M Karras", ...) as
  diffusers schedulers built from the model's own scheduler config.
* :mod:`~dreamcanvas.sd.parameters` - AUTOMATIC1111's ``parameters`` PNG text, written and read back.
* :mod:`~dreamcanvas.sd.models` - ``--model`` specs (registered names, ``local:``, ``hf-hub:``, single-file
  checkpoints, ``bundled:``) loaded as diffusers pipelines in the working dtype; TAESD decoders.
* :mod:`~dreamcanvas.sd.pipeline` - :func:`draw`: one call of the diffusers pipeline, seeded per picture,
  with a hook after every step for previews.
* :mod:`~dreamcanvas.sd.speed` - the CPU levers measured to pay (channels_last; bf16 is the loader's).
* :mod:`~dreamcanvas.sd.openvino` - ``--backend openvino``: the UNet converted by OpenVINO, cached, compiled.
* :mod:`~dreamcanvas.sd.run` - :func:`draw_run`: a picture as a dreamcanvas run (folder, preview frames,
  both kinds of PNG settings, video), by the contract of :mod:`dreamcanvas.outputs.run`.

Importing this package is light: diffusers and transformers load when a model or scheduler is first made.
"""

from __future__ import annotations

from dreamcanvas.sd.models import (
    is_model_spec,
    load_pipeline,
    load_tiny_decoder,
    resolve_model,
    tiny_decoder_name,
)
from dreamcanvas.sd.parameters import format_parameters, parse_parameters, settings_from_parameters
from dreamcanvas.sd.pipeline import decode_preview, decode_with_vae, draw, with_seed
from dreamcanvas.sd.run import SDResult, draw_run, load_models
from dreamcanvas.sd.samplers import a1111_name, canonical_name, make_scheduler, sampler_names
from dreamcanvas.sd.settings import SDSettings

__all__ = [
    "SDResult",
    "SDSettings",
    "a1111_name",
    "canonical_name",
    "decode_preview",
    "decode_with_vae",
    "draw",
    "draw_run",
    "format_parameters",
    "is_model_spec",
    "load_models",
    "load_pipeline",
    "load_tiny_decoder",
    "make_scheduler",
    "parse_parameters",
    "resolve_model",
    "sampler_names",
    "settings_from_parameters",
    "tiny_decoder_name",
    "with_seed",
]
