"""CLIP models: turning a CLIP name into the local, verified files open_clip builds the model from.

Names
    * ``ARCH:TAG`` - any open_clip pretrained model (``ViT-B-32:openai``). Its Hugging Face repo and file
      come from open_clip's own pretrained table, so every open_clip model works, listed or not.
    * ``hf-hub:ORG/REPO`` - an open_clip model repo on the Hugging Face Hub (``open_clip_config.json`` +
      weights); it is cached like any other HF file and loaded as a ``local-dir`` from its snapshot folder.
    * ``local-dir:PATH`` - a folder in open_clip's layout (see :func:`dreamcanvas.perceptor.clip.save_local_dir`).
    * ``bundled:NAME`` - a local-dir shipped inside the package (see :mod:`dreamcanvas.weights.registry`).
    * a registered CLIP name - its ``open_clip: "ARCH:TAG"``.
    * a registered ruCLIP name (``kind: "ruclip"``) - ai-forever's ru-clip layout, not open_clip's: the hub repo's
      ``pytorch_model.bin``, ``config.json`` and YouTokenToMe ``bpe.model``, fetched as the registry's ``files``
      and built by :mod:`dreamcanvas.perceptor.ruclip`.

A Hugging Face text tower (xlm-roberta for multilingual CLIP) also needs its config and tokenizer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dreamcanvas.errors import DreamcanvasError

# registry.NAME, not copies: tests patch registry.bundled_dir, and every call must see the patch.
from dreamcanvas.weights import registry
from dreamcanvas.weights.fetch import fetch_hf, fetch_hf_snapshot, fetch_source_files
from dreamcanvas.weights.verify import COMMIT_HASH, corrupt, verify_weights

HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"

OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_SAFETENSORS = "open_clip_model.safetensors"
OPEN_CLIP_BIN = "open_clip_pytorch_model.bin"

# The order in which open_clip's local-dir loader picks a weights file; we verify the file it will load.
LOCAL_DIR_WEIGHTS_PREFERENCE = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
)
LOCAL_DIR_WEIGHTS_SUFFIXES = (".safetensors", ".bin", ".pth")

# What a Hugging Face text tower (xlm-roberta for multilingual CLIP) needs besides the CLIP checkpoint:
# its config (to build the network) and its tokenizer, but not its own pretrained weights.
TEXT_TOWER_PATTERNS = ("*.json", "*.model", "*.txt")
TEXT_TOWER_CONFIG = "config.json"
# A tokenizer repo holds at least one of these (xlm-roberta-base: tokenizer.json and sentencepiece.bpe.model).
TOKENIZER_FILES = (
    "tokenizer.json",
    "sentencepiece.bpe.model",
    "spiece.model",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
)

_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")

OPEN_CLIP_FAMILY = "open_clip"
RUCLIP_KIND = "ruclip"
"""The registry kind (and :attr:`ResolvedClip.family`) of ai-forever's ruCLIP models: CLIP networks that open_clip
builds, from files in ru-clip's own layout."""
RUCLIP_ROLES = ("checkpoint", "config", "tokenizer")
"""The ``files`` of a ruCLIP source: ``pytorch_model.bin``, ``config.json`` and ``bpe.model`` of its hub repo."""


@dataclass(frozen=True)
class ResolvedClip:
    """Everything :func:`open_clip.create_model` needs to build a CLIP model from local files only."""

    spec: str
    """As the user wrote it."""
    model_name: str
    """Passed to ``open_clip.create_model``: ``ViT-B-32`` or ``local-dir:/abs/path``."""
    checkpoint: Path | None
    """Passed as ``pretrained=``; None for ``local-dir`` (open_clip finds the weights itself)."""
    quick_gelu: bool
    """From the pretrained cfg: OpenAI's models were trained with QuickGELU and are wrong without it."""
    preprocess: dict = field(default_factory=dict, hash=False)
    """mean/std/interpolation/resize_mode of the pretrained cfg, ``{}`` if none."""
    text_cfg: dict = field(default_factory=dict, hash=False)
    """A Hugging Face text tower's ``text_cfg``, its repos replaced by their verified snapshot folders, for
    ``create_model(text_cfg=...)`` and the tokenizer: transformers then reads exactly these files, never its
    own idea of the cache (fixed when it was imported) nor the network. ``{}`` for open_clip's own text tower.
    (A ``local-dir`` model's tokenizer is the folder's own, as open_clip loads it: its repo is not fetched.)"""
    family: str = OPEN_CLIP_FAMILY
    """``open_clip`` (built by ``open_clip.create_model``) or ``ruclip`` (ru-clip's files: see :attr:`files`)."""
    files: dict = field(default_factory=dict, hash=False)
    """A ruCLIP model's verified local files by role (:data:`RUCLIP_ROLES`); ``{}`` for open_clip models."""


def _split_hf_hub(value: str) -> tuple[str, str]:
    """open_clip writes ``ORG/REPO/`` (default file names) or ``ORG/REPO/FILENAME``."""
    parts = value.strip().split("/")
    return "/".join(parts[:2]), "/".join(parts[2:])


def _weight_candidates(filename: str) -> list[str]:
    """open_clip's rule: prefer a safetensors twin of a pickled checkpoint when the repo has one."""
    if not filename or filename == OPEN_CLIP_BIN:
        return [OPEN_CLIP_SAFETENSORS, OPEN_CLIP_BIN]
    if filename.endswith((".bin", ".pth")):
        return [filename[:-4] + ".safetensors", filename]
    return [filename]


def _list_hint() -> str:
    return (
        "see `dreamcanvas models list`, or open_clip's full list: "
        "python -c 'import open_clip; print(open_clip.list_pretrained())'"
    )


def _pretrained_cfg(spec: str, arch_tag: str) -> tuple[str, dict[str, Any]]:
    """``(arch, open_clip pretrained cfg)`` of ``ARCH:TAG``, or a clear error naming what is wrong."""
    import difflib

    import open_clip

    arch, colon, tag = arch_tag.partition(":")
    arch = arch.strip().replace("/", "-")  # open_clip accepts OpenAI's spelling, ViT-B/32
    tag = tag.strip()
    architectures = open_clip.list_models()
    if arch not in architectures:
        same_but_case = [a for a in architectures if a.lower() == arch.lower()]
        close = same_but_case or difflib.get_close_matches(arch, architectures, n=3, cutoff=0.6)
        maybe = f" (did you mean {', '.join(close)}?)" if close else ""
        raise DreamcanvasError(
            f"unknown model {spec!r}: not a registered name, and open_clip has no architecture {arch!r}{maybe}; "
            f"models are named ARCH:TAG (ViT-B-32:openai), hf-hub:ORG/REPO or local-dir:PATH; {_list_hint()}"
        )
    tags = open_clip.list_pretrained_tags_by_model(arch)
    cfg = open_clip.get_pretrained_cfg(arch, tag) if tag else {}
    if not cfg:
        close = difflib.get_close_matches(tag.lower().replace("-", "_"), tags, n=3, cutoff=0.5) if tag else []
        ordered = close + [t for t in tags if t not in close]
        available = ", ".join(f"{arch}:{t}" for t in ordered[:8]) + (", ..." if len(tags) > 8 else "")
        what = f"has no pretrained weights {tag!r}" if colon and tag else "needs a pretrained tag"
        offer = f"try {available}" if tags else "open_clip has no pretrained weights for it"
        raise DreamcanvasError(f"model {spec!r}: {arch} {what}; {offer}; {_list_hint()}")
    if not cfg.get("hf_hub"):
        raise DreamcanvasError(f"model {spec!r} has no Hugging Face download in open_clip; it is not supported")
    return arch, dict(cfg)


def _text_tower_repos(model_cfg: dict[str, Any]) -> list[str]:
    """HF repos a Hugging Face text tower (e.g. xlm-roberta) loads its config and tokenizer from."""
    text_cfg = model_cfg.get("text_cfg") or {}
    names = {text_cfg.get(key) for key in ("hf_model_name", "hf_tokenizer_name")}
    return sorted(name for name in names if name and not Path(name).is_dir())


def _require_transformers(spec: str, repos: list[str]) -> None:
    """A model with a Hugging Face text tower cannot run without transformers: say so before loading."""
    if not repos:
        return
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise DreamcanvasError(
            f"model {spec} uses the Hugging Face text model {repos[0]} and needs the transformers package: "
            "pip install transformers"
        ) from None


def _local_dir_checkpoint(folder: Path) -> Path | None:
    """The weights file open_clip will load from a local-dir (same preference order), or None."""
    candidates = sorted(p for p in folder.iterdir() if p.name.endswith(LOCAL_DIR_WEIGHTS_SUFFIXES))
    for preferred in LOCAL_DIR_WEIGHTS_PREFERENCE:
        for candidate in candidates:
            if candidate.name == preferred:
                return candidate
    candidates.sort(key=lambda p: not p.name.endswith(".safetensors"))
    return candidates[0] if candidates else None


def _read_open_clip_config(path: Path, model_name: str) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise corrupt(path, f"not valid JSON: {error}", model_name) from None
    if not isinstance(config, dict) or not isinstance(config.get("model_cfg"), dict):
        raise DreamcanvasError(f"{path} has no 'model_cfg': it is not an open_clip model config ({model_name})")
    return config


def _resolve_local_dir(
    spec: str, folder: Path, *, allow_download: bool, check_runtime: bool
) -> tuple[ResolvedClip, list[Path]]:
    if not folder.is_dir():
        raise DreamcanvasError(f"model {spec}: folder {folder} does not exist")
    config_path = folder / OPEN_CLIP_CONFIG
    if not config_path.is_file():
        raise DreamcanvasError(f"model {spec}: {folder} has no {OPEN_CLIP_CONFIG}, so it is not an open_clip model")
    config = _read_open_clip_config(config_path, spec)
    checkpoint = _local_dir_checkpoint(folder)
    if checkpoint is None:
        raise DreamcanvasError(
            f"model {spec}: {folder} holds no weights file ({', '.join(LOCAL_DIR_WEIGHTS_SUFFIXES)})"
        )
    verify_weights(checkpoint, None, spec)
    model_cfg = config["model_cfg"]
    if (model_cfg.get("text_cfg") or {}).get("hf_tokenizer_name") and not _has_tokenizer(folder):
        # open_clip reads the tokenizer of a local-dir model with a Hugging Face text tower from the folder
        raise DreamcanvasError(
            f"model {spec}: {folder} holds no tokenizer for its Hugging Face text tower "
            f"(one of {', '.join(TOKENIZER_FILES)})"
        )
    text_cfg, extra = _text_tower_files(
        spec, model_cfg, allow_download=allow_download, check_runtime=check_runtime, tokenizer=False
    )
    resolved = ResolvedClip(spec, f"{LOCAL_DIR_PREFIX}{folder.resolve()}", None, False, {}, text_cfg)
    return resolved, [config_path, checkpoint, *extra]


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


def _text_tower_snapshot(
    spec: str, repo: str, required: list[str], *, needs_tokenizer: bool, allow_download: bool
) -> Path:
    """The snapshot folder of one text tower repo, holding ``required`` and (if needed) a tokenizer file."""

    def fetch(files: list[str], download: bool) -> Path:
        return fetch_hf_snapshot(
            repo,
            revision=None,
            patterns=TEXT_TOWER_PATTERNS,
            required=files,
            allow_download=download,
            model_name=spec,
        )

    folder = fetch(required, allow_download)
    if not needs_tokenizer or _has_tokenizer(folder):
        return folder
    try:
        # A snapshot without a tokenizer: fetch the repo's (every fast tokenizer has a tokenizer.json); offline,
        # this is the one-line "not downloaded, run `dreamcanvas models download`" error.
        return fetch([*required, TOKENIZER_FILES[0]], allow_download)
    except DreamcanvasError:
        folder = fetch(required, False)  # downloaded, but the repo's tokenizer is another of TOKENIZER_FILES
        if _has_tokenizer(folder):
            return folder
        raise


def _text_tower_files(
    spec: str, model_cfg: dict[str, Any], *, allow_download: bool, check_runtime: bool, tokenizer: bool = True
) -> tuple[dict[str, Any], list[Path]]:
    """``(text_cfg with local folders, snapshot folders)`` of a Hugging Face text tower, ``({}, [])`` if none.

    The model repo (``hf_model_name``) must hold ``config.json``, the tokenizer repo (``hf_tokenizer_name``,
    fetched only if ``tokenizer``) a tokenizer file; either missing is a :class:`ModelUnavailableError` here,
    not a traceback from transformers.
    """
    text_cfg = dict(model_cfg.get("text_cfg") or {})
    repos = _text_tower_repos(model_cfg)
    if check_runtime:
        _require_transformers(spec, repos)
    keys = ("hf_model_name", "hf_tokenizer_name") if tokenizer else ("hf_model_name",)
    folders: dict[str, Path] = {}
    for repo in repos:
        if not any(text_cfg.get(key) == repo for key in keys):
            continue
        required = [TEXT_TOWER_CONFIG] if repo == text_cfg.get("hf_model_name") else []
        needs_tokenizer = tokenizer and repo == text_cfg.get("hf_tokenizer_name")
        folders[repo] = _text_tower_snapshot(
            spec, repo, required, needs_tokenizer=needs_tokenizer, allow_download=allow_download
        )
    if not folders:
        return {}, []
    for key in keys:
        if text_cfg.get(key) in folders:
            text_cfg[key] = str(folders[text_cfg[key]])
    return text_cfg, list(folders.values())


def _resolve_hf_hub(
    spec: str, repo_id: str, *, allow_download: bool, check_runtime: bool, repair: bool
) -> tuple[ResolvedClip, list[Path]]:
    if not _REPO_ID.fullmatch(repo_id):
        raise DreamcanvasError(f"model {spec!r}: write Hugging Face models as hf-hub:ORG/REPO")
    weights = fetch_hf(
        repo_id,
        [OPEN_CLIP_SAFETENSORS, OPEN_CLIP_BIN],
        revision=None,
        sha256=None,
        allow_download=allow_download,
        model_name=spec,
        repair=repair,
    )
    # Take the config from the very commit the weights came from, so both sit in one snapshot folder,
    # the folder open_clip then loads as a local-dir.
    commit = weights.parent.name if COMMIT_HASH.fullmatch(weights.parent.name) else None
    config = fetch_hf(
        repo_id,
        [OPEN_CLIP_CONFIG],
        revision=commit,
        sha256=None,
        allow_download=allow_download,
        model_name=spec,
        repair=repair,
    )
    model_cfg = _read_open_clip_config(config, spec)["model_cfg"]
    if _text_tower_repos(model_cfg):
        # open_clip reads an HF tokenizer of an hf-hub model from the snapshot folder itself.
        fetch_hf_snapshot(
            repo_id,
            revision=commit,
            patterns=TEXT_TOWER_PATTERNS,
            required=OPEN_CLIP_CONFIG,
            allow_download=allow_download,
            model_name=spec,
        )
    return _resolve_local_dir(spec, config.parent, allow_download=allow_download, check_runtime=check_runtime)


def _resolve_ruclip(
    spec: str, source: registry.Source, *, allow_download: bool, repair: bool
) -> tuple[ResolvedClip, list[Path]]:
    """A ruCLIP model: its three hub files from the HF cache (or downloaded), each verified; offline and not
    cached, the one-line "not downloaded, run `dreamcanvas models download`" error."""
    roles = {file.role for file in source.files}
    if roles != set(RUCLIP_ROLES):
        raise ValueError(f"{source.origin}: {source.name}: a ruclip model's files are {', '.join(RUCLIP_ROLES)}")
    files = fetch_source_files(source, allow_download=allow_download, repair=repair)
    resolved = ResolvedClip(spec, source.name, files["checkpoint"], True, {}, {}, family=RUCLIP_KIND, files=dict(files))
    return resolved, [files[role] for role in RUCLIP_ROLES]


def resolve_clip_files(
    spec: str, *, allow_download: bool, repair: bool = False, check_runtime: bool = True
) -> tuple[ResolvedClip, list[Path]]:
    """The resolved model and every local file it needs (for ``models download`` to report)."""
    name = spec.strip()
    if name.startswith(registry.BUNDLED_PREFIX):
        bundled = name[len(registry.BUNDLED_PREFIX) :]
        if bundled not in registry.bundled_models():
            available = ", ".join(registry.BUNDLED_PREFIX + b for b in registry.bundled_models()) or "none"
            raise DreamcanvasError(f"no bundled model {name!r} in this installation (bundled: {available})")
        return _resolve_local_dir(
            spec, registry.bundled_dir(bundled), allow_download=False, check_runtime=check_runtime
        )
    if name.startswith(LOCAL_DIR_PREFIX):
        folder = Path(name[len(LOCAL_DIR_PREFIX) :]).expanduser()
        return _resolve_local_dir(spec, folder, allow_download=allow_download, check_runtime=check_runtime)
    if name.startswith(HF_HUB_PREFIX):
        return _resolve_hf_hub(
            spec,
            name[len(HF_HUB_PREFIX) :].strip("/"),
            allow_download=allow_download,
            check_runtime=check_runtime,
            repair=repair,
        )

    import open_clip

    source = registry.find_source(name)
    if source is not None and source.kind == RUCLIP_KIND:
        return _resolve_ruclip(spec, source, allow_download=allow_download, repair=repair)
    if source is not None and source.kind != "clip":
        raise DreamcanvasError(f"{name} is a {source.kind} model, not a CLIP model")
    arch, cfg = _pretrained_cfg(spec, source.open_clip if source and source.open_clip else name)
    model_cfg = open_clip.get_model_config(arch) or {}
    towers = _text_tower_repos(model_cfg)
    if check_runtime:
        _require_transformers(spec, towers)
    repo_id, filename = _split_hf_hub(cfg["hf_hub"])
    checkpoint = fetch_hf(
        repo_id,
        _weight_candidates(filename),
        revision=None,
        sha256=None,
        allow_download=allow_download,
        model_name=spec,
        repair=repair,
    )
    text_cfg, extra = _text_tower_files(spec, model_cfg, allow_download=allow_download, check_runtime=False)
    preprocess = {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in cfg.items()
        if key in ("mean", "std", "interpolation", "resize_mode")
    }
    quick_gelu = bool(cfg.get("quick_gelu", False))
    resolved = ResolvedClip(spec, arch, checkpoint, quick_gelu, preprocess, text_cfg)
    return resolved, [checkpoint, *extra]


def resolve_clip(spec: str, *, allow_download: bool = True) -> ResolvedClip:
    """Find (and if allowed download) a CLIP model's files, verified, ready for ``open_clip.create_model``.

    Raises :class:`DreamcanvasError` for names that do not exist, :class:`ModelUnavailableError` when the
    weights are neither cached nor downloadable now, :class:`CorruptWeightsError` for damaged files.
    """
    return resolve_clip_files(spec, allow_download=allow_download)[0]
