"""Is OpenVINO faster than PyTorch for the SD-Turbo UNet on this CPU? One UNet call, side by side.

    python benchmarks/bench_sd_openvino.py             # SD-Turbo's UNet at a 512² picture (64² latents), 2 threads
    python benchmarks/bench_sd_openvino.py --quick     # a small UNet: a smoke check in seconds

The issue asks to keep OpenVINO as a backend only if it beats PyTorch here. optimum-intel (the usual way to run
diffusers models on OpenVINO) pins transformers < 5.6, below the version dreamcanvas needs, so this measures
OpenVINO itself: ``openvino.convert_model`` of the same diffusers UNet (traced with an example input), compiled
for the CPU with its own bf16 (``INFERENCE_PRECISION_HINT``) where the CPU has it, against what dreamcanvas runs:
PyTorch, weights built in bf16, channels_last (``dreamcanvas.sd.speed.prepare_for_cpu``'s lever). The UNet is
SD-Turbo's (the SD 2.1 architecture, bench_sd.py's config) with random weights; it is over 90 % of an SD-Turbo
picture's time with TAESD. Each row runs in its own process (peak RSS its own), with ``pip install openvino``
for the OpenVINO rows (skipped, said so, without it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generate import matmul_peak_gflops
from bench_sd import UNET_SD_TURBO, built_in

ROWS = ("pytorch-fp32", "pytorch-bf16", "openvino-fp32", "openvino-bf16")
QUICK_UNET = {**UNET_SD_TURBO, "block_out_channels": (32, 64, 64, 64), "attention_head_dim": (2, 4, 4, 4),
              "norm_num_groups": 8, "cross_attention_dim": 64}  # fmt: skip


def _unet(quick: bool, dtype: torch.dtype) -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    with built_in(dtype):
        unet = UNet2DConditionModel(**(QUICK_UNET if quick else UNET_SD_TURBO))
    return unet.eval().requires_grad_(False)


def _inputs(unet: torch.nn.Module, side: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 4, side, side, generator=generator).to(dtype)
    context = torch.randn(1, 77, unet.config.cross_attention_dim, generator=generator).to(dtype)
    return latents, torch.tensor([999.0]), context


class _Plain(torch.nn.Module):
    """The UNet as a function of tensors only (what a tracer needs): the noise prediction."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, latents: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.unet(latents, timestep, context, return_dict=False)[0]


def _peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def measure(row: str, side: int, quick: bool, calls: int) -> dict:
    backend, precision = row.split("-")
    dtype = torch.bfloat16 if (backend, precision) == ("pytorch", "bf16") else torch.float32
    unet = _unet(quick, dtype)
    inputs = _inputs(unet, side, dtype)
    if backend == "pytorch":
        if precision == "bf16":
            unet.to(memory_format=torch.channels_last)
        plain = _Plain(unet)

        def call() -> torch.Tensor:
            with torch.no_grad():
                return plain(*inputs)
    else:
        import openvino as ov

        with torch.no_grad():
            model = ov.convert_model(_Plain(unet), example_input=inputs)
        del unet
        hint = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                "INFERENCE_NUM_THREADS": torch.get_num_threads()}  # fmt: skip
        compiled = ov.Core().compile_model(model, "CPU", hint)
        del model
        feeds = [tensor.numpy() for tensor in inputs]

        def call() -> object:
            return compiled(feeds)

    call()  # warm-up: first-call allocations and (OpenVINO) kernel selection
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return {"seconds": seconds, "peak_bytes": _peak_rss()}


def unet_flops(side: int, quick: bool) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    unet = _unet(quick, torch.float32)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        _Plain(unet)(*_inputs(unet, side, torch.float32))
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small UNet at 16² latents")
    parser.add_argument("--calls", type=int, default=3, help="timed UNet calls per row, after one warm-up")
    parser.add_argument("--row", help=argparse.SUPPRESS)
    args = parser.parse_args()
    side = 16 if args.quick else 64
    if args.row:
        print(json.dumps(measure(args.row, side, args.quick, args.calls)))
        return
    peaks = {"fp32": matmul_peak_gflops(torch.float32), "bf16": matmul_peak_gflops(torch.bfloat16)}
    flops = unet_flops(side, args.quick)
    print(f"SD-Turbo UNet{' (quick)' if args.quick else ''}, latents {side}x{side} (picture {side * 8}²), "
          f"{flops / 1e9:.0f} GFLOP a call; matmul peak fp32 {peaks['fp32']:.0f}, bf16 {peaks['bf16']:.0f} GFLOP/s; "
          f"{torch.get_num_threads()} threads\n")  # fmt: skip
    print("| row | s/call (median) | best | vs pytorch-bf16 | GFLOP/s | % of peak | peak RSS |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    results = {}
    for row in ROWS:
        done = subprocess.run([sys.executable, __file__, "--row", row, "--calls", str(args.calls),
                               *(["--quick"] if args.quick else [])], capture_output=True, text=True)  # fmt: skip
        if done.returncode == 0:
            results[row] = json.loads(done.stdout.strip().splitlines()[-1])
        else:
            results[row] = {"error": (done.stderr.strip().splitlines() or ["failed"])[-1][:100]}
    reference = results["pytorch-bf16"].get("seconds")
    for row, result in results.items():
        if "error" in result:
            print(f"| {row} | - | - | - | - | - | not run: {result['error']} |")
            continue
        median, best = statistics.median(result["seconds"]), min(result["seconds"])
        rate = flops / median / 1e9
        ratio = f"{statistics.median(reference) / median:.2f}x" if reference else "-"
        peak = peaks["bf16" if row.endswith("bf16") else "fp32"]
        print(f"| {row} | {median:.2f} | {best:.2f} | {ratio} | {rate:.0f} | {100 * rate / peak:.0f} % | "
              f"{result['peak_bytes'] / 2**30:.2f} GiB |")  # fmt: skip

if __name__ == "__main__":
    main()
