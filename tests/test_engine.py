"""The optimisation loop, end to end, with tiny real CLIP models (see conftest.py)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from helpers import pixels, tiny_settings, write_picture
from PIL import Image

from dreamcanvas.engine import build_job, generate, resume
from dreamcanvas.outputs import png, rundir, video
from dreamcanvas.perceptor.clip import load_perceptor


def _similarity(perceptor, image: torch.Tensor, text: str) -> float:
    with torch.no_grad():
        return float(perceptor.encode_image(image) @ perceptor.encode_text([text]).T)


@pytest.mark.parametrize("generator", ["pixel", "fourier"])
def test_loss_falls_and_the_picture_moves_toward_the_prompt(tmp_path, tiny_clip_spec, generator):
    settings = tiny_settings(tiny_clip_spec, generator=generator, iterations=40)
    start = build_job(settings).generator()
    result = generate(settings, tmp_path / "run")

    assert result.completed and result.step == 40 and len(result.losses) == 40
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5]) - 0.01
    perceptor = load_perceptor(tiny_clip_spec)
    final = png.load_image(result.image_path)
    assert _similarity(perceptor, final, "a red apple") > _similarity(perceptor, start, "a red apple") + 0.02


def test_negative_weight_pushes_the_picture_away(tmp_path, tiny_clip_spec):
    settings = tiny_settings(tiny_clip_spec, prompts=["a red apple:-1"], generator="pixel")
    start = build_job(settings).generator()
    result = generate(settings, tmp_path / "run")
    perceptor = load_perceptor(tiny_clip_spec)
    final = png.load_image(result.image_path)
    assert _similarity(perceptor, final, "a red apple") < _similarity(perceptor, start, "a red apple") - 0.02


def test_a_stop_above_every_distance_leaves_the_picture_unchanged(tmp_path, tiny_clip_spec):
    # Spherical distances are at most pi^2 / 2 < 5: with stop 5 no cutout pulls, so nothing moves.
    settings = tiny_settings(tiny_clip_spec, prompts=["a red apple:1:5"], generator="pixel", iterations=5)
    start = png.to_pil(build_job(settings).generator())
    result = generate(settings, tmp_path / "run")
    assert np.array_equal(np.asarray(start), pixels(result.image_path))


def test_clip_weights_stay_frozen(tmp_path, tiny_clip_spec):
    job = build_job(tiny_settings(tiny_clip_spec))
    loss = job.loss(job.generator())
    loss.backward()
    clip_params = list(job.guide.parameters())
    assert clip_params and all(not p.requires_grad and p.grad is None for p in clip_params)
    assert all(p.grad is not None for p in job.generator.trainable_parameters())


def test_same_seed_same_bytes_other_seed_other_picture(tmp_path, tiny_clip_spec):
    settings = tiny_settings(tiny_clip_spec, iterations=10)
    first = generate(settings, tmp_path / "a")
    second = generate(settings, tmp_path / "b")
    other = generate(settings.replace(seed=8), tmp_path / "c")
    assert first.image_path.read_bytes() == second.image_path.read_bytes()
    assert first.losses == second.losses
    assert not np.array_equal(pixels(first.image_path), pixels(other.image_path))


def test_random_seed_is_chosen_and_stored(tmp_path, tiny_clip_spec):
    result = generate(tiny_settings(tiny_clip_spec, seed=-1, iterations=2), tmp_path / "run")
    assert result.settings.seed >= 0
    assert png.read_metadata(result.image_path)["settings"]["seed"] == result.settings.seed


class StopAt:
    """An on_step observer that raises at a given step, as Ctrl-C or a crash would."""

    def __init__(self, step: int, error: BaseException) -> None:
        self.step, self.error = step, error

    def __call__(self, report) -> None:
        if report.step == self.step:
            raise self.error


@pytest.mark.parametrize("generator", ["pixel", "fourier"])
def test_ctrl_c_then_resume_equals_an_uninterrupted_run(tmp_path, tiny_clip_spec, generator):
    settings = tiny_settings(tiny_clip_spec, generator=generator, iterations=20, save_every=5)
    straight = generate(settings, tmp_path / "straight")

    stopped = generate(settings, tmp_path / "stopped", on_step=StopAt(13, KeyboardInterrupt()))
    assert not stopped.completed and stopped.step == 13
    assert png.read_metadata(stopped.image_path)["step"] == 13
    resumed = resume(tmp_path / "stopped")

    assert resumed.completed and resumed.step == 20
    assert resumed.losses == straight.losses
    assert resumed.image_path.read_bytes() == straight.image_path.read_bytes()
    assert [p.name for p in rundir.list_frames(resumed.run_dir)] == [
        p.name for p in rundir.list_frames(straight.run_dir)
    ]


def test_a_crash_leaves_a_resumable_checkpoint(tmp_path, tiny_clip_spec):
    settings = tiny_settings(tiny_clip_spec, iterations=20, save_every=5)
    straight = generate(settings, tmp_path / "straight")
    with pytest.raises(RuntimeError, match="disk on fire"):
        generate(settings, tmp_path / "crashed", on_step=StopAt(8, RuntimeError("disk on fire")))
    resumed = resume(tmp_path / "crashed")
    assert resumed.image_path.read_bytes() == straight.image_path.read_bytes()


def test_a_hard_kill_resumes_from_the_last_periodic_checkpoint(tmp_path, tiny_clip_spec):
    """A killed process runs no handler: what is left is the checkpoint written with the last frame."""
    settings = tiny_settings(tiny_clip_spec, iterations=20, save_every=5)
    straight = generate(settings, tmp_path / "straight")
    run_dir = tmp_path / "killed"
    saved = tmp_path / "state-at-kill.pt"

    def snapshot_then_die(report) -> None:
        if report.step == 12:  # the checkpoint of step 10 is on disk now
            shutil.copy(run_dir / rundir.STATE_NAME, saved)
            raise KeyboardInterrupt

    generate(settings, run_dir, on_step=snapshot_then_die)
    shutil.copy(saved, run_dir / rundir.STATE_NAME)  # as if the process had died without saving
    assert torch.load(saved, weights_only=True)["step"] == 10
    resumed = resume(run_dir)
    assert resumed.image_path.read_bytes() == straight.image_path.read_bytes()


def test_resume_can_extend_a_finished_run(tmp_path, tiny_clip_spec):
    settings = tiny_settings(tiny_clip_spec, iterations=10, save_every=5)
    straight = generate(settings.replace(iterations=16), tmp_path / "straight")
    generate(settings, tmp_path / "short")
    extended = resume(tmp_path / "short", iterations=16)
    assert extended.step == 16
    assert extended.losses == straight.losses
    assert extended.image_path.read_bytes() != (tmp_path / "short" / "frames" / "000010.png").read_bytes()
    assert np.array_equal(pixels(extended.image_path), pixels(straight.image_path))


def test_outputs_frames_metadata_video_and_gif(tmp_path, tiny_clip_spec):
    settings = tiny_settings(tiny_clip_spec, iterations=30, save_every=10, video=True, gif=True)
    result = generate(settings, tmp_path / "run")
    frames = rundir.list_frames(result.run_dir)
    assert [f.name for f in frames] == ["000010.png", "000020.png", "000030.png"]
    assert [png.read_metadata(f)["step"] for f in frames] == [10, 20, 30]
    assert np.array_equal(pixels(frames[-1]), pixels(result.image_path))

    stored = png.read_metadata(result.image_path)
    assert stored["settings"] == result.settings.to_dict()
    run_json = rundir.read_run_json(result.run_dir)
    assert run_json["settings"] == stored["settings"] and len(run_json["losses"]) == 30

    assert video.count_frames(result.run_dir / rundir.VIDEO_NAME) == 3
    with Image.open(result.run_dir / rundir.GIF_NAME) as gif:
        assert gif.n_frames == 3


def test_ensemble_models_each_see_their_own_input_size(tmp_path, tiny_clip_spec, second_clip_spec):
    settings = tiny_settings(tiny_clip_spec, clip_models=[tiny_clip_spec, second_clip_spec], width=48, height=48)
    job = build_job(settings)
    image = job.generator()
    sizes = [job.guide.views(image, p).shape[-1] for p in job.guide.perceptors]
    assert sizes == [32, 48]
    result = generate(settings, tmp_path / "run")
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5])


def test_image_prompt_pulls_toward_the_picture(tmp_path, tiny_clip_spec):
    target = write_picture(tmp_path / "red.png", (220, 20, 20))
    settings = tiny_settings(tiny_clip_spec, prompts=[], image_prompts=[f"{target}:2"], generator="pixel")
    result = generate(settings, tmp_path / "run")
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5])
    perceptor = load_perceptor(tiny_clip_spec)
    with torch.no_grad():
        goal = perceptor.encode_image(png.load_image(target))
        start = perceptor.encode_image(build_job(settings).generator())
        final = perceptor.encode_image(png.load_image(result.image_path))
    assert float(final @ goal.T) > float(start @ goal.T)


def test_init_image_is_the_starting_picture(tmp_path, tiny_clip_spec):
    init = write_picture(tmp_path / "blue.png", (10, 40, 200))
    for generator in ("pixel", "fourier"):
        job = build_job(tiny_settings(tiny_clip_spec, generator=generator, init_image=str(init)))
        assert torch.allclose(job.generator(), png.load_image(init), atol=2e-3)


def test_init_weight_keeps_the_picture_near_the_init_image(tmp_path, tiny_clip_spec):
    init = write_picture(tmp_path / "blue.png", (10, 40, 200))
    base = tiny_settings(tiny_clip_spec, generator="pixel", init_image=str(init), iterations=20)
    free = generate(base, tmp_path / "free")
    anchored = generate(base.replace(init_weight=50.0), tmp_path / "anchored")
    reference = pixels(init).astype(float)
    assert np.abs(pixels(anchored.image_path) - reference).mean() < np.abs(pixels(free.image_path) - reference).mean()


def test_story_switches_prompts_at_the_right_steps(tmp_path, tiny_clip_spec):
    settings = tiny_settings(
        tiny_clip_spec, prompts=["a forest ^ a city at night ^ the sea", "oil painting"], iterations=9, story_every=3
    )
    job = build_job(settings)
    seen = []
    for step in range(9):
        job.guide.segment = job.story_segment(step)
        seen.append(sorted(t.label for t in job.guide.active(job.guide.targets[0])))
    assert seen[:3] == [["a forest", "oil painting"]] * 3
    assert seen[3:6] == [["a city at night", "oil painting"]] * 3
    assert seen[6:] == [["oil painting", "the sea"]] * 3


def test_story_spreads_over_the_run_by_default(tiny_clip_spec):
    job = build_job(tiny_settings(tiny_clip_spec, prompts=["a ^ b ^ c ^ d"], iterations=10))
    assert [job.story_segment(step) for step in range(10)] == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]


def test_story_loss_follows_the_active_segment(tmp_path, tiny_clip_spec):
    """Drawing the second half toward 'the sea' moves the picture from the forest toward the sea."""
    settings = tiny_settings(tiny_clip_spec, prompts=["a forest ^ the sea"], generator="pixel", iterations=40)
    result = generate(settings, tmp_path / "run")
    perceptor = load_perceptor(tiny_clip_spec)
    middle = png.load_image(rundir.frame_path(result.run_dir, 20))
    final = png.load_image(result.image_path)
    assert _similarity(perceptor, final, "the sea") > _similarity(perceptor, middle, "the sea")


@pytest.mark.parametrize("generator", ["pixel", "fourier"])
def test_zoom_run_writes_frames_that_fly_in_and_resumes_exactly(tmp_path, tiny_clip_spec, generator):
    settings = tiny_settings(
        tiny_clip_spec,
        generator=generator,
        iterations=12,
        save_every=2,
        zoom=True,
        zoom_every=4,
        zoom_scale=1.25,
        zoom_rotate=5,
        video=True,
    )
    straight = generate(settings, tmp_path / "straight")
    frames = rundir.list_frames(straight.run_dir)
    assert len(frames) == 6 and video.count_frames(straight.run_dir / rundir.VIDEO_NAME) == 6

    stopped = generate(settings, tmp_path / "stopped", on_step=StopAt(5, KeyboardInterrupt()))
    assert stopped.step == 5
    assert resume(tmp_path / "stopped").image_path.read_bytes() == straight.image_path.read_bytes()


def test_move_picture_zooms_about_the_centre():
    from dreamcanvas.motion import move_picture

    image = torch.zeros(1, 1, 33, 33)
    image[..., 12:21, 12:21] = 1.0  # a 9-pixel square in the middle
    zoomed = move_picture(image, scale=2.0)
    assert zoomed[0, 0, 16, 16] == 1 and zoomed.sum() > 2.5 * image.sum()
    shifted = move_picture(image, shift_x=5)
    assert torch.allclose(shifted[..., 12:21, 17:26], image[..., 12:21, 12:21])
    assert torch.allclose(move_picture(image), image, atol=1e-6)


def test_minus_one_iterations_runs_until_ctrl_c_and_keeps_the_picture(tmp_path, tiny_clip_spec):
    settings = tiny_settings(tiny_clip_spec, iterations=-1, save_every=4)
    result = generate(settings, tmp_path / "run", on_step=StopAt(9, KeyboardInterrupt()))
    assert result.step == 9 and not result.completed and len(result.losses) == 9
    assert [f.name for f in rundir.list_frames(result.run_dir)] == ["000004.png", "000008.png"]
    assert png.read_metadata(result.image_path)["step"] == 9


def test_transparent_pictures_are_seen_over_white(tmp_path):
    Image.new("RGBA", (4, 4), (10, 20, 30, 0)).save(tmp_path / "clear.png")
    assert torch.equal(png.load_image(tmp_path / "clear.png"), torch.ones(1, 3, 4, 4))
