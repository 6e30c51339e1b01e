"""The optimiser of a gatys run, made one way for the loop and for checking a checkpoint's state against it.

neural-style runs L-BFGS as one call of many iterations; a dreamcanvas run steps it one iteration per call, so
that a frame or a checkpoint can come between any two steps. Both evaluate the loss once per iteration and give
the same sequence of pictures.
"""

from __future__ import annotations

import torch

from dreamcanvas.style.settings import StyleSettings


def make_optimizer(settings: StyleSettings, pixels: torch.Tensor) -> torch.optim.Optimizer:
    """L-BFGS one iteration per ``step()`` call (the same sequence as one call of many, with a frame between any
    two), no stopping tolerances (neural-style's), or Adam."""
    if settings.optimizer == "lbfgs":
        return torch.optim.LBFGS([pixels], lr=1, max_iter=1, history_size=settings.lbfgs_history,
                                 tolerance_grad=-1, tolerance_change=-1)  # fmt: skip
    return torch.optim.Adam([pixels], lr=settings.lr)
