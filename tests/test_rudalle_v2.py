"""ruDALL-E's ``v2`` checkpoints (Malevich_v2, Emojich): their forward, masks, loop, loader and CLI on tiny models.

What v2 is, from ru-dalle's source (``rudalle/dalle/model.py``, ``image_attention.py``, ``__init__.py``):

* ``DalleModel.forward``: the pads are replaced (``vocab_size - text_seq_length + p``) *before*
  ``text = F.pad(text, (1, 0), value=2)``; the text then reads ``text_pos_embeddings(arange(text_seq_length + 1))``;
  the image ids keep ``get_image_pos_embeddings(past_length=0)`` (image ``j``: row ``j // side``, column
  ``j % side``); ``if embeddings.shape[1] > total_seq_length: embeddings = embeddings[:, :-1]``; the masks are
  sliced ``[:L, :L]`` by sequence position, as for v3;
* ``get_conv_mask(hf_version='v2')`` takes the window's cells ``(r + row) % side`` and ``(c + col) % side``
  where v3 clamps them; ``get_row_mask`` and ``get_col_mask`` have no version;
* ``MODELS``: Malevich_v2 (``pytorch_model_v2.bin``) and Emojich (``pytorch_model.bin``) are ``hf_version='v2'``
  with Malevich's ``model_params``; Surrealist_XL is v3 with Malevich's ``model_params`` (only other weights);
* ``generate_images`` feeds v2 exactly what it feeds v3: the tokenizer's 128 ids, then the image ids drawn.

The mask definitions below are ru-dalle's loops written out again, independently of ``attention_mask``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import one_error_line, run_cli
from PIL import Image
from test_dalle import TINY as CLI_TINY
from test_dalle import args, make_models, settings_of
from test_rudalle_model import TINY, malevich_expected_shapes

from dreamcanvas.dalle.models import (
    CHECKPOINT_NAME,
    REGISTERED_CONFIGS,
    config_from_state,
    image_tokens,
    load_parts,
    parameter_count,
)
from dreamcanvas.dalle.sampling import sample_image_tokens, sample_image_tokens_uncached
from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.models.rudalle import (
    EMOJICH,
    MALEVICH,
    MALEVICH_V2,
    MODELS,
    SURREALIST_XL,
    DalleConfig,
    DalleModel,
    attention_mask,
    config_mask,
    layer_mask_kind,
)

TINY_V2 = dataclasses.replace(TINY, hf_version="v2")
"""test_rudalle_model's tiny network as v2: on its 4x4 grid the 3x3 conv window wraps."""
TEXT = torch.tensor([2, 17, 33, 5, 3, 0, 0, 0])  # bos, three words, eos, pads (id 0)
SAMPLED = {"temperature": 1.3, "top_k": 12, "top_p": 0.9}


# ----------------------------------------------------------------------------------------------------------------
# ru-dalle's masks, written out


def rudalle_row_mask(text: int, side: int) -> torch.Tensor:
    """``get_row_mask``: causal; an image key is hidden from queries ``side + 1`` or more positions later."""
    total = text + side * side
    mask = torch.ones(total, total).tril().bool()
    for key in range(text, total):
        mask[key + side + 1 :, key] = False
    return mask


def rudalle_col_mask(text: int, side: int) -> torch.Tensor:
    """``get_col_mask``: causal; below an image key, runs of ``side - 1`` queries hidden, starting at 1, side + 1 …"""
    total = text + side * side
    mask = torch.ones(total, total).tril().bool()
    for key in range(text, total):
        for offset in range(1, total, side):
            mask[key + offset : key + offset + side - 1, key] = False
    return mask


def rudalle_conv_mask(text: int, side: int, kernel: int, version: str) -> torch.Tensor:
    """``get_conv_mask``: an image key is seen only by itself and by the later cells of its window."""
    total = text + side * side
    mask = torch.ones(total, total).tril().bool()
    shift = kernel // 2
    for key in range(text, total):
        mask[key + 1 :, key] = False
        row, col = divmod(key - text, side)
        for r, c in itertools.product(range(-shift, shift + 1), repeat=2):
            if version == "v2":
                r_abs, c_abs = (row + r) % side, (col + c) % side
            else:
                r_abs, c_abs = min(max(row + r, 0), side - 1), min(max(col + c, 0), side - 1)
            query = text + r_abs * side + c_abs
            if query > key:
                mask[query, key] = True
    return mask


@pytest.mark.parametrize(("text", "side", "kernel"), [(8, 4, 3), (5, 6, 3), (3, 7, 5), (2, 5, 11)])
def test_v2_masks_are_rudalles_position_by_position(text, side, kernel):
    config = DalleConfig(num_layers=4, hidden_size=8, num_attention_heads=1, text_seq_length=text,
                         image_tokens_per_dim=side, vocab_size=text + 8, conv_kernel=kernel,
                         hf_version="v2")  # fmt: skip
    expected = {
        "row": rudalle_row_mask(text, side),
        "column": rudalle_col_mask(text, side),
        "conv": rudalle_conv_mask(text, side, kernel, "v2"),
    }
    for kind, mask in expected.items():
        ours = config_mask(config, kind)
        total = text + side * side
        for q, k in itertools.product(range(total), repeat=2):
            assert bool(ours[q, k]) == bool(mask[q, k]), (kind, q, k)
    # row and column are the same in both versions; v3's conv is ru-dalle's clamped one
    v3 = dataclasses.replace(config, hf_version="v3")
    assert torch.equal(config_mask(v3, "row"), expected["row"]) and torch.equal(config_mask(v3, "column"),
                                                                                 expected["column"])  # fmt: skip
    assert torch.equal(config_mask(v3, "conv"), rudalle_conv_mask(text, side, kernel, "v3"))


def test_the_conv_window_wraps_around_the_edges_on_a_tiny_grid():
    text, side = 2, 4
    v2 = attention_mask("conv", text, side, 3, wrap=True)
    v3 = attention_mask("conv", text, side, 3)

    def at(r: int, c: int) -> int:
        return text + side * r + c

    # the right edge's window takes in the left column of the rows around it, and the bottom row the top one's
    assert v2[at(1, 0), at(0, 3)] and not v3[at(1, 0), at(0, 3)]
    assert v2[at(3, 0), at(0, 0)] and not v3[at(3, 0), at(0, 0)]
    assert v2[at(3, 3), at(0, 0)] and not v3[at(3, 3), at(0, 0)]  # both at once: the diagonal corner
    # inside the grid the two agree; two apart is out of the 3×3 window in either
    assert v2[at(2, 2), at(1, 1)] and v3[at(2, 2), at(1, 1)]
    assert not v2[at(2, 1), at(0, 1)] and not v3[at(2, 1), at(0, 1)]
    assert not v2[at(0, 3), at(1, 0)]  # causal: a later key stays hidden however it wraps
    assert v2[:, :text].sum() == v3[:, :text].sum()  # text keys untouched
    # every image key sees exactly its 3×3 torus window (9 cells) minus the earlier ones
    for key in range(text, text + side * side):
        window = {((key - text) // side + r) % side * side + ((key - text) % side + c) % side
                  for r in (-1, 0, 1) for c in (-1, 0, 1)}  # fmt: skip
        later = {cell for cell in window if text + cell >= key}
        assert int(v2[:, key].sum()) == len(later), key


# ----------------------------------------------------------------------------------------------------------------
# The tiny v2 network


@pytest.fixture(scope="module")
def tiny() -> DalleModel:
    torch.manual_seed(0)
    model = DalleModel(TINY_V2).double().eval()
    with torch.no_grad():  # away from the identity norms and zero biases of a fresh model
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model


def image_ids(count: int, seed: int = 1, batch: int = 2) -> torch.Tensor:
    return torch.randint(0, 32, (batch, count), generator=torch.Generator().manual_seed(seed))


def rudalle_v2_embeddings(model: DalleModel, ids: torch.Tensor) -> torch.Tensor:
    """ru-dalle's v2 ``forward`` up to the embeddings, written out."""
    cfg = model.config
    t, side = cfg.text_seq_length, cfg.image_tokens_per_dim
    text = torch.where(ids[:, :t] == 0, torch.arange(t) + cfg.vocab_size - t, ids[:, :t])
    text = torch.nn.functional.pad(text, (1, 0), value=2)
    embeddings = model.text_embeddings(text) + model.text_pos_embeddings(torch.arange(t + 1))
    image = ids[:, t:]
    if image.shape[1]:
        j = torch.arange(image.shape[1])
        position = model.image_row_embeddings(j // side) + model.image_col_embeddings(j % side)
        embeddings = torch.cat([embeddings, model.image_embeddings(image) + position], 1)
    if embeddings.shape[1] > cfg.total_seq_length:
        embeddings = embeddings[:, :-1]
    return embeddings


def rudalle_v2_logits(model: DalleModel, ids: torch.Tensor) -> torch.Tensor:
    """The whole v2 forward: those embeddings through the layers under ru-dalle's masks (written out above)."""
    cfg = model.config
    t, side = cfg.text_seq_length, cfg.image_tokens_per_dim
    masks = {"row": rudalle_row_mask(t, side), "column": rudalle_col_mask(t, side),
             "conv": rudalle_conv_mask(t, side, cfg.conv_kernel, "v2")}  # fmt: skip
    x = rudalle_v2_embeddings(model, ids)
    n = x.shape[1]
    for i, layer in enumerate(model.transformer.layers):
        x = layer(x, masks[layer_mask_kind(i, cfg.num_layers)][:n, :n].double())
    return model.to_logits(model.transformer.final_layernorm(x))


def test_v2_embeds_token_2_first_and_every_position_one_later(tiny):
    for count in (0, 5, 15, 16):  # 16: the last image id falls off the end
        ids = torch.cat([TEXT[None].repeat(2, 1), image_ids(count)], 1)
        with torch.no_grad():
            ours = tiny.embed(ids)
            theirs = rudalle_v2_embeddings(tiny, ids)
        assert ours.shape == (2, min(8 + 1 + count, 24), 64)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)


def test_v2_forward_is_rudalles(tiny):
    ids = torch.cat([TEXT[None].repeat(2, 1), image_ids(16)], 1)
    with torch.no_grad():
        full = tiny(ids)
        torch.testing.assert_close(full, rudalle_v2_logits(tiny, ids), rtol=0, atol=1e-10)
        assert full.shape == (2, 24, 48 + 32)  # 1 + 8 + 15 positions: the last image id is never read
        changed = ids.clone()
        changed[:, -1] = (changed[:, -1] + 1) % 32
        assert torch.equal(tiny(changed), full)
        # v3 weights, v3 forward: not the same numbers
        v3 = DalleModel(dataclasses.replace(TINY_V2, hf_version="v3")).double().eval()
        v3.load_state_dict(tiny.state_dict())
        assert not torch.allclose(v3(ids[:, :-1]), full[:, 1:])


def test_v2_cached_forward_matches_the_full_forward(tiny):
    ids = torch.cat([TEXT[None].repeat(2, 1), image_ids(15)], 1)
    with torch.no_grad():
        full = tiny(ids)
        cache = tiny.new_cache()
        steps = [tiny(ids[:, :8], cache)]
        assert (cache.length, cache.fed) == (9, 8)
        steps += [tiny(ids[:, i : i + 1], cache) for i in range(8, 23)]
        assert (cache.length, cache.fed) == (24, 23)
        with pytest.raises(ValueError, match="reads no input id past 22"):
            tiny(image_ids(1), cache)
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=0, atol=1e-12)


@pytest.mark.parametrize("options", [{"temperature": 0.0}, SAMPLED], ids=["greedy", "sampled"])
def test_v2_cached_loop_draws_the_tokens_of_the_uncached_loop(tiny, options):
    cached = sample_image_tokens(tiny, TEXT, images=2, seed=7, **options)
    reference = sample_image_tokens_uncached(tiny, TEXT, images=2, seed=7, **options)
    assert cached.shape == (2, 16) and torch.equal(cached, reference)
    if options["temperature"]:
        assert not torch.equal(cached[0], cached[1])


def test_v2_loop_is_rudalles_generate_images_and_resumes(tiny):
    """Greedy, ru-dalle's loop: feed the 8 text ids and the image ids so far, take the last position's logits."""
    out = TEXT[None]
    with torch.no_grad():
        for _ in range(16):
            logits = rudalle_v2_logits(tiny, out)[:, -1, 48:]
            out = torch.cat([out, logits.argmax(-1, keepdim=True)], 1)
    ours = sample_image_tokens(tiny, TEXT, temperature=0.0)
    assert torch.equal(ours, out[:, 8:])
    straight = sample_image_tokens(tiny, TEXT, images=2, seed=21, **SAMPLED)
    gens = [torch.Generator().manual_seed(21 + i) for i in range(2)]
    head = sample_image_tokens(tiny, TEXT, images=2, generator=gens, max_new_tokens=6, **SAMPLED)
    rest = sample_image_tokens(tiny, TEXT, images=2, generator=gens, start_tokens=head, **SAMPLED)
    assert torch.equal(rest, straight)


# ----------------------------------------------------------------------------------------------------------------
# Emojich, Malevich_v2, Surrealist_XL


def test_emojich_has_malevichs_keys_shapes_and_parameter_count():
    """ru-dalle builds every model with the same ``DalleModel``; Emojich's ``model_params`` are Malevich's.

    Parameters, with h = 2048, 24 layers, 16384 + 128 text ids, 8192 image ids, 128 + 1 text positions:
      text_embeddings 16512·h = 33,816,576; image_embeddings 8192·h = 16,777,216; text_pos_embeddings 129·h =
      264,192; image_row/col_embeddings 2·32·h = 131,072;
      per layer: 4 LayerNorms 4·2h = 16,384; query_key_value h·3h + 3h = 12,589,056; dense h·h + h = 4,196,352;
      dense_h_to_4h h·4h + 4h = 16,785,408; dense_4h_to_h 4h·h + h = 16,779,264: 50,366,464, ·24 = 1,208,795,136;
      final_layernorm 2h = 4,096; to_logits LayerNorm 2h = 4,096 + Linear h·24704 + 24704 = 50,618,496.
      Sum: 33,816,576 + 16,777,216 + 264,192 + 131,072 + 1,208,795,136 + 4,096 + 4,096 + 50,618,496
         = 1,310,410,880.
    """
    assert EMOJICH.hf_version == "v2" and MALEVICH_V2.hf_version == "v2"
    assert MODELS["Emojich"] == EMOJICH and MODELS["Malevich_v2"] == MALEVICH_V2
    assert dataclasses.replace(EMOJICH, hf_version="v3") == MALEVICH
    with torch.device("meta"):
        model = DalleModel(EMOJICH)
    state = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    expected = malevich_expected_shapes()
    assert set(state) == set(expected) and state == expected
    count = sum(p.numel() for p in model.parameters())
    assert count == 33_816_576 + 16_777_216 + 264_192 + 131_072 + 24 * 50_366_464 + 4_096 + 4_096 + 50_618_496
    assert count == 1_310_410_880 == parameter_count(EMOJICH)
    assert model.transformer.conv_mask.shape == (1152, 1152)


def test_registered_v2_and_surrealist_configs():
    assert REGISTERED_CONFIGS["rudalle-emojich"] == EMOJICH
    assert REGISTERED_CONFIGS["rudalle-malevich-v2"] == MALEVICH_V2
    assert REGISTERED_CONFIGS["rudalle-surrealist-xl"] == SURREALIST_XL == MALEVICH  # Surrealist: only other weights
    assert image_tokens("rudalle-emojich") == 1024
    # at Malevich's size the two conv masks differ (the 11×11 window wraps around a 32×32 grid)
    assert not torch.equal(config_mask(EMOJICH, "conv"), config_mask(MALEVICH, "conv"))
    assert torch.equal(config_mask(EMOJICH, "row"), config_mask(MALEVICH, "row"))


# ----------------------------------------------------------------------------------------------------------------
# The loader


def saved_state(config: DalleConfig, *, masks: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    """A checkpoint as ru-dalle writes it: fp16 weights and, where its ``state_dict()`` was saved, the bool masks."""
    torch.manual_seed(seed)
    model = DalleModel(config)
    for table in (model.text_embeddings, model.image_embeddings):  # sharper logits than torch's default init
        torch.nn.init.normal_(table.weight, std=1.0)
    state = {key: value.half() for key, value in model.state_dict().items()}
    if masks:
        for kind, key in (("row", "row_mask"), ("column", "col_mask"), ("conv", "conv_mask")):
            state[f"transformer.{key}"] = config_mask(config, kind)
    return state


def test_the_loader_tells_v2_by_the_saved_conv_mask_and_else_by_the_key(tmp_path):
    path = tmp_path / CHECKPOINT_NAME
    heads = {"num_attention_heads": 4, "conv_kernel": 3}
    v2_masked = saved_state(TINY_V2, masks=True)
    assert config_from_state(v2_masked, path, heads) == TINY_V2
    assert config_from_state(v2_masked, path, {**heads, "hf_version": "v2"}) == TINY_V2
    with pytest.raises(DreamcanvasError, match=r"is a ru-dalle v2 network .* not v3"):
        config_from_state(v2_masked, path, {**heads, "hf_version": "v3"})
    v3_masked = saved_state(dataclasses.replace(TINY_V2, hf_version="v3"), masks=True)
    assert config_from_state(v3_masked, path, heads).hf_version == "v3"
    with pytest.raises(DreamcanvasError, match=r"is a ru-dalle v3 network .* not v2"):  # e.g. a v3 file as Emojich
        config_from_state(v3_masked, path, {**heads, "hf_version": "v2"})
    bare = saved_state(TINY_V2, masks=False)  # Malevich_v2's file: no masks, the shapes are v3's
    assert config_from_state(bare, path, heads).hf_version == "v3"
    assert config_from_state(bare, path, {**heads, "hf_version": "v2"}) == TINY_V2
    for bad in ("v1", 2):
        with pytest.raises(DreamcanvasError, match="hf_version"):
            config_from_state(bare, path, {**heads, "hf_version": bad})
    # a window that covers the grid whole builds one mask for both: the mask cannot tell, the key still can
    whole = dataclasses.replace(TINY_V2, conv_kernel=11)
    assert config_from_state(saved_state(whole, masks=True), path, {"num_attention_heads": 4, "conv_kernel": 11,
                                                                     "hf_version": "v2"}) == whole  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# End to end through the CLI


def v2_folder(folder: Path, *, masks: bool, config: dict | None = None) -> Path:
    """test_dalle's tiny models, the network replaced by the same shape run as v2 in ru-dalle's file format."""
    folder.mkdir()
    make_models(folder)
    torch.save(saved_state(dataclasses.replace(CLI_TINY, hf_version="v2"), masks=masks), folder / CHECKPOINT_NAME)
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    return folder


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_a_v2_checkpoint_draws_through_the_cli(tmp_path, capsys):
    masked = v2_folder(tmp_path / "masked", masks=True)
    keyed = v2_folder(tmp_path / "keyed", masks=False,
                      config={"num_attention_heads": 2, "conv_kernel": 3, "hf_version": "v2"})  # fmt: skip
    assert load_parts(settings_of(masked)).config.hf_version == "v2"
    assert load_parts(settings_of(keyed)).config.hf_version == "v2"
    for name, folder in (("a", masked), ("b", keyed)):
        code, out, err = run_cli([*args(folder, "--images", 2), "-o", tmp_path / name], capsys)
        assert code == 0, err
        assert out.split() == [str(tmp_path / name / "final-1.png"), str(tmp_path / name / "final-2.png")]
        stored = json.loads((tmp_path / name / "run.json").read_text())
        assert (stored["step"], stored["completed"], stored["total_tokens"]) == (16, True, 16)
    for picture in ("final-1.png", "final-2.png"):  # the mask and the key tell the same network
        assert np.array_equal(pixels(tmp_path / "a" / picture), pixels(tmp_path / "b" / picture))
    # the same weights read as v3 (no mask, no key) draw other pictures
    plain = v2_folder(tmp_path / "plain", masks=False)
    assert load_parts(settings_of(plain)).config.hf_version == "v3"
    assert run_cli([*args(plain, "--images", 2), "-o", tmp_path / "c"], capsys)[0] == 0
    assert not all(np.array_equal(pixels(tmp_path / "a" / picture), pixels(tmp_path / "c" / picture))
                   for picture in ("final-1.png", "final-2.png"))  # fmt: skip


def test_a_contradicting_or_bad_version_key_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    masked = v2_folder(tmp_path / "m", masks=True, config={"num_attention_heads": 2, "conv_kernel": 3,
                                                            "hf_version": "v3"})  # fmt: skip
    code, _, err = run_cli(args(masked), capsys)
    assert "is a ru-dalle v2 network" in one_error_line(code, err)
    (masked / "config.json").write_text(json.dumps({"num_attention_heads": 2, "conv_kernel": 3, "hf_version": "v4"}))
    code, _, err = run_cli(args(masked), capsys)
    assert "hf_version must be one of v2, v3" in one_error_line(code, err)
    assert not any(tmp_path.glob("outputs"))


@pytest.mark.parametrize("name", ["rudalle-emojich", "rudalle-malevich-v2", "rudalle-surrealist-xl"])
def test_registered_models_offline_are_the_registrys_one_line(name, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["dalle", "ёжик", "--model", name, "--quiet"], capsys)
    line = one_error_line(code, err)
    assert f"weights of {name} are not downloaded" in line and f"dreamcanvas models download {name}" in line
