"""``dreamcanvas dalle``: ruDALL-E through the CLI, on tiny random models saved in the real file layouts.

The folder holds what ``--model local:DIR`` and ``--vqgan local:DIR`` read: a ``pytorch_model_v3.bin``-style
state dict of a 4-layer :class:`DalleModel` (4x4 image tokens, 16 text positions), ``config.json`` with its head
count, the YouTokenToMe ``bpe.model`` of tests/data/yttm (800 ids, made by youtokentome itself), and a Gumbel
VQGAN of the Sber design (f8: four levels, attention at the lowest) saved as taming's yaml + ckpt. Every part
goes through the real loaders; nothing is faked.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import one_error_line, run_cli, tree
from PIL import Image

from dreamcanvas.dalle.models import CHECKPOINT_NAME, TOKENIZER_NAME, load_parts
from dreamcanvas.dalle.run import draw, resume
from dreamcanvas.dalle.settings import DalleSettings
from dreamcanvas.models.rudalle import DalleConfig, DalleModel
from dreamcanvas.models.vqgan import VQGAN, VQGANConfig, save_vqgan, taming_config
from dreamcanvas.outputs.png import read_metadata

BPE_MODEL = Path(__file__).parent / "data" / "yttm" / "bpe.model"
TINY = DalleConfig(num_layers=4, hidden_size=64, num_attention_heads=2, text_seq_length=16, image_tokens_per_dim=4,
                   vocab_size=800 + 16, image_vocab_size=64, conv_kernel=3)  # fmt: skip
SBER_LIKE_DDCONFIG = {
    "double_z": False, "z_channels": 32, "resolution": 32, "in_channels": 3, "out_ch": 3, "ch": 32,
    "ch_mult": [1, 1, 2, 4], "num_res_blocks": 1, "attn_resolutions": [4], "dropout": 0.0,
}  # fmt: skip
"""Sber's f8 VQGAN shrunk: ch_mult 1,1,2,4 (f8), attention at the lowest level, embed_dim = z_channels."""
PROMPT = "ёжик в тумане"
PICTURES = ("final-1.png", "final-2.png")


def make_models(folder: Path) -> Path:
    """The tiny network, tokenizer and VQGAN in one folder, each in its real file format."""
    torch.manual_seed(0)
    dalle = DalleModel(TINY)
    for table in (dalle.text_embeddings, dalle.image_embeddings):  # sharper logits than torch's default init
        torch.nn.init.normal_(table.weight, std=1.0)
    torch.save(dalle.state_dict(), folder / CHECKPOINT_NAME)
    (folder / "config.json").write_text(json.dumps({"num_attention_heads": 2, "conv_kernel": 3}))
    shutil.copy(BPE_MODEL, folder / TOKENIZER_NAME)
    vqgan = VQGAN(VQGANConfig(dict(SBER_LIKE_DDCONFIG), n_embed=64, embed_dim=32, gumbel=True))
    save_vqgan(vqgan, taming_config(vqgan.config), folder / "vqgan.yaml", folder / "vqgan.ckpt")
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_models(tmp_path_factory.mktemp("tiny-rudalle"))


def args(models: Path, *extra) -> list:
    return ["dalle", PROMPT, "--model", f"local:{models}", "--vqgan", f"local:{models}", "--seed", 5,
            "--precision", "fp32", "--save-every", 1, "--quiet", *extra]  # fmt: skip


def settings_of(models: Path, **changes) -> DalleSettings:
    base = DalleSettings(prompt=PROMPT, model=f"local:{models}", vqgan=f"local:{models}", seed=5, precision="fp32",
                         save_every=1)  # fmt: skip
    return base.replace(**changes)


def files(folder: Path) -> dict[str, bytes]:
    """The pictures and frames of a run folder, by name."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*.png"))}


class StopAfter:
    def __init__(self, tokens: int) -> None:
        self.tokens = tokens

    def __call__(self, done: int, total: int) -> None:
        if done == self.tokens:
            raise KeyboardInterrupt


def test_a_run_writes_pictures_frames_and_its_settings(models, tmp_path, capsys):
    code, out, err = run_cli([*args(models, "--images", 2, "--gif"), "-o", tmp_path / "run"], capsys)
    assert code == 0, err
    run = tmp_path / "run"
    assert out.split() == [str(run / name) for name in PICTURES]
    assert sorted(path.name for path in (run / "frames").iterdir()) == ["000004.png", "000008.png", "000012.png",
                                                                        "000016.png"]  # fmt: skip
    assert (run / "video.gif").is_file()
    stored = json.loads((run / "run.json").read_text())
    assert (stored["method"], stored["step"], stored["completed"], stored["total_tokens"]) == ("dalle", 16, True, 16)
    assert stored["settings"]["prompt"] == PROMPT and stored["settings"]["images"] == 2
    for index, name in enumerate(PICTURES):  # each picture with the settings that make it alone
        settings = read_metadata(run / name, "dalle")["settings"]
        assert (settings["seed"], settings["images"], settings["model"]) == (5 + index, 1, f"local:{models}")
    with Image.open(run / "final-1.png") as picture, Image.open(run / "frames" / "000004.png") as frame:
        assert picture.size == (32, 32) and frame.size == (64, 32)  # 4x4 tokens, f8; frames side by side
        assert frame.getpixel((0, 31)) == (128, 128, 128)  # rows not drawn yet are grey


def test_the_same_seed_gives_the_same_bytes_and_one_image_is_final_png(models, tmp_path, capsys):
    for name in ("a", "b"):
        assert run_cli([*args(models), "-o", tmp_path / name], capsys)[0] == 0
    assert (tmp_path / "a" / "final.png").is_file()
    assert files(tmp_path / "a") == files(tmp_path / "b")
    assert run_cli([*args(models, "--seed", 6), "-o", tmp_path / "c"], capsys)[0] == 0
    assert (tmp_path / "c" / "final.png").read_bytes() != (tmp_path / "a" / "final.png").read_bytes()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_stopped_run_resumes_to_the_bytes_of_a_straight_run(models, tmp_path, capsys, precision):
    settings = settings_of(models, images=2, precision=precision)
    parts = load_parts(settings)
    straight = draw(settings, tmp_path / "straight", parts=parts)
    stopped = draw(settings, tmp_path / "stopped", parts=parts, on_token=StopAfter(6))  # mid-row: off-schedule
    assert (stopped.completed, stopped.step, stopped.pictures) == (False, 6, [])
    assert json.loads((tmp_path / "stopped" / "run.json").read_text())["step"] == 6
    code, out, err = run_cli(["dalle", "--resume", tmp_path / "stopped", "--quiet"], capsys)
    assert code == 0, err
    assert out.split() == [str(tmp_path / "stopped" / name) for name in PICTURES]
    assert files(tmp_path / "stopped") == files(straight.run_dir)
    assert json.loads((tmp_path / "stopped" / "run.json").read_text())["completed"] is True
    with pytest.raises(Exception, match="is finished"):
        resume(tmp_path / "stopped", parts=parts)


def test_a_stop_through_the_cli_is_exit_130_with_the_way_on(models, tmp_path, capsys, monkeypatch):
    from dreamcanvas.dalle import run as dalle_run

    real = dalle_run.sample_image_tokens

    def stopping(*positional, on_token, **options):
        def hook(progress):
            on_token(progress)
            if progress.done == 9:
                raise KeyboardInterrupt

        return real(*positional, on_token=hook, **options)

    monkeypatch.setattr(dalle_run, "sample_image_tokens", stopping)
    code, _, err = run_cli([*args(models), "-o", tmp_path / "run"], capsys)
    assert code == 130 and f"dalle --resume {tmp_path / 'run'}" in err
    assert (tmp_path / "run" / "state.pt").is_file() and not (tmp_path / "run" / "final.png").exists()


@pytest.mark.parametrize(("extra", "message"), [
    (["--images", 0], "--images must be an integer >= 1"),
    (["--images", 9], "--images must be an integer >= 1 and <= 8"),
    (["--top-p", 0], "--top-p must be a finite number > 0"),
    (["--model", "no-such-model"], "unknown ruDALL-E model 'no-such-model'"),
    (["--model", "local:missing"], "--model local:missing: no such folder"),
    (["--vqgan", "local:missing"], "neither a folder nor a .ckpt"),
    (["-o", "existing"], "already exists"),
])  # fmt: skip
def test_bad_input_is_one_line_and_writes_nothing(models, tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "existing").mkdir()
    before = tree(tmp_path)
    code, _, err = run_cli([*args(models), *extra], capsys)
    assert message in one_error_line(code, err)
    assert tree(tmp_path) == before


def test_an_empty_prompt_is_one_line(models, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for prompt in ("", "   "):
        command = args(models)
        command[1] = prompt
        code, _, err = run_cli(command, capsys)
        assert "PROMPT must not be empty" in one_error_line(code, err)
    assert tree(tmp_path) == {}


def test_malevich_offline_is_the_registrys_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["dalle", PROMPT, "--model", "rudalle-malevich", "--quiet"], capsys)
    line = one_error_line(code, err)
    assert "weights of rudalle-malevich are not downloaded" in line and "HF_HUB_OFFLINE is set" in line
    assert "dreamcanvas models download rudalle-malevich" in line
    assert tree(tmp_path) == {}


def test_the_job_method_draws_counts_tokens_and_knows_its_pictures(models, tmp_path):
    from dreamcanvas.jobs.methods import method_named

    method = method_named("dalle")
    settings = settings_of(models, images=2, seed=-1)
    seen: list[tuple[int, int | None]] = []
    assert method.start(settings, tmp_path / "job", lambda done, total, loss: seen.append((done, total)), False)
    assert seen[-1] == (16, 16) and len(seen) == 16 and method.total_steps(settings) == 16
    assert all((tmp_path / "job" / name).is_file() for name in method.finished_files(settings))
    made = DalleSettings.from_dict(json.loads((tmp_path / "job" / "run.json").read_text())["settings"])
    assert method.changes(made, settings) == [] and method.changes(made, settings.replace(top_k=5)) != []


def test_the_studio_form_makes_the_record(models):
    from dreamcanvas.studio.forms import form_fields, settings_from_form

    fields = form_fields(DalleSettings)
    assert {field.panel for field in fields} == {"Prompt", "Model", "Sampling", "Output"}
    values = [PROMPT if field.name == "prompt" else field.default for field in fields]
    assert settings_from_form(DalleSettings, fields, values) == DalleSettings(prompt=PROMPT)


def test_an_edited_or_damaged_stopped_run_is_refused_in_one_line(models, tmp_path, capsys):
    settings = settings_of(models)
    draw(settings, tmp_path / "run", on_token=StopAfter(6))
    record = tmp_path / "run" / "run.json"
    stored = json.loads(record.read_text())
    record.write_text(json.dumps({**stored, "settings": {**stored["settings"], "top_k": 7}}))
    code, _, err = run_cli(["dalle", "--resume", tmp_path / "run"], capsys)
    assert "was edited since the checkpoint was saved (top_k 2048 -> 7)" in one_error_line(code, err)
    record.write_text(json.dumps(stored))
    (tmp_path / "run" / "state.pt").write_bytes(b"not a checkpoint")
    code, _, err = run_cli(["dalle", "--resume", tmp_path / "run"], capsys)
    assert "damaged" in one_error_line(code, err)
    code, _, err = run_cli(["dalle", "--resume", tmp_path / "run", "--top-k", 5], capsys)
    assert "leave out top_k" in one_error_line(code, err)
