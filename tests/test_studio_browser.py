"""The studio in a real browser: Debian's chromium, driven by Playwright, against the real server.

The server is ``python -m dreamcanvas studio`` in its own process on a free local port, with a tiny random CLIP
allowed by ``--allow-model`` (nothing downloaded, nothing faked). The tests do what a person does: fill the
fields, press Run, watch the progress reach 100 % and the picture appear, Stop and Resume, open the gallery,
drop a file that is not a picture; and they ask the server for files outside its outputs folder.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import pixels, random_compact
from PIL import Image

from dreamcanvas import engine
from dreamcanvas.outputs import rundir
from dreamcanvas.settings import GenerateSettings
from dreamcanvas.upscale.run import upscale_run
from dreamcanvas.upscale.settings import UpscaleSettings

sync_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("gradio")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium)")

START_SECONDS = 90
"""How long the server may take to come up (imports, Gradio's start) on a slow, busy CI machine."""
RUN_SECONDS = 120
"""How long a tiny run may take through the page, worker start included."""
PAGE_SETTINGS = {"prompts": "a red apple", "width": "16", "height": "16", "cutn": "2", "iterations": "6",
                 "seed": "7", "save_every": "2"}  # fmt: skip
"""What the first test types in (and the CLIP model, the spec of the fixture's tiny model)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_page(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the studio exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise AssertionError(f"the studio did not answer within {START_SECONDS} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def upscaler(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A random SRVGGNetCompact x2 in Real-ESRGAN's file layout, as a model spec."""
    return f"local:{random_compact(tmp_path_factory.mktemp('upscaler') / 'compact-x2.pth')}"


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory, tiny_clip_spec: str, upscaler: str) -> Iterator[tuple[str, Path]]:
    """The real server on a free port, every method's tab: ``(url, outputs folder)``. One thread per job, as this
    test process uses, so that a picture drawn through the page can be compared byte for byte with one drawn here."""
    folder = tmp_path_factory.mktemp("studio")
    outputs, log = folder / "outputs", folder / "server.log"
    port = free_port()
    command = [sys.executable, "-m", "dreamcanvas", "studio", "--outputs", str(outputs), "--port", str(port),
               "--allow-model", tiny_clip_spec, "--allow-model", upscaler, "--threads", "1"]  # fmt: skip
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    with log.open("w") as sink:
        server = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=environment, cwd=folder)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_page(url, server, log)
        yield url, outputs
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: object, studio: tuple[str, Path]) -> Iterator[object]:
    opened = browser.new_page(viewport={"width": 1400, "height": 1000})
    opened.goto(studio[0])
    opened.wait_for_selector("#generate-run")
    yield opened
    opened.close()


# --------------------------------------------------------------------------------------------- what a person does
def open_every_panel(page: object, method: str = "generate") -> None:
    """Gradio draws a closed accordion's fields only once it is opened."""
    for number in range(page.locator(f"[id^=panel-{method}-]").count()):
        label = page.locator(f"#panel-{method}-{number} > button.label-wrap")
        if "open" not in (label.get_attribute("class") or "").split():
            label.click()


def fill(page: object, values: dict[str, str], method: str = "generate") -> None:
    open_every_panel(page, method)
    tab = page.locator(f"#tab-{method}")
    for name, value in values.items():
        tab.locator(f"#field-{name}").locator("textarea, input").first.fill(value)


def status_of(page: object, method: str = "generate") -> object:
    return page.locator(f"#{method}-status .dc-status")


def wait_for_state(page: object, state: str, method: str = "generate") -> None:
    page.wait_for_selector(f"#{method}-status .dc-status[data-state='{state}']", timeout=RUN_SECONDS * 1000)


def newest_job(outputs: Path) -> Path:
    return max((path for path in outputs.iterdir() if path.name.startswith("job-")), key=lambda path: path.name)


# --------------------------------------------------------------------------------------------- the tests
def test_a_run_from_the_page_reaches_100_percent_and_draws_what_the_engine_draws(
    page: object, studio: tuple[str, Path], tiny_clip_spec: str, tmp_path: Path
) -> None:
    fill(page, {**PAGE_SETTINGS, "clip_models": tiny_clip_spec})
    page.click("#generate-run")
    wait_for_state(page, "done")
    assert status_of(page).get_attribute("data-percent") == "100"
    page.locator("#generate-final img").first.wait_for(state="visible")
    folder = newest_job(studio[1])

    torch.set_num_threads(1)
    settings = GenerateSettings(prompts=["a red apple"], clip_models=[tiny_clip_spec], width=16, height=16, cutn=2,
                                iterations=6, seed=7, save_every=2)  # fmt: skip
    engine.generate(settings, tmp_path / "direct")
    assert (folder / rundir.FINAL_NAME).read_bytes() == (tmp_path / "direct" / rundir.FINAL_NAME).read_bytes()
    assert [path.name for path in rundir.list_frames(folder)] == ["000002.png", "000004.png", "000006.png"]


def test_stop_keeps_a_resumable_run_and_resume_finishes_it(page: object, studio: tuple[str, Path],
                                                            tiny_clip_spec: str) -> None:  # fmt: skip
    fill(page, {**PAGE_SETTINGS, "clip_models": tiny_clip_spec, "iterations": "400", "save_every": "20"})
    page.click("#generate-run")
    page.wait_for_selector("#generate-status .dc-status[data-state='running']:not([data-percent='0'])",
                           timeout=RUN_SECONDS * 1000)  # fmt: skip
    page.click("#generate-stop")
    wait_for_state(page, "stopped")
    folder = newest_job(studio[1])
    stopped = rundir.read_run_json(folder)
    assert 0 < stopped["step"] < 400
    assert (folder / rundir.STATE_NAME).is_file()  # the checkpoint Resume carries on from

    page.click("#generate-resume")
    wait_for_state(page, "done")
    finished = rundir.read_run_json(folder)
    assert finished["step"] == 400
    assert (folder / rundir.FINAL_NAME).is_file()


def test_the_gallery_shows_a_past_run_with_its_picture_and_settings(page: object, studio: tuple[str, Path],
                                                                     tiny_clip_spec: str) -> None:  # fmt: skip
    fill(page, {**PAGE_SETTINGS, "clip_models": tiny_clip_spec, "prompts": "a lighthouse at dusk"})
    page.click("#generate-run")
    wait_for_state(page, "done")
    job_id = newest_job(studio[1]).name

    page.click("#tab-gallery-button")
    page.click("#gallery-refresh")
    page.locator("#gallery-run input").click()
    page.get_by_role("option", name=job_id, exact=False).first.click()
    page.locator("#gallery-picture img").first.wait_for(state="visible")
    assert "a lighthouse at dusk" in page.locator("#gallery-settings").inner_text()


def test_a_file_that_is_not_a_picture_is_one_line_on_the_page_and_nothing_is_written(
    page: object, studio: tuple[str, Path], tiny_clip_spec: str, tmp_path: Path
) -> None:
    outputs = studio[1]
    before = sorted(path.name for path in outputs.rglob("*"))
    fake = tmp_path / "holiday.png"
    fake.write_text("#!/bin/sh\necho this is not a picture\n")
    fill(page, {**PAGE_SETTINGS, "clip_models": tiny_clip_spec})
    page.locator("#field-init_image input[type=file]").set_input_files(str(fake))
    page.locator("#field-init_image").get_by_text("holiday.png").first.wait_for()
    page.click("#generate-run")
    error = page.locator(".toast-body").first
    error.wait_for(timeout=30_000)
    assert "holiday.png is not a picture that can be read" in error.inner_text()
    assert sorted(path.name for path in outputs.rglob("*")) == before


def test_the_server_serves_no_file_outside_its_outputs_folder(studio: tuple[str, Path], tiny_clip_dir: Path) -> None:
    url, outputs = studio
    inside = outputs / "probe" / rundir.FINAL_NAME  # a file where a run's picture would be: served
    inside.parent.mkdir(parents=True, exist_ok=True)
    inside.write_bytes(b"a picture's bytes")
    outside = [Path("/etc/passwd"), tiny_clip_dir / "open_clip_config.json", outputs / ".." / "server.log"]
    for path in outside:
        assert path.exists()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}gradio_api/file={path}", timeout=10)
        assert refused.value.code == 403, path
    with urllib.request.urlopen(f"{url}gradio_api/file={inside}", timeout=10) as served:
        assert served.read() == inside.read_bytes()


def test_another_methods_tab_takes_an_upload_and_draws_what_its_api_draws(
    page: object, studio: tuple[str, Path], upscaler: str, tmp_path: Path
) -> None:
    """The upscale tab, made from its settings record alone: the picture goes in as an upload, the model by the
    spec the server allowed, and the result is upscale's own (the checked copy of the upload is what it read)."""
    picture = tmp_path / "small.png"
    y, x = np.mgrid[0:14, 0:20]
    Image.fromarray(np.stack([x * 12, y * 17, 255 - x * 9], axis=-1).astype(np.uint8)).save(picture)
    page.click("#tab-upscale-button")
    tab = page.locator("#tab-upscale")
    tab.locator("#field-image input[type=file]").set_input_files(str(picture))
    tab.locator("#field-image").get_by_text("small.png").first.wait_for()
    fill(page, {"model": upscaler, "tile": "8", "tile_pad": "2"}, method="upscale")
    page.keyboard.press("Enter")  # the model box is a dropdown that takes a typed value once it is confirmed
    page.click("#upscale-run")
    wait_for_state(page, "done", method="upscale")
    page.locator("#upscale-final img").first.wait_for(state="visible")
    folder = newest_job(studio[1])
    made = rundir.read_run_json(folder)["settings"]
    assert Path(made["image"]).parent == studio[1] / "uploads"  # the run read the studio's checked copy

    torch.set_num_threads(1)
    upscale_run(UpscaleSettings(image=str(picture), model=upscaler, tile=8, tile_pad=2), tmp_path / "direct")
    # the pixels, not the file's bytes: the stored settings name the upload's copy, not the original
    assert (pixels(folder / rundir.FINAL_NAME) == pixels(tmp_path / "direct" / rundir.FINAL_NAME)).all()
    assert pixels(folder / rundir.FINAL_NAME).shape[:2] == (28, 40)


def test_a_dropped_picture_fills_the_tab_with_the_settings_that_made_it(
    page: object, studio: tuple[str, Path], tiny_clip_spec: str, tmp_path: Path
) -> None:
    """Make again: a picture dreamcanvas made, dropped on its tab, brings back every setting it was made with."""
    fill(page, {**PAGE_SETTINGS, "clip_models": tiny_clip_spec, "prompts": "a windmill:2 | fog:0.5", "seed": "41"})
    page.click("#generate-run")
    wait_for_state(page, "done")
    dropped = tmp_path / "made-earlier.png"
    dropped.write_bytes((newest_job(studio[1]) / rundir.FINAL_NAME).read_bytes())

    page.reload()
    page.wait_for_selector("#generate-run")
    open_every_panel(page)
    assert page.locator("#field-seed input").first.input_value() == "-1"  # the page's own default, to begin with
    page.locator("#generate-remake input[type=file]").set_input_files(str(dropped))
    prompts = page.locator("#field-prompts textarea").first
    page.wait_for_function("box => box.value !== ''", arg=prompts.element_handle(), timeout=30_000)
    assert prompts.input_value() == "a windmill:2 | fog:0.5"
    assert page.locator("#field-seed input").first.input_value() == "41"
    assert page.locator("#field-clip_models textarea").first.input_value() == tiny_clip_spec
