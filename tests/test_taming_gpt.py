"""taming-transformers' second stage in ``dreamcanvas dalle``: the GPT's names and size, its cache, the sliding
window, and a run end to end on a tiny random Net2NetTransformer saved as taming saves one (a Lightning ``.ckpt``
whose ``state_dict`` holds ``transformer.*`` and ``first_stage_model.*``, beside its project yaml)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from helpers import one_error_line, run_cli, tree
from PIL import Image

from dreamcanvas.dalle.run import draw, resume
from dreamcanvas.dalle.sampling import pick
from dreamcanvas.dalle.settings import DalleSettings
from dreamcanvas.dalle.taming import TamingParts, load_taming, sample_codes
from dreamcanvas.models.taming_gpt import CIN, TamingGPT, TamingGPTConfig, parameter_count
from dreamcanvas.models.vqgan import VQGAN, VQGANConfig, taming_config
from dreamcanvas.outputs.png import read_metadata

TINY = TamingGPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32)
"""One class token and 4x4 codes (block_size 1 + 16 - 1), 64 codes as the VQGAN below."""
CLASSES = 10
DDCONFIG = {
    "double_z": False, "z_channels": 32, "resolution": 32, "in_channels": 3, "out_ch": 3, "ch": 32,
    "ch_mult": [1, 1, 2, 4], "num_res_blocks": 1, "attn_resolutions": [4], "dropout": 0.0,
}  # fmt: skip
"""An f8 VQGAN: 4x4 codes are 32x32 pixels."""


def project_yaml(gpt: TamingGPTConfig, vqgan: VQGAN, cond: object) -> dict:
    """What taming's ``main.py`` writes as ``configs/*-project.yaml`` for a Net2NetTransformer."""
    first = taming_config(vqgan.config)["model"]
    return {"model": {"base_learning_rate": 4.5e-06, "target": "taming.models.cond_transformer.Net2NetTransformer",
                      "params": {"first_stage_key": "image", "cond_stage_key": "class_label",
                                 "transformer_config": {"target": "taming.modules.transformer.mingpt.GPT",
                                                        "params": {"vocab_size": gpt.vocab_size,
                                                                   "block_size": gpt.block_size,
                                                                   "n_layer": gpt.n_layer, "n_head": gpt.n_head,
                                                                   "n_embd": gpt.n_embd}},
                                 "first_stage_config": {"target": first["target"], "params": first["params"]},
                                 "cond_stage_config": cond}}}  # fmt: skip


def make_model(folder: Path, cond: object = None) -> Path:
    """taming's log layout: ``checkpoints/last.ckpt`` and ``configs/<name>-project.yaml``."""
    torch.manual_seed(0)
    gpt = TamingGPT(TINY)
    torch.nn.init.normal_(gpt.tok_emb.weight, std=1.0)  # sharper logits than torch's default init
    torch.nn.init.normal_(gpt.head.weight, std=0.5)
    vqgan = VQGAN(VQGANConfig(dict(DDCONFIG), n_embed=64, embed_dim=32))
    state = {f"transformer.{key}": value for key, value in gpt.state_dict().items()}
    state.update({f"first_stage_model.{key}": value for key, value in vqgan.state_dict().items()})
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "configs").mkdir()
    torch.save({"epoch": 3, "global_step": 1000, "state_dict": state}, folder / "checkpoints" / "last.ckpt")
    cond = cond or {"target": "taming.modules.util.Labelator", "params": {"n_classes": CLASSES}}
    text = yaml.safe_dump(project_yaml(TINY, vqgan, cond), sort_keys=False)
    (folder / "configs" / "tiny-project.yaml").write_text(text)
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model(tmp_path_factory.mktemp("tiny-taming"))


@pytest.fixture(scope="module")
def parts(model_dir: Path) -> TamingParts:
    return load_taming(settings_of(model_dir))


def settings_of(folder: Path, **changes) -> DalleSettings:
    base = DalleSettings(model=f"local:{folder}", class_label="3", seed=5, precision="fp32", save_every=1)
    return base.replace(**changes)


def args(folder: Path, *extra) -> list:
    return ["dalle", "--model", f"local:{folder}", "--class", 3, "--seed", 5, "--precision", "fp32",
            "--save-every", 1, "--quiet", *extra]  # fmt: skip


def files(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*.png"))}


def generators(count: int, seed: int = 11) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed + index) for index in range(count)]


# ------------------------------------------------------------------------------------------------- the network
def test_the_cin_gpt_has_the_checkpoints_names_shapes_and_size():
    with torch.device("meta"):
        model = TamingGPT(CIN)
    state = model.state_dict()
    # minGPT's registration order: pos_emb (a parameter of GPT itself), tok_emb, blocks (ln1, ln2, attn with its
    # mask buffer before its key/query/value/proj children, mlp.0 / mlp.2; GELU and Dropout hold nothing), ln_f, head
    per_block = ["ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias", "attn.mask",
                 *[f"attn.{name}.{kind}" for name in ("key", "query", "value", "proj") for kind in ("weight", "bias")],
                 "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"]  # fmt: skip
    expected = ["pos_emb", "tok_emb.weight", *[f"blocks.{n}.{key}" for n in range(48) for key in per_block],
                "ln_f.weight", "ln_f.bias", "head.weight"]  # fmt: skip
    assert list(state) == expected
    assert state["pos_emb"].shape == (1, 256, 1536) and state["tok_emb.weight"].shape == (16384, 1536)
    assert state["blocks.0.attn.mask"].shape == (1, 1, 256, 256) and state["head.weight"].shape == (16384, 1536)
    assert state["blocks.47.mlp.0.weight"].shape == (6144, 1536)
    assert state["blocks.47.mlp.2.weight"].shape == (1536, 6144)
    # C = 1536, V = 16384, T = 256:
    #   tok_emb V*C = 25,165,824; pos_emb T*C = 393,216; head V*C (no bias) = 25,165,824; ln_f 2C = 3,072
    #   a block: ln1 + ln2 4C = 6,144; key/query/value/proj 4*(C*C + C) = 9,443,328;
    #            mlp.0 C*4C + 4C = 9,443,328; mlp.2 4C*C + C = 9,438,720  -> 28,331,520, times 48 = 1,359,912,960
    #   total 25,165,824 + 393,216 + 1,359,912,960 + 3,072 + 25,165,824 = 1,410,640,896 ("1.4B" in taming's README)
    assert parameter_count(CIN) == 1_410_640_896


def test_the_cache_gives_the_logits_of_the_whole_sequence():
    torch.manual_seed(1)
    model = TamingGPT(TINY).double().eval()
    tokens = torch.randint(0, TINY.vocab_size, (2, TINY.block_size))
    whole = model(tokens)
    cache = model.new_cache(2)
    pieces = [model(tokens[:, :5], cache), *[model(tokens[:, n : n + 1], cache) for n in range(5, TINY.block_size)]]
    torch.testing.assert_close(torch.cat(pieces, dim=1), whole, rtol=0, atol=1e-12)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("side", [4, 8])
def test_the_cached_loop_draws_the_tokens_of_the_uncached_one(parts, temperature, side):
    model = TamingGPT(TINY).double().eval()
    model.load_state_dict(parts.model.state_dict())
    condition = torch.tensor([[3], [7]])
    drawn = [sample_codes(model, condition, side, side, temperature=temperature, top_k=0, top_p=1.0,
                          generators=generators(2), cached=cached) for cached in (True, False)]  # fmt: skip
    assert drawn[0].shape == (2, side * side) and torch.equal(drawn[0], drawn[1])


def original_window_rule(model: TamingGPT, condition: torch.Tensor, size: int, temperature: float) -> torch.Tensor:
    """taming's ``sample_conditional.py`` loop, restated: for every (i, j) the 4x4 window placed by its
    local_i / local_j rule, the whole window through the GPT without a cache, the logits at (local_i, local_j)."""
    window, images = 4, condition.shape[0]
    idx = torch.zeros(images, size, size, dtype=torch.long)
    gens = generators(images)

    def local(index: int) -> int:
        if index <= window // 2:
            return index
        if size - index < window // 2:
            return window - (size - index)
        return window // 2

    for i in range(size):
        for j in range(size):
            local_i, local_j = local(i), local(j)
            top, left = i - local_i, j - local_j
            patch = idx[:, top : top + window, left : left + window].reshape(images, -1)
            patch = torch.cat((condition, patch), dim=1)
            logits = model(patch[:, :-1])[:, -window * window :].reshape(images, window, window, -1)
            idx[:, i, j] = pick(logits[:, local_i, local_j], gens, temperature, 0, 1.0)
    return idx.reshape(images, -1)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_grid_twice_the_trained_size_is_drawn_by_the_sliding_window(parts, temperature):
    model = TamingGPT(TINY).double().eval()
    model.load_state_dict(parts.model.state_dict())
    condition = torch.tensor([[3], [7]])
    drawn = sample_codes(model, condition, 8, 8, temperature=temperature, top_k=0, top_p=1.0,
                         generators=generators(2))  # fmt: skip
    assert torch.equal(drawn, original_window_rule(model, condition, 8, temperature))
    assert len(drawn.unique()) > 8  # a real picture of codes, not one token repeated


# ------------------------------------------------------------------------------------------------- a run
def test_a_run_writes_the_picture_frames_and_settings(model_dir, tmp_path, capsys):
    code, out, err = run_cli([*args(model_dir), "-o", tmp_path / "run"], capsys)
    assert code == 0, err
    run = tmp_path / "run"
    assert out.split() == [str(run / "final.png")]
    assert sorted(path.name for path in (run / "frames").iterdir()) == ["000004.png", "000008.png", "000012.png",
                                                                        "000016.png"]  # fmt: skip
    stored = json.loads((run / "run.json").read_text())
    assert (stored["method"], stored["step"], stored["completed"], stored["total_tokens"]) == ("dalle", 16, True, 16)
    assert stored["files"]["checkpoint"] == str(model_dir / "checkpoints" / "last.ckpt")
    settings = read_metadata(run / "final.png", "dalle")["settings"]
    assert (settings["class_label"], settings["prompt"], settings["top_k"], settings["top_p"]) == ("3", "", 100, 1.0)
    with Image.open(run / "final.png") as picture:
        assert picture.size == (32, 32)


def test_a_larger_size_draws_through_the_window_and_resumes_to_a_straight_run(model_dir, parts, tmp_path):
    settings = settings_of(model_dir, size=64, images=2, save_every=2)
    wide = load_taming(settings)
    straight = draw(settings, tmp_path / "straight", parts=wide)
    with Image.open(straight.pictures[0]) as picture:
        assert picture.size == (64, 64)
    assert straight.step == 64 and len(list((tmp_path / "straight" / "frames").iterdir())) == 4

    def stop_after_21(done: int, total: int) -> None:
        if done == 21:
            raise KeyboardInterrupt

    stopped = draw(settings, tmp_path / "stopped", parts=wide, on_token=stop_after_21)
    assert (stopped.completed, stopped.step) == (False, 21)
    resumed = resume(tmp_path / "stopped")  # loads the model again from the stored settings
    assert resumed.completed and files(tmp_path / "stopped") == files(tmp_path / "straight")


def test_an_unconditional_model_draws_from_its_sos_token(tmp_path, capsys):
    folder = make_model(tmp_path / "uncond", cond="__is_unconditional__")
    code, _, err = run_cli(["dalle", "--model", f"local:{folder}", "--seed", 1, "--quiet", "-o", tmp_path / "r"],
                           capsys)  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "r" / "final.png").is_file()
    code, _, err = run_cli(["dalle", "--model", f"local:{folder}", "--class", 3, "--quiet"], capsys)
    assert "is unconditional: leave out --class" in one_error_line(code, err)


@pytest.mark.parametrize(("extra", "message"), [
    (["a cat"], "it draws a class, not text; leave out PROMPT"),
    (["--class", 12], "--class 12: the model knows classes 0-9"),
    (["--class", "goldfish"], "this model's 10 classes have no names; give a number"),
    (["--size", 44], "--size 44: local:"),
    (["--size", 16], "draws multiples of 8 px from 32 up"),
    (["--vqgan", "sber-vqgan"], "leave out --vqgan"),
    (["--model", "local:missing.ckpt"], "--model local:missing.ckpt"),
])  # fmt: skip
def test_bad_input_is_one_line_and_writes_nothing(model_dir, tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    code, _, err = run_cli([*args(model_dir), *extra], capsys)
    assert message in one_error_line(code, err)
    assert tree(tmp_path) == before


def test_a_class_model_needs_a_class_and_a_text_model_refuses_one(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["dalle", "--model", f"local:{model_dir}", "--quiet"], capsys)
    assert "draws an ImageNet class: give --class NAME or a number 0-9" in one_error_line(code, err)
    code, _, err = run_cli(["dalle", "ёжик", "--model", "rudalle-malevich", "--class", "lighthouse"], capsys)
    assert "--class is for taming's class-conditional models" in one_error_line(code, err)
    code, _, err = run_cli(["dalle", "--model", "rudalle-malevich", "--seed", 1], capsys)
    assert "PROMPT must not be empty" in one_error_line(code, err)
    assert tree(tmp_path) == {}


def test_imagenet_class_names_resolve_as_bigsleeps_do():
    from dreamcanvas.dalle.taming import resolve_class

    assert resolve_class("lighthouse", 1000) == 437 and resolve_class("goldfish", 1000) == 1
    assert resolve_class("980", 1000) == 980


def test_taming_cin_offline_is_the_registrys_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DREAMCANVAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    code, _, err = run_cli(["dalle", "--model", "taming-cin", "--class", "lighthouse", "--quiet", "-o", "run"],
                           capsys)  # fmt: skip
    line = one_error_line(code, err)
    assert "taming-cin" in line and "HF_HUB_OFFLINE is set" in line, line
    assert tree(tmp_path / "work") == {}
