"""taming-transformers' second stage: the GPT of ``Net2NetTransformer`` (Esser, Rombach & Ommer, 2021).

A minGPT (``taming/modules/transformer/mingpt.py``) over the VQGAN's codes, rebuilt name for name and shape for
shape, so the ``transformer.*`` entries of a released Lightning ``.ckpt`` load with ``strict=True``::

    tok_emb (vocab, C)      pos_emb (1, block_size, C)
    blocks.N: ln1 -> attn.{key, query, value} -> causal softmax(q k^T / sqrt(d)) v -> attn.proj   (+ residual)
              ln2 -> mlp.0 (C -> 4C) -> GELU -> mlp.2 (4C -> C)                                 (+ residual)
              attn.mask (1, 1, block_size, block_size): the lower triangle, a buffer the checkpoint holds
    ln_f -> head (C -> vocab, no bias)

The condition comes first in the sequence and shares ``tok_emb`` with the codes: a class-conditional model reads
its ImageNet class index as a token (``Labelator``), an unconditional one its ``sos_token`` (``SOSProvider``).

:class:`GPTCache` keeps every layer's keys and values, so a step computes only its new positions; without one the
forward is the original's arithmetic over the whole sequence (explicit ``q @ k^T``, the mask buffer, softmax),
the reference the cache is tested against. Dropout is left out: only inference is supported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class TamingGPTConfig:
    """``transformer_config.params`` of a taming yaml (the ``GPT`` constructor's arguments that shape weights)."""

    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    n_unmasked: int = 0
    """Leading positions that see each other both ways (the mask's top-left square); 0 in the released models."""

    def __post_init__(self) -> None:
        if min(self.vocab_size, self.block_size, self.n_layer, self.n_head, self.n_embd) <= 0:
            raise ValueError(f"every size of a taming GPT must be positive: {self}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not a multiple of n_head {self.n_head}")


CIN = TamingGPTConfig(vocab_size=16384, block_size=256, n_layer=48, n_head=24, n_embd=1536)
"""The class-conditional ImageNet transformer (``2021-04-03T19-39-50_cin_transformer``, "1.4B" in taming's
README): one class token and 16x16 codes of ``vqgan_imagenet_f16_16384`` (block_size 1 + 256 - 1). The layer count
and widths are checked against the checkpoint's shapes; the head count, which no shape shows, comes from the
run's project yaml when there is one."""


class GPTCache:
    """Keys and values of every layer for the positions fed so far, in preallocated ``(B, heads, block, d)``."""

    def __init__(self, config: TamingGPTConfig, batch: int, device: torch.device, dtype: torch.dtype) -> None:
        shape = (batch, config.n_head, config.block_size, config.n_embd // config.n_head)
        self.keys = [torch.empty(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.values = [torch.empty(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.length = 0


class CausalSelfAttention(nn.Module):
    def __init__(self, config: TamingGPTConfig) -> None:
        super().__init__()
        width = config.n_embd
        self.key = nn.Linear(width, width)
        self.query = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.proj = nn.Linear(width, width)
        self.n_head = config.n_head
        self.register_buffer("mask", causal_mask(config.block_size, config.n_unmasked))

    def forward(self, x: Tensor, cache: GPTCache | None, layer: int) -> Tensor:
        batch, new, width = x.shape
        heads = self.n_head

        def split(t: Tensor) -> Tensor:
            return t.view(batch, new, heads, width // heads).transpose(1, 2)

        k, q, v = split(self.key(x)), split(self.query(x)), split(self.value(x))
        start = 0
        if cache is not None:
            start = cache.length
            cache.keys[layer][:, :, start : start + new] = k
            cache.values[layer][:, :, start : start + new] = v
            k, v = cache.keys[layer][:, :, : start + new], cache.values[layer][:, :, : start + new]
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        visible = self.mask[:, :, start : start + new, : start + new]
        scores = scores.masked_fill(visible == 0, float("-inf"))
        y = scores.softmax(dim=-1) @ v
        return self.proj(y.transpose(1, 2).contiguous().view(batch, new, width))


class Block(nn.Module):
    def __init__(self, config: TamingGPTConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd)
        self.ln2 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        # mlp.0 and mlp.2 as in the original's Sequential (its GELU is 1 and its trailing Dropout 3)
        self.mlp = nn.Sequential(nn.Linear(config.n_embd, 4 * config.n_embd), nn.GELU(),
                                 nn.Linear(4 * config.n_embd, config.n_embd))  # fmt: skip

    def forward(self, x: Tensor, cache: GPTCache | None, layer: int) -> Tensor:
        x = x + self.attn(self.ln1(x), cache, layer)
        return x + self.mlp(self.ln2(x))


class TamingGPT(nn.Module):
    """taming's ``GPT``: ``forward(tokens)`` gives the logits of the token after each position."""

    def __init__(self, config: TamingGPTConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Parameter(torch.zeros(1, config.block_size, config.n_embd))
        self.blocks = nn.Sequential(*[Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)

    def new_cache(self, batch: int) -> GPTCache:
        return GPTCache(self.config, batch, self.pos_emb.device, self.pos_emb.dtype)

    def forward(self, tokens: Tensor, cache: GPTCache | None = None, *, only_last: bool = False) -> Tensor:
        """Logits ``(B, T, vocab)`` for ``tokens`` ``(B, T)``, which follow the ``cache.length`` positions already
        in ``cache`` (then only the new positions are computed); ``only_last`` runs the head on the last one."""
        start = 0 if cache is None else cache.length
        new = tokens.shape[1]
        if start + new > self.config.block_size:
            raise ValueError(f"{start + new} positions, the model reads at most {self.config.block_size}")
        x = self.tok_emb(tokens) + self.pos_emb[:, start : start + new]
        for layer, block in enumerate(self.blocks):
            x = block(x, cache, layer)
        if cache is not None:
            cache.length = start + new
        if only_last:
            x = x[:, -1:]
        return self.head(self.ln_f(x))


def causal_mask(block_size: int, n_unmasked: int = 0) -> Tensor:
    """The original's ``attn.mask``: ones on and below the diagonal (and in the first ``n_unmasked`` square)."""
    mask = torch.tril(torch.ones(block_size, block_size))
    if n_unmasked:
        mask[:n_unmasked, :n_unmasked] = 1
    return mask.view(1, 1, block_size, block_size)


def parameter_count(config: TamingGPTConfig) -> int:
    with torch.device("meta"):
        return sum(parameter.numel() for parameter in TamingGPT(config).parameters())
