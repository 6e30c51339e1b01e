"""Shared fixtures: tiny random CLIP models of the real open_clip architecture, saved in the real layout.

Nothing is downloaded and no model output is faked: the models are real open_clip ``CLIP`` networks with
small widths, saved with open_clip's ``local-dir`` layout and loaded through ``--clip local-dir:PATH``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Never reach for the network, whatever a test does.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The test models are tiny: one thread is faster than two, and immune to another process owning the second core.
torch.set_num_threads(1)

TINY_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def make_tiny_clip(path: Path, seed: int = 0, image_size: int = 32) -> Path:
    import open_clip

    from dreamcanvas.perceptor.clip import save_local_dir

    cfg = {**TINY_CLIP_CFG, "vision_cfg": {**TINY_CLIP_CFG["vision_cfg"], "image_size": image_size}}
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(**cfg)
    return save_local_dir(model, cfg, path)


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def tiny_clip_spec(tiny_clip_dir: Path) -> str:
    return f"local-dir:{tiny_clip_dir}"


@pytest.fixture(scope="session")
def second_clip_spec(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Another tiny model with a different input size, for ensembles."""
    return f"local-dir:{make_tiny_clip(tmp_path_factory.mktemp('tiny-clip-48'), seed=1, image_size=48)}"
