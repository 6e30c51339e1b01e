"""Drawing ruDALL-E's image tokens one position at a time.

Each step takes the logits of the next position's image tokens (columns ``vocab_size:`` of the head) and turns
them into a token the way ru-dalle's ``generate_images`` does: divide by the temperature, then
``transformers.top_k_top_p_filtering`` (top-k first, then top-p over what top-k kept), then softmax and
``torch.multinomial``. ``temperature=0`` picks the arg-max instead and draws no random numbers.

The N images of a batch go through the model together (its weights are read once per step), but each image
draws from its own ``torch.Generator`` (seed ``seed + i`` for image ``i``), so an image does not depend on the
batch it was drawn in. A run's whole state is ``(tokens so far, the generators' states)``: stopping after any
token (``max_new_tokens``) and calling again with ``start_tokens`` and the same generators continues the run.
A v2 network (Malevich_v2, Emojich) is fed what ru-dalle's ``generate_images`` feeds it, the same ids as v3
(it puts its token 2 before the text itself, and its last image token, like every token, is drawn from the
position before it and never fed back). Equal up to floating point: the cached loop fills its cache with one pass
over the prefix, where a straight run filled it token by token; in float64 the tokens agree, in float32 a token
sitting on a probability boundary could in principle flip.

:func:`sample_image_tokens` keeps keys and values in a :class:`~dreamcanvas.models.rudalle.DalleCache`;
:func:`sample_image_tokens_uncached` recomputes the whole sequence at every step and is the reference the
cached loop is tested against.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dreamcanvas.models.rudalle import DalleCache, DalleModel


@dataclass(frozen=True)
class SamplingProgress:
    """Handed to ``on_token`` after every new token."""

    done: int
    """Image tokens so far (resumed ones included)."""
    total: int
    """Image tokens in a finished picture."""
    tokens: Tensor
    """``(N, done)``: the image tokens so far (a view: copy it to keep it)."""
    generators: Sequence[torch.Generator]
    """The images' generators, in their state after this token: with ``tokens`` they resume the run."""


TokenCallback = Callable[[SamplingProgress], None]
NextLogits = Callable[[Tensor, int], Tensor]
"""``next_logits(sequence, fed)``: logits ``(N, total_vocab)`` of the position after ``sequence``; the first
``fed`` positions of ``sequence`` were in the previous calls' sequences."""


# ----------------------------------------------------------------------------------------------------------------
# Filtering and drawing


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """``logits / temperature`` (ru-dalle divides before filtering, so top-p sees the tempered distribution)."""
    return logits / temperature


def top_k_filter(logits: Tensor, top_k: int) -> Tensor:
    """Keep the logits at least as large as the ``top_k``-th largest (ties kept); ``top_k <= 0`` keeps all."""
    if top_k <= 0:
        return logits
    k = min(top_k, logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: Tensor, top_p: float) -> Tensor:
    """Nucleus filtering: keep the most likely tokens up to and including the one that takes the mass past ``top_p``.

    transformers 4.10's rule (what ru-dalle pinned): sort descending, drop a token when the cumulative
    probability of the tokens *before* it already exceeds ``top_p``; the most likely token always stays.
    ``top_p >= 1`` keeps everything.
    """
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = torch.zeros_like(cumulative, dtype=torch.bool)
    drop_sorted[..., 1:] = cumulative[..., :-1] > top_p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def filter_logits(logits: Tensor, temperature: float, top_k: int, top_p: float) -> Tensor:
    """Temperature, then top-k, then top-p, in float32 (ru-dalle's order)."""
    logits = apply_temperature(logits.float(), temperature)
    return top_p_filter(top_k_filter(logits, top_k), top_p)


def draw(logits: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
    """One token per row from ``softmax(logits)``, row ``i`` drawing from ``generators[i]``."""
    probs = logits.softmax(dim=-1)
    return torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, generators, strict=True)])


def pick(logits: Tensor, generators: Sequence[torch.Generator], temperature: float, top_k: int, top_p: float) -> Tensor:
    """The next image token of every row: arg-max when ``temperature == 0``, else a filtered draw."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    return draw(filter_logits(logits, temperature, top_k, top_p), generators)


# ----------------------------------------------------------------------------------------------------------------
# Inputs


def make_generators(
    images: int,
    seed: int | None,
    generator: torch.Generator | Sequence[torch.Generator] | None,
    device: torch.device,
) -> list[torch.Generator]:
    """The images' generators: the ones given, or fresh ones seeded ``seed + i``."""
    if generator is not None:
        if seed is not None:
            raise ValueError("give seed or generator, not both")
        gens = [generator] if isinstance(generator, torch.Generator) else list(generator)
        if len(gens) != images:
            raise ValueError(f"{len(gens)} generators for {images} images")
        return gens
    if seed is None:
        seed = int(torch.randint(0, 2**62, ()).item())
    return [torch.Generator(device=device).manual_seed(seed + i) for i in range(images)]


def text_batch(model: DalleModel, text_tokens: Tensor, images: int) -> Tensor:
    """``(N, text_seq_length)`` text ids: one row repeated, or one row per image; pads are id 0."""
    cfg = model.config
    text = text_tokens.long()
    if text.dim() == 1:
        text = text[None]
    if text.shape[-1] != cfg.text_seq_length:
        raise ValueError(f"text has {text.shape[-1]} tokens, the model reads {cfg.text_seq_length} (pad with 0)")
    if text.shape[0] not in (1, images):
        raise ValueError(f"{text.shape[0]} texts for {images} images")
    if text.min() < 0 or text.max() >= cfg.vocab_size:
        raise ValueError(f"text ids must lie in [0, {cfg.vocab_size})")
    return text.expand(images, -1)


def start_batch(model: DalleModel, start_tokens: Tensor | None, images: int, device: torch.device) -> Tensor:
    """``(N, k)`` image tokens already drawn (none when ``start_tokens`` is None)."""
    cfg = model.config
    if start_tokens is None:
        return torch.zeros(images, 0, dtype=torch.long, device=device)
    start = start_tokens.long().to(device)
    if start.dim() == 1:
        start = start[None].expand(images, -1)
    if start.shape[0] != images or start.shape[1] > cfg.image_seq_length:
        raise ValueError(f"start_tokens {tuple(start.shape)} do not fit {images} images of {cfg.image_seq_length}")
    if start.numel() and (start.min() < 0 or start.max() >= cfg.image_vocab_size):
        raise ValueError(f"image ids must lie in [0, {cfg.image_vocab_size})")
    return start


# ----------------------------------------------------------------------------------------------------------------
# Loops


def cached_next_logits(model: DalleModel) -> NextLogits:
    """Feeds the model only what it has not seen, keeping keys and values in a cache."""
    cache: DalleCache = model.new_cache()

    def next_logits(sequence: Tensor, fed: int) -> Tensor:
        if fed != cache.fed:  # ids seen: v2's lead token 2 is a position of the cache, not an id of the loop
            raise RuntimeError(f"the cache has seen {cache.fed} ids, the loop says {fed}")
        return model(sequence[:, fed:], cache, only_last=True)[:, -1]

    return next_logits


def uncached_next_logits(model: DalleModel) -> NextLogits:
    """Recomputes the whole sequence every step (slow; the reference)."""

    def next_logits(sequence: Tensor, fed: int) -> Tensor:
        del fed
        return model(sequence, only_last=True)[:, -1]

    return next_logits


@torch.no_grad()
def sample_image_tokens(
    model: DalleModel,
    text_tokens: Tensor,
    *,
    images: int = 1,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    on_token: TokenCallback | None = None,
    start_tokens: Tensor | None = None,
    max_new_tokens: int | None = None,
    cached: bool = True,
) -> Tensor:
    """Image tokens ``(N, k)`` for ``text_tokens`` (``(text_seq_length,)`` padded with 0, or one row per image).

    ru-dalle's README draws Malevich with ``top_k=2048, top_p=0.995``. ``start_tokens`` ``(N, j)`` (or one row
    for all) continue an earlier run, ``max_new_tokens`` stops early; ``k`` is ``image_seq_length`` unless
    stopped early. ``cached=False`` sends the whole sequence through the model at every step: the reference the
    cached loop is tested against.
    """
    cfg = model.config
    device = next(model.parameters()).device
    next_logits = cached_next_logits(model) if cached else uncached_next_logits(model)
    gens = make_generators(images, seed, generator, device)
    text = text_batch(model, text_tokens.to(device), images)
    start = start_batch(model, start_tokens, images, device)
    total = cfg.image_seq_length
    end = total if max_new_tokens is None else min(total, start.shape[1] + max_new_tokens)
    sequence = torch.empty(images, cfg.text_seq_length + end, dtype=torch.long, device=device)
    sequence[:, : cfg.text_seq_length] = text
    done = start.shape[1]
    sequence[:, cfg.text_seq_length : cfg.text_seq_length + done] = start
    fed = 0
    while done < end:
        length = cfg.text_seq_length + done
        logits = next_logits(sequence[:, :length], fed)[:, cfg.vocab_size :]
        fed = length
        sequence[:, length] = pick(logits, gens, temperature, top_k, top_p)
        done += 1
        if on_token is not None:
            on_token(SamplingProgress(done, total, sequence[:, cfg.text_seq_length : length + 1], gens))
    return sequence[:, cfg.text_seq_length :].clone()


def sample_image_tokens_uncached(model: DalleModel, text_tokens: Tensor, **options: Any) -> Tensor:
    """:func:`sample_image_tokens` without a cache (the reference loop)."""
    return sample_image_tokens(model, text_tokens, cached=False, **options)
