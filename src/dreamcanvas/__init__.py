"""dreamcanvas: draw pictures from text with neural networks, on an ordinary CPU.

The pipeline, one module each::

    prompts  ->  perceptor (CLIP models, cutouts, augmentations, losses)  ->  generator  ->  engine  ->  outputs

The Python API mirrors the CLI::

    from dreamcanvas import GenerateSettings, generate
    result = generate(GenerateSettings(prompts=["a lighthouse in a storm"], generator="fourier"))
"""

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.settings import GenerateSettings

__version__ = "0.1.0"

__all__ = [
    "DreamcanvasError", "GenerateSettings", "SDSettings", "__version__", "draw_run", "generate",
    "load_biggan", "load_diffusion_unet", "resume",
]  # fmt: skip


def __getattr__(name: str):
    # The engine imports torch and open_clip; keep `import dreamcanvas` (and `--help`) fast.
    if name in ("generate", "resume"):
        from dreamcanvas import engine

        return getattr(engine, name)
    if name in ("SDSettings", "draw_run"):
        from dreamcanvas import sd

        return getattr(sd, name)
    if name == "load_biggan":
        from dreamcanvas.models.biggan import load_biggan

        return load_biggan
    if name == "load_diffusion_unet":
        from dreamcanvas.generators.diffusion import load_diffusion_unet

        return load_diffusion_unet
    raise AttributeError(name)
