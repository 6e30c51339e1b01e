"""``dreamcanvas train gan``: pictures per second, DCGAN against the data-efficient (lightweight) architecture.

    python benchmarks/bench_gan.py [--size 64] [--width 32 16] [--batch-size 32] [--steps 5]

One training step (a discriminator update, a generator update, DiffAugment, the EMA) of ``train_step`` itself,
on random pictures, for each architecture, width and precision, in one process, side by side. GFLOP a step is
torch's flop counter over one step (convolutions and matmuls); % peak is that rate over the best GEMM rate of the
same dtype measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from bench_generate import matmul_peak_gflops
from torch.utils.flop_counter import FlopCounterMode

from dreamcanvas.training.gan import Run, TrainGANConfig, draws, train_step


def measure(architecture: str, width: int, precision: str, args: argparse.Namespace) -> dict[str, float]:
    config = TrainGANConfig(Path("."), Path("."), size=args.size, architecture=architecture, width=width,
                            batch_size=args.batch_size, precision=precision)  # fmt: skip
    run = Run.create(config)
    pictures = torch.rand(args.batch_size, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    train_step(run, pictures, draws(0, 0), config)  # warm-up: oneDNN picks its kernels
    with FlopCounterMode(display=False) as counter:
        train_step(run, pictures, draws(0, 1), config)
    seconds = []
    for step in range(args.steps):
        start = time.perf_counter()
        train_step(run, pictures, draws(0, step + 2), config)
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    return {"seconds": median, "images_per_s": args.batch_size / median, "gflop": counter.get_total_flops() / 1e9,
            "generator": sum(p.numel() for p in run.generator.parameters()) / 1e6,
            "discriminator": sum(p.numel() for p in run.discriminator.parameters()) / 1e6}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--width", type=int, nargs="+", default=[32, 16])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    args = parser.parse_args()
    peaks = {name: matmul_peak_gflops(dtype) for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    print(f"{torch.get_num_threads()} threads; matmul peak fp32 {peaks['fp32']:.0f}, bf16 {peaks['bf16']:.0f} GFLOP/s")
    print("| architecture | width | precision | G / D params (M) | s / step | pictures / s | GFLOP / step | "
          "GFLOP/s | % peak |")  # fmt: skip
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for width in args.width:
        for architecture in ("dcgan", "lightweight"):
            for precision in args.precision:
                row = measure(architecture, width, precision, args)
                rate = row["gflop"] / row["seconds"]
                print(f"| {architecture} | {width} | {precision} | {row['generator']:.2f} / {row['discriminator']:.2f} "
                      f"| {row['seconds']:.2f} | {row['images_per_s']:.1f} | {row['gflop']:.0f} | {rate:.0f} | "
                      f"{100 * rate / peaks[precision]:.0f} % |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
