"""What keeps a request from reaching the file system: pictures only as checked uploads, models only by name.

A settings record marks the fields that name things on disk (:data:`~dreamcanvas.records.PICTURE`,
:data:`~dreamcanvas.records.MODEL`). From the page, a picture field takes only files the visitor uploaded:
each is opened, checked (an image of an allowed format, dimensions capped) and stored again as a fresh PNG
under the studio's own ``uploads/`` folder, named by its content's hash; the run sees that copy and nothing
else. A model field takes registered names (``ViT-B-32:openai``, ``bundled:guide``, ``hf-hub:ORG/REPO``) but no
path syntax at all, except the specs the person who started the server allowed (``--allow-model``).
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.files import atomic
from dreamcanvas.studio.forms import FormField, Widget

PICTURE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
UPLOADS_DIR = "uploads"
"""Under the studio's outputs folder: the checked copies of uploaded pictures."""

_PATH_PREFIX = re.compile(r"^(local[\w-]*|file)\s*:", re.IGNORECASE)
"""``local:``, ``local-dir:``, ``file:``: the spec prefixes by which a model names a path."""
_NAME = re.compile(r"^[\w][\w.+-]*(:[\w][\w.+-]*)?(/[\w][\w.+-]*)?$|^(hf-hub|bundled):[\w][\w.+/-]*$", re.UNICODE)
"""A registered model's name, ``NAME:TAG``, ``ORG/REPO``, ``hf-hub:ORG/REPO`` or ``bundled:NAME``."""


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_side: int = 4096
    """The longest side an uploaded picture may have: larger ones are refused, not scaled, so nothing is
    silently changed."""


@dataclass
class Safety:
    root: Path
    """The studio's outputs folder."""
    allowed_models: frozenset[str] = field(default_factory=frozenset)
    """Model specs naming paths that the server's operator allowed (``--allow-model local-dir:/models/x``)."""
    limits: UploadLimits = field(default_factory=UploadLimits)

    @property
    def uploads(self) -> Path:
        return self.root / UPLOADS_DIR

    # --- models -----------------------------------------------------------------------------------
    def check_model(self, label: str, spec: str) -> str:
        """``spec`` if a request may name it; one line otherwise."""
        spec = spec.strip()
        if not spec or spec in self.allowed_models:
            return spec
        if _PATH_PREFIX.match(spec) or ".." in spec or not _NAME.match(spec):
            raise DreamcanvasError(
                f"{label} {spec!r}: the studio takes models by name only (a path must be allowed when the "
                "server starts: dreamcanvas studio --allow-model SPEC)"
            )
        return spec

    # --- pictures ---------------------------------------------------------------------------------
    def check_upload(self, label: str, upload: str | Path) -> Image.Image:
        """An uploaded file as a picture, if it is one the studio takes (format, bytes, dimensions)."""
        path = Path(upload)
        if path.suffix.lower() not in PICTURE_SUFFIXES:
            raise DreamcanvasError(f"{label}: {path.name} is not a picture (PNG, JPEG, WebP, BMP or GIF)")
        size = path.stat().st_size
        if size > self.limits.max_bytes:
            raise DreamcanvasError(
                f"{label}: {path.name} is {size / 2**20:.1f} MiB; the studio takes pictures up to "
                f"{self.limits.max_bytes / 2**20:.0f} MiB"
            )
        return self._open_checked(label, path)

    def store_upload(self, label: str, upload: str | Path) -> Path:
        """Check an uploaded file and keep a fresh PNG copy of it under :attr:`uploads`; returns that copy."""
        buffer = io.BytesIO()
        self.check_upload(label, upload).save(buffer, format="PNG")
        data = buffer.getvalue()
        target = self.uploads / f"{hashlib.sha256(data).hexdigest()[:24]}.png"
        if not target.exists():
            self.uploads.mkdir(parents=True, exist_ok=True)
            atomic.write_bytes(target, data)
        return target

    def _open_checked(self, label: str, path: Path) -> Image.Image:
        name = path.name
        try:
            with Image.open(path) as opened:
                if opened.format not in PICTURE_FORMATS:
                    raise DreamcanvasError(f"{label}: {name} is a {opened.format} file; PNG, JPEG, WebP, BMP or GIF")
                width, height = opened.size
                if max(width, height) > self.limits.max_side:
                    raise DreamcanvasError(
                        f"{label}: {name} is {width}x{height}; the studio takes pictures up to "
                        f"{self.limits.max_side} pixels a side"
                    )
                opened.seek(0)
                return opened.convert("RGBA" if "A" in opened.getbands() else "RGB")
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
            raise DreamcanvasError(f"{label}: {name} is not a picture that can be read") from None

    def is_stored_upload(self, value: str) -> bool:
        """True for a path this studio wrote under :attr:`uploads` (a picture's settings being made again)."""
        path = Path(value)
        try:
            return path.resolve().parent == self.uploads.resolve() and path.is_file() and not path.is_symlink()
        except OSError:
            return False

    # --- one form ---------------------------------------------------------------------------------
    def checked_value(self, field: FormField, value: Any) -> Any:
        """The page's value for ``field`` with every upload stored and every model name checked."""
        if field.widget is Widget.MODEL:
            return self.check_model(field.label, value or "")
        if field.widget is Widget.PICTURE:
            return self._picture(field.label, value) if value else None
        if field.widget is Widget.PICTURES:
            return [str(self._picture(field.label, one)) for one in _files(value)]
        if field.widget is Widget.MODELS:
            return [self.check_model(field.label, line) for line in str(value or "").splitlines() if line.strip()]
        return value

    def _picture(self, label: str, value: Any) -> str:
        path = _file_path(value)
        if self.is_stored_upload(path):
            return str(Path(path).resolve())
        return str(self.store_upload(label, path))


def _file_path(value: Any) -> str:
    """A Gradio file value (a path, or a dict / object with ``path``) as a path string."""
    if isinstance(value, dict):
        value = value.get("path")
    value = getattr(value, "path", value)
    if not isinstance(value, str | Path) or not str(value):
        raise DreamcanvasError("an upload arrived without a file")
    return str(value)


def _files(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]
