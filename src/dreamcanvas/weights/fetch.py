"""Fetching: weights files from the HF cache or downloaded into it, ``url`` files into our own cache.

Every fetched file passes :func:`~dreamcanvas.weights.verify.verify_weights` before it is returned. A file
that is neither cached nor downloadable now raises :class:`~dreamcanvas.errors.ModelUnavailableError`,
saying why (downloads off, ``HF_HUB_OFFLINE``, no network, a failed download) and what to run.

Whole-repo sources (``snapshot`` in the registry: a diffusers pipeline folder) come through
:func:`fetch_snapshot`, the same cache and the same checks for every weights file in the folder.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import sys
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from dreamcanvas.errors import CorruptWeightsError, DreamcanvasError, ModelUnavailableError
from dreamcanvas.weights.cache import download_timeout, hf_hub_cache_dir, hf_repo_cache_dir, is_offline, url_cache_path
from dreamcanvas.weights.registry import FileSource, Source, find_source
from dreamcanvas.weights.verify import matches_checksum, one_line, remember_digest, verify_weights

_HASH_CHUNK = 1 << 20
WEIGHTS_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")
"""Files of a snapshot that hold weights, and so are verified before use."""


def _network_errors() -> tuple[type[BaseException], ...]:
    """Everything a failed download may raise: no DNS, timeouts, HTTP errors, refused connections.

    huggingface_hub's own errors are OSErrors; its HTTP client's are not, and which client it uses depends
    on its version, so take whichever is loaded. ValueError covers ``force_download`` without a connection.
    """
    errors: list[type[BaseException]] = [OSError, http.client.HTTPException, ValueError]
    for module_name in ("httpx2", "httpx", "requests"):
        module = sys.modules.get(module_name)
        base = getattr(module, "HTTPError", None) or getattr(module, "RequestException", None)
        if isinstance(base, type) and issubclass(base, BaseException):
            errors.append(base)
    return tuple(errors)


def _describe(error: BaseException) -> str:
    """A short, one-line account of a download failure, preferring the root cause (e.g. a DNS error)."""
    root = error
    while root.__cause__ is not None and root.__cause__ is not root:
        root = root.__cause__
    text = one_line(f"{type(root).__name__}: {root}") if str(root) else type(root).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _download_blocker(allow_download: bool, url: str | None = None) -> str | None:
    """Why nothing can be downloaded now, or None. ``url``'s host is probed first, so that a machine with no
    network fails in seconds, not after half a minute of the download client's retries."""
    if not allow_download:
        return "downloads are turned off"
    if is_offline():
        return "HF_HUB_OFFLINE is set"
    return _unreachable(url or hub_endpoint())


def download_blocker() -> str | None:
    """Why nothing can be fetched from the Hub now (``HF_HUB_OFFLINE``, no network), or None when it can."""
    return _download_blocker(allow_download=True)


def hub_endpoint() -> str:
    """The Hub huggingface_hub will download from (``HF_ENDPOINT``, read when it was imported)."""
    from huggingface_hub import constants

    return constants.ENDPOINT


def _unreachable(url: str, timeout: float = 3.0) -> str | None:
    """One TCP connection attempt to ``url``'s host: a reason string if it fails, None if it connects."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return None  # file:// and the like: nothing to probe
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout).close()
    except OSError as error:
        return f"no network: cannot reach {parsed.hostname} ({_describe(error)})"
    return None


def _unavailable(model_name: str, destination: Path, reason: str) -> ModelUnavailableError:
    network = " with network access" + (" and HF_HUB_OFFLINE unset" if is_offline() else "")
    return ModelUnavailableError(
        one_line(
            f"weights of {model_name} are not downloaded and cannot be fetched now ({reason}): "
            f"run `dreamcanvas models download {model_name}`{network}; the files go to {destination}"
        )
    )


def _hub_errors() -> tuple[type[BaseException], type[BaseException]]:
    """(not in the local cache, not on the Hub): the two 'missing' errors, across huggingface_hub versions."""
    from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError

    try:
        from huggingface_hub.errors import RemoteEntryNotFoundError
    except ImportError:  # older huggingface_hub: the remote error is EntryNotFoundError itself
        RemoteEntryNotFoundError = EntryNotFoundError
    return LocalEntryNotFoundError, RemoteEntryNotFoundError


def _cached_hf_file(repo_id: str, filename: str, revision: str | None) -> Path | None:
    """The snapshot path of a cached file, or None.

    huggingface_hub downloads into ``blobs/<hash>.incomplete`` and links the file into ``snapshots/``
    only once it is complete, so a half-downloaded file is invisible here and can never be used.
    """
    from huggingface_hub import hf_hub_download

    not_cached, _ = _hub_errors()
    try:
        found = hf_hub_download(
            repo_id, filename, revision=revision, cache_dir=hf_hub_cache_dir(), local_files_only=True
        )
    except not_cached:
        return None
    return Path(found)


def fetch_hf(
    repo_id: str,
    filenames: Iterable[str],
    *,
    revision: str | None,
    sha256: str | None,
    allow_download: bool,
    model_name: str,
    repair: bool = False,
) -> Path:
    """The first of ``filenames`` that the repo has: from the cache if there, else downloaded; verified.

    ``repair`` (used by ``models download``) fetches a corrupt cached file again instead of failing.
    """
    filenames = list(filenames)
    force: set[str] = set()
    corrupt: CorruptWeightsError | None = None
    for filename in filenames:
        cached = _cached_hf_file(repo_id, filename, revision)
        if cached is None:
            continue
        try:
            verify_weights(cached, sha256, model_name)
            return cached
        except CorruptWeightsError as error:
            if not repair:
                raise
            force.add(filename)
            corrupt = error
            break

    reason = _download_blocker(allow_download)
    if reason is not None and corrupt is not None:
        raise corrupt  # "corrupt, delete it" says more than "cannot download" when nothing can be fetched
    if reason is None:
        from huggingface_hub import hf_hub_download

        from dreamcanvas import __version__

        _, missing_on_hub = _hub_errors()
        for filename in filenames:
            try:
                downloaded = hf_hub_download(
                    repo_id,
                    filename,
                    revision=revision,
                    cache_dir=hf_hub_cache_dir(),
                    force_download=filename in force,
                    library_name="dreamcanvas",
                    library_version=__version__,
                )
            except missing_on_hub:
                continue  # e.g. no safetensors version: try the next name
            except _network_errors() as error:
                reason = f"download failed: {_describe(error)}"
                break
            path = Path(downloaded)
            verify_weights(path, sha256, model_name)
            return path
        else:
            reason = f"{repo_id} has none of {', '.join(filenames)}"
    raise _unavailable(model_name, hf_repo_cache_dir(repo_id), reason)


def fetch_hf_file(
    repo_id: str,
    filename: str,
    *,
    revision: str | None = None,
    sha256: str | None = None,
    allow_download: bool = True,
    model_name: str,
) -> Path:
    """One file of a Hugging Face repo, from the HF cache or downloaded into it, verified.

    ``model_name`` is what the user asked for; errors tell them to ``dreamcanvas models download`` it.
    """
    return fetch_hf(
        repo_id, [filename], revision=revision, sha256=sha256, allow_download=allow_download, model_name=model_name
    )


def _missing(folder: Path, required: list[str]) -> list[str]:
    return [name for name in required if not (folder / name).is_file()]


def fetch_hf_snapshot(
    repo_id: str,
    *,
    revision: str | None,
    patterns: Iterable[str],
    required: str | Iterable[str],
    allow_download: bool,
    model_name: str,
) -> Path:
    """The files of a repo matching ``patterns``, as one snapshot folder that holds every ``required`` file.

    Only complete files are ever linked into a snapshot folder by huggingface_hub (it downloads to
    ``*.incomplete`` first); recent versions also refuse a cached snapshot that their recorded file list
    shows is partial. ``required`` catches the rest.
    """
    from huggingface_hub import snapshot_download

    patterns = list(patterns)
    required = [required] if isinstance(required, str) else list(required)
    not_cached, _ = _hub_errors()
    try:
        folder = Path(
            snapshot_download(
                repo_id,
                revision=revision,
                cache_dir=hf_hub_cache_dir(),
                allow_patterns=patterns,
                local_files_only=True,
            )
        )
        if not _missing(folder, required):
            return folder
    except not_cached:
        pass
    reason = _download_blocker(allow_download)
    if reason is None:
        from dreamcanvas import __version__

        try:
            folder = Path(
                snapshot_download(
                    repo_id,
                    revision=revision,
                    cache_dir=hf_hub_cache_dir(),
                    allow_patterns=patterns,
                    library_name="dreamcanvas",
                    library_version=__version__,
                )
            )
        except _network_errors() as error:
            reason = f"download failed: {_describe(error)}"
        else:
            missing = _missing(folder, required)
            if not missing:
                return folder
            reason = f"{repo_id} has no {', '.join(missing)}"
    raise _unavailable(model_name, hf_repo_cache_dir(repo_id), reason)


def _exact_names(patterns: Iterable[str]) -> list[str]:
    """The patterns that name one file (no wildcard): a snapshot without any of them is incomplete."""
    return [pattern for pattern in patterns if not any(mark in pattern for mark in "*?[")]


def snapshot_weights(folder: Path) -> list[Path]:
    """Every weights file in a snapshot folder (``unet/diffusion_pytorch_model.fp16.safetensors``, ...)."""
    return sorted(path for path in folder.rglob("*") if path.name.endswith(WEIGHTS_SUFFIXES))


def _verify_snapshot(source: Source, folder: Path, *, allow_download: bool, repair: bool) -> None:
    """Check every weights file of a snapshot; ``repair`` fetches a corrupt one again, alone."""
    assert source.snapshot is not None
    for path in snapshot_weights(folder):
        try:
            verify_weights(path, None, source.name)
        except CorruptWeightsError:
            if not repair:
                raise
            fetch_hf(
                source.snapshot.repo_id,
                [path.relative_to(folder).as_posix()],
                revision=folder.name,
                sha256=None,
                allow_download=allow_download,
                model_name=source.name,
                repair=True,
            )


def fetch_source_snapshot(source: Source, *, allow_download: bool, repair: bool = False) -> Path:
    """The snapshot folder of a registered ``snapshot`` source, from the HF cache or downloaded into it.

    huggingface_hub stores each LFS file (all weights) under the sha256 the Hub publishes for it; every weights
    file is hashed against that name here before the folder is returned (once: the digest is remembered), so a
    damaged download is caught as for single files. The registry gives no checksums of its own for snapshots.
    """
    snapshot = source.snapshot
    if snapshot is None:
        raise DreamcanvasError(f"model {source.name} is not a Hugging Face repo snapshot (a diffusers folder)")
    folder = fetch_hf_snapshot(
        snapshot.repo_id,
        revision=snapshot.revision,
        patterns=snapshot.allow_patterns,
        required=_exact_names(snapshot.allow_patterns),
        allow_download=allow_download,
        model_name=source.name,
    )
    _verify_snapshot(source, folder, allow_download=allow_download, repair=repair)
    return folder


def _diffusers_download(repo_id: str, *, local_files_only: bool) -> Path:
    """diffusers' own choice of a pipeline repo's files: fp16 weights where the repo has them, safetensors only,
    no safety checker; the same HF cache."""
    from diffusers import DiffusionPipeline

    def download(variant: str | None) -> Path:
        folder = DiffusionPipeline.download(
            repo_id,
            cache_dir=hf_hub_cache_dir(),
            local_files_only=local_files_only,
            variant=variant,
            use_safetensors=True,
            safety_checker=None,
        )
        return Path(folder)

    try:
        return download("fp16")
    except ValueError as error:  # "no such modeling files are available" for a repo without fp16 files
        if "variant=fp16" not in str(error):
            raise
        return download(None)


def fetch_diffusers_repo(repo_id: str, *, model_name: str, allow_download: bool = True) -> Path:
    """Any diffusers pipeline repo (``hf-hub:ORG/REPO``) as a folder in the HF cache, weights verified."""
    not_cached, _ = _hub_errors()
    folder: Path | None = None
    try:
        folder = _diffusers_download(repo_id, local_files_only=True)
    except not_cached:
        reason = _download_blocker(allow_download)
        if reason is None:
            try:
                folder = _diffusers_download(repo_id, local_files_only=False)
            except _network_errors() as error:
                reason = f"download failed: {_describe(error)}"
    if folder is None:
        raise ModelUnavailableError(
            one_line(
                f"weights of {model_name} are not downloaded and cannot be fetched now ({reason}): run it once "
                f"with network access and HF_HUB_OFFLINE unset; the files go to {hf_repo_cache_dir(repo_id)}"
            )
        )
    for path in snapshot_weights(folder):
        verify_weights(path, None, model_name)
    return folder


def fetch_snapshot(name: str, *, allow_download: bool = True) -> Path:
    """The local folder of registered model ``name`` (a whole repo: a diffusers pipeline, TAESD, a LoRA).

    Offline (``HF_HUB_OFFLINE``) only the cache is read; a model that is not there raises one
    :class:`~dreamcanvas.errors.ModelUnavailableError` line saying what to run.
    """
    source = find_source(name)
    if source is None:
        raise DreamcanvasError(f"unknown model {name!r}: not in `dreamcanvas models list`")
    return fetch_source_snapshot(source, allow_download=allow_download)


@contextmanager
def _download_progress(label: str) -> Iterator[Callable[[int, int | None], None]]:
    """A progress bar on stderr for a terminal (a VQGAN is a 1 GB download), nothing otherwise."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task(label, total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)


def _download_url(url: str, target: Path, *, sha256: str | None, model_name: str) -> None:
    """Stream ``url`` into ``target`` atomically: a temporary file beside it, renamed once whole and checked.

    An interrupted download leaves at most a ``*.incomplete`` temporary file, never a partial ``target``.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, temporary_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".incomplete")
    temporary = Path(temporary_name)
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "dreamcanvas"})
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(request, timeout=download_timeout()) as response,
            _download_progress(target.name) as advance,
        ):
            expected_length = response.headers.get("Content-Length")
            received = 0
            while chunk := response.read(_HASH_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                advance(received, int(expected_length) if expected_length else None)
        if expected_length is not None and received != int(expected_length):
            raise http.client.IncompleteRead(b"", int(expected_length) - received)
        actual = digest.hexdigest()
        if sha256 and not matches_checksum(actual, sha256):
            raise CorruptWeightsError(
                one_line(
                    f"the download of {model_name} from {url} has sha256 {actual[:12]}..., "
                    f"not the published {sha256[:12]}...: the server sent a different file; nothing was kept"
                )
            )
        os.replace(temporary, target)
        remember_digest(target.resolve(), actual)
    finally:
        temporary.unlink(missing_ok=True)


def _fetch_url(name: str, file: FileSource, *, allow_download: bool, repair: bool = False) -> Path:
    assert file.url is not None
    target = url_cache_path(name, file.filename)
    corrupt: CorruptWeightsError | None = None
    if target.is_file():
        try:
            verify_weights(target, file.sha256, name)
            return target
        except CorruptWeightsError as error:
            if not repair:
                raise
            corrupt = error
    reason = _download_blocker(allow_download, file.url)
    if reason is not None and corrupt is not None:
        raise corrupt
    if reason is None:
        try:
            _download_url(file.url, target, sha256=file.sha256, model_name=name)
        except _network_errors() as error:  # URLError and socket timeouts are OSErrors
            reason = f"download failed: {_describe(error)}"
        else:
            verify_weights(target, file.sha256, name)
            return target
    raise _unavailable(name, target.parent, reason)


def fetch_source_files(source: Source, *, allow_download: bool, repair: bool = False) -> dict[str, Path]:
    """``{role: local path}`` of every file of a registered source, each from Hugging Face or its url.

    A snapshot source gives each of its files by its path in the repo (``{"unet/config.json": path, ...}``);
    one with a ``base`` (a LoRA) also gives its base model's files, as ``"BASE:unet/config.json"``: it cannot
    be loaded without them.
    """
    if source.snapshot is not None:
        folder = fetch_source_snapshot(source, allow_download=allow_download, repair=repair)
        files = sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: (len(p.parts), str(p)))
        paths = {path.relative_to(folder).as_posix(): path for path in files}
        base = find_source(source.base) if source.base else None
        if base is not None:
            base_files = fetch_source_files(base, allow_download=allow_download, repair=repair)
            paths.update({f"{base.name}:{role}": path for role, path in base_files.items()})
        return paths
    paths: dict[str, Path] = {}
    for file in source.files:
        if file.repo_id:
            paths[file.role] = fetch_hf(
                file.repo_id,
                [file.filename],
                revision=file.revision,
                sha256=file.sha256,
                allow_download=allow_download,
                model_name=source.name,
                repair=repair,
            )
        else:
            paths[file.role] = _fetch_url(source.name, file, allow_download=allow_download, repair=repair)
    return paths
