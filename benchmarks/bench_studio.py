"""What the studio costs: a run through the page against the CLI, the server's memory, and its queue under load.

    python benchmarks/bench_studio.py                        # 3 rounds, 20 queued jobs from 4 clients
    python benchmarks/bench_studio.py --rounds 1 --jobs 8    # a smoke check in about a minute
    python benchmarks/bench_studio.py --screenshot docs/studio.png   # also the README's picture of the page

Everything is real and local: ``python -m dreamcanvas studio`` in its own process on a free port (one worker
process, the cores its threads, as the CLI uses them), Debian's chromium driven by Playwright for the page, the
CLI as a person types it, and a tiny random CLIP (the tests' architecture) so that the numbers are the studio's
overhead, not CLIP's arithmetic. Rows, interleaved round by round:

- ``cli``: ``python -m dreamcanvas generate ...`` from the command to its exit (interpreter start and imports
  included: what a person waits for).
- ``page, first run``: the first Run of a fresh server, click to the finished picture on the page (the worker
  process starts and imports torch here, once per server).
- ``page``: the same Run on the warm server, click to the finished picture shown.

The page's picture must equal the CLI's byte for byte (same settings, same threads): the row says so.
Memory: the server's resident set (``psutil``, the process and its children) at rest before any job, and at rest
after the runs, when its worker process holds torch. Queue: ``--jobs`` tiny jobs submitted through Gradio's own
client from ``--clients`` threads at once, one of them asking for a model that cannot be had offline; the
report says how many ended done and failed, whether they ran in the order the server took them, and nothing lost.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

PROMPT = "a red apple"
TINY = {"width": 16, "height": 16, "cutn": 2, "iterations": 6, "seed": 7, "save_every": 2}
"""The run of every row: small enough that what is left is the studio's and the CLI's own overhead."""
FAILING_MODEL = "vqgan_imagenet_f16_1024"
"""A registered VQGAN no offline machine has: the queue's job that fails (the others must not notice)."""
START_SECONDS = 120
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def tiny_clip(folder: Path) -> str:
    import open_clip
    import torch

    from dreamcanvas.perceptor.clip import save_local_dir

    torch.manual_seed(0)
    return f"local-dir:{save_local_dir(open_clip.model.CLIP(**TINY_CLIP), TINY_CLIP, folder)}"


# ------------------------------------------------------------------------------------------------- the server
@dataclass
class Server:
    url: str
    outputs: Path
    process: subprocess.Popen

    def rss_mib(self) -> float:
        """The server's resident memory with its worker processes."""
        root = psutil.Process(self.process.pid)
        return sum(one.memory_info().rss for one in [root, *root.children(recursive=True)]) / 2**20


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def studio_server(folder: Path, clip: str, threads: int) -> Iterator[Server]:
    import urllib.request

    port, outputs = free_port(), folder / "outputs"
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "dreamcanvas", "studio", "--outputs", str(outputs), "--port", str(port),
               "--allow-model", clip, "--method", "generate", "--threads", str(threads)]  # fmt: skip
    log = (folder / "server.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=folder,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit(f"the studio did not start: see {folder / 'server.log'}") from None
                time.sleep(0.3)
        yield Server(url, outputs, process)
    finally:
        process.terminate()
        process.wait(30)
        log.close()


# ------------------------------------------------------------------------------------------------- the rows
def cli_run(folder: Path, clip: str) -> tuple[float, bytes]:
    out = folder / f"cli-{time.monotonic_ns()}"
    flags = ["--clip", clip, "--size", str(TINY["width"]), str(TINY["height"]), "--cutn", str(TINY["cutn"]),
             "-i", str(TINY["iterations"]), "--seed", str(TINY["seed"]),
             "--save-every", str(TINY["save_every"])]  # fmt: skip
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dreamcanvas", "generate", PROMPT, *flags, "--out", str(out), "--quiet"],
                   check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL)  # fmt: skip
    return time.perf_counter() - began, (out / "final.png").read_bytes()


def open_every_panel(page: Any) -> None:
    for number in range(page.locator("[id^=panel-generate-]").count()):
        label = page.locator(f"#panel-generate-{number} > button.label-wrap")
        if "open" not in (label.get_attribute("class") or "").split():
            label.click()


def page_run(page: Any, server: Server, clip: str, values: dict[str, Any] | None = None) -> tuple[float, bytes]:
    """Fill the tab, press Run, wait for the finished picture on the page; the seconds from click to picture."""
    values = values or {"prompts": PROMPT, "clip_models": clip, **TINY}
    open_every_panel(page)
    for name, value in values.items():
        page.locator(f"#field-{name}").locator("textarea, input").first.fill(str(value))
    before = set(server.outputs.glob("job-*"))
    began = time.perf_counter()
    shown = page.locator("#generate-status .dc-status").inner_text()
    page.click("#generate-run")
    page.wait_for_function(  # done, and the status is the new job's (the page still shows the last one's)
        """shown => { const status = document.querySelector('#generate-status .dc-status');
                      return status.dataset.state === 'done' && status.innerText !== shown; }""",
        arg=shown, timeout=600_000)  # fmt: skip
    page.locator("#generate-final img").first.wait_for(state="visible")
    seconds = time.perf_counter() - began
    [folder] = set(server.outputs.glob("job-*")) - before
    return seconds, (folder / "final.png").read_bytes()


# ------------------------------------------------------------------------------------------------- the queue
def page_values(clip: str, **changes: Any) -> list[Any]:
    """The generate tab's values in its order, as Gradio's client sends them: defaults, then ``changes``."""
    from dreamcanvas.settings import GenerateSettings
    from dreamcanvas.studio.forms import Widget, form_fields, page_value

    chosen = {"prompts": PROMPT, "clip_models": clip, **TINY, **changes}
    values = []
    for field in form_fields(GenerateSettings):
        if field.widget in (Widget.PICTURE, Widget.PICTURES):
            values.append(None)
        else:
            values.append(chosen[field.name] if field.name in chosen else page_value(field, field.default))
    return values


STATUS_JOB = re.compile(r"<b>(job-\d+)</b>")
QUEUE_ROW = re.compile(r"<tr data-job='(job-\d+)'><td>[^<]*</td><td>[^<]*</td><td>(\w+)</td>")


def queue_states(client: Any) -> dict[str, str]:
    """The Queue tab's table, as the page shows it: job id -> state."""
    return dict(QUEUE_ROW.findall(client.predict(api_name="/lambda_1")))


def queue_under_load(server: Server, clip: str, jobs: int, clients: int) -> dict[str, Any]:
    from gradio_client import Client

    failing = jobs // 2
    accepted: list[tuple[int, str]] = []
    lock = threading.Lock()

    def client_submits(numbers: list[int]) -> None:
        client = Client(server.url, verbose=False)
        for number in numbers:
            changes = {"prompts": f"picture {number}"}
            if number == failing:
                changes |= {"generator": "vqgan", "vqgan_model": FAILING_MODEL}
            answer = client.predict(*page_values(clip, **changes), api_name="/submit")  # the status line (a
            job_id = STATUS_JOB.search(answer).group(1)  # State output stays on the server)
            with lock:
                accepted.append((number, job_id))

    began = time.perf_counter()
    threads = [threading.Thread(target=client_submits, args=(list(range(start, jobs, clients)),))
               for start in range(clients)]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    watcher = Client(server.url, verbose=False)
    ids = sorted(job_id for _, job_id in accepted)
    while True:
        states = queue_states(watcher)
        if all(states.get(job_id) in ("done", "failed") for job_id in ids):
            break
        time.sleep(0.3)
    seconds = time.perf_counter() - began
    done = [job_id for job_id in ids if states[job_id] == "done"]
    finished_at = {job_id: (server.outputs / job_id / "run.json").stat().st_mtime for job_id in done}
    in_order = sorted(done, key=finished_at.__getitem__) == done
    failed_ids = [job_id for job_id in ids if states[job_id] == "failed"]
    failing_id = next(job_id for number, job_id in accepted if number == failing)
    return {"submitted": jobs, "accepted": len(accepted), "done": len(done), "failed": failed_ids,
            "the failing job": failing_id, "in order": in_order, "seconds": seconds}  # fmt: skip


# ------------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--screenshot", type=Path, help="also save a picture of the page after a bundled-guide run")
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("needs Debian's chromium: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as scratch, sync_playwright() as playwright:
        folder = Path(scratch)
        clip = tiny_clip(folder / "clip")
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        times: dict[str, list[float]] = {"cli": [], "page, first run": [], "page": []}
        same_bytes, rest = True, {}
        for round_number in range(args.rounds):
            seconds, cli_bytes = cli_run(folder, clip)
            times["cli"].append(seconds)
            with studio_server(folder / f"server-{round_number}", clip, args.threads) as server:
                time.sleep(2)
                rest.setdefault("at rest, before any job", []).append(server.rss_mib())
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(server.url)
                page.wait_for_selector("#generate-run")
                for row in ("page, first run", "page"):
                    seconds, page_bytes = page_run(page, server, clip)
                    times[row].append(seconds)
                    same_bytes = same_bytes and page_bytes == cli_bytes
                time.sleep(2)
                rest.setdefault("at rest, after runs (worker alive)", []).append(server.rss_mib())
                if round_number == args.rounds - 1:
                    queue = queue_under_load(server, clip, args.jobs, args.clients)
                page.close()
        if args.screenshot:
            take_screenshot(browser, folder / "screenshot", args.screenshot, args.threads)
        browser.close()

    cli = statistics.median(times["cli"])
    print(f"{args.rounds} rounds, {args.threads} threads, torch {torch_version()}; run: {TINY}\n")
    print("| row | seconds (median) | best | vs CLI | same bytes as the CLI |\n|---|---|---|---|---|")
    for row, values in times.items():
        median = statistics.median(values)
        same = "-" if row == "cli" else ("yes" if same_bytes else "NO")
        print(f"| {row} | {median:.2f} | {min(values):.2f} | {cli / median:.2f}x | {same} |")
    print("\n| server memory | MiB (median) |\n|---|---|")
    for moment, values in rest.items():
        print(f"| {moment} | {statistics.median(values):.0f} |")
    print("\n| queue | value |\n|---|---|")
    for key, value in queue.items():
        print(f"| {key} | {value:.1f} |" if isinstance(value, float) else f"| {key} | {value} |")


def take_screenshot(browser: Any, folder: Path, target: Path, threads: int) -> None:
    """The page after a run of the bundled guide, the way a person would first see it."""
    with studio_server(folder, "bundled:guide", threads) as server:
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(server.url)
        page.wait_for_selector("#generate-run")
        values = {"prompts": "a lighthouse in a storm, oil painting", "clip_models": "bundled:guide", "width": 128,
                  "height": 128, "iterations": 120, "seed": 3, "save_every": 20}  # fmt: skip
        page_run(page, server, "bundled:guide", values)
        for number in range(1, page.locator("[id^=panel-generate-]").count()):  # the first panel open, as it starts
            page.locator(f"#panel-generate-{number} > button.label-wrap").click()
        page.evaluate("window.scrollTo(0, 0)")
        target.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(target))
        page.close()


def torch_version() -> str:
    import torch

    return torch.__version__


if __name__ == "__main__":
    main()
