"""BigSleep on a CPU: seconds per step of big-sleep's loop arithmetic against ``dreamcanvas generate -g biggan``.

    python benchmarks/bench_biggan.py [--sizes 256 512] [--cutn 32] [--steps 3]

Both sides draw with BigGAN-deep at the published 256 / 512 configurations (random weights, saved in the
PyTorch port's layout and read by the real loader) and judge with the ViT-B/32 architecture (random weights):
compute does not depend on the weight values, and nothing is downloaded.

* ``big-sleep``: the arithmetic of lucidrains/big-sleep's ``train_step``, as it would run on a CPU: fp32
  everywhere; BigGAN from its latents (one noise row and one sigmoid class row per layer); ``cutn`` cutouts of
  random size (N(0.8, 0.3) of the side, clipped to [0.5, 0.95]) resized to 224 by nearest neighbour; CLIP on all
  of them; its latent, class and similarity losses; backward, Adam, the moving average.
* ``dreamcanvas``: one step of the engine's own job (``build_job``), at fp32 and at bf16 (the ``auto`` precision
  on a CPU with native bf16), with the same cutout count and the engine's cutouts; ``--augs none`` for equal
  work, and the default augmentations in a last row.

Each row runs in its own subprocess (its peak RSS is its own), one after another, in one invocation; the
matmul peaks are measured in the same invocation. GFLOP a step is torch's flop counter over one step.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_generate import matmul_peak_gflops
from torch.utils.flop_counter import FlopCounterMode

ROWS = ("big-sleep", "dreamcanvas-fp32", "dreamcanvas-bf16", "dreamcanvas-bf16-augs")
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def random_biggan_dir(size: int, folder: Path) -> Path:
    """The published biggan-deep-SIZE configuration with random weights (unit spectral-norm vectors), as
    ``config.json`` + ``pytorch_model.bin``."""
    from dreamcanvas.models.biggan import BigGAN, BigGANConfig

    config = BigGANConfig.for_size(size)
    torch.manual_seed(0)
    model = BigGAN(config)
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "weight_orig"):
                module.weight_orig.normal_()
                matrix = module.weight_orig.reshape(module.weight_orig.shape[0], -1)
                module.weight_v.copy_(F.normalize(torch.randn(matrix.shape[1]), dim=0))
                module.weight_u.copy_(F.normalize(matrix @ module.weight_v, dim=0))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(config.to_json())
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder


def median_seconds(step, steps: int) -> float:
    step()  # warm-up: allocator, kernels
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def bigsleep_step_function(folder: Path, size: int, cutn: int):
    """big-sleep's ``train_step`` arithmetic (see the module docstring), fp32, as a closure."""
    from dreamcanvas.generators.biggan import SIMILARITY_WEIGHT, class_loss, latent_loss
    from dreamcanvas.models.biggan import load_biggan
    from dreamcanvas.perceptor.clip import random_perceptor

    biggan = load_biggan(f"local:{folder}")
    clip = random_perceptor("ViT-B-32").model.eval().requires_grad_(False)
    rows = biggan.generator.conditions
    normu = torch.nn.Parameter(torch.randn(rows, 128))
    cls = torch.nn.Parameter(torch.empty(rows, 1000).normal_(-3.9, 0.3))
    average = [torch.zeros_like(normu), torch.zeros_like(cls)]
    optimizer = torch.optim.Adam([normu, cls], lr=0.07)
    with torch.no_grad():
        text = clip.encode_text(torch.randint(0, 49408, (1, 77)))
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)

    def step() -> None:
        classes = torch.sigmoid(cls)
        out = (biggan(normu[None], classes[None], 1.0) + 1) / 2
        pieces = []
        for _ in range(cutn):
            side = int(size * torch.zeros(1).normal_(mean=0.8, std=0.3).clip(0.5, 0.95))
            top, left = random.randint(0, size - side), random.randint(0, size - side)
            pieces.append(F.interpolate(out[:, :, top : top + side, left : left + side], (224, 224), mode="nearest"))
        embeds = clip.encode_image((torch.cat(pieces) - mean) / std)
        similarity = -SIMILARITY_WEIGHT * torch.cosine_similarity(text, embeds, dim=-1).mean()
        loss = latent_loss(normu) + class_loss(classes) + similarity
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for kept, now in zip(average, (normu, cls), strict=True):
                kept.mul_(0.99).add_(now, alpha=0.01)
        optimizer.zero_grad()

    return step


def dreamcanvas_step_function(folder: Path, size: int, cutn: int, precision: str, augs: bool):
    from dreamcanvas.engine import _advance, build_job
    from dreamcanvas.perceptor.clip import random_perceptor
    from dreamcanvas.settings import DEFAULT_AUGS, GenerateSettings

    settings = GenerateSettings(prompts=["a lighthouse in a storm"], generator="biggan",
                                biggan_model=f"local:{folder}", width=size, height=size, cutn=cutn, seed=0,
                                clip_models=["ViT-B-32"], precision=precision,
                                augs=list(DEFAULT_AUGS) if augs else [])  # fmt: skip
    job = build_job(settings, perceptors=[random_perceptor("ViT-B-32")])
    counter = [0]

    def step() -> None:
        _advance(job, job.generator(), counter[0])
        counter[0] += 1

    return step


def measure_row(row: str, folder: Path, size: int, cutn: int, steps: int) -> dict:
    if row == "big-sleep":
        step = bigsleep_step_function(folder, size, cutn)
    else:
        precision = "bf16" if "bf16" in row else "fp32"
        step = dreamcanvas_step_function(folder, size, cutn, precision, row.endswith("augs"))
    with FlopCounterMode(display=False) as counter:
        step()
    seconds = median_seconds(step, steps)
    return {"seconds": seconds, "flops": counter.get_total_flops(),
            "rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--cutn", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("--row", help=argparse.SUPPRESS)  # internal: ROW,SIZE,FOLDER -> one JSON line
    args = parser.parse_args()
    if args.row:
        row, size, folder = args.row.split(",", 2)
        print(json.dumps(measure_row(row, Path(folder), int(size), args.cutn, args.steps)))
        return

    peaks = {"fp32": matmul_peak_gflops(torch.float32), "bf16": matmul_peak_gflops(torch.bfloat16)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, ViT-B/32 and BigGAN-deep random weights, "
          f"cutn {args.cutn}, median of {args.steps} steps after one; matmul peak fp32 {peaks['fp32']:.0f}, "
          f"bf16 {peaks['bf16']:.0f} GFLOP/s\n")  # fmt: skip
    print("| BigGAN | row | s / step | vs big-sleep | GFLOP / step | GFLOP/s | % peak (its dtype) | peak RSS |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            folder = random_biggan_dir(size, Path(tmp) / f"biggan-deep-{size}")
            reference = None
            for row in args.rows:
                command = [sys.executable, __file__, "--row", f"{row},{size},{folder}", "--cutn", str(args.cutn),
                           "--steps", str(args.steps)]  # fmt: skip
                out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
                result = json.loads(out.strip().splitlines()[-1])
                reference = reference or (result["seconds"] if row == "big-sleep" else None)
                ratio = f"{reference / result['seconds']:.2f}x" if reference else "-"
                rate = result["flops"] / result["seconds"] / 1e9
                peak = peaks["bf16" if "bf16" in row else "fp32"]
                cells = [f"deep-{size}", row, f"{result['seconds']:.2f}", ratio, f"{result['flops'] / 1e9:.0f}",
                         f"{rate:.0f}", f"{100 * rate / peak:.0f} %", f"{result['rss_gib']:.2f} GiB"]  # fmt: skip
                print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
