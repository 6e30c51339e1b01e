"""ruDALL-E: Malevich's checkpoint layout, the sparse masks, and the cached sampling loop on a tiny model.

The expected keys and shapes are written out from ru-dalle's ``rudalle/dalle/{model,transformer}.py``
(``DalleModel``, ``DalleTransformer``, ``DalleTransformerLayer``, ``DalleSelfAttention``, ``DalleMLP``) with
Malevich's ``model_params``; the mask rules from ``rudalle/dalle/image_attention.py``. The tiny model runs in
float64 so that "the same tokens" cannot hinge on a rounding difference between two equal computations.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from dreamcanvas.dalle import sampling
from dreamcanvas.dalle.sampling import sample_image_tokens, sample_image_tokens_uncached
from dreamcanvas.models.rudalle import MALEVICH, DalleConfig, DalleModel, attention_mask, layer_mask_kind

TINY = DalleConfig(
    num_layers=4,  # row, column, row, conv
    hidden_size=64,
    num_attention_heads=4,
    text_seq_length=8,
    image_tokens_per_dim=4,
    vocab_size=40 + 8,
    image_vocab_size=32,
    conv_kernel=3,  # ru-dalle's 11 would cover a 4×4 grid whole
)
TEXT = torch.tensor([2, 17, 33, 5, 3, 0, 0, 0])  # bos, three words, eos, pads (id 0), as ru-dalle's tokenizer
SAMPLED = {"temperature": 1.3, "top_k": 12, "top_p": 0.9}


def malevich_expected_shapes() -> dict[str, tuple[int, ...]]:
    """Every key of ``pytorch_model_v3.bin``'s parameters, with its shape (hidden 2048, 24 layers)."""
    h, ff = 2048, 4 * 2048
    shapes: dict[str, tuple[int, ...]] = {
        "text_embeddings.weight": (16384 + 128, h),
        "image_embeddings.weight": (8192, h),
        "text_pos_embeddings.weight": (128 + 1, h),
        "image_row_embeddings.weight": (32, h),
        "image_col_embeddings.weight": (32, h),
        "transformer.final_layernorm.weight": (h,),
        "transformer.final_layernorm.bias": (h,),
        "to_logits.0.weight": (h,),
        "to_logits.0.bias": (h,),
        "to_logits.1.weight": (16384 + 128 + 8192, h),
        "to_logits.1.bias": (16384 + 128 + 8192,),
    }
    per_layer = {
        "input_layernorm.weight": (h,),
        "input_layernorm.bias": (h,),
        "before_first_addition_layernorm.weight": (h,),
        "before_first_addition_layernorm.bias": (h,),
        "attention.query_key_value.weight": (3 * h, h),
        "attention.query_key_value.bias": (3 * h,),
        "attention.dense.weight": (h, h),
        "attention.dense.bias": (h,),
        "post_attention_layernorm.weight": (h,),
        "post_attention_layernorm.bias": (h,),
        "mlp.dense_h_to_4h.weight": (ff, h),
        "mlp.dense_h_to_4h.bias": (ff,),
        "mlp.dense_4h_to_h.weight": (h, ff),
        "mlp.dense_4h_to_h.bias": (h,),
        "before_second_addition_layernorm.weight": (h,),
        "before_second_addition_layernorm.bias": (h,),
    }
    for i in range(24):
        shapes.update({f"transformer.layers.{i}.{name}": shape for name, shape in per_layer.items()})
    return shapes


def test_malevich_has_the_checkpoints_keys_shapes_and_parameter_count():
    with torch.device("meta"):
        model = DalleModel(MALEVICH)
    state = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    expected = malevich_expected_shapes()
    assert set(state) == set(expected)
    assert state == expected
    assert sum(p.numel() for p in model.parameters()) == 1_310_410_880
    columns = {1, 5, 9, 13, 17, 21}
    assert model.transformer.mask_kinds == [
        "column" if i in columns else "conv" if i == 23 else "row" for i in range(24)
    ]


def test_checkpoint_with_rudalles_mask_buffers_loads_strictly():
    """ru-dalle saves its masks as buffers (``transformer.row_mask`` …): a file with them loads, a wrong one fails."""
    model = DalleModel(TINY)
    state = model.state_dict()
    for kind, key in (("row", "row_mask"), ("column", "col_mask"), ("conv", "conv_mask")):
        state[f"transformer.{key}"] = attention_mask(kind, 8, 4, 3)
    DalleModel(TINY).load_state_dict(state, strict=True)
    state["transformer.conv_mask"] = attention_mask("conv", 8, 4, 5)
    with pytest.raises(ValueError, match="conv_mask"):
        DalleModel(TINY).load_state_dict(state, strict=True)


# ----------------------------------------------------------------------------------------------------------------
# Masks


def cell(pos: int, text: int, side: int) -> tuple[int, int]:
    return divmod(pos - text, side)


@pytest.mark.parametrize(("text", "side", "kernel"), [(8, 4, 3), (5, 6, 3), (3, 7, 5)])
def test_masks_follow_their_definitions(text, side, kernel):
    total = text + side * side
    row, col, conv = (attention_mask(kind, text, side, kernel) for kind in ("row", "column", "conv"))
    for q, k in itertools.product(range(total), repeat=2):
        if k > q:  # causal
            assert not (row[q, k] or col[q, k] or conv[q, k])
        elif k < text or k == q:  # text is always visible, and so is the position itself
            assert row[q, k] and col[q, k] and conv[q, k]
        else:
            (rq, cq), (rk, ck) = cell(q, text, side), cell(k, text, side)
            # row: the tokens before it in its row, and the row above from its own column on
            assert bool(row[q, k]) == ((rq == rk) or (rq == rk + 1 and ck >= cq)), (q, k)
            # column: the same column, any row above
            assert bool(col[q, k]) == (cq == ck), (q, k)
            # conv: inside the kernel × kernel window around the key
            half = kernel // 2
            assert bool(conv[q, k]) == (abs(rq - rk) <= half and abs(cq - ck) <= half), (q, k)


def test_malevich_masks_at_full_size():
    row, col, conv = (attention_mask(kind, 128, 32, 11) for kind in ("row", "column", "conv"))
    assert row.shape == (1152, 1152)

    def at(r: int, c: int) -> int:
        return 128 + 32 * r + c

    q = at(10, 7)
    assert row[q, :128].all() and col[q, :128].all() and conv[q, :128].all()  # all the text
    assert row[q, at(10, 0)] and row[q, at(9, 7)] and row[q, at(9, 31)] and not row[q, at(9, 6)]
    assert col[q, at(0, 7)] and col[q, at(9, 7)] and not col[q, at(10, 6)] and not col[q, at(9, 8)]
    assert conv[q, at(5, 2)] and conv[q, at(5, 12)] and not conv[q, at(4, 7)] and not conv[q, at(10, 1)]
    assert row.sum(1)[at(31, 31)] == 128 + 33
    assert layer_mask_kind(0, 24) == "row" and layer_mask_kind(1, 24) == "column" and layer_mask_kind(23, 24) == "conv"
    assert torch.equal(row[:128, :128], torch.ones(128, 128).tril().bool())  # text queries: plainly causal


# ----------------------------------------------------------------------------------------------------------------
# The tiny model


@pytest.fixture(scope="module")
def tiny() -> DalleModel:
    torch.manual_seed(0)
    model = DalleModel(TINY).double().eval()
    with torch.no_grad():  # away from the identity norms and zero biases of a fresh model
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model


def test_cached_forward_matches_the_full_forward(tiny):
    ids = torch.cat(
        [TEXT[None].repeat(2, 1), torch.randint(0, 32, (2, 16), generator=torch.Generator().manual_seed(1))], 1
    )
    with torch.no_grad():
        full = tiny(ids)
        cache = tiny.new_cache()
        steps = [tiny(ids[:, :8], cache)] + [tiny(ids[:, i : i + 1], cache) for i in range(8, 24)]
    assert full.shape == (2, 24, 48 + 32)
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=0, atol=1e-12)


def test_pb_relax_shifts_each_head_by_the_maximum_of_its_whole_block(tiny):
    """ru-dalle subtracts one maximum per (sample, head), over all queries and keys, not one per row."""
    attention = tiny.transformer.layers[0].attention
    gen = torch.Generator().manual_seed(2)
    q, k = (torch.randn(2, 4, 24, 16, generator=gen, dtype=torch.float64) for _ in range(2))
    mask = attention_mask("row", 8, 4).double()
    scores = attention.scores(q, k, mask)
    assert torch.equal(scores.flatten(2).amax(-1), torch.zeros(2, 4, dtype=torch.float64))
    assert (scores.amax(-1) < 0).any()  # rows keep their own offsets
    plain = (q @ k.transpose(-1, -2)) / 4.0 * mask - 10000.0 * (1 - mask)
    torch.testing.assert_close(scores.softmax(-1), plain.softmax(-1), rtol=0, atol=1e-12)


def test_pads_read_their_position_token(tiny):
    """A pad (0) at position p is the text token vocab_size - text_seq_length + p."""
    explicit = TEXT.clone()
    explicit[5:] = torch.arange(5, 8) + 40
    with torch.no_grad():
        assert torch.equal(tiny(TEXT[None]), tiny(explicit[None]))


@pytest.mark.parametrize("options", [{"temperature": 0.0}, SAMPLED], ids=["greedy", "sampled"])
def test_cached_loop_draws_the_tokens_of_the_uncached_loop(tiny, options):
    cached = sample_image_tokens(tiny, TEXT, images=2, seed=7, **options)
    reference = sample_image_tokens_uncached(tiny, TEXT, images=2, seed=7, **options)
    assert cached.shape == (2, 16) and cached.dtype == torch.long
    assert torch.equal(cached, reference)
    assert cached.min() >= 0 and cached.max() < 32
    if options["temperature"]:
        assert not torch.equal(cached[0], cached[1])  # two images, two generators


def test_sampling_is_deterministic_per_seed_and_greedy_draws_nothing(tiny):
    first = sample_image_tokens(tiny, TEXT, images=2, seed=3, **SAMPLED)
    assert torch.equal(first, sample_image_tokens(tiny, TEXT, images=2, seed=3, **SAMPLED))
    assert not torch.equal(first, sample_image_tokens(tiny, TEXT, images=2, seed=4, **SAMPLED))
    g = torch.Generator().manual_seed(5)
    before = g.get_state()
    sample_image_tokens(tiny, TEXT, temperature=0.0, generator=g)
    assert torch.equal(g.get_state(), before)


def test_an_image_does_not_depend_on_its_batch(tiny):
    batch = sample_image_tokens(tiny, TEXT, images=2, seed=11, **SAMPLED)
    assert torch.equal(batch[0], sample_image_tokens(tiny, TEXT, seed=11, **SAMPLED)[0])
    assert torch.equal(batch[1], sample_image_tokens(tiny, TEXT, seed=12, **SAMPLED)[0])


def test_stopping_and_resuming_equals_a_straight_run(tiny):
    straight = sample_image_tokens(tiny, TEXT, images=2, seed=21, **SAMPLED)
    # Stop after 6 tokens, keep (tokens, generator states), continue with fresh generators in those states.
    gens = [torch.Generator().manual_seed(21 + i) for i in range(2)]
    head = sample_image_tokens(tiny, TEXT, images=2, generator=gens, max_new_tokens=6, **SAMPLED)
    assert torch.equal(head, straight[:, :6])
    resumed_gens = [torch.Generator() for _ in range(2)]
    for new, old in zip(resumed_gens, gens, strict=True):
        new.set_state(old.get_state())
    rest = sample_image_tokens(tiny, TEXT, images=2, generator=resumed_gens, start_tokens=head, **SAMPLED)
    assert torch.equal(rest, straight)


def test_progress_reports_every_token_and_a_resumable_state(tiny):
    seen: list[int] = []
    saved: dict[str, object] = {}

    def on_token(progress: sampling.SamplingProgress) -> None:
        seen.append(progress.done)
        assert progress.total == 16 and progress.tokens.shape == (1, progress.done)
        if progress.done == 9:
            saved["tokens"] = progress.tokens.clone()
            saved["state"] = progress.generators[0].get_state()

    straight = sample_image_tokens(tiny, TEXT, seed=30, on_token=on_token, **SAMPLED)
    assert seen == list(range(1, 17))
    g = torch.Generator()
    g.set_state(saved["state"])
    resumed = sample_image_tokens_uncached(tiny, TEXT, generator=g, start_tokens=saved["tokens"], **SAMPLED)
    assert torch.equal(resumed, straight)


def test_state_dict_round_trip_through_a_bin_file(tiny, tmp_path):
    path = tmp_path / "pytorch_model_tiny.bin"
    torch.save(tiny.state_dict(), path)
    loaded = DalleModel(TINY).double().eval()
    loaded.load_state_dict(torch.load(path, weights_only=True), strict=True)
    ids = torch.cat([TEXT, torch.arange(16) % 32])[None]
    with torch.no_grad():
        assert torch.equal(loaded(ids), tiny(ids))


# ----------------------------------------------------------------------------------------------------------------
# Filters


def test_top_k_then_top_p_as_transformers_filters():
    logits = torch.log(torch.tensor([[0.5, 0.05, 0.3, 0.15], [0.25, 0.25, 0.25, 0.25]]))
    kept = sampling.top_k_filter(logits, 3).isfinite()
    assert kept.tolist() == [[True, False, True, True], [True, True, True, True]]  # ties with the k-th stay
    # top-p keeps the tokens until the mass before the next one exceeds p
    assert sampling.top_p_filter(logits[:1], 0.75).isfinite().tolist() == [[True, False, True, False]]
    assert sampling.top_p_filter(logits[:1], 0.85).isfinite().tolist() == [[True, False, True, True]]
    assert sampling.top_p_filter(logits[:1], 0.1).isfinite().tolist() == [[True, False, False, False]]

    from transformers import TopKLogitsWarper, TopPLogitsWarper

    random = torch.randn(4, 300, generator=torch.Generator().manual_seed(0)) * 3
    ours = sampling.filter_logits(random, 0.7, 40, 0.8)
    theirs = TopPLogitsWarper(0.8)(None, TopKLogitsWarper(40)(None, random / 0.7))
    assert torch.equal(ours.isfinite(), theirs.isfinite())
    torch.testing.assert_close(ours[ours.isfinite()], theirs[theirs.isfinite()])
