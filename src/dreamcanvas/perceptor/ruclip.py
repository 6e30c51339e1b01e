"""ruCLIP (ai-forever/ru-clip): a CLIP trained on Russian captions, built as an open_clip ``CLIP``.

ru-clip's network is OpenAI's CLIP code (``ruclip/model.py``): a ViT image tower, a causal text transformer,
QuickGELU, and parameters named as open_clip's ``CLIP`` names them, so its ``pytorch_model.bin`` loads into
open_clip's model with ``strict=True`` and no key renamed. Only two things differ from OpenAI's CLIP, and both map
onto open_clip's own options:

* the text is pooled at the end token, id 3 (``x[arange, where(ids == eos_id)]``), not at the highest id
  (OpenAI's ``argmax``): open_clip's ``text_cfg`` ``pool_type: "eos"``, ``eos_id: 3``;
* the tokenizer is a YouTokenToMe BPE (``bpe.model``) laid out by ru-clip's ``RuCLIPProcessor``: lower-case, the
  ids cut to ``context_length - 2``, then ``<s>`` (2) before and ``</s>`` (3) after, zeros (pad) to
  ``context_length``. :class:`RuclipTokenizer` does that on dreamcanvas's pure-Python :class:`BPEModel`.

The network's size comes from the repo's ``config.json``, field by field as ru-clip's ``CLIP.from_pretrained``
reads it (:func:`open_clip_config`); the image tower has ``vision_width // 64`` heads, as ru-clip hard-codes.
Pictures are normalised with ``config.json``'s ``mean``/``std`` when it has them, else OpenAI's (the processor's
defaults), and resized bilinearly (the processor's ``RandomResizedCrop(scale=(1, 1), ratio=(1, 1))``: a centred
square, resized with torchvision's default interpolation).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import open_clip
import torch

from dreamcanvas.dalle.tokenizer import BPEModel
from dreamcanvas.errors import CorruptWeightsError
from dreamcanvas.weights.clip import ResolvedClip
from dreamcanvas.weights.verify import corrupt

# RuCLIPProcessor's class attributes (it never reads them from the BPE model) and CLIP's eos_id default, which
# CLIP.from_pretrained does not override.
PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3

VISION_HEAD_WIDTH = 64
"""ru-clip's ``vision_heads = vision_width // 64``."""
INTERPOLATION = "bilinear"
"""torchvision's ``RandomResizedCrop`` default, the processor's resize."""

CONFIG_FIELDS = (
    "embed_dim",
    "image_resolution",
    "vision_layers",
    "vision_width",
    "vision_patch_size",
    "context_length",
    "vocab_size",
    "transformer_width",
    "transformer_heads",
    "transformer_layers",
)
"""What ru-clip's ``CLIP.from_pretrained`` reads from ``config.json`` (the processor also reads ``mean``/``std``)."""


def read_config(path: Path, model_name: str) -> dict[str, Any]:
    """ru-clip's ``config.json``, checked: every field :data:`CONFIG_FIELDS` names, a positive integer."""
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise corrupt(path, f"not valid JSON: {error}", model_name) from None
    if not isinstance(config, dict):
        raise corrupt(path, "not a JSON object", model_name)
    missing = [key for key in CONFIG_FIELDS if key not in config]
    if missing:
        raise corrupt(path, f"not a ruCLIP config: no {', '.join(missing)}", model_name)
    bad = [key for key in CONFIG_FIELDS if type(config[key]) is not int or config[key] < 1]
    if bad:
        raise corrupt(path, f"{', '.join(bad)} must be positive integers", model_name)
    for key in ("mean", "std"):
        value = config.get(key)
        if value is not None and (
            not isinstance(value, list) or len(value) != 3 or not all(isinstance(v, int | float) for v in value)
        ):
            raise corrupt(path, f"{key} must be three numbers", model_name)
    return config


def open_clip_config(config: dict[str, Any]) -> dict[str, Any]:
    """The open_clip ``CLIP`` config of a ruCLIP ``config.json``: the same network, parameter for parameter."""
    return {
        "embed_dim": config["embed_dim"],
        "quick_gelu": True,
        "vision_cfg": {
            "image_size": config["image_resolution"],
            "layers": config["vision_layers"],
            "width": config["vision_width"],
            "patch_size": config["vision_patch_size"],
            "head_width": VISION_HEAD_WIDTH,
        },
        "text_cfg": {
            "context_length": config["context_length"],
            "vocab_size": config["vocab_size"],
            "width": config["transformer_width"],
            "heads": config["transformer_heads"],
            "layers": config["transformer_layers"],
            "pool_type": "eos",
            "eos_id": EOS_ID,
            "pad_id": PAD_ID,
        },
    }


def preprocess_config(config: dict[str, Any]) -> dict[str, Any]:
    """open_clip's preprocess cfg of the processor: its size, ``mean``/``std`` (config's or OpenAI's), bilinear."""
    return {
        "size": config["image_resolution"],
        "mode": "RGB",
        "mean": list(config.get("mean") or open_clip.OPENAI_DATASET_MEAN),
        "std": list(config.get("std") or open_clip.OPENAI_DATASET_STD),
        "interpolation": INTERPOLATION,
        "resize_mode": "shortest",
    }


class RuclipTokenizer:
    """``RuCLIPProcessor.encode_text`` on :class:`BPEModel`: ``(n, context_length)`` LongTensors of prompts."""

    pad_id = PAD_ID
    unk_id = UNK_ID
    bos_id = BOS_ID
    eos_id = EOS_ID

    def __init__(self, bpe: BPEModel, context_length: int) -> None:
        got = bpe.specials
        if (got.pad, got.unk, got.bos, got.eos) != (self.pad_id, self.unk_id, self.bos_id, self.eos_id):
            # ru-clip hard-codes these ids: with other ones it would feed the network the wrong tokens.
            raise CorruptWeightsError(
                f"BPE tokenizer model has special ids pad={got.pad} unk={got.unk} bos={got.bos} eos={got.eos}; "
                "ruCLIP needs pad=0 unk=1 bos=2 eos=3 (use the model's own bpe.model)"
            )
        if context_length < 2:
            raise ValueError(f"context_length must hold <s> and </s>, got {context_length}")
        self.bpe = bpe
        self.context_length = context_length

    @property
    def vocab_size(self) -> int:
        return self.bpe.vocab_size

    def encode(self, text: str) -> list[int]:
        """One prompt's ids: lower-cased, cut to ``context_length - 2``, ``<s>`` ... ``</s>``, zeros after."""
        ids = self.bpe.encode(text.lower())[: self.context_length - 2]
        tokens = [self.bos_id, *ids, self.eos_id]
        return tokens + [self.pad_id] * (self.context_length - len(tokens))

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        return torch.tensor([self.encode(text) for text in texts], dtype=torch.long).view(-1, self.context_length)

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        """Text of one sequence of ids, specials left out (``RuCLIPProcessor.decode_text``)."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return self.bpe.decode(ids, ignore_ids=(self.eos_id, self.bos_id, self.unk_id, self.pad_id))


def load_state(path: Path, model_name: str) -> dict[str, torch.Tensor]:
    """The checkpoint's state dict (tensors only, ``weights_only``: a pickle cannot run code here)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
        raise corrupt(path, f"not a torch checkpoint: {error}", model_name) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise corrupt(path, "not a state dict of tensors", model_name)
    return state


def build_model(config: dict[str, Any], state: dict[str, torch.Tensor] | None, model_name: str = "ruCLIP"):
    """open_clip's ``CLIP`` of ``config`` (ru-clip's fields), ``state`` loaded into it with ``strict=True``."""
    model = open_clip.model.CLIP(**open_clip_config(config))
    if state is not None:
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise CorruptWeightsError(
                f"{model_name}: the checkpoint does not fit its config.json: " + " ".join(str(error).split())
            ) from None
    model.visual.preprocess_cfg = preprocess_config(config)
    return model


def load_ruclip(resolved: ResolvedClip):
    """A :class:`~dreamcanvas.perceptor.clip.ClipPerceptor` of a resolved ruCLIP model, all from its local files."""
    from dreamcanvas.perceptor.clip import ClipPerceptor

    name = resolved.spec
    config = read_config(resolved.files["config"], name)
    bpe = BPEModel.load(resolved.files["tokenizer"])
    if bpe.vocab_size > config["vocab_size"]:
        raise CorruptWeightsError(
            f"{name}: bpe.model has {bpe.vocab_size} tokens but config.json's vocab_size is {config['vocab_size']}: "
            f"the files are not of one model; run `dreamcanvas models download {name}`"
        )
    tokenizer = RuclipTokenizer(bpe, config["context_length"])
    model = build_model(config, load_state(resolved.files["checkpoint"], name), name)
    preprocess = model.visual.preprocess_cfg
    return ClipPerceptor(
        name, model, tokenizer, tuple(preprocess["mean"]), tuple(preprocess["std"]), interpolation=INTERPOLATION
    )
