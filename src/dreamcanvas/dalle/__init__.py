"""ruDALL-E: the sampling loop around :mod:`dreamcanvas.models.rudalle` (the network itself lives there)."""

from .sampling import (
    SamplingProgress,
    filter_logits,
    sample_image_tokens,
    sample_image_tokens_uncached,
    top_k_filter,
    top_p_filter,
)

__all__ = [
    "SamplingProgress",
    "filter_logits",
    "sample_image_tokens",
    "sample_image_tokens_uncached",
    "top_k_filter",
    "top_p_filter",
]
