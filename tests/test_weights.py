"""Weights: names -> files in the real HF cache layout, verification, and the errors a user sees.

Nothing is downloaded: every test runs with ``HF_HUB_OFFLINE=1`` and a fresh HF_HOME. The models are tiny
random open_clip networks of the real architecture, written into the cache exactly as huggingface_hub
lays it out (``blobs/<hash>``, ``snapshots/<commit>/<file>`` symlinks, ``refs/main``) and loaded through
the real loader.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import sys
from pathlib import Path

import open_clip
import pytest
import torch
from helpers import offline_hub
from safetensors.torch import load_file

from dreamcanvas import weights
from dreamcanvas.cli import main
from dreamcanvas.errors import CorruptWeightsError, DreamcanvasError, ModelUnavailableError
from dreamcanvas.perceptor.clip import CONFIG_NAME, WEIGHTS_NAME, load_perceptor
from dreamcanvas.settings import DEFAULT_CLIP

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TINY_REPO = "test-org/tiny-clip"
TINY_SPEC = f"hf-hub:{TINY_REPO}"


@pytest.fixture(autouse=True)
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HF cache and dreamcanvas cache, and offline mode, for every test."""
    return offline_hub(tmp_path, monkeypatch)


def git_blob_sha1(data: bytes) -> str:
    """How the Hub names blobs of small (non-LFS) files: git's object hash."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def add_to_hf_cache(hub: Path, repo_id: str, files: dict[str, bytes], commit: str = COMMIT) -> Path:
    """Lay files out as huggingface_hub does; weights (LFS files) get blobs named by their sha256."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for filename, data in files.items():
        is_lfs = filename.endswith((".safetensors", ".bin"))
        blob_name = hashlib.sha256(data).hexdigest() if is_lfs else git_blob_sha1(data)
        (repo / "blobs" / blob_name).write_bytes(data)
        (snapshot / filename).symlink_to(Path("..", "..", "blobs", blob_name))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def tiny_files(tiny_clip_dir: Path) -> dict[str, bytes]:
    return {name: (tiny_clip_dir / name).read_bytes() for name in (CONFIG_NAME, WEIGHTS_NAME)}


def assert_same_weights(model: torch.nn.Module, saved: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert sorted(state) == sorted(saved)
    assert all(torch.equal(state[key], saved[key]) for key in saved)


def assert_one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------------------------------------
# hf-hub: models


def test_hf_hub_model_loads_from_the_cache_with_its_saved_weights(hub, tiny_clip_dir):
    snapshot = add_to_hf_cache(hub, TINY_REPO, tiny_files(tiny_clip_dir))

    resolved = weights.resolve_clip(TINY_SPEC)
    assert resolved.model_name == f"local-dir:{snapshot.resolve()}"
    assert resolved.checkpoint is None
    assert weights.is_cached(TINY_SPEC)

    perceptor = load_perceptor(TINY_SPEC)
    assert_same_weights(perceptor.model, load_file(tiny_clip_dir / WEIGHTS_NAME))
    assert perceptor.encode_text(["a lighthouse in a storm"]).shape == (1, 32)


def test_a_cut_off_blob_is_refused_even_after_a_good_load(hub, tiny_clip_dir):
    snapshot = add_to_hf_cache(hub, TINY_REPO, tiny_files(tiny_clip_dir))
    weights.resolve_clip(TINY_SPEC)  # verified (and its hash remembered) while whole
    blob = (snapshot / WEIGHTS_NAME).resolve()
    with blob.open("r+b") as file:
        file.truncate(blob.stat().st_size // 2)

    with pytest.raises(CorruptWeightsError) as error:
        weights.resolve_clip(TINY_SPEC)
    message = assert_one_line(error)
    assert f"{blob} is corrupt (truncated:" in message
    assert f"dreamcanvas models download {TINY_SPEC}" in message
    assert weights.cache_state(TINY_SPEC) == ("corrupt", [])
    with pytest.raises(CorruptWeightsError):
        load_perceptor(TINY_SPEC)


def test_bit_flipped_blob_fails_its_sha256_name(hub, tiny_clip_dir):
    snapshot = add_to_hf_cache(hub, TINY_REPO, tiny_files(tiny_clip_dir))
    blob = (snapshot / WEIGHTS_NAME).resolve()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0x01  # same length, so only the hash can tell
    blob.write_bytes(bytes(data))

    with pytest.raises(CorruptWeightsError) as error:
        weights.resolve_clip(TINY_SPEC)
    assert f"{blob} is corrupt (sha256 " in assert_one_line(error)
    assert not weights.is_cached(TINY_SPEC)


def test_a_damaged_config_blob_fails_its_git_hash(hub, tiny_clip_dir):
    snapshot = add_to_hf_cache(hub, TINY_REPO, tiny_files(tiny_clip_dir))
    blob = (snapshot / CONFIG_NAME).resolve()
    blob.write_text(blob.read_text().replace("64", "65"))  # still valid JSON, but not the published file
    with pytest.raises(CorruptWeightsError) as error:
        weights.resolve_clip(TINY_SPEC)
    assert f"{blob} is corrupt (git sha1 " in assert_one_line(error)


def test_an_incomplete_download_alone_is_not_cached(hub, tiny_clip_dir):
    files = tiny_files(tiny_clip_dir)
    snapshot = add_to_hf_cache(hub, TINY_REPO, {CONFIG_NAME: files[CONFIG_NAME]})
    partial = files[WEIGHTS_NAME][: len(files[WEIGHTS_NAME]) // 3]
    blob_name = hashlib.sha256(files[WEIGHTS_NAME]).hexdigest()
    (snapshot.parent.parent / "blobs" / f"{blob_name}.incomplete").write_bytes(partial)

    assert not weights.is_cached(TINY_SPEC)
    with pytest.raises(ModelUnavailableError) as error:
        weights.resolve_clip(TINY_SPEC)
    message = assert_one_line(error)
    assert f"dreamcanvas models download {TINY_SPEC}" in message
    assert str(hub / "models--test-org--tiny-clip") in message


# --------------------------------------------------------------------------------------------------------
# ARCH:TAG models


def test_default_model_with_an_empty_cache_offline_says_how_to_get_it(hub):
    with pytest.raises(ModelUnavailableError) as error:
        weights.resolve_clip(DEFAULT_CLIP)
    message = assert_one_line(error)
    assert DEFAULT_CLIP in message
    assert f"dreamcanvas models download {DEFAULT_CLIP}" in message
    assert str(hub / "models--timm--vit_base_patch32_clip_224.openai") in message
    assert "HF_HUB_OFFLINE" in message
    assert not weights.is_cached(DEFAULT_CLIP)


@pytest.fixture
def tiny_arch(monkeypatch: pytest.MonkeyPatch, tiny_clip_dir: Path) -> str:
    """Teach open_clip a tiny architecture with an 'openai' tag, as its built-in tables describe real ones."""
    model_cfg = json.loads((tiny_clip_dir / CONFIG_NAME).read_text())["model_cfg"]
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "Tiny-ViT", model_cfg)
    pretrained = {
        "hf_hub": "test-org/tiny-vit.openai/",
        "url": "",
        "mean": (0.1, 0.2, 0.3),
        "std": (0.5, 0.5, 0.5),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
        "quick_gelu": True,
    }
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, "Tiny-ViT", {"openai": pretrained})
    return "Tiny-ViT:openai"


@pytest.mark.parametrize(
    ("cached", "chosen"),
    [
        ({weights.OPEN_CLIP_SAFETENSORS}, weights.OPEN_CLIP_SAFETENSORS),
        ({weights.OPEN_CLIP_BIN}, weights.OPEN_CLIP_BIN),
        ({weights.OPEN_CLIP_SAFETENSORS, weights.OPEN_CLIP_BIN}, weights.OPEN_CLIP_SAFETENSORS),
    ],
)
def test_arch_tag_loads_cached_weights_with_quick_gelu_and_preprocess(hub, tiny_clip_dir, tiny_arch, cached, chosen):
    saved = load_file(tiny_clip_dir / WEIGHTS_NAME)
    pickled = io.BytesIO()
    torch.save(saved, pickled)
    payload = {
        weights.OPEN_CLIP_SAFETENSORS: (tiny_clip_dir / WEIGHTS_NAME).read_bytes(),
        weights.OPEN_CLIP_BIN: pickled.getvalue(),
    }
    add_to_hf_cache(hub, "test-org/tiny-vit.openai", {name: payload[name] for name in cached})

    resolved = weights.resolve_clip(tiny_arch)
    assert resolved.model_name == "Tiny-ViT" and resolved.checkpoint is not None
    assert resolved.checkpoint.name == chosen
    assert resolved.quick_gelu is True
    assert resolved.preprocess["mean"] == [0.1, 0.2, 0.3]

    perceptor = load_perceptor(tiny_arch)
    assert_same_weights(perceptor.model, saved)
    assert any(isinstance(module, open_clip.model.QuickGELU) for module in perceptor.model.modules())
    assert perceptor.mean.flatten().tolist() == pytest.approx([0.1, 0.2, 0.3])


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("ViT-B-99:openai", "dreamcanvas models list"),
        ("ViT-B-32:nonsense", "ViT-B-32:openai"),
        ("ViT-B-32", "needs a pretrained tag"),
        ("local-dir:/no/such/folder", "/no/such/folder"),
        ("hf-hub:not a repo", "hf-hub:ORG/REPO"),
    ],
)
def test_names_that_do_not_exist_are_clear_user_errors(spec, expected):
    with pytest.raises(DreamcanvasError) as error:
        weights.resolve_clip(spec)
    assert not isinstance(error.value, ModelUnavailableError)
    message = assert_one_line(error)
    assert spec.split(":")[0] in message and expected in message


def test_registered_clip_models_are_real_open_clip_models():
    clip_sources = [source for source in weights.list_sources() if source.kind == "clip"]
    assert DEFAULT_CLIP in [source.name for source in clip_sources]
    for source in clip_sources:
        arch, cfg = weights.clip._pretrained_cfg(source.name, source.open_clip)
        assert open_clip.get_model_config(arch) and cfg["hf_hub"]


def test_text_tower_model_without_transformers_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    spec = "xlm-roberta-base-ViT-B-32:laion5b_s13b_b90k"
    with pytest.raises(DreamcanvasError, match="pip install transformers"):
        weights.resolve_clip(spec)
    assert weights.cache_state(spec) == ("no", [])  # downloading does not need transformers


# --------------------------------------------------------------------------------------------------------
# local-dir: models and verify_file


def test_local_dir_needs_config_and_whole_weights(tmp_path, tiny_clip_dir):
    folder = tmp_path / "model"
    folder.mkdir()
    with pytest.raises(DreamcanvasError, match=re.escape(CONFIG_NAME)):
        weights.resolve_clip(f"local-dir:{folder}")
    files = tiny_files(tiny_clip_dir)
    (folder / CONFIG_NAME).write_bytes(files[CONFIG_NAME])
    with pytest.raises(DreamcanvasError, match="no weights file"):
        weights.resolve_clip(f"local-dir:{folder}")
    (folder / WEIGHTS_NAME).write_bytes(files[WEIGHTS_NAME][:-10])
    with pytest.raises(CorruptWeightsError, match="truncated"):
        weights.resolve_clip(f"local-dir:{folder}")
    (folder / WEIGHTS_NAME).write_bytes(files[WEIGHTS_NAME])
    resolved = weights.resolve_clip(f"local-dir:{folder}")
    assert resolved == weights.ResolvedClip(f"local-dir:{folder}", f"local-dir:{folder.resolve()}", None, False, {})


def test_verify_file_checks_length_checksum_and_zip_directory(tmp_path, tiny_clip_dir):
    data = (tiny_clip_dir / WEIGHTS_NAME).read_bytes()
    good = tmp_path / "good.safetensors"
    good.write_bytes(data)
    weights.verify_file(good, hashlib.sha256(data).hexdigest())
    with pytest.raises(CorruptWeightsError, match="sha256"):
        weights.verify_file(good, "0" * 64)

    longer = tmp_path / "longer.safetensors"
    longer.write_bytes(data + b"junk")
    with pytest.raises(CorruptWeightsError, match="longer"):
        weights.verify_file(longer)

    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CorruptWeightsError, match="empty"):
        weights.verify_file(empty)

    pickled = io.BytesIO()
    torch.save({"w": torch.zeros(1000)}, pickled)
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(pickled.getvalue())
    weights.verify_file(checkpoint)
    checkpoint.write_bytes(pickled.getvalue()[:-200])
    with pytest.raises(CorruptWeightsError, match="central directory"):
        weights.verify_file(checkpoint)


def test_a_verified_file_is_not_hashed_again_until_it_changes(tmp_path, monkeypatch, tiny_clip_dir):
    path = tmp_path / "model.safetensors"
    path.write_bytes((tiny_clip_dir / WEIGHTS_NAME).read_bytes())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    hashed = []
    real_file_digest = hashlib.file_digest
    monkeypatch.setattr(hashlib, "file_digest", lambda *a, **k: hashed.append(1) or real_file_digest(*a, **k))

    weights.verify_file(path, digest)
    weights.verify_file(path, digest)
    assert len(hashed) == 1
    os.utime(path, ns=(0, 0))  # what any rewrite does: a new mtime
    weights.verify_file(path, digest)
    assert len(hashed) == 2


# --------------------------------------------------------------------------------------------------------
# sources/*.json and url files


@pytest.fixture
def url_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """A registered vqgan-style model whose two files come from plain URLs."""
    contents = {"config": b"model: {target: tiny}\n", "checkpoint": b"not really a checkpoint" * 100}
    entry = {
        "tiny-vq": {
            "kind": "vqgan",
            "description": "a tiny test model",
            "size_mb": 0.01,
            "files": {
                "config": {"url": "https://example.invalid/c/tiny.yaml?dl=1", "filename": "tiny.yaml"},
                "checkpoint": {
                    "url": "https://example.invalid/c/last.ckpt",
                    "filename": "tiny.ckpt",
                    "sha256": hashlib.sha256(contents["checkpoint"]).hexdigest(),
                },
            },
        }
    }
    folder = tmp_path / "sources"
    folder.mkdir()
    (folder / "test.json").write_text(json.dumps(entry))
    monkeypatch.setattr(weights.registry, "SOURCE_DIRS", [*weights.registry.SOURCE_DIRS, folder])
    return contents


def place_url_files(contents: dict[str, bytes]) -> dict[str, Path]:
    paths = {
        "config": weights.url_cache_path("tiny-vq", "tiny.yaml"),
        "checkpoint": weights.url_cache_path("tiny-vq", "tiny.ckpt"),
    }
    for role, path in paths.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(contents[role])
    return paths


def test_url_source_with_a_wrong_checksum_is_corrupt(url_source):
    paths = place_url_files({**url_source, "checkpoint": url_source["checkpoint"][:-1] + b"!"})
    with pytest.raises(CorruptWeightsError) as error:
        weights.fetch_files("tiny-vq")
    message = assert_one_line(error)
    assert str(paths["checkpoint"]) in message and "dreamcanvas models download tiny-vq" in message

    with pytest.raises(CorruptWeightsError):  # offline, `models download` cannot repair it: say it is corrupt
        weights.download("tiny-vq")

    paths = place_url_files(url_source)
    assert weights.fetch_files("tiny-vq") == paths
    assert weights.is_cached("tiny-vq")


def test_url_source_missing_offline_names_its_folder(url_source):
    with pytest.raises(ModelUnavailableError) as error:
        weights.fetch_files("tiny-vq")
    message = assert_one_line(error)
    assert str(weights.dreamcanvas_cache_dir() / "weights" / "tiny-vq") in message
    assert "dreamcanvas models download tiny-vq" in message


def test_url_download_is_atomic_and_checked(tmp_path):
    origin = tmp_path / "origin.bin"
    origin.write_bytes(b"\x00\x01" * 5000)
    target = tmp_path / "cache" / "model.bin"
    with pytest.raises(CorruptWeightsError, match="different file"):
        weights.fetch._download_url(origin.as_uri(), target, sha256="0" * 64, model_name="m")
    assert list(target.parent.iterdir()) == []  # neither the file nor a partial one is left

    weights.fetch._download_url(
        origin.as_uri(), target, sha256=hashlib.sha256(origin.read_bytes()).hexdigest(), model_name="m"
    )
    assert target.read_bytes() == origin.read_bytes()
    assert [p.name for p in target.parent.iterdir()] == ["model.bin"]


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"kind": "vqgan", "description": "d", "files": {"c": {"url": "u", "repo_id": "a/b"}}}, "exactly one"),
        ({"kind": "vqgan", "description": "d", "files": {"c": {"repo_id": "a/b", "sha": "x"}}}, "unknown keys"),
        ({"kind": "clip", "description": "d"}, "exactly one of 'open_clip'"),
        ({"kind": "vqgan", "description": "d", "files": {"c": {"url": "u/x", "sha256": "abc"}}}, "64"),
        ({"kind": "vqgan", "description": "d", "open_clip": "RN50:openai"}, "kind 'clip' goes with"),
        ({"kind": "vqgan", "description": "d", "size_mb": "big", "files": {"c": {"url": "u/x"}}}, "size_mb"),
    ],
)
def test_malformed_sources_name_the_file_and_entry(tmp_path, monkeypatch, entry, problem):
    (tmp_path / "broken.json").write_text(json.dumps({"bad-model": entry}))
    monkeypatch.setattr(weights.registry, "SOURCE_DIRS", [tmp_path])
    with pytest.raises(ValueError, match=problem) as error:
        weights.list_sources()
    assert "broken.json" in str(error.value) and "bad-model" in str(error.value)


def test_a_name_defined_twice_is_an_error(tmp_path, monkeypatch):
    entry = {"twice": {"kind": "clip", "description": "d", "open_clip": "RN50:openai"}}
    for name in ("a.json", "b.json"):
        (tmp_path / name).write_text(json.dumps(entry))
    monkeypatch.setattr(weights.registry, "SOURCE_DIRS", [tmp_path])
    with pytest.raises(ValueError, match=r"already defined in a\.json"):
        weights.list_sources()


# --------------------------------------------------------------------------------------------------------
# the CLI


def run_cli(args: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    import dreamcanvas.cli

    monkeypatch.setattr(dreamcanvas.cli, "COMMAND_MODULES", ["models"])  # only the commands under test
    monkeypatch.setenv("COLUMNS", "300")  # so that rich does not wrap names in the table
    try:
        main(args)
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_models_list_shows_the_default_and_what_is_cached(capsys, monkeypatch, url_source):
    paths = place_url_files(url_source)
    code, out, err = run_cli(["models", "list"], capsys, monkeypatch)
    assert code == 0, err
    # One table row per model, several lines each (name, description, where): join a row's cells.
    blocks = out.split("├")
    rows = {}
    for block in blocks:
        cells = [line.split("│")[1:-1] for line in block.splitlines() if line.startswith("│")]
        if cells:
            name, *_, cached = [cell.strip() for cell in cells[0]]
            rows[name.split()[0]] = (cached, "".join(line[0].strip() for line in cells))
    assert "(default)" in rows[DEFAULT_CLIP][1] and rows[DEFAULT_CLIP][0] == "no"
    assert rows["tiny-vq"][0] == "yes" and str(paths["config"].parent) in rows["tiny-vq"][1]

    code, out, _ = run_cli(["models", "list", "--kind", "vqgan"], capsys, monkeypatch)
    assert code == 0 and "tiny-vq" in out and DEFAULT_CLIP not in out


def test_models_download_prints_the_paths_of_cached_files(capsys, monkeypatch, url_source):
    paths = place_url_files(url_source)
    code, out, err = run_cli(["models", "download", "tiny-vq"], capsys, monkeypatch)
    assert code == 0, err
    assert out.split() == [str(paths["config"]), str(paths["checkpoint"])]


@pytest.mark.parametrize(("name", "expected"), [("no-such-model", "unknown model"), (DEFAULT_CLIP, "HF_HUB_OFFLINE")])
def test_models_download_failures_are_one_line_on_stderr(capsys, monkeypatch, name, expected):
    code, out, err = run_cli(["models", "download", name], capsys, monkeypatch)
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and err.startswith("dreamcanvas: error:") and expected in err


def test_no_network_fails_in_seconds_not_after_retries(monkeypatch, tmp_path):
    """A refused connection (a closed loopback port) is reported at once as 'no network'."""
    import time

    from huggingface_hub import constants

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    start = time.perf_counter()
    with pytest.raises(ModelUnavailableError, match=r"no network: cannot reach 127\.0\.0\.1") as error:
        weights.resolve_clip("ViT-B-32:openai")
    assert time.perf_counter() - start < 5
    assert "dreamcanvas models download ViT-B-32:openai" in str(error.value)


def test_a_torch_hub_hash_prefix_is_a_checksum(tmp_path, tiny_clip_dir):
    """torch.hub names a file by the first digits of its sha256 (vgg19-dcbb9e9d.pth) and checks those."""
    data = (tiny_clip_dir / WEIGHTS_NAME).read_bytes()
    good = tmp_path / "good.safetensors"
    good.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    weights.verify_file(good, digest[:8])
    with pytest.raises(CorruptWeightsError, match="sha256"):
        weights.verify_file(good, ("0" if digest[0] != "0" else "1") + digest[1:8])


def test_the_registered_vgg_files_carry_their_names_hash_prefixes():
    for name in ("vgg19", "vgg19-caffe"):
        [file] = weights.find_source(name).files
        assert file.sha256 is not None and file.filename.removesuffix(".pth").endswith("-" + file.sha256)
