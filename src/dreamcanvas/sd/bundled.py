"""Bundled Stable Diffusion models that ship only what is theirs: the UNet, and a recipe for the other parts.

A tiny model trained by ``dreamcanvas train sd`` shares its text encoder and autoencoder with models dreamcanvas
already ships (the guide CLIP's text tower, the VQGAN): shipping them twice would double its size in every clone
of the repository. So ``bundled/NAME/`` holds::

    parts.json   {"format": 1, "parts": "bundled-guide+vqgan", "scaling_factor": 1.27}
    unet/        config.json + diffusion_pytorch_model.safetensors (fp16)
    scheduler/   scheduler_config.json (the schedule and prediction type the UNet was trained with)

and on first use :func:`materialize` assembles the whole diffusers folder (converted text encoder and VAE, the
tokenizer, the scheduler, this UNet) into ``$DREAMCANVAS_CACHE/sd/NAME-<digest>/``, which then loads through the
same diffusers code as every other model. The digest covers the recipe and the UNet's bytes, so a new release of
the model never reuses an old assembly; the assembly appears whole or not at all.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.files.atomic import folder_atomically
from dreamcanvas.weights.cache import dreamcanvas_cache_dir

PARTS_FILE = "parts.json"
UNET_DIR = "unet"
SCHEDULER_DIR = "scheduler"
GUIDE_AND_VQGAN = "bundled-guide+vqgan"
"""The one recipe so far: text encoder from ``bundled:guide``, VAE from ``bundled:vqgan``."""
FORMAT = 1


def is_parts_folder(folder: Path) -> bool:
    return (folder / PARTS_FILE).is_file() and (folder / UNET_DIR / "config.json").is_file()


def read_parts(folder: Path) -> dict:
    """``parts.json``, checked: a recipe this dreamcanvas knows and a finite positive scaling factor."""
    path = folder / PARTS_FILE
    try:
        parts = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DreamcanvasError(f"{path} is damaged ({error})") from None
    factor = parts.get("scaling_factor") if isinstance(parts, dict) else None
    if not isinstance(parts, dict) or parts.get("format") != FORMAT or parts.get("parts") != GUIDE_AND_VQGAN:
        raise DreamcanvasError(f"{path} is not a recipe this dreamcanvas knows (format {FORMAT}, {GUIDE_AND_VQGAN})")
    if not isinstance(factor, int | float) or isinstance(factor, bool) or not 0 < factor < 1e6:
        raise DreamcanvasError(f"{path}: 'scaling_factor' must be a positive number, not {factor!r}")
    return parts


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    files = [folder / PARTS_FILE, *(folder / UNET_DIR).iterdir()]
    files += sorted((folder / SCHEDULER_DIR).iterdir()) if (folder / SCHEDULER_DIR).is_dir() else []
    for path in sorted(files):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def assembly_dir(folder: Path) -> Path:
    return dreamcanvas_cache_dir() / "sd" / f"{folder.name}-{_digest(folder)}"


def materialize(folder: Path) -> Path:
    """The full diffusers folder of the bundled parts folder ``folder``, assembled into the cache if needed."""
    from dreamcanvas.sd.conversion.folder import assemble_tiny_sd

    parts = read_parts(folder)
    target = assembly_dir(folder)
    if (target / "model_index.json").is_file():
        return target
    with folder_atomically(target) as staging:  # a concurrent assembly of the same digest is the same folder
        built = assemble_tiny_sd(staging / "model", scaling_factor=float(parts["scaling_factor"]))
        for part in (UNET_DIR, SCHEDULER_DIR):  # the UNet and what it was trained to predict are the model's own
            if (folder / part).is_dir():
                shutil.rmtree(built / part)
                shutil.copytree(folder / part, built / part)
        for part in built.iterdir():
            part.rename(staging / part.name)
        built.rmdir()
    return target


def write_parts(model_dir: Path, out: Path) -> Path:
    """A bundled parts folder from a ``train sd`` model folder (made on the bundled parts): UNet in fp16 and recipe."""
    import torch
    from diffusers import UNet2DConditionModel

    vae_config = json.loads((model_dir / "vae" / "config.json").read_text(encoding="utf-8"))
    out.mkdir(parents=True, exist_ok=False)
    unet = UNet2DConditionModel.from_pretrained(model_dir / UNET_DIR).to(torch.float16)
    unet.save_pretrained(out / UNET_DIR, safe_serialization=True)  # fp16 weights, no variant name: loads as any
    shutil.copytree(model_dir / SCHEDULER_DIR, out / SCHEDULER_DIR)
    recipe = {"format": FORMAT, "parts": GUIDE_AND_VQGAN, "scaling_factor": vae_config["scaling_factor"]}
    (out / PARTS_FILE).write_text(json.dumps(recipe, indent=2) + "\n", encoding="utf-8")
    return out
