"""The multilingual CLIP (``xlm-roberta-base-ViT-B-32:laion5b_s13b_b90k``): Russian prompts, offline.

Nothing is downloaded and nothing is faked. The model is a tiny random open_clip ``CustomTextCLIP`` of the
registered architecture: open_clip's own ``text_cfg`` for it (a transformers XLM-RoBERTa text tower, mean
pooling, MLP projection), with a 2-layer, 32-wide XLM-RoBERTa config and a real XLM-R-style tokenizer (a
sentencepiece Unigram model trained here on a few Russian and English lines, with XLM-R's special tokens) in
the ``xlm-roberta-base`` repo's layout (``config.json``, ``tokenizer.json``); only its vision tower is shrunk,
by replacing open_clip's built-in config of the architecture for the test. Both repos are written into an
empty HF cache as huggingface_hub lays out a download, and loaded through the code path ``--clip SPEC`` takes.
"""

from __future__ import annotations

import hashlib
import io
import unicodedata
from pathlib import Path

import huggingface_hub.constants
import open_clip
import pytest
import torch
from helpers import offline_hub, one_error_line, run_cli

from dreamcanvas import weights
from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.perceptor.clip import load_perceptor, save_local_dir

SPEC = "xlm-roberta-base-ViT-B-32:laion5b_s13b_b90k"
ARCH, TAG = SPEC.split(":")
TOWER_REPO = "xlm-roberta-base"
CLIP_REPO = open_clip.get_pretrained_cfg(ARCH, TAG)["hf_hub"].strip("/")
CLIP_FILE = "open_clip_pytorch_model.bin"  # what open_clip's training script saves: a pickled state dict
COMMIT = "0123456789abcdef0123456789abcdef01234567"
PROMPT = "зелёная звезда на красном фоне"
POSITION_IDS = "text.transformer.embeddings.position_ids"

REAL_CFG = open_clip.get_model_config(ARCH)
TINY_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": REAL_CFG["text_cfg"],  # the real one: the tower's size comes from its config.json
}
CORPUS = [
    "зелёная звезда на красном фоне",
    "красная звезда на зелёном фоне",
    "синее море и белый корабль под звёздным небом",
    "старый дом у леса, жёлтые листья и серый дождь",
    "a green star on a red background",
    "a blue sea and a white ship under a starry sky",
    "an old house by the forest, yellow leaves and grey rain",
]


def tiny_tower(folder: Path) -> Path:
    """``xlm-roberta-base``'s files, tiny: an XLM-RoBERTa config.json and an XLM-R-style tokenizer.json."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import XLMRobertaConfig

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    special = ["<s>", "<pad>", "</s>", "<unk>"]  # XLM-R's ids 0-3, <mask> last
    trainer = trainers.UnigramTrainer(vocab_size=300, special_tokens=special, unk_token="<unk>", show_progress=False)
    tokenizer.train_from_iterator(CORPUS * 4, trainer)
    tokenizer.add_special_tokens(["<mask>"])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    tokenizer.save(str(folder / "tokenizer.json"))
    config = XLMRobertaConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=514,
        type_vocab_size=1,
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
        architectures=["XLMRobertaForMaskedLM"],
    )
    config.to_json_file(folder / "config.json")
    return folder


def open_clip_model(tower: Path) -> torch.nn.Module:
    """What open_clip.create_model builds for the tiny config (an HF text tower makes it a CustomTextCLIP)."""
    torch.manual_seed(0)
    text_cfg = {**TINY_CFG["text_cfg"], "hf_model_name": str(tower), "hf_model_pretrained": False}
    return open_clip.model.CustomTextCLIP(**{**TINY_CFG, "text_cfg": text_cfg}).eval()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tower = tiny_tower(tmp_path_factory.mktemp("xlm-roberta-base"))
    model = open_clip_model(tower)
    state = dict(model.state_dict())
    # Checkpoints saved with transformers < 4.31 hold this buffer; open_clip drops it when loading.
    state.setdefault(POSITION_IDS, torch.arange(514).expand((1, -1)).clone())
    buffer = io.BytesIO()
    torch.save(state, buffer)
    tower_files = {name: (tower / name).read_bytes() for name in ("config.json", "tokenizer.json")}
    return {"model": model, "tower": tower_files, "checkpoint": buffer.getvalue()}


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HF cache, offline, with open_clip's built-in config of the architecture made tiny."""
    hub = offline_hub(tmp_path, monkeypatch)
    # transformers finds its cache from a constant fixed at import (here: the user's real cache). Point it at an
    # empty folder, so that the model can only come from the files dreamcanvas resolved in the test's cache.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "not-the-cache"))
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, ARCH, TINY_CFG)
    return hub


def add_to_hf_cache(hub: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    """As huggingface_hub lays out a download: blobs by hash, ``snapshots/<commit>/`` links, ``refs/main``."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        lfs = name.endswith((".bin", ".safetensors"))
        blob = hashlib.sha256(data).hexdigest() if lfs else hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        (repo / "blobs" / blob).write_bytes(data)
        (snapshot / name).symlink_to(Path("..", "..", "blobs", blob))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


def install(hub: Path, tiny: dict, leave_out: tuple[str, ...] = ()) -> Path:
    add_to_hf_cache(hub, CLIP_REPO, {CLIP_FILE: tiny["checkpoint"]})
    tower = {name: data for name, data in tiny["tower"].items() if name not in leave_out}
    return add_to_hf_cache(hub, TOWER_REPO, tower) if tower else hub


def test_the_tiny_model_has_the_registered_architecture():
    assert weights.find_source(SPEC).open_clip == SPEC
    text_cfg = TINY_CFG["text_cfg"]
    assert text_cfg["hf_model_name"] == text_cfg["hf_tokenizer_name"] == TOWER_REPO
    assert text_cfg["hf_pooler_type"] == "mean_pooler" and "hf_proj_type" not in text_cfg  # open_clip's: mlp
    assert REAL_CFG["vision_cfg"]["patch_size"] == 32 and REAL_CFG["embed_dim"] == 512


def test_loads_offline_from_the_hf_cache_with_open_clips_keys_and_the_saved_weights(hub, tiny):
    tower = install(hub, tiny)
    assert weights.is_cached(SPEC)
    resolved = weights.resolve_clip(SPEC)
    assert resolved.model_name == ARCH and resolved.checkpoint.name == CLIP_FILE
    assert resolved.text_cfg["hf_model_name"] == resolved.text_cfg["hf_tokenizer_name"] == str(tower)

    perceptor = load_perceptor(SPEC)
    model, expected = perceptor.model, tiny["model"].state_dict()
    assert isinstance(model, open_clip.model.CustomTextCLIP)
    shapes = {key: value.shape for key, value in model.state_dict().items()}
    assert shapes == {key: value.shape for key, value in expected.items()}
    # open_clip's factory itself, from its (tiny) config of the architecture, with random weights:
    text_cfg = {**TINY_CFG["text_cfg"], "hf_model_name": str(tower), "hf_model_pretrained": False}
    factory_made = open_clip.create_model(ARCH, text_cfg=text_cfg)
    assert shapes == {key: value.shape for key, value in factory_made.state_dict().items()}
    assert all(torch.equal(value, expected[key]) for key, value in model.state_dict().items())
    keys = set(expected)
    assert POSITION_IDS not in keys and not any(key.startswith("text.transformer.pooler.") for key in keys)
    assert {"text.transformer.embeddings.word_embeddings.weight", "text.proj.0.weight", "text.proj.2.weight"} <= keys
    assert {"visual.conv1.weight", "visual.proj", "logit_scale"} <= keys
    text = model.text
    assert type(text.transformer).__name__ == "XLMRobertaModel" and text.transformer.config.num_hidden_layers == 2
    assert isinstance(text.pooler, open_clip.hf_model.MeanPooler)
    assert text.proj[0].weight.shape == ((32 + 16) // 2, 32) and text.proj[2].weight.shape == (16, (32 + 16) // 2)


def test_a_russian_prompt_is_tokenized_into_cyrillic_and_embedded_with_a_picture(hub, tiny):
    install(hub, tiny)
    perceptor = load_perceptor(SPEC)
    hf = perceptor.tokenizer.tokenizer
    assert type(hf).__name__ == "XLMRobertaTokenizer"

    ids = perceptor.tokenizer([PROMPT])[0]
    assert ids.shape == (open_clip.tokenizer.DEFAULT_CONTEXT_LENGTH,)
    used = ids[ids != hf.pad_token_id].tolist()
    assert used[0] == hf.bos_token_id == 0 and used[-1] == hf.eos_token_id == 2 and len(used) > 4
    assert hf.unk_token_id not in used
    assert hf.decode(used, skip_special_tokens=True) == PROMPT
    letters = [ch for piece in hf.convert_ids_to_tokens(used[1:-1]) for ch in piece if ch.isalpha()]
    assert letters and all(unicodedata.name(ch).startswith("CYRILLIC") for ch in letters)

    text = perceptor.encode_text([PROMPT, "a green star on a red background"])
    assert text.shape == (2, 16) and torch.allclose(text.norm(dim=-1), torch.ones(2))
    assert not torch.allclose(text[0], text[1])
    pictures = torch.rand(2, 3, 48, 48, requires_grad=True)  # resized to the model's 32
    image = perceptor.encode_image(pictures)
    assert image.shape == (2, 16) and torch.allclose(image.norm(dim=-1), torch.ones(2))
    (image @ text[0]).sum().backward()
    assert pictures.grad is not None and pictures.grad.abs().sum() > 0


def test_generate_draws_a_russian_prompt_offline(hub, tiny, tmp_path, capsys):
    install(hub, tiny)
    out = tmp_path / "run"
    args = ["generate", "зелёная звезда", "--clip", SPEC, "--size", 32, 32, "-i", 3, "--cutn", 2, "--seed", 1]
    code, _, err = run_cli([*args, "--quiet", "--out", out], capsys)
    assert code == 0, err
    assert (out / "final.png").is_file()


@pytest.mark.parametrize("leave_out", [("config.json", "tokenizer.json"), ("config.json",), ("tokenizer.json",)])
def test_a_missing_text_tower_is_one_offline_error_line(hub, tiny, tmp_path, capsys, leave_out):
    install(hub, tiny, leave_out)
    out = tmp_path / "run"
    code, _, err = run_cli(
        ["generate", "зелёная звезда", "--clip", SPEC, "--size", 32, 32, "--quiet", "--out", out], capsys
    )
    err = one_error_line(code, err)
    assert f"weights of {SPEC} are not downloaded" in err and "HF_HUB_OFFLINE is set" in err
    assert f"dreamcanvas models download {SPEC}" in err and str(hub / "models--xlm-roberta-base") in err
    assert not (out / "final.png").exists()


def test_a_local_dir_copy_reads_its_own_tokenizer_and_the_cached_tower_config(hub, tiny, tmp_path):
    """The ``local-dir:``/``hf-hub:`` layout of the same model (what ``open_clip.push_to_hf_hub`` writes)."""
    install(hub, tiny, leave_out=("tokenizer.json",))  # only the tower's config.json is needed from the cache
    folder = save_local_dir(tiny["model"], TINY_CFG, tmp_path / "multilingual")
    spec = f"local-dir:{folder}"
    with pytest.raises(DreamcanvasError, match="holds no tokenizer for its Hugging Face text tower"):
        weights.resolve_clip(spec)

    tower = tmp_path / "tower"
    tower.mkdir()
    for name, data in tiny["tower"].items():
        (tower / name).write_bytes(data)
    open_clip.tokenizer.HFTokenizer(str(tower)).save_pretrained(folder)  # as open_clip.push_to_hf_hub does
    perceptor = load_perceptor(spec)
    expected = tiny["model"].state_dict()
    assert all(torch.equal(value, expected[key]) for key, value in perceptor.model.state_dict().items())
    ids = perceptor.tokenizer([PROMPT])[0]
    assert perceptor.tokenizer.tokenizer.decode(ids, skip_special_tokens=True) == PROMPT
