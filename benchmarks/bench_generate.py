"""Seconds per optimisation step of `dreamcanvas generate`, where the time goes, and how close to the
machine's FLOP peak it runs.

    python benchmarks/bench_generate.py                       # pixel + fourier at 256², fp32 and bf16
    python benchmarks/bench_generate.py --generators vqgan --sizes 256 512

The perceptor is the real ViT-B/32 architecture and the VQGAN the real vqgan_imagenet_f16_16384 one, both
with random weights: compute does not depend on weight values, and nothing is downloaded. Each row runs in
a fresh subprocess (so its peak RAM is its own), one after another, in one invocation: compare ratios
within one table, since this machine is noisy. The matmul peaks are measured in the same invocation.

fp32 is the original VQGAN+CLIP notebook's arithmetic (one decode per step, fp32 CLIP on every cutout);
bf16 is dreamcanvas's default on CPUs with native bf16.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode


def matmul_peak_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    """Best-of-N GEMM throughput: the ceiling every other number is compared to."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def random_vqgan_dir(root: Path) -> str:
    """The real f16_16384 architecture with random weights, saved as yaml + ckpt for the real loader."""
    from dreamcanvas.models.vqgan import IMAGENET_F16_16384_DDCONFIG, VQGAN, VQGANConfig, save_vqgan, taming_config

    torch.manual_seed(0)
    model = VQGAN(VQGANConfig(dict(IMAGENET_F16_16384_DDCONFIG), 16384, 256, False))
    save_vqgan(model, taming_config(model.config), root / "model.yaml", root / "model.ckpt")
    return f"local:{root}"


def one_step(job) -> None:
    image = job.generator()
    loss = job.loss(image)
    job.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    job.optimizer.step()
    job.generator.constrain_()


def generator_only(job) -> None:
    """The generator's share of a step: render, and backpropagate a picture-shaped gradient to its parameters."""
    image = job.generator()
    image.backward(torch.ones_like(image))


def seconds(fn, job, steps: int) -> float:
    """Median seconds per call after one warm-up call: a busy core spoils a step, not the row."""
    fn(job)  # warm-up: allocator, kernels
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn(job)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def measure_row(generator: str, size: int, precision: str, cutn: int, steps: int, clip: str) -> dict:
    """Runs in a subprocess: one configuration, its timings, FLOPs and peak RAM."""
    from dreamcanvas.engine import build_job
    from dreamcanvas.perceptor.clip import random_perceptor
    from dreamcanvas.settings import GenerateSettings

    with tempfile.TemporaryDirectory() as tmp:
        vqgan_model = random_vqgan_dir(Path(tmp)) if generator == "vqgan" else "vqgan_imagenet_f16_16384"
        settings = GenerateSettings(
            prompts=["a lighthouse in a storm"],
            generator=generator,
            width=size,
            height=size,
            cutn=cutn,
            seed=0,
            clip_models=[clip],
            precision=precision,
            vqgan_model=vqgan_model,
        )
        job = build_job(settings, perceptors=[random_perceptor(clip)])
    with FlopCounterMode(display=False) as counter:
        one_step(job)
    step = seconds(one_step, job, steps)
    render = seconds(generator_only, job, steps)
    return {
        "step": step,
        "generator": render,
        "flops": counter.get_total_flops(),
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generators", nargs="+", default=["pixel", "fourier"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], help="CLIP image tower precisions")
    parser.add_argument("--cutn", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--clip", default="ViT-B-32", help="open_clip architecture (random weights)")
    parser.add_argument("--row", help=argparse.SUPPRESS)  # internal: measure one row, print JSON
    args = parser.parse_args()

    if args.row:
        generator, size, precision = args.row.split(",")
        print(json.dumps(measure_row(generator, int(size), precision, args.cutn, args.steps, args.clip)))
        return

    peaks = {"fp32": matmul_peak_gflops(torch.float32), "bf16": matmul_peak_gflops(torch.bfloat16)}
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clip} (random weights), "
        f"cutn {args.cutn}, {args.steps} timed steps per row; "
        f"matmul peak fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s"
    )
    print()
    print(
        "| generator | size | precision | s/step | generator s | CLIP+rest s | GFLOP/step | GFLOP/s "
        "| % of matmul peak (same dtype) | peak RSS MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        for generator in args.generators:
            for precision in args.precisions:
                row = f"{generator},{size},{precision}"
                command = [
                    sys.executable,
                    __file__,
                    "--row",
                    row,
                    "--cutn",
                    str(args.cutn),
                    "--steps",
                    str(args.steps),
                    "--clip",
                    args.clip,
                ]
                out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
                r = json.loads(out.strip().splitlines()[-1])
                achieved = r["flops"] / r["step"] / 1e9
                print(
                    f"| {generator} | {size}² | {precision} | {r['step']:.2f} | {r['generator']:.2f} | "
                    f"{r['step'] - r['generator']:.2f} | {r['flops'] / 1e9:.0f} | {achieved:.0f} | "
                    f"{100 * achieved / peaks[precision]:.0f}% | {r['rss_mib']:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
