"""Will a run fit in memory? An estimate of its peak from its settings alone, before anything is loaded.

``--size 100000 100000`` or ``--cutn 100000`` would otherwise allocate until the machine swaps to death, so
``generate`` and the trainers ask for an estimate first and refuse, in one line naming it, a run that needs
more than 90 % (:data:`SAFETY`) of the memory available; ``--force`` runs it anyway. The coefficients are
measured on real runs with ``benchmarks/bench_memory.py``.

- :mod:`~dreamcanvas.memory.system`: the memory available (``MemAvailable``, the cgroup's headroom when lower).
- :mod:`~dreamcanvas.memory.shapes`: what a model costs, read without loading it (CLIP, VQGAN, diffusion).
- :mod:`~dreamcanvas.memory.estimates`: the measured coefficients, the estimates and :func:`check_fits`.
"""

from dreamcanvas.memory.estimates import (
    SAFETY,
    MemoryEstimate,
    check_fits,
    estimate_generate,
    estimate_sd,
    estimate_style,
    estimate_train_clip,
    estimate_train_diffusion,
    estimate_train_gan,
    estimate_train_vqgan,
    estimate_upscale,
)
from dreamcanvas.memory.shapes import (
    ClipShape,
    VQGANShape,
    clip_shape,
    diffusion_shape,
    vqgan_parameters,
    vqgan_shape,
)
from dreamcanvas.memory.system import available_memory, total_memory

__all__ = [
    "SAFETY",
    "ClipShape",
    "MemoryEstimate",
    "VQGANShape",
    "available_memory",
    "check_fits",
    "clip_shape",
    "diffusion_shape",
    "estimate_generate",
    "estimate_sd",
    "estimate_style",
    "estimate_train_clip",
    "estimate_train_diffusion",
    "estimate_train_gan",
    "estimate_train_vqgan",
    "estimate_upscale",
    "total_memory",
    "vqgan_parameters",
    "vqgan_shape",
]
