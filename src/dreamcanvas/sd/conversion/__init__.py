"""The parts of a bundled tiny Stable Diffusion, converted from models dreamcanvas already ships.

* :mod:`~dreamcanvas.sd.conversion.text_encoder` - the bundled CLIP guide's text tower as transformers'
  ``CLIPTextModel``, and open_clip's BPE vocabulary as a ``CLIPTokenizer``.
* :mod:`~dreamcanvas.sd.conversion.autoencoder` - the bundled VQGAN's encoder and decoder as diffusers'
  ``AutoencoderKL`` (continuous latents, no codebook), and the latents' ``scaling_factor``.
* :mod:`~dreamcanvas.sd.conversion.folder` - :func:`assemble_tiny_sd`: both, a fresh UNet, a tokenizer and a
  scheduler, saved as a ``StableDiffusionPipeline`` folder that ``--model local:DIR`` loads.

Only the UNet is left to train. diffusers and transformers are imported when a part is first built.
"""

from __future__ import annotations

from dreamcanvas.sd.conversion.autoencoder import convert_vqgan, latent_scaling_factor, load_bundled_vqgan
from dreamcanvas.sd.conversion.folder import assemble_tiny_sd
from dreamcanvas.sd.conversion.text_encoder import convert_text_encoder, load_bundled_guide, make_tokenizer

__all__ = [
    "assemble_tiny_sd",
    "convert_text_encoder",
    "convert_vqgan",
    "latent_scaling_factor",
    "load_bundled_guide",
    "load_bundled_vqgan",
    "make_tokenizer",
]
