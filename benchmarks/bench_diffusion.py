"""Seconds per guided step of CLIP-guided diffusion: the notebook's arithmetic against dreamcanvas's.

    python benchmarks/bench_diffusion.py                  # the 256 model's architecture, ViT-B/32, 16 cutouts
    python benchmarks/bench_diffusion.py --size 128 --steps 2
    python benchmarks/bench_diffusion.py --picture 50     # also a whole picture: 50 DDIM steps, secondary model

The UNet is the real ``256x256_diffusion_uncond`` architecture (552.8 M parameters) and the perceptor the real
ViT-B/32, both with random weights: compute does not depend on weight values, and nothing is downloaded. Each row
runs in a fresh subprocess (its peak RSS is its own), one after another in one invocation, with the matmul
peaks measured in the same invocation: compare ratios within one table.

Rows:
- ``notebook``: the first CLIP Guided Diffusion notebook's step: ``cond_fn`` runs the UNet forward with
  gradients and backward to x, then ``p_sample`` runs the UNet forward again for the step itself; fp32, NCHW.
- ``dreamcanvas fp32``: one forward with gradients and one backward; the step reuses that forward's output.
- ``dreamcanvas auto``: the same in bf16 with channels_last where the CPU has native bf16 (the default).
- ``dreamcanvas auto, secondary``: Disco's secondary model (13.8 M parameters, random weights) is differentiated
  instead; the UNet runs forward only.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from bench_generate import matmul_peak_gflops
from torch.utils.flop_counter import FlopCounterMode

MODEL = "256x256_diffusion_uncond"
ROWS = ("notebook", "dreamcanvas fp32", "dreamcanvas auto", "dreamcanvas auto, secondary")


def build_job_with_random_unet(size: int, cutn: int, precision: str, clip: str, secondary: bool,
                               sampler: str = "ddpm", iterations: int = 50):  # fmt: skip
    """The engine's job for ``--generator diffusion``, its networks the real architectures with random weights."""
    import dreamcanvas.generators.diffusion as diffusion_generator
    from dreamcanvas.engine import build_job
    from dreamcanvas.models.guided_unet import KNOWN_FLAGS, build_unet
    from dreamcanvas.models.secondary import SecondaryModel
    from dreamcanvas.perceptor.clip import random_perceptor
    from dreamcanvas.settings import GenerateSettings

    torch.manual_seed(0)
    unet = build_unet(KNOWN_FLAGS[MODEL])
    # the weights files are not needed to time compute
    diffusion_generator.load_diffusion_unet = lambda spec: unet
    diffusion_generator.load_secondary_model = lambda spec: SecondaryModel().eval()
    settings = GenerateSettings(prompts=["a lighthouse in a storm"], generator="diffusion", width=size, height=size,
                                cutn=cutn, iterations=iterations, seed=0, clip_models=[clip], precision=precision,
                                sampler=sampler, guidance_model="secondary" if secondary else "unet")  # fmt: skip
    return build_job(settings, perceptors=[random_perceptor(clip)])


def notebook_step(job, step: int) -> None:
    """cond_fn (forward with grad + backward), then p_sample's own forward, all fp32."""
    from dreamcanvas.diffusion import ddpm_step, denoise, guided_gradient, timestep_batch

    generator = job.generator
    t = timestep_batch(generator.timesteps[step], 1)

    def guidance(x_in, pred_xstart):
        return 1000.0 * job.loss((x_in + 1) / 2)

    grad = guided_gradient(generator.schedule, guidance, generator.x, t, generator.model).grad
    model_out = denoise(generator.schedule, generator.model, generator.x, t)
    out = ddpm_step(generator.schedule, model_out, generator.x, t, grad=grad, clip_denoised=False,
                    noise=torch.randn_like(generator.x))  # fmt: skip
    generator.x.copy_(out.sample)


def dreamcanvas_step(job, step: int) -> None:
    job.generator.sample_step(job.loss, step)


class _WholeProgramOnly:
    """Stands in for FlopCounterMode's module tracker, whose backward hooks break ``torch.autograd.grad`` (the
    guidance gradient); only the whole program's total is wanted here."""

    parents = frozenset({"Global"})

    def __enter__(self) -> _WholeProgramOnly:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None


def flop_counter() -> FlopCounterMode:
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _WholeProgramOnly()
    return counter


def measure_row(row: str, size: int, cutn: int, steps: int, clip: str) -> dict:
    precision = "auto" if row.startswith("dreamcanvas auto") else "fp32"
    job = build_job_with_random_unet(size, cutn, precision, clip, secondary=row.endswith("secondary"))
    step_fn = notebook_step if row == "notebook" else dreamcanvas_step
    with flop_counter() as counter:  # also the warm-up
        step_fn(job, 0)
    times = []
    for index in range(1, steps + 1):
        start = time.perf_counter()
        step_fn(job, index)
        times.append(time.perf_counter() - start)
    return {
        "step": sorted(times)[len(times) // 2],
        "flops": counter.get_total_flops(),
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "dtype": str(job.generator.dtype).removeprefix("torch."),
    }


def measure_picture(size: int, cutn: int, clip: str, iterations: int) -> dict:
    """A whole picture the fast way: DDIM, the secondary model, bf16 where the CPU has it; job built inside."""
    start = time.perf_counter()
    job = build_job_with_random_unet(size, cutn, "auto", clip, secondary=True, sampler="ddim", iterations=iterations)
    built = time.perf_counter()
    for index in range(iterations):
        dreamcanvas_step(job, index)
    return {"seconds": time.perf_counter() - start, "build": built - start,
            "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--cutn", type=int, default=16)
    parser.add_argument("--steps", type=int, default=1, help="timed steps per row, after one warm-up step")
    parser.add_argument("--clip", default="ViT-B-32", help="open_clip architecture (random weights)")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("--picture", type=int, default=0, metavar="N",
                        help="after the table, time a whole picture of N DDIM steps with the secondary model")
    parser.add_argument("--row", help=argparse.SUPPRESS)  # internal: measure one row, print JSON
    args = parser.parse_args()

    if args.row == "picture":
        print(json.dumps(measure_picture(args.size, args.cutn, args.clip, args.picture)))
        return
    if args.row:
        print(json.dumps(measure_row(args.row, args.size, args.cutn, args.steps, args.clip)))
        return

    peaks = {"float32": matmul_peak_gflops(torch.float32), "bfloat16": matmul_peak_gflops(torch.bfloat16)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {MODEL} and {args.clip} (random weights), "
          f"{args.size}², cutn {args.cutn}, {args.steps} timed step(s) per row after a warm-up; matmul peak fp32 "
          f"{peaks['float32']:.0f} GFLOP/s, bf16 {peaks['bfloat16']:.0f} GFLOP/s")  # fmt: skip
    print()
    print("| arithmetic | UNet dtype | s/step | vs notebook | GFLOP/step | GFLOP/s | % of matmul peak | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    notebook = None
    for row in args.rows:
        command = [sys.executable, __file__, "--row", row, "--size", str(args.size), "--cutn", str(args.cutn),
                   "--steps", str(args.steps), "--clip", args.clip]  # fmt: skip
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        notebook = r["step"] if row == "notebook" else notebook
        achieved = r["flops"] / r["step"] / 1e9
        ratio = f"{notebook / r['step']:.2f}x" if notebook else "-"
        print(f"| {row} | {r['dtype']} | {r['step']:.1f} | {ratio} | {r['flops'] / 1e9:.0f} | {achieved:.0f} | "
              f"{100 * achieved / peaks[r['dtype']]:.0f}% | {r['rss_mib']:.0f} |", flush=True)  # fmt: skip
    if args.picture:
        command = [sys.executable, __file__, "--row", "picture", "--picture", str(args.picture), "--size",
                   str(args.size), "--cutn", str(args.cutn), "--clip", args.clip]  # fmt: skip
        r = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
        print()
        print(f"A whole {args.size}² picture, {args.picture} DDIM steps, secondary model, auto precision: "
              f"{r['seconds'] / 60:.1f} min ({r['build']:.0f} s of it building the job), peak RSS "
              f"{r['rss_mib']:.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
