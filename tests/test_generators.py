"""Generators: the interface contract every generator must keep."""

from __future__ import annotations

import pytest
import torch

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.generators import create_generator, generator_class
from dreamcanvas.generators.fourier import FourierGenerator, frequency_scale
from dreamcanvas.generators.pixel import PixelGenerator
from dreamcanvas.perceptor.losses import total_variation
from dreamcanvas.settings import GenerateSettings


@pytest.mark.parametrize("name", ["pixel", "fourier"])
def test_picture_shape_and_range(name):
    torch.manual_seed(0)
    generator = create_generator(GenerateSettings(generator=name, width=40, height=24))
    image = generator()
    assert image.shape == (1, 3, 24, 40)
    assert image.min() >= 0 and image.max() <= 1
    assert image.requires_grad


@pytest.mark.parametrize("name", ["pixel", "fourier"])
def test_from_image_reproduces_the_picture(name):
    torch.manual_seed(0)
    generator = create_generator(GenerateSettings(generator=name, width=40, height=24))
    target = torch.rand(1, 3, 24, 40) * 0.9 + 0.05
    generator.from_image(target)
    assert torch.allclose(generator(), target, atol=1e-4)


@pytest.mark.parametrize("name", ["pixel", "fourier"])
def test_state_dict_round_trip_restores_the_picture(name):
    torch.manual_seed(0)
    settings = GenerateSettings(generator=name, width=16, height=16)
    first = create_generator(settings)
    torch.manual_seed(1)
    second = create_generator(settings)
    assert not torch.equal(first(), second())
    second.load_state_dict(first.state_dict())
    assert torch.equal(first(), second())


def test_pixel_constrain_projects_into_the_unit_range():
    generator = PixelGenerator(8, 8)
    with torch.no_grad():
        generator.pixels.add_(torch.linspace(-3, 3, 64).view(1, 1, 8, 8))
    generator.constrain_()
    assert generator.pixels.min() >= 0 and generator.pixels.max() <= 1


def test_fourier_pictures_are_smoother_than_pixel_noise_of_the_same_spread():
    torch.manual_seed(0)
    fourier = FourierGenerator(64, 64)()
    noise = 0.5 + (fourier - fourier.mean()).std() * torch.randn_like(fourier)
    assert total_variation(fourier) < 0.2 * total_variation(noise)


def test_frequency_scale_favours_low_frequencies_and_has_unit_rms():
    scale = frequency_scale(32, 48, decay=1.5)
    assert scale.shape == (32, 25)
    assert torch.isclose(scale.pow(2).mean().sqrt(), torch.tensor(1.0))
    assert scale[0, 0] >= scale[0, 1] > scale[0, 10] > scale[16, 24]


def test_only_the_picture_parameters_are_trainable():
    generator = FourierGenerator(16, 16)
    assert [p.shape for p in generator.trainable_parameters()] == [generator.spectrum.shape]


def test_unknown_generator_is_a_clear_error():
    with pytest.raises(DreamcanvasError, match=r"unknown generator 'pixl'.*fourier"):
        generator_class("pixl")
