"""Generators: one file each, one small interface (:class:`~dreamcanvas.generators.base.Generator`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.generators.base import Generator

if TYPE_CHECKING:
    from dreamcanvas.settings import GenerateSettings

# name -> "module:Class", imported on demand so that a heavy generator costs nothing until it is used.
GENERATORS: dict[str, str] = {
    "pixel": "dreamcanvas.generators.pixel:PixelGenerator",
    "fourier": "dreamcanvas.generators.fourier:FourierGenerator",
    "vqgan": "dreamcanvas.generators.vqgan:VQGANGenerator",
    "diffusion": "dreamcanvas.generators.diffusion:DiffusionGenerator",
    "biggan": "dreamcanvas.generators.biggan:BigGANGenerator",
    "gan": "dreamcanvas.generators.gan:GANGenerator",
}


def generator_class(name: str) -> type[Generator]:
    if name not in GENERATORS:
        raise DreamcanvasError(f"unknown generator {name!r}; choose one of: {', '.join(sorted(GENERATORS))}")
    module_name, class_name = GENERATORS[name].split(":")
    import importlib

    return getattr(importlib.import_module(module_name), class_name)


def create_generator(settings: GenerateSettings) -> Generator:
    return generator_class(settings.generator).from_settings(settings)


__all__ = ["GENERATORS", "Generator", "create_generator", "generator_class"]
