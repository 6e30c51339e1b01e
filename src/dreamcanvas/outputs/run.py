"""The run contract every method shares: one folder a run, its record, frames, pictures and films.

A method (``generate``'s optimisation loop, ``sd``'s diffusers call, ...) writes its steps; this module writes
the rest the same way for all of them, so every picture dreamcanvas makes can be found, re-made and watched
alike:

* the folder (:mod:`~dreamcanvas.outputs.rundir`): ``outputs/<date>-<prompt>`` or ``--out``, never overwritten;
* ``run.json``: the method, its settings (with the concrete seed), the step reached, the machine, plus what the
  method adds (``generate``: the loss of every step);
* every PNG (frames and final pictures): the same metadata in its ``dreamcanvas`` chunk, so ``--from`` re-makes
  it, plus any other tool's chunks the method adds (``sd``: AUTOMATIC1111's ``parameters``);
* ``video.mp4`` / ``video.gif`` of the frames.

Checkpoints and resuming are the method's own (what state a step needs differs), stored as ``state.pt``.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import torch
from PIL import Image

from dreamcanvas import __version__
from dreamcanvas.outputs import png, rundir, video
from dreamcanvas.records import SettingsRecord

if TYPE_CHECKING:  # not at run time: the upscale package imports spandrel
    from dreamcanvas.upscale.tiles import TileHook

SettingsRecordType = TypeVar("SettingsRecordType", bound=SettingsRecord)
Picture = torch.Tensor | Image.Image
"""A ``(1, 3, H, W)`` tensor in ``[0, 1]`` or an RGB picture."""


class PictureUpscaler(Protocol):
    """What ``--upscale`` runs a finished picture through (:class:`dreamcanvas.upscale.step.FinalUpscale`)."""

    @property
    def factor(self) -> float: ...

    def __call__(self, picture: Image.Image, on_tile: TileHook | None = None) -> Image.Image: ...


def run_metadata(method: str, settings: SettingsRecord, step: int) -> dict[str, Any]:
    """What every PNG and ``run.json`` of a run say about how it was made."""
    return {"version": __version__, "method": method, "step": step, "settings": settings.to_dict()}


def machine() -> dict[str, Any]:
    """Where a run ran: bit-identical results need the same torch and thread count."""
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version()}


def read_stopped(folder: str | Path, method: str, record: type[SettingsRecordType]
                 ) -> tuple[dict[str, Any], SettingsRecordType]:  # fmt: skip
    """A run folder's ``run.json`` and its settings, for ``resume``: refused if another method wrote it."""
    folder = Path(folder)
    stored = rundir.read_run_json(folder)
    png.check_method(stored, method, folder / rundir.RUN_JSON)
    return stored, record.from_dict(stored["settings"], f"the settings in {folder / rundir.RUN_JSON}")


@dataclass
class Run:
    """One run folder being written by ``method`` with ``settings`` (which must hold a concrete seed)."""

    folder: Path
    method: str
    settings: SettingsRecord

    @classmethod
    def start(
        cls,
        method: str,
        settings: SettingsRecord,
        label: str,
        out: str | Path | None = None,
        outputs_root: str | Path = "outputs",
    ) -> Run:
        """Create the folder (``out``, or ``outputs_root/<date>-<label>``) and its first ``run.json`` (step 0)."""
        folder = Path(out) if out is not None else rundir.default_run_dir(Path(outputs_root), label)
        rundir.create_run_dir(folder)
        run = cls(folder, method, settings)
        run.write_record(0)
        return run

    @classmethod
    def reopen(cls, folder: str | Path, method: str, settings: SettingsRecord) -> Run:
        """An existing run folder, to carry a stopped run on (``resume``)."""
        return cls(Path(folder), method, settings)

    def metadata(self, step: int, settings: SettingsRecord | None = None) -> dict[str, Any]:
        """``settings`` overrides the run's for one picture (picture k of a batch records the seed of k alone)."""
        return run_metadata(self.method, settings or self.settings, step)

    def write_record(self, step: int, **extra: Any) -> None:
        """``run.json``, rewritten atomically: the method's ``extra`` (JSON-ready) beside the common fields."""
        rundir.write_json(self.folder / rundir.RUN_JSON, {**self.metadata(step), **extra, "machine": machine()})

    def frame_path(self, step: int) -> Path:
        return rundir.frame_path(self.folder, step)

    def save_frame(self, image: Picture, step: int, text: dict[str, str] | None = None) -> Path:
        return png.save_png(image, self.frame_path(step), self.metadata(step), text)

    def save_picture(
        self,
        image: Picture,
        step: int,
        name: str = rundir.FINAL_NAME,
        *,
        settings: SettingsRecord | None = None,
        text: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Path:
        """A finished picture in the folder, with the settings that make it again; ``extra`` (JSON-ready) goes
        beside them in its metadata (``dalle --rerank-clip``: the picture's score)."""
        return png.save_png(image, self.folder / name, {**self.metadata(step, settings), **(extra or {})}, text)

    def save_upscaled(
        self,
        upscaler: PictureUpscaler,
        picture: Path,
        step: int,
        on_tile: TileHook | None = None,
        *,
        settings: SettingsRecord | None = None,
        text: dict[str, str] | None = None,
    ) -> Path:
        """``--upscale``: a finished picture of the run, read back as written, upscaled beside it
        (``final-x4.png``) with the same settings; the same pixels ``dreamcanvas upscale`` makes of the file."""
        with Image.open(picture) as written:
            upscaled = upscaler(written.convert("RGB"), on_tile)
        name = rundir.upscaled_name(picture.name, upscaler.factor)
        return self.save_picture(upscaled, step, name, settings=settings, text=text)

    def frames(self) -> list[Path]:
        return rundir.list_frames(self.folder)

    def write_films(self, mp4: bool, gif: bool, fps: int) -> list[Path]:
        """The frames as ``video.mp4`` and/or ``video.gif`` (nothing when there are no frames)."""
        frames, films = self.frames(), []
        if mp4 and frames:
            films.append(video.write_mp4(frames, self.folder / rundir.VIDEO_NAME, fps))
        if gif and frames:
            films.append(video.write_gif(frames, self.folder / rundir.GIF_NAME, fps))
        return films
