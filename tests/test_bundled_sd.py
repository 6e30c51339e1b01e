"""The bundled tiny Stable Diffusion, as shipped: its UNet and recipe assemble into a diffusers folder (in a fresh
cache) from the bundled guide and VQGAN, load through the same code as every model, and draw what is asked."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import offline_hub
from PIL import Image

from dreamcanvas.sd import SDSettings, draw_run, load_models


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as patch:
        offline_hub(tmp_path_factory.mktemp("cache"), patch)
        settings = SDSettings(prompt="-", model="bundled:tiny-sd", width=64, height=64, steps=STEPS, guidance=GUIDANCE,
                              seed=1, precision="fp32", preview="none")  # fmt: skip
        yield settings, load_models(settings)


STEPS, GUIDANCE = 25, 7.0


def test_it_draws_the_colour_it_is_asked_for(tiny_sd, tmp_path):
    settings, models = tiny_sd
    means = {}
    for colour in ("red", "blue"):
        result = draw_run(settings.replace(prompt=f"a {colour} square"), tmp_path / colour, models=models)
        with Image.open(result.pictures[0]) as picture:
            assert picture.size == (64, 64)
            means[colour] = np.asarray(picture, dtype=float).mean(axis=(0, 1))
    red, blue = means["red"], means["blue"]
    assert red[0] - red[2] > blue[0] - blue[2] + 10
