"""Peak memory of real runs against :mod:`dreamcanvas.memory`'s estimate: where its coefficients come from.

    python benchmarks/bench_memory.py                    # every configuration (about 7 minutes on 2 cores)
    python benchmarks/bench_memory.py --only fourier vqgan --parts

Every row runs the real command (``python -m dreamcanvas generate ...``, ``train clip``, ``train vqgan``) in a
fresh child process, with one thread and a few steps, and reads that child's own peak RSS (``VmHWM``, the
kernel's high-water mark of its resident memory), which the child writes at exit. The estimate is computed
from the same settings, before anything is loaded, exactly as the CLI computes it. It must stay above the
measurement (ratio >= 1) without being absurd (ratio <= ~1.6). Repeated runs of one row differ by up to ~10 %
(most with ViT-B/32), so look at the smallest ratio over a few invocations before lowering a coefficient.

Nothing is downloaded. Besides the bundled guide and VQGAN, the real ViT-B/32 and RN50 CLIP architectures
and the real vqgan_imagenet_f16_16384 VQGAN are measured with random weights, saved to a temporary folder
in the layouts ``--clip local-dir:`` and ``--vqgan-model local:`` read: memory does not depend on weight
values.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from dreamcanvas.memory import MemoryEstimate, estimate_generate, estimate_train_clip, estimate_train_vqgan
from dreamcanvas.settings import GenerateSettings
from dreamcanvas.training.clip import TrainOptions
from dreamcanvas.training.vqgan import TrainVQGANConfig

PROMPT = "a lighthouse in a storm"
GUIDE = "bundled:guide"
TINY_VQGAN = "bundled:vqgan"
FEW_STEPS = ["--iterations", "3", "--save-every", "100", "--quiet"]
CLIP_PICTURES = 64
VQGAN_PICTURES = 48


@dataclass
class Case:
    """One measured configuration: a command kind and the settings fields it changes."""

    name: str
    kind: str  # "generate", "train clip" or "train vqgan"
    fields: dict[str, Any] = field(default_factory=dict)


def cases(assets: dict[str, str]) -> list[Case]:
    vit_b32, rn50, f16 = assets["vit-b-32"], assets["rn50"], assets["f16_16384"]

    def gen(name: str, **fields: Any) -> Case:
        fields.setdefault("clip_models", [GUIDE])
        return Case(name, "generate", fields)

    return [
        gen("fourier 128² cutn 8", generator="fourier", width=128, height=128, cutn=8),
        gen("fourier 128² cutn 32", generator="fourier", width=128, height=128, cutn=32),
        gen("fourier 512² cutn 32", generator="fourier", width=512, height=512, cutn=32),
        gen("fourier 1536² cutn 8", generator="fourier", width=1536, height=1536, cutn=8),
        gen("fourier 128² cutn 256", generator="fourier", width=128, height=128, cutn=256),
        gen("pixel 256² cutn 32", generator="pixel", width=256, height=256, cutn=32),
        gen("pixel 2048² cutn 8", generator="pixel", width=2048, height=2048, cutn=8),
        gen("vqgan bundled 128²", generator="vqgan", width=128, height=128, vqgan_model=TINY_VQGAN),
        gen("vqgan bundled 256²", generator="vqgan", width=256, height=256, vqgan_model=TINY_VQGAN),
        gen(
            "vqgan bundled 512² fp32",
            generator="vqgan",
            width=512,
            height=512,
            vqgan_model=TINY_VQGAN,
            precision="fp32",
        ),
        gen("vqgan f16_16384 256² cutn 8", generator="vqgan", width=256, height=256, cutn=8, vqgan_model=f16),
        gen("fourier 256² ViT-B-32 cutn 8", width=256, height=256, cutn=8, clip_models=[vit_b32]),
        gen("fourier 256² ViT-B-32 cutn 32", width=256, height=256, cutn=32, clip_models=[vit_b32]),
        gen(
            "fourier 256² ViT-B-32 cutn 32 fp32",
            width=256,
            height=256,
            cutn=32,
            clip_models=[vit_b32],
            precision="fp32",
        ),
        gen("fourier 256² RN50 cutn 8", width=256, height=256, cutn=8, clip_models=[rn50]),
        gen("fourier 256² guide + ViT-B-32", width=256, height=256, cutn=16, clip_models=[GUIDE, vit_b32]),
        Case("train clip tiny batch 32", "train clip", {"config": "tiny", "batch_size": 32}),
        Case("train clip small batch 64", "train clip", {"config": "small", "batch_size": 64}),
        Case("train vqgan 64² batch 8", "train vqgan", {"size": 64, "batch_size": 8}),
        Case("train vqgan 128² batch 4", "train vqgan", {"size": 128, "batch_size": 4}),
    ]


# ----------------------------------------------------------------------------------------- assets
def random_clip_dir(arch: str, root: Path) -> str:
    """An open_clip architecture with random weights, in the local-dir layout ``--clip`` loads."""
    import open_clip
    import torch

    from dreamcanvas.perceptor.clip import save_local_dir

    torch.manual_seed(0)
    model = open_clip.create_model(arch, pretrained=None)
    return f"local-dir:{save_local_dir(model, open_clip.get_model_config(arch), root / arch)}"


def random_vqgan_dir(root: Path) -> str:
    import torch

    from dreamcanvas.models.vqgan import IMAGENET_F16_16384_DDCONFIG, VQGAN, VQGANConfig, save_vqgan, taming_config

    torch.manual_seed(0)
    model = VQGAN(VQGANConfig(dict(IMAGENET_F16_16384_DDCONFIG), 16384, 256, False))
    folder = root / "f16_16384"
    save_vqgan(model, taming_config(model.config), folder / "model.yaml", folder / "model.ckpt")
    return f"local:{folder}"


def shape_pictures(folder: Path, count: int, size: tuple[int, int], captions: bool) -> Path:
    """Coloured discs and squares on white (and a captions.jsonl for train clip)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    colours = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 170, 60), "yellow": (240, 210, 40)}
    lines = []
    for index in range(count):
        colour = list(colours)[index % len(colours)]
        picture = Image.new("RGB", size, (255, 255, 255))
        r = rng.randrange(size[1] // 6, size[1] // 3)
        x, y = rng.randrange(r, size[0] - r), rng.randrange(r, size[1] - r)
        shape = "disc" if index % 2 else "square"
        (ImageDraw.Draw(picture).ellipse if index % 2 else ImageDraw.Draw(picture).rectangle)(
            (x - r, y - r, x + r, y + r), fill=colours[colour]
        )
        picture.save(folder / f"{index:03d}.png")
        lines.append(json.dumps({"file": f"{index:03d}.png", "caption": f"a {colour} {shape}", "split": "a"}))
    if captions:
        (folder / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return folder


# ----------------------------------------------------------------------------------------- commands
def flags(fields: dict[str, Any]) -> list[str]:
    """Settings fields as command-line flags (``batch_size`` -> ``--batch-size``)."""
    args: list[str] = []
    for name, value in fields.items():
        if name == "clip_models":
            for spec in value:
                args += ["--clip", spec]
        elif name == "width":
            args += ["--size", str(fields["width"]), str(fields["height"])]
        elif name != "height":
            args += [f"--{name.replace('_', '-')}", str(value)]
    return args


def command_and_estimate(case: Case, work: Path, data: dict[str, Path]) -> tuple[list[str], MemoryEstimate]:
    out = work / case.name.replace(" ", "_").replace("²", "")
    if case.kind == "generate":
        settings = GenerateSettings(prompts=[PROMPT], **case.fields)
        return ["generate", PROMPT, *flags(case.fields), *FEW_STEPS, "--seed", "0", "--out", str(out)], (
            estimate_generate(settings)
        )
    if case.kind == "train clip":
        options = TrainOptions(data["clip"], out, max_steps=3, threads=1, **case.fields)
        command = ["train", "clip", str(data["clip"]), "--out", str(out), "--max-steps", "3", "--threads", "1"]
        return [*command, *flags(case.fields), "--quiet"], estimate_train_clip(options, CLIP_PICTURES)
    config = TrainVQGANConfig(data["vqgan"], out, steps=3, disc_start=0, threads=1, **case.fields)
    command = ["train", "vqgan", str(data["vqgan"]), "--out", str(out), "--steps", "3", "--disc-start", "0"]
    return [*command, "--threads", "1", *flags(case.fields), "--quiet"], estimate_train_vqgan(config, VQGAN_PICTURES)


REPORT_PEAK = """
import atexit, os, runpy, sys

def report():
    status = open("/proc/self/status").read()
    peak_kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
    with open(os.environ["BENCH_MEMORY_PEAK_FILE"], "w") as file:
        file.write(peak_kib)

atexit.register(report)
sys.argv = ["dreamcanvas", *sys.argv[1:]]
runpy.run_module("dreamcanvas", run_name="__main__")
"""
"""Runs the CLI in a child that writes its own VmHWM at exit. (``wait4``'s ru_maxrss would not do: a child
started with vfork is charged the parent's resident set as it was before ``exec``.)"""


def peak_rss(arguments: list[str], work: Path) -> int:
    """Bytes: the child's peak resident set (VmHWM), the kernel's high-water mark of that one process."""
    peak_file = work / "peak.txt"
    peak_file.unlink(missing_ok=True)
    environment = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "BENCH_MEMORY_PEAK_FILE": str(peak_file),
    }
    done = subprocess.run(
        [sys.executable, "-c", REPORT_PEAK, *arguments], env=environment, capture_output=True, text=True
    )
    if done.returncode or not peak_file.is_file():
        raise RuntimeError(f"{' '.join(arguments)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return int(peak_file.read_text()) * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", help="run only the rows whose name contains one of these words")
    parser.add_argument("--parts", action="store_true", help="also print the estimate's parts")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        work = Path(tmp)
        wanted = args.only or []
        chosen_names = [c.name for c in cases({"vit-b-32": "", "rn50": "", "f16_16384": ""})]
        if wanted:
            chosen_names = [name for name in chosen_names if any(word in name for word in wanted)]

        def needed(word: str) -> bool:
            return any(word in name for name in chosen_names)

        assets = {
            "vit-b-32": random_clip_dir("ViT-B-32", work) if needed("ViT-B-32") else "",
            "rn50": random_clip_dir("RN50", work) if needed("RN50") else "",
            "f16_16384": random_vqgan_dir(work) if needed("f16_16384") else "",
        }
        data = {
            "clip": shape_pictures(work / "clip-data", CLIP_PICTURES, (64, 64), captions=True),
            "vqgan": shape_pictures(work / "vqgan-data", VQGAN_PICTURES, (160, 128), captions=False),
        }
        print("peak RSS of a fresh `python -m dreamcanvas ...` per row (1 thread, 3 steps) vs dreamcanvas.memory")
        print()
        print("| configuration | estimate MB | measured MB | estimate / measured |")
        print("|---|---|---|---|")
        for case in cases(assets):
            if case.name not in chosen_names:
                continue
            arguments, estimate = command_and_estimate(case, work, data)
            measured = peak_rss(arguments, work)
            ratio = estimate.total_bytes / measured
            print(
                f"| {case.name} | {estimate.total_bytes / 1e6:,.0f} | {measured / 1e6:,.0f} | {ratio:.2f} |", flush=True
            )
            if args.parts:
                parts = ", ".join(f"{name} {size / 1e6:,.0f}" for name, size in estimate.parts.items())
                print(f"|   parts: {parts} | | | |", flush=True)


if __name__ == "__main__":
    main()
