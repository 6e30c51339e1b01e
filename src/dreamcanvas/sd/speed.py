"""CPU speed levers for the diffusers Stable Diffusion pipeline: only those measured to pay on this project's CPU.

Measured with ``benchmarks/bench_sd.py`` and ad-hoc A/B runs of the same models (the real SD-Turbo and SD 1.5
architectures, random weights, 512², 2 threads of a Xeon with AMX); numbers are best-of-N on a shared machine.

What pays, in order of size (SD-Turbo 512², one step, same run of ``bench_sd.py``: stock 32.7 s per picture,
dreamcanvas 4.8 s):

1. **TAESD for the final picture** (``SDSettings.decoder = "taesd"``): the full VAE's decode of a 512² picture
   is 2,480 GFLOP, 3.7x an SD-Turbo UNet call (678 GFLOP), and took most of the stock picture's 32.7 s; TAESD's
   is 141 GFLOP, 0.45 s in bf16 + channels_last (the VAE in fp32: 60 s in the same contended A/B run).
2. **bf16 weights** where the CPU has native bf16 (AMX): the SD-Turbo UNet call 5.05 s -> 2.21 s, the SD 1.5
   CFG call (batch 2) 16.2 s -> 4.2 s. This is the loader's job (``load_pipeline(spec, working_dtype("auto"))``
   loads straight into bf16, no fp32 copy); nothing to do here.
3. **channels_last** on the convolutional networks (:func:`prepare_for_cpu`, :func:`prepare_tiny_decoder`).

Measured and left out (no gain beyond this shared machine's noise, best of 4-6 calls of the bf16 SD-Turbo UNet,
2.0-2.3 s each): fused QKV projections (``unet.fuse_qkv_projections()``: 2.27 vs 2.03 s), flush-denormal mode
(2.35 s), ``torch.inference_mode`` instead of ``no_grad``; ``torch.compile``: see :func:`prepare_for_cpu`.
OpenVINO (1.26x on the UNet in bf16, without AMX) is a backend of its own, not a lever here: ``sd/openvino.py``.
Kept as they are: diffusers' default attention (``AttnProcessor2_0``, PyTorch SDPA) and torch's default of one
thread per core.
"""

from __future__ import annotations

from typing import Any

import torch

_CONVOLUTIONAL = ("unet", "vae")
"""The pipeline parts made of convolutions (the text encoder is a transformer: memory format does not apply)."""


def to_channels_last(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` in channels_last, the layout oneDNN's convolutions (AMX in bf16) run without reorders.

    Measured, best of N, 512² (a 64² latent): TAESD's decode 0.81 -> 0.45 s in bf16 (3.35 -> 1.51 s in fp32);
    the full VAE's decode 39 -> 20 s in bf16; the SD-Turbo UNet in bf16 2.2-2.6 -> 2.03 s per call (batch 2:
    4.34 -> 4.10 s), in fp32 unchanged (6.41 vs 6.25 s). The weights are rewritten in place: no second copy
    stays alive. The activations follow the weights' layout, so the inputs need not be converted.
    """
    module.to(memory_format=torch.channels_last)
    return module


def prepare_for_cpu(pipe: Any) -> Any:
    """The diffusers pipeline ready for the CPU: every part in eval mode, the UNet and VAE in channels_last.

    Call it once after loading, in the working dtype already (bf16 where the CPU has it): it changes
    memory layout only, never values or dtype, so pictures are the same up to float rounding. Returns ``pipe``.

    ``torch.compile`` is deliberately not applied: on the bf16 channels_last SD-Turbo UNet (inductor, 2 threads)
    its first call took 166 s, and then best of 5 calls 2.04 s compiled vs 1.98 s eager (medians 2.07 vs
    2.40 s): at most a tenth of a UNet call saved per step, against minutes of warm-up at every start.
    """
    for name, part in pipe.components.items():
        if isinstance(part, torch.nn.Module):
            part.eval()
            if name in _CONVOLUTIONAL:
                to_channels_last(part)
    return pipe


def prepare_tiny_decoder(tiny_decoder: Any) -> Any:
    """TAESD (``AutoencoderTiny``) ready for the CPU: eval mode and channels_last. Returns it."""
    tiny_decoder.eval()
    return to_channels_last(tiny_decoder)
