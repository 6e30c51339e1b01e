"""``--precision auto|bf16|fp32`` as one rule for every method: bf16 where the CPU has native bf16 units.

On CPUs with AMX or AVX512-BF16, bf16 convolutions and matrix products run two to several times faster than
fp32 (measured per method in benchmarks/); elsewhere bf16 is emulated and slower, so ``auto`` keeps fp32 there.
"""

from __future__ import annotations

import torch

from dreamcanvas.errors import DreamcanvasError

PRECISIONS = ("auto", "bf16", "fp32")


def fast_bf16_available() -> bool:
    """True on CPUs with native bf16 matrix units (AMX or AVX512-BF16): the test ``--precision auto`` makes."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_precision(precision: str) -> torch.dtype | None:
    """bf16 where the CPU is fast at it (or asked for), None for plain fp32 (the models' own dtype)."""
    if precision not in PRECISIONS:
        raise DreamcanvasError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if precision == "bf16" or (precision == "auto" and fast_bf16_available()):
        return torch.bfloat16
    return None


def concrete_precision(precision: str) -> str:
    """``auto`` as this CPU resolves it, ``bf16`` or ``fp32``: what a trainer records for its run, so that
    ``--resume`` keeps the run's arithmetic wherever it continues (and an emulated bf16 is never a default)."""
    return "bf16" if resolve_precision(precision) is torch.bfloat16 else "fp32"


def cpu_autocast(precision: str) -> torch.autocast:
    """The trainers' bf16 autocast on the CPU, on where ``precision`` resolves to bf16 (``auto``: native bf16 only),
    off for fp32; each network keeps its norms in fp32 inside it."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=resolve_precision(precision) is torch.bfloat16)


def working_dtype(precision: str) -> torch.dtype:
    """``--precision`` as the dtype a method computes in: bf16 or fp32."""
    return resolve_precision(precision) or torch.float32
