"""Stable Diffusion models: what a ``--model`` spec names, and the diffusers pipeline it loads.

Specs, each resolved by :func:`resolve_model` before anything is read:

* a registered name (``sd-turbo``, ``sd15``, ``lcm-lora-sdv1-5``, ...: ``sources/sd.json``): a Hugging Face repo
  snapshot in the HF cache (:func:`~dreamcanvas.weights.fetch.fetch_snapshot`); a LoRA entry loads its base
  model and applies the LoRA;
* ``local:DIR``: a diffusers folder (``model_index.json`` and a folder per component);
* ``local:FILE.safetensors`` / ``local:FILE.ckpt``: a single-file checkpoint as model sites share them,
  loaded by diffusers' ``from_single_file``;
* ``hf-hub:ORG/REPO``: any diffusers repo, downloaded into the same cache;
* ``bundled:NAME``: a diffusers folder shipped inside dreamcanvas.

Weights are loaded straight into the working dtype (no fp32 copy first) and the safety checker is not loaded:
dreamcanvas draws what it is asked for, and the checker's CLIP would double the memory.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from dreamcanvas.errors import DreamcanvasError, ModelUnavailableError
from dreamcanvas.files.checkpoints import load_checkpoint
from dreamcanvas.weights import registry
from dreamcanvas.weights.cache import hf_hub_cache_dir
from dreamcanvas.weights.fetch import download_blocker, fetch_diffusers_repo, fetch_snapshot, snapshot_weights
from dreamcanvas.weights.verify import one_line, verify_weights

LOCAL_PREFIX = registry.LOCAL_PREFIX
HF_HUB_PREFIX = "hf-hub:"
BUNDLED_PREFIX = registry.BUNDLED_PREFIX
PIPELINE_KINDS = ("stable-diffusion", "lcm-lora")
"""Registry kinds that draw pictures (``taesd`` entries only decode)."""
TINY_DECODER_KIND = "taesd"
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
MODEL_INDEX = "model_index.json"
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
_REPO_ID = re.compile(r"[\w.\-]+/[\w.\-]+")
_SDXL_KEY = "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias"
"""A key only SDXL single-file checkpoints have (its second text encoder): diffusers detects SDXL by it too."""
_UNET_PREFIX = "model.diffusion_model."
"""Where the UNet's weights sit in the original (CompVis / Stability) single-file layout."""

REGISTERED, LOCAL_DIR, SINGLE_FILE, HF_HUB, BUNDLED = "registered", "local-dir", "single-file", "hf-hub", "bundled"


# ------------------------------------------------------------------------------------------------- specs
def _pipeline_names() -> list[str]:
    return [source.name for source in registry.list_sources() if source.kind in PIPELINE_KINDS]


def _unknown_model(spec: str) -> DreamcanvasError:
    return DreamcanvasError(
        f"--model {spec!r} is not a Stable Diffusion model; choose one of: {', '.join(_pipeline_names())}, "
        "or local:DIR, local:FILE.safetensors, hf-hub:ORG/REPO"
    )


def _resolve_local(spec: str, path: Path) -> tuple[str, str]:
    if path.is_dir():
        if not (path / MODEL_INDEX).is_file():
            raise DreamcanvasError(f"--model {spec}: {path} has no {MODEL_INDEX}, so it is not a diffusers folder")
        return LOCAL_DIR, str(path.resolve())
    if path.suffix in SINGLE_FILE_SUFFIXES:
        if not path.is_file():
            raise DreamcanvasError(f"--model {spec}: no such file")
        return SINGLE_FILE, str(path.resolve())
    raise DreamcanvasError(
        f"--model {spec}: no such folder; local: takes a diffusers folder or a .safetensors / .ckpt checkpoint"
    )


def _resolve_bundled(spec: str, name: str) -> tuple[str, str]:
    from dreamcanvas.sd.bundled import is_parts_folder

    folder = registry.bundled_dir(name)
    if not name or not ((folder / MODEL_INDEX).is_file() or is_parts_folder(folder)):
        raise DreamcanvasError(
            f"--model {spec}: no bundled Stable Diffusion model {name!r} in this installation; "
            f"use {', '.join(_pipeline_names()[:2])} or local:DIR"
        )
    return BUNDLED, str(folder)


def _resolve_registered(spec: str) -> tuple[str, str]:
    source = registry.find_source(spec)
    if source is None:
        raise _unknown_model(spec)
    if source.kind == TINY_DECODER_KIND:
        raise DreamcanvasError(f"--model {spec} only decodes pictures; use it as --preview taesd or --decoder taesd")
    if source.kind not in PIPELINE_KINDS:
        raise _unknown_model(spec)
    return REGISTERED, spec


def resolve_model(spec: str) -> tuple[str, str]:
    """``(kind, target)`` of a ``--model`` spec, checked without loading or downloading anything.

    ``kind`` is ``registered`` (target: the name), ``local-dir`` or ``bundled`` (a folder), ``single-file``
    (a checkpoint file) or ``hf-hub`` (``ORG/REPO``). A spec that cannot be loaded raises one line.
    """
    name = spec.strip()
    if name.startswith(LOCAL_PREFIX):
        return _resolve_local(spec, Path(name[len(LOCAL_PREFIX) :]).expanduser())
    if name.startswith(HF_HUB_PREFIX):
        repo_id = name[len(HF_HUB_PREFIX) :]
        if not _REPO_ID.fullmatch(repo_id):
            raise DreamcanvasError(f"--model {spec!r}: write Hugging Face models as hf-hub:ORG/REPO")
        return HF_HUB, repo_id
    if name.startswith(BUNDLED_PREFIX):
        return _resolve_bundled(spec, name[len(BUNDLED_PREFIX) :])
    if Path(name).suffix in SINGLE_FILE_SUFFIXES or "/" in name:
        raise DreamcanvasError(f"--model {spec!r} looks like a path: write local:{spec}")
    return _resolve_registered(name)


def is_model_spec(text: str) -> bool:
    """True when ``text`` names a model dreamcanvas can load (a picture's ``Model:`` may be another tool's)."""
    try:
        resolve_model(text)
    except DreamcanvasError:
        return False
    return True


# ------------------------------------------------------------------------------------------------- dtypes
def _dtype_argument(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """diffusers renamed ``torch_dtype`` to ``dtype``; the old name warns where the new one exists."""
    from diffusers.utils import deprecation_utils

    return {"dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype": dtype}


# ------------------------------------------------------------------------------------------------- folders
def _model_index(folder: Path) -> dict[str, Any]:
    return json.loads((folder / MODEL_INDEX).read_text(encoding="utf-8"))


def _variant_of(folder: Path) -> str | None:
    """``"fp16"`` when the folder's weights are diffusers' fp16 variant files (what the registry downloads)."""
    names = [path.name for path in snapshot_weights(folder)]
    return "fp16" if any(".fp16." in name for name in names) else None


def _verify_folder(folder: Path, spec: str) -> None:
    for path in snapshot_weights(folder):
        verify_weights(path, None, spec)


def _without_safety_checker(folder: Path) -> dict[str, Any]:
    if "safety_checker" not in _model_index(folder):
        return {}
    return {"safety_checker": None, "requires_safety_checker": False}


def _from_folder(folder: Path, dtype: torch.dtype, spec: str) -> Any:
    from diffusers import AutoPipelineForText2Image

    class_name = _model_index(folder).get("_class_name")
    try:
        return AutoPipelineForText2Image.from_pretrained(
            str(folder),
            **_dtype_argument(dtype),
            variant=_variant_of(folder),
            local_files_only=True,
            **_without_safety_checker(folder),
        )
    except ValueError as error:
        if "AutoPipeline can't find a pipeline" in str(error):
            raise DreamcanvasError(f"--model {spec}: {class_name} is not a text-to-image pipeline") from None
        raise


# ------------------------------------------------------------------------------------------------- sources
def _single_file_keys(path: Path) -> set[str]:
    """The tensor names of a checkpoint (a .safetensors' header only; a .ckpt is loaded, weights only)."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as checkpoint:
            return set(checkpoint.keys())
    # weights only, as every .pt dreamcanvas reads: a .ckpt that needs code to unpickle is refused here, in one
    # line, before diffusers sees it
    checkpoint = load_checkpoint(path, "checkpoint")
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    return set(checkpoint) if isinstance(checkpoint, dict) else set()


def _family_configs_unavailable(spec: str, reason: str) -> ModelUnavailableError:
    return ModelUnavailableError(
        one_line(
            f"--model {spec}: a single-file checkpoint needs its model family's config files from the Hugging Face "
            f"Hub, which are not cached and cannot be fetched now ({reason}): run it once with network access and "
            "HF_HUB_OFFLINE unset, or use a diffusers folder (local:DIR)"
        )
    )


def _from_single_file(path: Path, dtype: torch.dtype, spec: str) -> Any:
    """diffusers' ``from_single_file``; it also needs its model family's config files (a few kB) from the Hub."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from huggingface_hub.utils import HfHubHTTPError, LocalEntryNotFoundError

    verify_weights(path, None, spec)
    keys = _single_file_keys(path)
    if keys and not any(key.startswith(_UNET_PREFIX) for key in keys):
        raise DreamcanvasError(f"--model {spec}: not a Stable Diffusion checkpoint (it has no {_UNET_PREFIX}* weights)")
    is_sdxl = _SDXL_KEY in keys
    pipeline_class = StableDiffusionXLPipeline if is_sdxl else StableDiffusionPipeline
    extra = {} if is_sdxl else {"safety_checker": None, "requires_safety_checker": False}
    blocker = download_blocker()
    try:
        return pipeline_class.from_single_file(
            str(path),
            **_dtype_argument(dtype),
            cache_dir=str(hf_hub_cache_dir()),
            local_files_only=blocker is not None,
            **extra,
        )
    except (LocalEntryNotFoundError, HfHubHTTPError) as error:
        raise _family_configs_unavailable(spec, blocker or f"download failed: {str(error)[:120]}") from None
    except (OSError, ValueError, KeyError, IndexError, RuntimeError) as error:
        # diffusers guesses the model family from tensor names and shapes: another file fails anywhere in it
        raise DreamcanvasError(
            one_line(f"--model {spec}: not a Stable Diffusion checkpoint diffusers can read ({str(error)[:120]})")
        ) from None


def _apply_lcm_lora(pipe: Any, lora_folder: Path, spec: str) -> Any:
    """Fuse the LoRA into the base weights (no per-step LoRA cost) and switch to the LCM sampler it was made for."""
    from dreamcanvas.sd.samplers import make_scheduler

    lora_file = lora_folder / LORA_WEIGHTS
    verify_weights(lora_file, None, spec)
    pipe.load_lora_weights(str(lora_folder), weight_name=LORA_WEIGHTS, adapter_name="lcm")
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    pipe.scheduler = make_scheduler("LCM", pipe.scheduler.config)
    return pipe


def _load_registered(name: str, dtype: torch.dtype) -> Any:
    source = registry.find_source(name)
    assert source is not None  # resolve_model checked it
    if source.kind == "lcm-lora":
        assert source.base is not None  # the registry refuses a LoRA without a registered base
        return _apply_lcm_lora(_load_registered(source.base, dtype), fetch_snapshot(name), name)
    return _from_folder(fetch_snapshot(name), dtype, name)


def _load_text_to_image(spec: str, dtype: torch.dtype) -> Any:
    kind, target = resolve_model(spec)
    if kind == REGISTERED:
        return _load_registered(target, dtype)
    if kind == SINGLE_FILE:
        return _from_single_file(Path(target), dtype, spec)
    if kind == HF_HUB:
        return _from_folder(fetch_diffusers_repo(target, model_name=spec), dtype, spec)
    folder = Path(target)
    if kind == BUNDLED:
        from dreamcanvas.sd.bundled import is_parts_folder, materialize

        if is_parts_folder(folder):  # only the UNet ships: the rest is assembled from the bundled guide and VQGAN
            _verify_folder(folder, spec)
            folder = materialize(folder)
    _verify_folder(folder, spec)
    return _from_folder(folder, dtype, spec)


def load_pipeline(spec: str, dtype: torch.dtype, *, for_image_to_image: bool = False) -> Any:
    """The diffusers pipeline of ``spec`` in ``dtype``, text-to-image or image-to-image.

    The image-to-image pipeline is made ``from_pipe`` of the text-to-image one: the same modules, no copy.
    diffusers' own progress bar is off (dreamcanvas shows its own, from ``draw``'s ``on_step``); the CPU speed
    levers that measurably pay are applied (:func:`~dreamcanvas.sd.speed.prepare_for_cpu`).
    """
    pipe = _load_text_to_image(spec, dtype)
    if for_image_to_image:
        from diffusers import AutoPipelineForImage2Image

        pipe = AutoPipelineForImage2Image.from_pipe(pipe)
    pipe.set_progress_bar_config(disable=True)
    from dreamcanvas.sd.speed import prepare_for_cpu

    return prepare_for_cpu(pipe)


# ------------------------------------------------------------------------------------------------- TAESD
def tiny_decoder_name(pipe: Any) -> str:
    """The registered TAESD that decodes this pipeline's latents: ``taesdxl`` for SDXL, ``taesd`` otherwise."""
    return "taesdxl" if "XL" in type(pipe).__name__ else "taesd"


def load_tiny_decoder(name: str, dtype: torch.dtype = torch.float32) -> Any:
    """A ``diffusers.AutoencoderTiny`` (TAESD): a registered name (``taesd``, ``taesdxl``) or ``local:DIR``."""
    from diffusers import AutoencoderTiny

    spec = name.strip()
    if spec.startswith(LOCAL_PREFIX):
        folder = Path(spec[len(LOCAL_PREFIX) :]).expanduser()
        if not (folder / "config.json").is_file():
            raise DreamcanvasError(f"--preview {name}: {folder} is not a diffusers AutoencoderTiny folder")
        _verify_folder(folder, name)
    else:
        source = registry.find_source(spec)
        if source is None or source.kind != TINY_DECODER_KIND:
            known = [s.name for s in registry.list_sources() if s.kind == TINY_DECODER_KIND]
            raise DreamcanvasError(f"unknown tiny decoder {name!r}; choose one of: {', '.join(known)}, or local:DIR")
        folder = fetch_snapshot(spec)
    from dreamcanvas.sd.speed import prepare_tiny_decoder

    return prepare_tiny_decoder(AutoencoderTiny.from_pretrained(str(folder), **_dtype_argument(dtype),
                                                                local_files_only=True))  # fmt: skip
