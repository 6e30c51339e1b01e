"""Seconds per optimisation step of `dreamcanvas generate`, and how close to the machine's FLOP peak it runs.

    python benchmarks/bench_generate.py [--generators pixel fourier] [--size 256] [--cutn 32] [--steps 5]

The perceptor is the real ViT-B/32 architecture with random weights: compute does not depend on the weight
values, and nothing is downloaded. All rows come from one process, one after another, so their ratios are
comparable even on a noisy machine; the matmul peak is measured in the same run.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from dreamcanvas.engine import build_job
from dreamcanvas.perceptor.clip import random_perceptor
from dreamcanvas.settings import GenerateSettings


def matmul_peak_gflops(n: int = 2048, repeats: int = 10, dtype: torch.dtype = torch.float32) -> float:
    """Best-of-N GEMM throughput: the ceiling every other number is compared to."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def one_step(job) -> None:
    image = job.generator()
    loss = job.loss(image)
    job.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    job.optimizer.step()
    job.generator.constrain_()


def step_flops(job) -> int:
    with FlopCounterMode(display=False) as counter:
        one_step(job)
    return counter.get_total_flops()


def time_steps(job, steps: int) -> float:
    one_step(job)  # warm-up: allocator, kernels
    start = time.perf_counter()
    for _ in range(steps):
        one_step(job)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generators", nargs="+", default=["pixel", "fourier"])
    parser.add_argument("--size", type=int, nargs="+", default=[256])
    parser.add_argument("--cutn", type=int, default=32)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], help="CLIP image tower precisions")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--clip", default="ViT-B-32", help="open_clip architecture (random weights)")
    args = parser.parse_args()

    torch.manual_seed(0)
    perceptor = random_perceptor(args.clip)
    peak = matmul_peak_gflops()
    peak_bf16 = matmul_peak_gflops(dtype=torch.bfloat16)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clip} (random weights), "
          f"cutn {args.cutn}; matmul peak fp32 {peak:.1f} GFLOP/s, bf16 {peak_bf16:.1f} GFLOP/s")
    print()
    print("| generator | size | precision | s/step | GFLOP/step | GFLOP/s | % of matmul peak (same dtype) | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.size:
        for name in args.generators:
            for precision in args.precisions:
                settings = GenerateSettings(
                    prompts=["a lighthouse in a storm"], generator=name, width=size, height=size, cutn=args.cutn,
                    seed=0, clip_models=[args.clip], precision=precision,
                )
                job = build_job(settings, perceptors=[perceptor])
                flops = step_flops(job)
                seconds = time_steps(job, args.steps)
                achieved = flops / seconds / 1e9
                rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                print(f"| {name} | {size}² | {precision} | {seconds:.3f} | {flops / 1e9:.1f} | {achieved:.1f} | "
                      f"{100 * achieved / (peak_bf16 if precision == 'bf16' else peak):.0f}% | {rss:.0f} |", flush=True)


if __name__ == "__main__":
    main()
