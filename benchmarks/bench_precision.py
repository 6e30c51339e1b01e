"""What ``--precision auto`` is for: one training step of each trainer at its defaults, bf16 autocast against fp32.

    python benchmarks/bench_precision.py [--steps 2] [--threads 2]

bf16 pays only where the CPU has native bf16 units (AMX, AVX512-BF16); elsewhere PyTorch emulates it and a step
is many times slower. Each row is ``train_step`` itself on random pictures (warm-up step first, median of
``--steps``), both precisions side by side in one process, with the matrix-product peak of each dtype measured in
the same run. The last column says what ``auto`` picks on this CPU.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from bench_generate import matmul_peak_gflops

from dreamcanvas import precision

Step = Callable[[int], None]


def diffusion_step(chosen: str) -> tuple[Step, str]:
    from dreamcanvas.diffusion import linear_schedule
    from dreamcanvas.training.diffusion import Run, TrainDiffusionConfig, draws, train_step

    config = TrainDiffusionConfig(Path("."), Path("."), precision=chosen)
    run, schedule = Run.create(config), linear_schedule()
    pictures = torch.rand(config.batch_size, 3, config.size, config.size)
    return (lambda step: train_step(run, pictures, draws(0, step), config, schedule)), f"batch {config.batch_size}"


def gan_step(chosen: str) -> tuple[Step, str]:
    from dreamcanvas.training.gan import Run, TrainGANConfig, draws, train_step

    config = TrainGANConfig(Path("."), Path("."), precision=chosen)
    run = Run.create(config)
    pictures = torch.rand(config.batch_size, 3, config.size, config.size)
    return (lambda step: train_step(run, pictures, draws(0, step), config)), f"batch {config.batch_size}"


def vqgan_step(chosen: str) -> tuple[Step, str]:
    from dreamcanvas.training.vqgan import Run, TrainVQGANConfig, train_step

    config = TrainVQGANConfig(Path("."), Path("."), precision=chosen)
    run = Run.create(config)
    pictures = torch.rand(config.batch_size, 3, config.size, config.size)
    return (lambda step: train_step(run, pictures, config)), f"batch {config.batch_size}, before --disc-start"


def clip_step(chosen: str) -> tuple[Step, str]:
    from dreamcanvas.training.clip import TrainOptions, build_network, contrastive_step

    options = TrainOptions(Path("."), Path("."), precision=chosen)
    torch.manual_seed(0)
    network = build_network(options)
    side = network.image_size
    images = torch.rand(options.batch_size, 3, side, side)
    tokens = network.tokenizer([f"a picture of thing {i}" for i in range(options.batch_size)])
    optimizer = torch.optim.AdamW(network.model.parameters(), lr=1e-4)

    def step(_: int) -> None:
        optimizer.zero_grad(set_to_none=True)
        contrastive_step(network, images, tokens, chosen).backward()
        optimizer.step()

    return step, f"config {options.config}, batch {options.batch_size}"


TRAINERS = {"diffusion": diffusion_step, "gan": gan_step, "vqgan": vqgan_step, "clip": clip_step}


def seconds_per_step(make: Callable[[str], tuple[Step, str]], chosen: str, steps: int) -> tuple[float, str]:
    step, what = make(chosen)
    step(0)  # warm-up: oneDNN picks its kernels
    times = []
    for index in range(steps):
        start = time.perf_counter()
        step(index + 1)
        times.append(time.perf_counter() - start)
    return statistics.median(times), what


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--trainers", nargs="+", default=list(TRAINERS), choices=list(TRAINERS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fp32_peak, bf16_peak = matmul_peak_gflops(torch.float32), matmul_peak_gflops(torch.bfloat16, repeats=2)
    auto = precision.concrete_precision("auto")
    print(f"torch {torch.__version__}, {args.threads} threads, native bf16: {precision.fast_bf16_available()}, "
          f"matmul peak fp32 {fp32_peak:.1f} GFLOP/s, bf16 {bf16_peak:.2f} GFLOP/s; auto = {auto}\n")  # fmt: skip
    print("| trainer (defaults) | step | fp32 s/step | bf16 s/step | bf16 / fp32 | auto picks |")
    print("|---|---|---|---|---|---|")
    for name in args.trainers:
        fp32, what = seconds_per_step(TRAINERS[name], "fp32", args.steps)
        bf16, _ = seconds_per_step(TRAINERS[name], "bf16", args.steps)
        faster = "fp32" if fp32 <= bf16 else "bf16"
        print(f"| {name} | {what} | {fp32:.2f} | {bf16:.2f} | {bf16 / fp32:.2f}x | {auto} (faster here: {faster}) |",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
