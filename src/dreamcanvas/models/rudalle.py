"""ruDALL-E (Sber / ai-forever, 2021): a GPT that reads 128 text tokens and writes 32×32 image tokens.

Written from scratch so that the released checkpoints (``pytorch_model_v3.bin`` of
``ai-forever/rudalle-Malevich`` and its siblings) load with ``load_state_dict(strict=True)``: module names,
parameter names and shapes follow ``rudalle/dalle/{model,transformer}.py``. What the network computes follows
ru-dalle's uncached forward, quirks included where they change the numbers:

* one sequence of ``text_seq_length + image_tokens_per_dim²`` positions; text ids and image ids live in two
  embedding tables, and the logit head covers both vocabularies (``vocab_size + image_vocab_size`` columns);
* a text pad (id 0) at position ``p`` is replaced by the id ``vocab_size - text_seq_length + p`` (16384 + p for
  Malevich), so each pad position has its own learned token;
* text positions have a learned table (``text_seq_length + 1`` rows, the last one unused by the v3 models);
  image positions get a row embedding plus a column embedding;
* the embeddings go through CogView's ``x * 0.1 + x.detach() * 0.9`` (a gradient shrink whose value is ``x``);
  we do the same arithmetic so our sums round as theirs do;
* each layer is pre-norm with CogView's "sandwich" norms: a LayerNorm on the attention output and on the MLP
  output before each residual add; the attention output is clamped to the fp16 range;
* PB-relax: queries are divided by √d *before* the product, masked scores are ``s·m − 10000·(1 − m)`` (not
  −inf), then every head's scores are shifted by their maximum over the whole ``[queries, keys]`` block,
  computed on ``s / 32`` (softmax does not change, fp16 stops overflowing);
* sparse attention per layer: a *column* mask for layers ``i`` with ``(i − 1) % 4 == 0``, the *conv* mask
  (11×11 window) for the last layer, the *row* mask elsewhere; every mask is causal and lets every position
  see all the text (:func:`attention_mask` says exactly what each sees);
* the MLP's GELU is the tanh approximation written out as ru-dalle writes it;
* the transformer ends with ``transformer.final_layernorm`` and the head ``to_logits`` starts with another
  LayerNorm: two norms in a row, both kept.

The ``v2`` checkpoints (Malevich_v2, Emojich: ``hf_version="v2"``, same keys and shapes) run ru-dalle's v2
forward: token 2 before the text (learned position 0; text id ``p`` at position ``p + 1``, the table's last row
used), the image ids one position later (their row and column embeddings unchanged), the sequence cut at
``text_seq_length + image_tokens_per_dim²`` positions (the last image id is never read), the same masks indexed
by sequence position, and a conv window that wraps around the grid's edges instead of being clamped.

Left out: dropout (inference only) and the training loss (v3's or v2's).

``DalleModel(config)(input_ids)`` returns the logits of every position, ``(B, L, total_vocab_size)``, as
ru-dalle's forward does. With ``cache=model.new_cache()``, each call takes only the *new* tokens, appends
their keys and values to the cache and returns the logits of the new positions only: one image token costs a
single position's worth of work instead of the whole sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

MaskKind = Literal["row", "column", "conv"]

MASK_VALUE = 10000.0
"""What ru-dalle subtracts from a masked score (it never uses −inf)."""

PB_RELAX_ALPHA = 32.0
"""PB-relax divides the scores by this before taking each head's maximum."""

FP16_MAX = 65504.0
"""The attention output is clamped to ±this, the largest finite fp16."""

EMBEDDING_GRAD_SHRINK = 0.1
"""CogView's share of the gradient that reaches the embeddings."""

HF_VERSIONS = ("v2", "v3")
"""ru-dalle's two forwards (``hf_version``)."""

V2_LEAD_TOKEN = 2
"""What a v2 network reads before the text (ru-dalle's ``F.pad(text, (1, 0), value=2)``; 2 is also bos)."""


@dataclass(frozen=True)
class DalleConfig:
    """The shape of a ruDALL-E network (the names are ru-dalle's ``model_params``)."""

    num_layers: int = 24
    hidden_size: int = 2048
    num_attention_heads: int = 16
    text_seq_length: int = 128
    image_tokens_per_dim: int = 32
    vocab_size: int = 16384 + 128
    """Text ids, the last ``text_seq_length`` of them being the per-position pad tokens."""
    image_vocab_size: int = 8192
    cogview_sandwich_layernorm: bool = True
    cogview_pb_relax: bool = True
    layernorm_epsilon: float = 1e-5
    conv_kernel: int = 11
    """Side of the last layer's window; ru-dalle never changes it (a small model in a test may)."""
    hf_version: str = "v3"
    """ru-dalle's ``hf_version``: ``v3`` (Malevich v3, Surrealist_XL, Kandinsky) or ``v2`` (Malevich_v2, Emojich),
    whose forward puts token 2 before the text, shifts every position after it by one, drops what then runs past
    the sequence, and whose conv window wraps around the grid's edges. The weights' shapes are the same."""

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of {self.num_attention_heads} heads")
        if self.vocab_size < self.text_seq_length:
            raise ValueError("vocab_size must hold one pad token per text position")
        if self.hf_version not in HF_VERSIONS:
            raise ValueError(f"hf_version must be one of {', '.join(HF_VERSIONS)}, got {self.hf_version!r}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def image_seq_length(self) -> int:
        return self.image_tokens_per_dim**2

    @property
    def total_seq_length(self) -> int:
        return self.text_seq_length + self.image_seq_length

    @property
    def total_vocab_size(self) -> int:
        return self.vocab_size + self.image_vocab_size

    @property
    def lead_tokens(self) -> int:
        """Positions the network puts before the text ids it is given: 1 for v2 (token 2), 0 for v3."""
        return 1 if self.hf_version == "v2" else 0

    @property
    def conv_wraps(self) -> bool:
        """v2's conv window wraps around the grid's edges; v3's is clamped to the grid."""
        return self.hf_version == "v2"


MALEVICH = DalleConfig()
"""ruDALL-E Malevich v3 (``pytorch_model_v3.bin``): 1,310,410,880 parameters."""

SURREALIST_XL = MALEVICH
"""shonenkov-AI/rudalle-xl-surrealist: Malevich's shapes, other weights."""

KANDINSKY = DalleConfig(num_layers=64, hidden_size=3840, num_attention_heads=60)
"""ruDALL-E Kandinsky, the 12-billion-parameter one."""

DUMMY = DalleConfig(num_layers=12, hidden_size=768, num_attention_heads=12)
"""ru-dalle's untrained 'dummy' model, for tests."""

MALEVICH_V2 = DalleConfig(hf_version="v2")
"""ruDALL-E Malevich v2 (``pytorch_model_v2.bin``): Malevich's shapes, the v2 forward."""

EMOJICH = DalleConfig(hf_version="v2")
"""ruDALL-E Emojich (``ai-forever/rudalle-Emojich``, ``pytorch_model.bin``): Malevich fine-tuned on emoji, v2."""

MODELS: dict[str, DalleConfig] = {
    "Malevich": MALEVICH,
    "Malevich_v2": MALEVICH_V2,
    "Emojich": EMOJICH,
    "Surrealist_XL": SURREALIST_XL,
    "Kandinsky": KANDINSKY,
    "dummy": DUMMY,
}

# ----------------------------------------------------------------------------------------------------------------
# Masks


def layer_mask_kind(layer: int, num_layers: int) -> MaskKind:
    """Which sparse mask layer ``layer`` uses; the column test comes first, as in ru-dalle."""
    if (layer - 1) % 4 == 0:
        return "column"
    if layer == num_layers - 1:
        return "conv"
    return "row"


def attention_mask(
    kind: MaskKind,
    text_seq_length: int,
    image_tokens_per_dim: int,
    conv_kernel: int = 11,
    device: Any = None,
    *,
    wrap: bool = False,
) -> Tensor:
    """``mask[q, k]``: may position ``q`` attend to position ``k``? A ``(T, T)`` bool tensor.

    All three are causal and leave text keys alone (every later position sees every text token, text
    queries are plainly causal). For an image key ``k`` and a later image query ``q`` (``d = q − k > 0``):

    * row: ``d <= image_tokens_per_dim``: the previous ``image_tokens_per_dim`` tokens, i.e. the rest of the
      row so far plus the row above from the query's column on;
    * column: ``d`` is a multiple of ``image_tokens_per_dim``: the same column in the rows above;
    * conv: ``q``'s cell lies in the ``conv_kernel × conv_kernel`` window around ``k``'s cell (ru-dalle clamps the
      window to the grid, which is the same as ``|Δrow| <= kernel // 2`` and ``|Δcol| <= kernel // 2``). With
      ``wrap`` (v2) the window's cells are taken modulo the side instead: the distances are measured around the
      grid, as on a torus (the window of a cell at the right edge takes in the left columns, the bottom row's the top).

    The masks are indexed by sequence position: a v2 network, whose sequence is one longer in front, uses the same
    masks, so for it the last text id falls under the image rule (as cell 0) and image token ``j`` as cell ``j + 1``.
    """
    total = text_seq_length + image_tokens_per_dim**2
    pos = torch.arange(total, device=device)
    q, k = pos[:, None], pos[None, :]
    causal = k <= q
    d = q - k
    if kind == "row":
        allowed = d <= image_tokens_per_dim
    elif kind == "column":
        allowed = d % image_tokens_per_dim == 0
    elif kind == "conv":
        cell = (pos - text_seq_length).clamp(min=0)
        row, col = cell // image_tokens_per_dim, cell % image_tokens_per_dim
        half = conv_kernel // 2
        d_row, d_col = (row[:, None] - row[None, :]).abs(), (col[:, None] - col[None, :]).abs()
        if wrap:
            d_row = torch.minimum(d_row, image_tokens_per_dim - d_row)
            d_col = torch.minimum(d_col, image_tokens_per_dim - d_col)
        allowed = ((d_row <= half) & (d_col <= half)) | (d == 0)
    else:
        raise ValueError(f"unknown mask kind {kind!r}")
    return causal & (allowed | (k < text_seq_length))


def config_mask(config: DalleConfig, kind: MaskKind, device: Any = None) -> Tensor:
    """The ``kind`` mask of a network of ``config`` (its sizes, kernel and version)."""
    return attention_mask(kind, config.text_seq_length, config.image_tokens_per_dim, config.conv_kernel, device,
                          wrap=config.conv_wraps)  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# Cache


class DalleCache:
    """Keys and values of every layer for the positions seen so far, in buffers sized for the whole sequence.

    Preallocated so that a step writes one slice instead of copying the whole history (``torch.cat`` would
    move ~450 MB per Malevich image per step).
    """

    def __init__(self, num_layers: int, capacity: int, lead: int = 0) -> None:
        self.capacity = capacity
        self.length = 0
        """Positions already in the cache; the next call's tokens start here."""
        self.lead = lead
        """Positions the network adds before the ids it is given (v2's token 2)."""
        self._keys: list[Tensor | None] = [None] * num_layers
        self._values: list[Tensor | None] = [None] * num_layers

    @property
    def fed(self) -> int:
        """Input ids seen so far: the positions without the network's lead token (equal to ``length`` for v3)."""
        return max(0, self.length - self.lead)

    def extend(self, layer: int, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Store ``(B, heads, n, head_dim)`` new keys/values after the cached ones; return all of them."""
        if self._keys[layer] is None:
            b, h, _, d = keys.shape
            self._keys[layer] = keys.new_empty(b, h, self.capacity, d)
            self._values[layer] = values.new_empty(b, h, self.capacity, d)
        cached_keys, cached_values = self._keys[layer], self._values[layer]
        assert cached_keys is not None and cached_values is not None
        end = self.length + keys.shape[-2]
        if end > self.capacity:
            raise ValueError(f"the cache holds {self.capacity} positions, {end} asked for")
        cached_keys[:, :, self.length : end] = keys
        cached_values[:, :, self.length : end] = values
        return cached_keys[:, :, :end], cached_values[:, :, :end]


# ----------------------------------------------------------------------------------------------------------------
# Network


def gelu_tanh(x: Tensor) -> Tensor:
    """The tanh GELU in ru-dalle's order of operations (``F.gelu(approximate='tanh')`` rounds differently)."""
    return 0.5 * x * (1.0 + torch.tanh(0.7978845608028654 * x * (1.0 + 0.044715 * x * x)))


class DalleSelfAttention(nn.Module):
    """Multi-head attention with one fused q/k/v projection, the given mask and (optionally) PB-relax."""

    def __init__(self, config: DalleConfig) -> None:
        super().__init__()
        self.heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.pb_relax = config.cogview_pb_relax
        self.query_key_value = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def _split_heads(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.head_dim).transpose(1, 2)

    def scores(self, q: Tensor, k: Tensor, mask: Tensor) -> Tensor:
        """Masked scores ``(B, heads, n, t)`` as ru-dalle forms them; ``mask`` is 0/1 in the scores' dtype."""
        if self.pb_relax:
            s = (q / math.sqrt(self.head_dim)) @ k.transpose(-1, -2)
        else:
            s = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        s = s * mask - MASK_VALUE * (1.0 - mask)
        if self.pb_relax:
            # One shift per (sample, head) over the whole block: softmax is unchanged, fp16 does not overflow.
            scaled = s / PB_RELAX_ALPHA
            peak = scaled.detach().flatten(2).amax(dim=-1)[..., None, None]
            s = (scaled - peak) * PB_RELAX_ALPHA
        return s

    def forward(self, x: Tensor, mask: Tensor, cache: DalleCache | None = None, layer: int = 0) -> Tensor:
        q, k, v = (self._split_heads(t) for t in self.query_key_value(x).chunk(3, dim=-1))
        if cache is not None:
            k, v = cache.extend(layer, k, v)
        probs = self.scores(q, k, mask).softmax(dim=-1)
        context = (probs @ v).transpose(1, 2).flatten(2)
        return self.dense(context).clamp(-FP16_MAX, FP16_MAX)


class DalleMLP(nn.Module):
    """hidden → 4·hidden → GELU → hidden."""

    def __init__(self, config: DalleConfig) -> None:
        super().__init__()
        self.dense_h_to_4h = nn.Linear(config.hidden_size, 4 * config.hidden_size)
        self.dense_4h_to_h = nn.Linear(4 * config.hidden_size, config.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.dense_4h_to_h(gelu_tanh(self.dense_h_to_4h(x)))


class DalleTransformerLayer(nn.Module):
    """Pre-norm block; with sandwich norms each branch is normalised again before its residual add."""

    def __init__(self, config: DalleConfig) -> None:
        super().__init__()
        eps = config.layernorm_epsilon
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=eps)
        self.sandwich = config.cogview_sandwich_layernorm
        if self.sandwich:
            self.before_first_addition_layernorm = nn.LayerNorm(config.hidden_size, eps=eps)
            self.before_second_addition_layernorm = nn.LayerNorm(config.hidden_size, eps=eps)
        self.attention = DalleSelfAttention(config)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=eps)
        self.mlp = DalleMLP(config)

    def forward(self, x: Tensor, mask: Tensor, cache: DalleCache | None = None, layer: int = 0) -> Tensor:
        attended = self.attention(self.input_layernorm(x), mask, cache, layer)
        if self.sandwich:
            attended = self.before_first_addition_layernorm(attended)
        x = x + attended
        mlp_out = self.mlp(self.post_attention_layernorm(x))
        if self.sandwich:
            mlp_out = self.before_second_addition_layernorm(mlp_out)
        return x + mlp_out


class DalleTransformer(nn.Module):
    """The layers, their masks (derived, so not saved) and the final LayerNorm."""

    def __init__(self, config: DalleConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DalleTransformerLayer(config) for _ in range(config.num_layers))
        self.final_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layernorm_epsilon)
        self.mask_kinds: list[MaskKind] = [layer_mask_kind(i, config.num_layers) for i in range(config.num_layers)]
        for kind in ("row", "column", "conv"):
            self.register_buffer(self._buffer_name(kind), config_mask(config, kind), persistent=False)
        self.register_load_state_dict_pre_hook(DalleTransformer._drop_saved_masks)

    @staticmethod
    def _buffer_name(kind: MaskKind) -> str:
        # ru-dalle's buffer names: transformer.row_mask / col_mask / conv_mask.
        return {"row": "row_mask", "column": "col_mask", "conv": "conv_mask"}[kind]

    def mask(self, kind: MaskKind) -> Tensor:
        return getattr(self, self._buffer_name(kind))

    def _drop_saved_masks(self, state_dict: dict[str, Tensor], prefix: str, *args: Any) -> None:
        """Accept checkpoints that carry ru-dalle's mask buffers: check them against ours, then drop them.

        ru-dalle registers its masks as ordinary (saved) buffers, so a ``state_dict()`` of its model carries
        them; ours are rebuilt from the config. A saved mask that differs means a different model.
        """
        for kind in ("row", "column", "conv"):
            key = prefix + self._buffer_name(kind)
            if key not in state_dict:
                continue
            saved = state_dict.pop(key)
            ours = self.mask(kind)
            if "meta" in (saved.device.type, ours.device.type):
                continue  # nothing to compare on the meta device
            if saved.shape != ours.shape or not torch.equal(saved.to(ours.device).bool(), ours):
                raise ValueError(f"{key} in the checkpoint is not the {kind} mask this config builds")

    def forward(self, x: Tensor, start: int, cache: DalleCache | None = None) -> Tensor:
        """``x``: hidden states of positions ``start … start + n − 1``; with a cache, the earlier ones are in it."""
        end = start + x.shape[1]
        for i, layer in enumerate(self.layers):
            mask = self.mask(self.mask_kinds[i])[start:end, :end].to(x.dtype)
            x = layer(x, mask, cache, i)
        return self.final_layernorm(x)


class DalleModel(nn.Module):
    """ruDALL-E: embeddings → sparse transformer → logits over text + image vocabularies."""

    def __init__(self, config: DalleConfig = MALEVICH) -> None:
        super().__init__()
        self.config = config
        h = config.hidden_size
        self.text_embeddings = nn.Embedding(config.vocab_size, h)
        self.image_embeddings = nn.Embedding(config.image_vocab_size, h)
        self.text_pos_embeddings = nn.Embedding(config.text_seq_length + 1, h)
        self.image_row_embeddings = nn.Embedding(config.image_tokens_per_dim, h)
        self.image_col_embeddings = nn.Embedding(config.image_tokens_per_dim, h)
        self.transformer = DalleTransformer(config)
        self.to_logits = nn.Sequential(nn.LayerNorm(h), nn.Linear(h, config.total_vocab_size))
        # ru-dalle draws the position tables from N(0, 0.02) and leaves the rest at torch's defaults.
        for table in (self.text_pos_embeddings, self.image_row_embeddings, self.image_col_embeddings):
            nn.init.normal_(table.weight, std=0.02)

    def new_cache(self) -> DalleCache:
        """An empty cache for the incremental forward (its buffers take batch, dtype, device from the first call)."""
        return DalleCache(self.config.num_layers, self.config.total_seq_length, self.config.lead_tokens)

    def embed(self, input_ids: Tensor, start: int = 0) -> Tensor:
        """Token + position embeddings of ``input_ids`` ``(B, n)``, the ids ``start …`` of the input.

        v3: input id ``i`` is sequence position ``i``. v2 (ru-dalle's ``hf_version='v2'`` forward): token 2 comes
        first (with ``start == 0``), text id ``p`` sits at position ``p + 1`` (its pad token still the one of
        ``p``), image id ``j`` at ``text_seq_length + 1 + j`` (its row and column embeddings still those of ``j``),
        and positions past ``total_seq_length`` are dropped, so the last image id is never read.
        """
        cfg = self.config
        n = input_ids.shape[1]
        if start + n > cfg.total_seq_length:
            raise ValueError(f"positions {start}…{start + n - 1} run past the sequence ({cfg.total_seq_length})")
        device = input_ids.device
        lead = cfg.lead_tokens
        position = 0 if start == 0 else start + lead  # the sequence position of the first embedding made
        room = cfg.total_seq_length - position
        if room <= 0:
            raise ValueError(f"the {cfg.hf_version} network reads no input id past {cfg.total_seq_length - lead - 1}")
        parts = []
        n_text = max(0, min(n, cfg.text_seq_length - start))
        if n_text:
            pos = torch.arange(start, start + n_text, device=device)
            text = input_ids[:, :n_text]
            # A pad (id 0) at position p reads the p-th pad token at the end of the text vocabulary.
            text = torch.where(text == 0, pos + (cfg.vocab_size - cfg.text_seq_length), text)
            if lead and start == 0:  # v2: token 2 before the text
                text = torch.cat([text.new_full((text.shape[0], lead), V2_LEAD_TOKEN), text], dim=1)
                pos = torch.arange(start + n_text + lead, device=device)
            else:
                pos = pos + lead
            parts.append(self.text_embeddings(text) + self.text_pos_embeddings(pos))
        if n > n_text:
            cell = torch.arange(start + n_text, start + n, device=device) - cfg.text_seq_length
            image = input_ids[:, n_text:]
            row = self.image_row_embeddings(cell // cfg.image_tokens_per_dim)
            col = self.image_col_embeddings(cell % cfg.image_tokens_per_dim)
            parts.append(self.image_embeddings(image) + (row + col))
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        x = x[:, :room]  # v2: the lead token pushes the last image id out of the sequence
        return x * EMBEDDING_GRAD_SHRINK + x.detach() * (1 - EMBEDDING_GRAD_SHRINK)

    def forward(self, input_ids: Tensor, cache: DalleCache | None = None, *, only_last: bool = False) -> Tensor:
        """Logits ``(B, n, total_vocab_size)`` for the given tokens.

        Without a cache ``input_ids`` is the sequence from position 0 (text first, then image ids in
        ``[0, image_vocab_size)``). With one, it holds only the tokens after the ``cache.fed`` already seen,
        and the cache grows by them. ``only_last`` runs the head on the last position alone (sampling needs no
        more). The image logits are columns ``vocab_size:``. A v2 network returns one more position in front (its
        token 2; ``n + 1`` positions for a call from 0, at most ``total_seq_length``): in both versions the last
        position's logits are those of the id after the last one given.
        """
        start = 0 if cache is None else cache.fed
        position = 0 if cache is None else cache.length
        x = self.transformer(self.embed(input_ids, start), position, cache)
        if cache is not None:
            cache.length += x.shape[1]
        if only_last:
            x = x[:, -1:]
        return self.to_logits(x)
