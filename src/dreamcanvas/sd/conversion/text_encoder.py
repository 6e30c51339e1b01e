"""open_clip's text tower as transformers' ``CLIPTextModel``, and open_clip's BPE as a ``CLIPTokenizer``.

Stable Diffusion pipelines read a prompt through a transformers tokenizer and text model and cross-attend to
``last_hidden_state``. The bundled guide is an open_clip ``CLIP``; its text tower is the same network as
transformers' CLIP text model, so the weights are renamed (and the fused attention projection split), never
approximated. What open_clip does, checked in its source (open_clip 3.3, ``model.py`` / ``transformer.py``),
and how it maps:

* activation: ``nn.GELU()`` (exact, erf) unless the model was built with ``quick_gelu``; transformers'
  ``"gelu"`` is the same function, ``"quick_gelu"`` the other. Read off the built module, not assumed.
* layer norms: open_clip's ``LayerNorm`` is torch's with its default ``eps`` 1e-5 (``layer_norm_eps``).
* attention: ``nn.MultiheadAttention``, whose ``in_proj_weight`` / ``in_proj_bias`` stack q, k, v in that
  order; both scale by ``head_dim ** -0.5``. The causal mask (``-inf`` above the diagonal) is what
  transformers' CLIP text model always applies.
* pooling: open_clip takes the position of the *largest* token id (``argmax``), which is the end-of-text
  token (49407, the last id of the vocabulary). With ``eos_token_id = 49407`` in the config transformers
  takes the *first* 49407, the same position, also when the padding is 49407 as Stable Diffusion pads.
* ``ln_final`` runs before pooling in open_clip's ``CLIP.encode_text``, as ``final_layer_norm`` does here.
* ``text_projection`` is a ``(width, embed_dim)`` matrix used as ``x @ P``: a bias-free ``nn.Linear``
  whose weight is ``P.T``. Only ``CLIPTextModelWithProjection`` has it; Stable Diffusion does not use it.

Tokenizer: the vocabulary open_clip's ``SimpleTokenizer`` builds from its ``bpe_simple_vocab_16e6.txt.gz``
(256 byte symbols, the same with ``</w>``, one token per merge, then start and end of text), written as
``vocab.json`` + ``merges.txt``. Ids agree with open_clip's for ordinary text; the cleaning differs where
open_clip runs ``ftfy`` and HTML unescaping (curly quotes, ``&amp;``, mojibake) and for the special tokens
typed as text (open_clip 3.3 spells them ``<start_of_text>``); :func:`clean_like_open_clip` closes the first
gap. The padding is the end token, as in Stable Diffusion 1.x: padding with open_clip's id 0 (``"!"``) would
make ``"!"`` a special token to transformers, and ``"wow!!"`` would no longer tokenize as open_clip does.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.files import atomic

if TYPE_CHECKING:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from dreamcanvas.perceptor.clip import ClipPerceptor

BUNDLED_GUIDE = "bundled:guide"
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
BYTE_SYMBOLS = 256
"""One vocabulary entry per byte value, and the same again with ``</w>`` (a byte that ends a word)."""
NOT_TEXT_TOWER = ("logit_scale", "logit_bias")
"""CLIP entries outside ``visual.*`` that belong to the contrastive loss, not to the text tower."""
PROJECTION_KEY = "text_projection.weight"
"""Where the projection sits in ``CLIPTextModelWithProjection`` (next to ``text_model``)."""


def load_bundled_guide() -> ClipPerceptor:
    """The bundled guide exactly as dreamcanvas draws with it: ``.model`` is the open_clip CLIP, ``.tokenizer``
    open_clip's tokenizer at the guide's context length."""
    from dreamcanvas.perceptor.clip import load_perceptor

    return load_perceptor(BUNDLED_GUIDE, allow_download=False)


# ------------------------------------------------------------------------------------------------- config
def _activation_name(activation: nn.Module) -> str:
    from open_clip.transformer import QuickGELU

    if isinstance(activation, QuickGELU):
        return "quick_gelu"
    if isinstance(activation, nn.GELU):
        return {"none": "gelu", "tanh": "gelu_pytorch_tanh"}[activation.approximate]
    raise DreamcanvasError(f"text tower activation {type(activation).__name__} has no transformers equivalent")


def _check_convertible(clip: nn.Module) -> None:
    """Refuse what transformers' CLIP text model cannot compute: it would convert without error and be wrong."""
    from open_clip.transformer import ResidualAttentionBlock

    if not hasattr(clip, "token_embedding") or not hasattr(clip, "transformer"):
        raise DreamcanvasError("only open_clip CLIP models with their own text transformer can be converted")
    for index, block in enumerate(clip.transformer.resblocks):
        if type(block) is not ResidualAttentionBlock or hasattr(block, "ln_1_kv"):
            raise DreamcanvasError(f"text block {index} is a {type(block).__name__}, not a plain CLIP block")
        if not (isinstance(block.ls_1, nn.Identity) and isinstance(block.ls_2, nn.Identity)):
            raise DreamcanvasError("text blocks with layer scale have no transformers equivalent")
        if block.attn.in_proj_weight is None or block.attn.bias_k is not None:
            raise DreamcanvasError("text attention must have one fused in_proj and no extra key/value bias")
    size = clip.context_length
    causal = torch.full((size, size), float("-inf")).triu(1)
    if clip.attn_mask is None or not torch.equal(clip.attn_mask.cpu().float(), causal):
        raise DreamcanvasError("the text tower is not causally masked, as transformers' CLIP text model is")
    if clip.text_pool_type not in ("argmax", "eos"):
        raise DreamcanvasError(f"text pooling {clip.text_pool_type!r}: only the end-of-text token is supported")
    projection = clip.text_projection
    if isinstance(projection, nn.Linear) and projection.bias is not None:
        raise DreamcanvasError("a text projection with a bias has no transformers equivalent")


def text_config(clip: nn.Module) -> CLIPTextConfig:
    """transformers' config of the same text network, read off the built open_clip model."""
    from transformers import CLIPTextConfig

    _check_convertible(clip)
    blocks = clip.transformer.resblocks
    norms = [clip.ln_final, *(norm for block in blocks for norm in (block.ln_1, block.ln_2))]
    if len({norm.eps for norm in norms}) != 1:
        raise DreamcanvasError("the text tower's layer norms differ in eps; transformers has one layer_norm_eps")
    activations = {_activation_name(block.mlp.gelu) for block in blocks}
    if len(activations) != 1:
        raise DreamcanvasError("the text tower's blocks differ in activation")
    vocab_size, width = clip.token_embedding.weight.shape
    projection = clip.text_projection
    embed_dim = projection.out_features if isinstance(projection, nn.Linear) else projection.shape[1]
    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=blocks[0].mlp.c_fc.out_features,
        projection_dim=embed_dim,
        num_hidden_layers=len(blocks),
        num_attention_heads=blocks[0].attn.num_heads,
        max_position_embeddings=clip.context_length,
        hidden_act=activations.pop(),
        layer_norm_eps=norms[0].eps,
        attention_dropout=0.0,
        # the end token is the last id, so transformers' "first eos" pooling finds open_clip's argmax position
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )


# ------------------------------------------------------------------------------------------------ weights
def open_clip_text_state(clip: nn.Module) -> dict[str, torch.Tensor]:
    """Every entry of the CLIP's state dict that belongs to its text tower (not ``visual.*``, not the logit scale)."""
    return {
        key: value
        for key, value in clip.state_dict().items()
        if not key.startswith("visual.") and key not in NOT_TEXT_TOWER
    }


def convert_text_weights(text_state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """open_clip text-tower entries -> ``CLIPTextModelWithProjection`` entries, each source used exactly once.

    Target names are relative to the text transformer (``embeddings.*``, ``encoder.*``, ``final_layer_norm.*``)
    plus ``text_projection.weight``; :func:`load_text_weights` adds whatever prefix the model class uses. An
    entry left over or missing raises: it would be a part of the network the conversion silently lost.
    """
    remaining = dict(text_state)

    def take(key: str) -> torch.Tensor:
        if key not in remaining:
            raise DreamcanvasError(f"open_clip text tower has no {key}: not the layout this converter maps")
        return remaining.pop(key).detach().clone().contiguous()

    converted = {
        "embeddings.token_embedding.weight": take("token_embedding.weight"),
        "embeddings.position_embedding.weight": take("positional_embedding"),
        "final_layer_norm.weight": take("ln_final.weight"),
        "final_layer_norm.bias": take("ln_final.bias"),
    }
    if "text_projection" in remaining:
        converted[PROJECTION_KEY] = take("text_projection").T.contiguous()  # a (width, embed) matrix used as x @ P
    else:
        converted[PROJECTION_KEY] = take("text_projection.weight")  # an nn.Linear's weight: already (embed, width)
    for layer in range(num_layers):
        source, target = f"transformer.resblocks.{layer}.", f"encoder.layers.{layer}."
        for name, value in zip("qkv", take(source + "attn.in_proj_weight").chunk(3), strict=True):
            converted[f"{target}self_attn.{name}_proj.weight"] = value.contiguous()
        for name, value in zip("qkv", take(source + "attn.in_proj_bias").chunk(3), strict=True):
            converted[f"{target}self_attn.{name}_proj.bias"] = value.contiguous()
        renames = {
            "attn.out_proj": "self_attn.out_proj",
            "ln_1": "layer_norm1",
            "ln_2": "layer_norm2",
            "mlp.c_fc": "mlp.fc1",
            "mlp.c_proj": "mlp.fc2",
        }
        for old, new in renames.items():
            for kind in ("weight", "bias"):
                converted[f"{target}{new}.{kind}"] = take(f"{source}{old}.{kind}")
    if remaining:
        raise DreamcanvasError(f"open_clip text entries the conversion does not map: {', '.join(sorted(remaining))}")
    return converted


def text_model_prefix(model: nn.Module) -> str:
    """``"text_model."`` inside ``CLIPTextModelWithProjection`` (and in transformers 4's ``CLIPTextModel``)."""
    anchor = "embeddings.token_embedding.weight"
    return next(key for key in model.state_dict() if key.endswith(anchor))[: -len(anchor)]


def load_text_weights(model: CLIPTextModel | CLIPTextModelWithProjection, converted: dict[str, torch.Tensor]) -> None:
    """Put :func:`convert_text_weights`' entries into ``model``, strictly; a model without a projection drops it."""
    prefix = text_model_prefix(model)
    expected = model.state_dict().keys()
    state = {(key if key == PROJECTION_KEY else prefix + key): value for key, value in converted.items()}
    if PROJECTION_KEY not in expected:
        state.pop(PROJECTION_KEY)  # CLIPTextModel: Stable Diffusion reads last_hidden_state, never the projection
    model.load_state_dict(state, strict=True)


def convert_text_encoder(
    clip: nn.Module, *, with_projection: bool = False
) -> CLIPTextModel | CLIPTextModelWithProjection:
    """The open_clip CLIP's text tower as a transformers model in eval mode, in the CLIP's dtype.

    ``CLIPTextModel`` (the default) is what Stable Diffusion pipelines load; ``with_projection`` also keeps
    ``text_projection`` (``text_embeds`` equals open_clip's ``encode_text``).
    """
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    config = text_config(clip)
    model_class = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    model = model_class(config)
    converted = convert_text_weights(open_clip_text_state(clip), config.num_hidden_layers)
    load_text_weights(model, converted)
    return model.to(clip.token_embedding.weight.dtype).eval()


# ---------------------------------------------------------------------------------------------- tokenizer
def open_clip_merges(vocab_size: int) -> list[str]:
    """The BPE merges open_clip's SimpleTokenizer uses for a ``vocab_size`` vocabulary, from its own file."""
    from open_clip.tokenizer import default_bpe

    count = vocab_size - 2 * BYTE_SYMBOLS - 2
    with gzip.open(default_bpe(), "rt", encoding="utf-8") as file:
        lines = file.read().split("\n")
    merges = lines[1 : 1 + count]  # line 0 is the file's version header
    if count <= 0 or len(merges) != count or not all(len(merge.split()) == 2 for merge in merges):
        raise DreamcanvasError(f"open_clip's BPE file cannot make a {vocab_size}-token vocabulary")
    return merges


def open_clip_vocabulary(vocab_size: int) -> list[str]:
    """Tokens in id order, as SimpleTokenizer numbers them, with transformers' names of the two special tokens."""
    from open_clip.tokenizer import bytes_to_unicode

    byte_symbols = list(bytes_to_unicode().values())
    merged = ["".join(merge.split()) for merge in open_clip_merges(vocab_size)]
    return [*byte_symbols, *(symbol + "</w>" for symbol in byte_symbols), *merged, BOS_TOKEN, EOS_TOKEN]


def write_tokenizer_files(folder: str | Path, vocab_size: int) -> Path:
    """``vocab.json`` and ``merges.txt`` of open_clip's vocabulary in ``folder`` (CLIPTokenizer's two files)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocabulary = open_clip_vocabulary(vocab_size)
    atomic.write_text(folder / "vocab.json", json.dumps({token: i for i, token in enumerate(vocabulary)}))
    merges = open_clip_merges(vocab_size)
    atomic.write_text(folder / "merges.txt", "#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder


def make_tokenizer(folder: str | Path, *, vocab_size: int, context_length: int) -> CLIPTokenizer:
    """A CLIPTokenizer on open_clip's vocabulary, written to ``folder``; prompts are cut at ``context_length``."""
    from transformers import CLIPTokenizer

    folder = write_tokenizer_files(folder, vocab_size)
    return CLIPTokenizer.from_pretrained(
        str(folder), model_max_length=context_length, bos_token=BOS_TOKEN, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN
    )


def clean_like_open_clip(text: str) -> str:
    """``text`` cleaned as open_clip cleans it before tokenizing (ftfy, HTML unescaping, whitespace, lower case),
    so that the transformers tokenizer gives open_clip's ids also for curly quotes or ``&amp;``."""
    from open_clip.tokenizer import basic_clean, whitespace_clean

    return whitespace_clean(basic_clean(text)).lower()
