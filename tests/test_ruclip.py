"""ruCLIP (``ruclip-vit-base-patch32-384``, ai-forever/ru-clip's layout) as a ``--clip`` model, offline.

Nothing is downloaded and nothing is faked. The model is a tiny random network in ru-clip's own checkpoint format:
its parameter names and shapes are derived below from ru-clip's ``ruclip/model.py`` (``CLIP``, ``VisionTransformer``,
``Transformer``, ``ResidualAttentionBlock``) for a tiny ``config.json`` with the fields its ``from_pretrained``
reads, saved with ``torch.save`` as ``pytorch_model.bin``; its tokenizer is a real YouTokenToMe ``bpe.model``
(tests/data/yttm, trained by youtokentome 1.0.6, with its recorded encodings). The three files go into an empty HF
cache as huggingface_hub lays out a download and are loaded through the code path ``--clip NAME`` takes. What the
loaded model computes is checked against a plain-torch restatement of ru-clip's forward pass.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import unicodedata
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F
from helpers import offline_hub, one_error_line, run_cli

from dreamcanvas import weights
from dreamcanvas.dalle.tokenizer import BPEModel
from dreamcanvas.errors import CorruptWeightsError
from dreamcanvas.perceptor.clip import load_perceptor
from dreamcanvas.perceptor.ruclip import RuclipTokenizer

SPEC = "ruclip-vit-base-patch32-384"
REPO = "ai-forever/ruclip-vit-base-patch32-384"
FILES = ("bpe.model", "config.json", "pytorch_model.bin")  # ru-clip's MODELS[name]["filenames"]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
YTTM = Path(__file__).parent / "data" / "yttm"
PROMPT = "красный круг"
EOS, BOS, PAD = 3, 2, 0

TINY_CONFIG = {  # ru-clip's config.json fields, tiny: 64 px pictures in 2x2 patches of 32, 2 layers per tower
    "embed_dim": 16,
    "image_resolution": 64,
    "vision_layers": 2,
    "vision_width": 64,  # ru-clip's vision_heads = vision_width // 64: one head
    "vision_patch_size": 32,
    "context_length": 20,
    "vocab_size": 800,  # the test bpe.model's
    "transformer_width": 32,
    "transformer_heads": 2,
    "transformer_layers": 2,
    "mean": [0.5, 0.4, 0.3],
    "std": [0.2, 0.25, 0.3],
}


def ruclip_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Every entry of ru-clip's ``CLIP(...).state_dict()`` for ``cfg``, read off ``ruclip/model.py``.

    ``attn_mask`` is a plain attribute there (not a buffer), so it is not in the state dict.
    """
    shapes: dict[str, tuple[int, ...]] = {}

    def blocks(prefix: str, width: int, layers: int) -> None:
        for i in range(layers):
            block = f"{prefix}resblocks.{i}."
            shapes[block + "attn.in_proj_weight"] = (3 * width, width)  # nn.MultiheadAttention(d_model, n_head)
            shapes[block + "attn.in_proj_bias"] = (3 * width,)
            shapes[block + "attn.out_proj.weight"] = (width, width)
            shapes[block + "attn.out_proj.bias"] = (width,)
            for norm in ("ln_1", "ln_2"):
                shapes[block + norm + ".weight"] = shapes[block + norm + ".bias"] = (width,)
            shapes[block + "mlp.c_fc.weight"] = (4 * width, width)
            shapes[block + "mlp.c_fc.bias"] = (4 * width,)
            shapes[block + "mlp.c_proj.weight"] = (width, 4 * width)
            shapes[block + "mlp.c_proj.bias"] = (width,)

    vw, patch, embed = cfg["vision_width"], cfg["vision_patch_size"], cfg["embed_dim"]
    shapes["visual.conv1.weight"] = (vw, 3, patch, patch)  # bias=False
    shapes["visual.class_embedding"] = (vw,)
    shapes["visual.positional_embedding"] = ((cfg["image_resolution"] // patch) ** 2 + 1, vw)
    for norm in ("visual.ln_pre", "visual.ln_post"):
        shapes[norm + ".weight"] = shapes[norm + ".bias"] = (vw,)
    shapes["visual.proj"] = (vw, embed)
    blocks("visual.transformer.", vw, cfg["vision_layers"])
    tw = cfg["transformer_width"]
    blocks("transformer.", tw, cfg["transformer_layers"])
    shapes["token_embedding.weight"] = (cfg["vocab_size"], tw)
    shapes["positional_embedding"] = (cfg["context_length"], tw)
    shapes["ln_final.weight"] = shapes["ln_final.bias"] = (tw,)
    shapes["text_projection"] = (tw, embed)
    shapes["logit_scale"] = ()
    return shapes


def random_state(cfg: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in ruclip_shapes(cfg).items():
        noise = torch.randn(shape, generator=generator)
        if ".ln_" in key or key.startswith("ln_"):  # LayerNorms: weights near 1
            state[key] = 1 + 0.1 * noise if key.endswith(".weight") else 0.1 * noise
        else:
            state[key] = 0.2 * noise if key.endswith("embedding") or "proj" in key else 0.05 * noise
    state["logit_scale"] = torch.tensor(math.log(1 / 0.07))
    return state


# --------------------------------------------------------------------- ru-clip's forward pass, restated
def _block(x: torch.Tensor, state: dict, prefix: str, heads: int, mask: torch.Tensor | None) -> torch.Tensor:
    n, length, width = x.shape
    h = F.layer_norm(x, (width,), state[prefix + "ln_1.weight"], state[prefix + "ln_1.bias"])
    q, k, v = F.linear(h, state[prefix + "attn.in_proj_weight"], state[prefix + "attn.in_proj_bias"]).chunk(3, -1)
    q, k, v = (t.reshape(n, length, heads, width // heads).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(width // heads)
    if mask is not None:
        scores = scores + mask
    attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, length, width)
    x = x + F.linear(attended, state[prefix + "attn.out_proj.weight"], state[prefix + "attn.out_proj.bias"])
    h = F.layer_norm(x, (width,), state[prefix + "ln_2.weight"], state[prefix + "ln_2.bias"])
    h = F.linear(h, state[prefix + "mlp.c_fc.weight"], state[prefix + "mlp.c_fc.bias"])
    h = h * torch.sigmoid(1.702 * h)  # QuickGELU
    return x + F.linear(h, state[prefix + "mlp.c_proj.weight"], state[prefix + "mlp.c_proj.bias"])


def ruclip_encode_text(state: dict, cfg: dict, ids: torch.Tensor) -> torch.Tensor:
    width, length = cfg["transformer_width"], cfg["context_length"]
    x = state["token_embedding.weight"][ids] + state["positional_embedding"]
    mask = torch.full((length, length), float("-inf")).triu(1)
    for i in range(cfg["transformer_layers"]):
        x = _block(x, state, f"transformer.resblocks.{i}.", cfg["transformer_heads"], mask)
    x = F.layer_norm(x, (width,), state["ln_final.weight"], state["ln_final.bias"])
    return x[torch.arange(x.shape[0]), torch.where(ids == EOS)[1]] @ state["text_projection"]


def ruclip_encode_image(state: dict, cfg: dict, pixels: torch.Tensor) -> torch.Tensor:
    width = cfg["vision_width"]
    x = F.conv2d(pixels, state["visual.conv1.weight"], stride=cfg["vision_patch_size"]).flatten(2).transpose(1, 2)
    x = torch.cat([state["visual.class_embedding"].expand(x.shape[0], 1, width), x], dim=1)
    x = x + state["visual.positional_embedding"]
    x = F.layer_norm(x, (width,), state["visual.ln_pre.weight"], state["visual.ln_pre.bias"])
    for i in range(cfg["vision_layers"]):
        x = _block(x, state, f"visual.transformer.resblocks.{i}.", width // 64, None)
    x = F.layer_norm(x[:, 0], (width,), state["visual.ln_post.weight"], state["visual.ln_post.bias"])
    return x @ state["visual.proj"]


def ruclip_layout(ids: list[int], length: int) -> list[int]:
    """``RuCLIPProcessor.encode_text`` after the BPE: cut to length - 2, <s> and </s> around, zeros to length."""
    tokens = [BOS, *ids[: length - 2], EOS]
    return tokens + [PAD] * (length - len(tokens))


# --------------------------------------------------------------------- the HF cache
@pytest.fixture(scope="module")
def tiny() -> dict:
    state = random_state(TINY_CONFIG)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return {
        "state": state,
        "files": {
            "bpe.model": (YTTM / "bpe.model").read_bytes(),
            "config.json": json.dumps(TINY_CONFIG, indent=2).encode(),
            "pytorch_model.bin": buffer.getvalue(),
        },
    }


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return offline_hub(tmp_path, monkeypatch)


def install(hub: Path, files: dict[str, bytes], leave_out: tuple[str, ...] = ()) -> Path:
    """As huggingface_hub lays out a download: blobs by hash, ``snapshots/<commit>/`` links, ``refs/main``."""
    repo = hub / ("models--" + REPO.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if name in leave_out:
            continue
        lfs = name.endswith(".bin")
        blob = hashlib.sha256(data).hexdigest() if lfs else hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        (repo / "blobs" / blob).write_bytes(data)
        (snapshot / name).symlink_to(Path("..", "..", "blobs", blob))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


# --------------------------------------------------------------------- tests
def test_registered_as_the_hub_repos_three_files():
    source = weights.find_source(SPEC)
    assert source.kind == "ruclip" and source.open_clip is None
    assert sorted(f.filename for f in source.files) == sorted(FILES)
    assert {f.repo_id for f in source.files} == {REPO}


def test_loads_offline_with_ru_clips_keys_and_shapes_strictly(hub, tiny):
    snapshot = install(hub, tiny["files"])
    assert weights.cache_state(SPEC) == (
        "yes",
        [snapshot / n for n in ("pytorch_model.bin", "config.json", "bpe.model")],
    )
    perceptor = load_perceptor(SPEC)
    model = perceptor.model
    assert isinstance(model, open_clip.model.CLIP)
    expected = ruclip_shapes(TINY_CONFIG)
    assert {key: tuple(value.shape) for key, value in model.state_dict().items()} == expected
    assert all(torch.equal(value, tiny["state"][key]) for key, value in model.state_dict().items())
    assert model.text_pool_type == "eos" and model.text_eos_id == EOS
    assert (
        model.visual.transformer.resblocks[0].attn.num_heads == 1 and model.transformer.resblocks[0].attn.num_heads == 2
    )
    assert isinstance(model.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
    assert isinstance(model.visual.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
    assert perceptor.image_size == 64 and perceptor.interpolation == "bilinear"
    assert torch.allclose(perceptor.mean.flatten(), torch.tensor(TINY_CONFIG["mean"]))
    assert torch.allclose(perceptor.std.flatten(), torch.tensor(TINY_CONFIG["std"]))
    assert perceptor.tokenizer.context_length == 20


@pytest.mark.parametrize("change", ["missing", "unexpected", "shape"])
def test_the_checkpoint_must_fit_its_config_exactly(hub, tiny, change):
    state = dict(tiny["state"])
    if change == "missing":
        del state["logit_scale"]
    elif change == "unexpected":
        state["visual.attn_mask"] = torch.zeros(3)
    else:
        state["text_projection"] = torch.zeros(32, 8)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    install(hub, {**tiny["files"], "pytorch_model.bin": buffer.getvalue()})
    with pytest.raises(CorruptWeightsError, match=r"the checkpoint does not fit its config\.json"):
        load_perceptor(SPEC)


def test_computes_what_ru_clips_model_computes(hub, tiny):
    install(hub, tiny["files"])
    perceptor = load_perceptor(SPEC)
    state = tiny["state"]
    ids = perceptor.tokenizer([PROMPT, "синий квадрат на белом фоне", "a fox in the snow"])
    with torch.no_grad():
        assert torch.allclose(perceptor.model.encode_text(ids), ruclip_encode_text(state, TINY_CONFIG, ids), atol=1e-5)
    pictures = torch.rand(2, 3, 64, 64)
    mean, std = torch.tensor(TINY_CONFIG["mean"]).view(1, 3, 1, 1), torch.tensor(TINY_CONFIG["std"]).view(1, 3, 1, 1)
    reference = F.normalize(ruclip_encode_image(state, TINY_CONFIG, (pictures - mean) / std), dim=-1)
    assert torch.allclose(perceptor.encode_image(pictures), reference, atol=1e-5)
    larger = torch.rand(1, 3, 96, 96)  # resized as the processor resizes: bilinear (antialiased, as PIL does)
    resized = F.interpolate(larger, size=(64, 64), mode="bilinear", antialias=True)
    reference = F.normalize(ruclip_encode_image(state, TINY_CONFIG, (resized - mean) / std), dim=-1)
    assert torch.allclose(perceptor.encode_image(larger), reference, atol=1e-5)
    text = perceptor.encode_text([PROMPT])
    assert torch.allclose(text, F.normalize(ruclip_encode_text(state, TINY_CONFIG, ids[:1]), dim=-1), atol=1e-5)


def test_the_text_is_pooled_at_the_end_token(hub, tiny):
    install(hub, tiny["files"])
    perceptor = load_perceptor(SPEC)
    ids = perceptor.tokenizer([PROMPT])
    eos = int((ids[0] == EOS).nonzero())
    assert int(ids[0].argmax()) != eos  # OpenAI's argmax pooling would take another position
    after, before = ids.clone(), ids.clone()
    after[0, eos + 1] = 500
    before[0, eos - 1] = 500 if int(ids[0, eos - 1]) != 500 else 501
    with torch.no_grad():
        embed = perceptor.model.encode_text
        assert torch.allclose(embed(after), embed(ids), atol=1e-6)
        assert not torch.allclose(embed(before), embed(ids), atol=1e-3)


def test_tokens_are_ru_clips_layout_of_youtokentomes_ids(hub, tiny):
    install(hub, tiny["files"])
    tokenizer = load_perceptor(SPEC).tokenizer
    assert isinstance(tokenizer, RuclipTokenizer)
    recorded = json.loads((YTTM / "expected.json").read_text(encoding="utf-8"))["cases"]
    by_text = {case["text"]: case["ids"] for case in recorded}
    checked = [case["text"] for case in recorded if case["text"].lower() in by_text]
    assert len(checked) > 20 and any(text != text.lower() for text in checked)
    for text in checked:  # lower-cased first, then youtokentome's ids of the lower-case text
        assert tokenizer.encode(text) == ruclip_layout(by_text[text.lower()], 20), text
    assert tokenizer(checked[:3]).tolist() == [tokenizer.encode(t) for t in checked[:3]]

    longest = max(recorded, key=lambda case: len(case["ids"]) if case["text"] == case["text"].lower() else 0)
    assert len(longest["ids"]) > 18
    cut = tokenizer.encode(longest["text"])
    assert len(cut) == 20 and cut[0] == BOS and cut[-1] == EOS and cut[1:-1] == longest["ids"][:18]


def test_a_russian_prompt_becomes_cyrillic_tokens(hub, tiny):
    install(hub, tiny["files"])
    tokenizer = load_perceptor(SPEC).tokenizer
    ids = tokenizer(["Красный Круг"])[0]
    assert ids.tolist() == tokenizer.encode(PROMPT)
    used = [i for i in ids.tolist() if i not in (PAD, BOS, EOS)]
    assert len(used) > 1 and 1 not in used  # no unknown token
    letters = [ch for i in used for ch in tokenizer.bpe.id_to_subword(i) if ch.isalpha()]
    assert letters and all(unicodedata.name(ch).startswith("CYRILLIC") for ch in letters)
    assert tokenizer.decode(ids) == PROMPT


def test_without_mean_and_std_the_processors_defaults_are_used(hub, tiny):
    config = {key: value for key, value in TINY_CONFIG.items() if key not in ("mean", "std")}
    install(hub, {**tiny["files"], "config.json": json.dumps(config).encode()})
    perceptor = load_perceptor(SPEC)
    assert torch.allclose(perceptor.mean.flatten(), torch.tensor(open_clip.OPENAI_DATASET_MEAN))
    assert torch.allclose(perceptor.std.flatten(), torch.tensor(open_clip.OPENAI_DATASET_STD))


def test_a_bpe_model_with_other_special_ids_is_refused():
    bpe = BPEModel.load(YTTM / "bpe.model")
    lines = (YTTM / "bpe.model").read_text().splitlines()
    swapped = BPEModel.parse("\n".join([*lines[:-1], "1 0 3 2"]) + "\n")
    assert RuclipTokenizer(bpe, 20).encode("") == [BOS, EOS] + [PAD] * 18
    with pytest.raises(CorruptWeightsError, match="ruCLIP needs pad=0 unk=1 bos=2 eos=3"):
        RuclipTokenizer(swapped, 20)


def test_generate_draws_a_russian_prompt_offline(hub, tiny, tmp_path, capsys):
    install(hub, tiny["files"])
    out = tmp_path / "run"
    args = ["generate", PROMPT, "--clip", SPEC, "--size", 32, 32, "-i", 3, "--cutn", 2, "--seed", 1]
    code, _, err = run_cli([*args, "--quiet", "--out", out], capsys)
    assert code == 0, err
    assert (out / "final.png").is_file()


@pytest.mark.parametrize("missing", FILES)
def test_a_missing_file_is_one_offline_error_line(hub, tiny, tmp_path, capsys, missing):
    install(hub, tiny["files"], leave_out=(missing,))
    assert weights.cache_state(SPEC) == ("no", [])
    out = tmp_path / "run"
    code, _, err = run_cli(["generate", PROMPT, "--clip", SPEC, "--size", 32, 32, "--quiet", "--out", out], capsys)
    err = one_error_line(code, err)
    assert f"weights of {SPEC} are not downloaded" in err and "HF_HUB_OFFLINE is set" in err
    assert f"dreamcanvas models download {SPEC}" in err and str(hub / f"models--{REPO.replace('/', '--')}") in err
    assert not (out / "final.png").exists()
