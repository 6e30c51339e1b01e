"""Seconds per Gatys iteration (L-BFGS and Adam): neural-style-pt's arithmetic against ``dreamcanvas style``.

    python benchmarks/bench_style.py                                 # 512² content and style, 2 threads
    python benchmarks/bench_style.py --size 128 --iterations 3       # a smoke check in about a minute
    python benchmarks/bench_style.py --rounds 2                      # every row twice, interleaved: a shared machine
    python benchmarks/bench_style.py --optimizers lbfgs --rows neural-style-pt dreamcanvas-bf16

VGG-19 has random weights (compute does not depend on their values): torchvision's ``vgg19`` architecture,
classifier included, saved once as ``vgg19-d01eb7cb.pth``, the name and key layout of the Caffe conversion
neural-style-pt downloads, so both sides read the same full-size file and dreamcanvas reads it through its real
loader. Content and style are one smooth random picture each, ``--size`` square, the same for every row.

Rows, each optimiser of each in a fresh subprocess (its peak RSS, VmHWM, is its own), in one invocation:

- ``neural-style-pt``: its arithmetic as its ``neural_style.py`` runs on a CPU, restated here (:class:`Reference`):
  the features copied into one ``nn.Sequential`` with a TV module in front and loss modules after relu4_2
  (content) and relu1_1 ... relu5_1 (style), cut after the last; fp32, NCHW; the picture, in Caffe's BGR space,
  optimised by one ``LBFGS(max_iter=N, tolerance_change=-1, tolerance_grad=-1)`` call (history 100), or Adam.
- ``dreamcanvas-fp32`` / ``dreamcanvas-bf16``: the pieces ``dreamcanvas style`` runs - ``style.vgg.load_vgg``
  (bf16: convolutions in bf16, channels_last; tapped layers cast back to fp32), ``style.gatys.StyleObjective``
  (Gram matrices and losses in fp32), ``style.optimizer.make_optimizer`` (one L-BFGS iteration per call), the
  closure of ``style.run``. The row ``--precision auto`` picks on this CPU (``dreamcanvas.precision.working_dtype``) is
  marked; frames and checkpoints (every 50 steps in a run) are not part of an iteration here.

An iteration is one forward + backward + optimiser update; "s/iter" is the median of the timed iterations of
every round (``--iterations`` each, after ``--warmup``), "best" the fastest of them; ratios are of medians.
"GFLOP/iter" counts the convolutions and matmuls of one evaluation (forward, losses, backward) with
``torch.utils.flop_counter``, as each row does them (the bf16 row differentiates each Gram matrix in one matmul,
not two); L-BFGS's own vector arithmetic over its stored pairs (about 15 ms an iteration at 512² with all 100)
is not counted. "% peak" divides GFLOP/s by the matmul peak of the row's dtype, the better of two measurements
taken before and after the rows. "loss vs reference" compares each row's first loss with neural-style-pt's: the
same arithmetic gives the same number (fp32 to rounding; bf16 to its precision).

Peak RSS includes reading the full 548 MB file. An L-BFGS row holds only the few history pairs of its few
iterations; a long run holds 100, 2 x 3 x H x W x 4 bytes each (0.6 GB more at 512²).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generate import matmul_peak_gflops

ROWS = ("neural-style-pt", "dreamcanvas-fp32", "dreamcanvas-bf16")
OPTIMIZERS = ("lbfgs", "adam")
CONTENT_LAYERS = ("relu4_2",)
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CONTENT_WEIGHT, STYLE_WEIGHT, TV_WEIGHT, ADAM_LR, LBFGS_HISTORY = 5.0, 100.0, 1e-3, 1.0, 100
"""neural-style's defaults, which are also dreamcanvas's."""
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
WEIGHTS_NAME = "vgg19-d01eb7cb.pth"


# ------------------------------------------------------------------------------------------------- inputs
def random_vgg19_file(folder: Path) -> Path:
    """A full VGG-19 (features and classifier, 548 MB) with random weights, in the Caffe file's name and keys."""
    from torchvision.models import vgg19

    torch.manual_seed(0)
    path = folder / WEIGHTS_NAME
    torch.save(vgg19(weights=None).state_dict(), path)
    return path


def smooth_picture(size: int, seed: int) -> torch.Tensor:
    """``(1, 3, size, size)`` RGB in 0-1: random colours, enlarged 8x so that it has edges and flat parts."""
    generator = torch.Generator().manual_seed(seed)
    small = torch.rand(1, 3, max(2, size // 8), max(2, size // 8), generator=generator)
    return F.interpolate(small, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def caffe_bgr(picture: torch.Tensor) -> torch.Tensor:
    """neural-style-pt's preprocessing: times 256, BGR, the mean pixel subtracted (dreamcanvas's too)."""
    return (picture * 256)[:, [2, 1, 0]] - torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1)


# ------------------------------------------------------------------------------------------------- reference
class ContentModule(nn.Module):
    """Passes its input on; records it as the target, or its weighted mean squared distance to the target."""

    def __init__(self, weight: float) -> None:
        super().__init__()
        self.weight, self.mode = weight, "off"
        self.target: torch.Tensor | None = None
        self.loss: torch.Tensor | None = None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.mode == "capture":
            self.target = features.detach()
        elif self.mode == "loss":
            self.loss = F.mse_loss(features, self.target) * self.weight
        return features


class StyleModule(nn.Module):
    """Passes its input on; its Gram matrix over ``nelement`` is added to the target (by blend weight) or compared
    with it (weighted mean squared difference)."""

    def __init__(self, weight: float) -> None:
        super().__init__()
        self.weight, self.mode, self.blend = weight, "off", 1.0
        self.target: torch.Tensor | None = None
        self.loss: torch.Tensor | None = None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        _, channels, height, width = features.shape
        flat = features.view(channels, height * width)
        gram = torch.mm(flat, flat.t()).div(features.nelement())
        if self.mode == "capture":
            part = gram.detach() * self.blend
            self.target = part if self.target is None else self.target + part
        elif self.mode == "loss":
            self.loss = self.weight * F.mse_loss(gram, self.target)
        return features


class TVModule(nn.Module):
    """Passes its input on; the weighted sum of absolute differences between neighbouring pixels."""

    def __init__(self, weight: float) -> None:
        super().__init__()
        self.weight = weight
        self.loss: torch.Tensor | None = None

    def forward(self, picture: torch.Tensor) -> torch.Tensor:
        down = picture[:, :, 1:, :] - picture[:, :, :-1, :]
        right = picture[:, :, :, 1:] - picture[:, :, :, :-1]
        self.loss = self.weight * (down.abs().sum() + right.abs().sum())
        return picture


class Reference:
    """neural-style-pt's network: VGG-19's layers in one Sequential with the loss modules in line, fp32, NCHW."""

    def __init__(self, weights_path: Path) -> None:
        import copy

        from torchvision.models import vgg19

        whole = vgg19(weights=None)  # as its loader: the full model built, the file loaded into it, features kept
        whole.load_state_dict(torch.load(weights_path, weights_only=True))
        layers = copy.deepcopy(whole.features)
        del whole
        self.tv = TVModule(TV_WEIGHT)
        self.content: list[ContentModule] = []
        self.style: list[StyleModule] = []
        self.net = nn.Sequential(self.tv)
        block, conv, wanted = 1, 0, set(CONTENT_LAYERS) | set(STYLE_LAYERS)
        for layer in layers:
            if not wanted:
                break
            self.net.append(layer)
            if isinstance(layer, nn.Conv2d):
                conv += 1
            elif isinstance(layer, nn.MaxPool2d):
                block, conv = block + 1, 0
            elif isinstance(layer, nn.ReLU):
                name = f"relu{block}_{conv}"
                if name in CONTENT_LAYERS:
                    self.content.append(ContentModule(CONTENT_WEIGHT))
                    self.net.append(self.content[-1])
                if name in STYLE_LAYERS:
                    self.style.append(StyleModule(STYLE_WEIGHT))
                    self.net.append(self.style[-1])
                wanted.discard(name)
        self.net.requires_grad_(False)

    def capture(self, content: torch.Tensor, style: torch.Tensor) -> None:
        """The content targets from the content picture, then the style targets (one style, blend weight 1)."""
        with torch.no_grad():
            for module in self.content:
                module.mode = "capture"
            self.net(content)
            for module in self.content:
                module.mode = "off"
            for module in self.style:
                module.mode = "capture"
            self.net(style)
        for module in [*self.content, *self.style]:
            module.mode = "loss"

    def loss(self, picture: torch.Tensor) -> torch.Tensor:
        self.net(picture)
        total = 0
        for module in [*self.content, *self.style]:
            total = total + module.loss
        return total + self.tv.loss


# ------------------------------------------------------------------------------------------------- one row
def _peak_rss() -> int:
    """This process's own peak (VmHWM; ru_maxrss would include the parent's peak at the fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _counted_flops(closure: Callable[[], torch.Tensor], picture: torch.Tensor) -> float:
    """FLOPs of one evaluation (forward, losses, backward); the gradient it leaves is dropped."""
    with FlopCounterMode(display=False) as counter:
        closure()
    picture.grad = None
    return counter.get_total_flops()


def _reference_row(weights_path: Path, optimizer_name: str, size: int, warmup: int, iterations: int) -> dict:
    model = Reference(weights_path)
    model.capture(caffe_bgr(smooth_picture(size, 1)), caffe_bgr(smooth_picture(size, 2)))
    picture = nn.Parameter(caffe_bgr(smooth_picture(size, 1)))  # -init image
    ends: list[float] = []
    losses: list[float] = []

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = model.loss(picture)
        loss.backward()
        ends.append(time.perf_counter())
        losses.append(float(loss.detach()))
        return loss

    total = warmup + iterations
    if optimizer_name == "lbfgs":
        optimizer: torch.optim.Optimizer = torch.optim.LBFGS([picture], max_iter=total, tolerance_change=-1,
                                                             tolerance_grad=-1)  # fmt: skip
    else:
        optimizer = torch.optim.Adam([picture], lr=ADAM_LR)
    flops = _counted_flops(closure, picture)
    ends.clear()
    losses.clear()
    cpu, start = time.process_time(), time.perf_counter()
    if optimizer_name == "lbfgs":  # one call of many iterations; the closure's ends mark each iteration
        optimizer.step(closure)
        marks = [start, *ends[:total]]
    else:
        marks = [start]
        for _ in range(total):
            optimizer.step(closure)
            marks.append(time.perf_counter())
    return _row_result(marks, warmup, cpu, flops, "fp32", losses[0])


def _dreamcanvas_row(weights_path: Path, optimizer_name: str, precision: str, size: int, warmup: int,
                     iterations: int) -> dict:  # fmt: skip
    from dreamcanvas.precision import working_dtype
    from dreamcanvas.style.gatys import StyleObjective, blend_grams, gram_matrix
    from dreamcanvas.style.optimizer import make_optimizer
    from dreamcanvas.style.run import taps
    from dreamcanvas.style.settings import StyleSettings
    from dreamcanvas.style.vgg import load_vgg, to_pixel_space

    settings = StyleSettings(content="content.png", styles=["style.png"], optimizer=optimizer_name,
                             precision=precision, lr=ADAM_LR, lbfgs_history=LBFGS_HISTORY,
                             content_layers=CONTENT_LAYERS, style_layers=STYLE_LAYERS, content_weight=CONTENT_WEIGHT,
                             style_weight=STYLE_WEIGHT, tv_weight=TV_WEIGHT)  # fmt: skip
    dtype = working_dtype(settings.precision)
    network = load_vgg(weights_path, "caffe", taps(settings), dtype=dtype)
    with torch.no_grad():  # as style.run's objective(): content features, the style's Gram matrices blended
        content = network(to_pixel_space(smooth_picture(size, 1)))
        style = network(to_pixel_space(smooth_picture(size, 2)))
        grams = [{layer: gram_matrix(style[layer]) for layer in settings.style_layers}]
    objective = StyleObjective({layer: content[layer] for layer in settings.content_layers},
                               blend_grams(grams, [1.0]), settings.content_weight, settings.style_weight,
                               settings.tv_weight)  # fmt: skip
    pixels = to_pixel_space(smooth_picture(size, 1)).requires_grad_(True)  # --init content
    optimizer = make_optimizer(settings, pixels)
    losses: list[float] = []

    def closure() -> torch.Tensor:  # style.run's closure
        optimizer.zero_grad(set_to_none=True)
        parts = objective(network(pixels), pixels)
        parts.total.backward()
        losses.append(float(parts.total.detach()))
        return parts.total

    flops = _counted_flops(closure, pixels)
    losses.clear()
    cpu, marks = time.process_time(), [time.perf_counter()]
    for _ in range(warmup + iterations):  # style.run: one optimiser step (one L-BFGS iteration) per call
        optimizer.step(closure)
        marks.append(time.perf_counter())
    return _row_result(marks, warmup, cpu, flops, "bf16" if dtype == torch.bfloat16 else "fp32", losses[0])


def _row_result(marks: list[float], warmup: int, cpu_start: float, flops: float, dtype: str, first: float) -> dict:
    seconds = [after - before for before, after in itertools.pairwise(marks)]
    timed = seconds[warmup:]
    wall = marks[-1] - marks[0]
    return {
        "seconds": seconds,
        "timed": timed,
        "flops": flops,
        "dtype": dtype,
        "first_loss": first,
        "peak_bytes": _peak_rss(),
        "cpu_share": (time.process_time() - cpu_start) / wall / torch.get_num_threads(),
    }


def measure_row(row: str, optimizer_name: str, weights_path: Path, size: int, warmup: int, iterations: int) -> dict:
    if row == "neural-style-pt":
        return _reference_row(weights_path, optimizer_name, size, warmup, iterations)
    precision = row.removeprefix("dreamcanvas-")
    return _dreamcanvas_row(weights_path, optimizer_name, precision, size, warmup, iterations)


# ------------------------------------------------------------------------------------------------- table
def run_row(row: str, optimizer_name: str, weights_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--row", row, optimizer_name, str(weights_path), "--size", str(args.size),
               "--warmup", str(args.warmup), "--iterations", str(args.iterations)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"row {row} {optimizer_name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def pooled(measured: list[dict[str, Any]]) -> dict[str, Any]:
    """One row's rounds as one: the median and best of all timed iterations, the highest peak RSS."""
    timed = [seconds for one in measured for seconds in one["timed"]]
    return {**measured[0], "median": statistics.median(timed), "best": min(timed),
            "peak_bytes": max(one["peak_bytes"] for one in measured),
            "cpu_share": statistics.mean(one["cpu_share"] for one in measured)}  # fmt: skip


def auto_row() -> str:
    """The row ``dreamcanvas style --precision auto`` runs on this CPU."""
    from dreamcanvas.precision import working_dtype

    return "dreamcanvas-bf16" if working_dtype("auto") == torch.bfloat16 else "dreamcanvas-fp32"


TABLE_HEADER = ("| optimiser | row | dtype | s/iter (median) | best | vs neural-style-pt | GFLOP/iter | GFLOP/s | "
                "% of matmul peak (same dtype) | CPU share | peak RSS MiB | loss vs reference |")  # fmt: skip


def print_table(args: argparse.Namespace) -> None:
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    before = {name: matmul_peak_gflops(dtype, repeats=30) for name, dtype in dtypes.items()}
    rounds: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        weights_path = random_vgg19_file(Path(folder))
        for _ in range(args.rounds):  # rows interleaved: a slow spell of a shared machine hits every row
            for optimizer_name in args.optimizers:
                for row in args.rows:
                    measured = run_row(row, optimizer_name, weights_path, args)
                    rounds.setdefault((optimizer_name, row), []).append(measured)
                    print(f"  measured {optimizer_name} {row}: {json.dumps(measured)}", file=sys.stderr, flush=True)
    results = {key: pooled(measured) for key, measured in rounds.items()}
    after = {name: matmul_peak_gflops(dtype, repeats=30) for name, dtype in dtypes.items()}
    peaks = {name: max(before[name], after[name]) for name in dtypes}
    default = auto_row()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, VGG-19 random weights, content and style "
        f"{args.size}x{args.size}, {args.rounds} x {args.iterations} iterations after {args.warmup}; matmul peak fp32 "
        f"{peaks['fp32']:.0f}, bf16 {peaks['bf16']:.0f} GFLOP/s (before {before['fp32']:.0f} / "
        f"{before['bf16']:.0f}, after {after['fp32']:.0f} / {after['bf16']:.0f}); --precision auto = {default}"
    )
    print()
    print(TABLE_HEADER)
    print("|" + "---|" * (TABLE_HEADER.count("|") - 1))
    for (optimizer_name, row), r in results.items():
        reference = results.get((optimizer_name, "neural-style-pt"))
        ratio = f"{reference['median'] / r['median']:.2f}x" if reference else "-"
        difference = (f"{abs(r['first_loss'] - reference['first_loss']) / abs(reference['first_loss']):.1e}"
                      if reference else "-")  # fmt: skip
        rate = r["flops"] / r["median"] / 1e9
        name = f"**{row}** (auto)" if row == default else row
        print(f"| {optimizer_name} | {name} | {r['dtype']} | {r['median']:.3f} | {r['best']:.3f} | {ratio} | "
              f"{r['flops'] / 1e9:.1f} | "
              f"{rate:.0f} | {100 * rate / peaks[r['dtype']]:.0f} % | {r['cpu_share']:.2f} | "
              f"{r['peak_bytes'] / 2**20:.0f} | {difference} |")  # fmt: skip
    print()
    for optimizer_name in args.optimizers:
        reference, ours = results.get((optimizer_name, "neural-style-pt")), results.get((optimizer_name, default))
        if reference and ours:
            print(f"- {optimizer_name}: dreamcanvas (--precision auto) {reference['median'] / ours['median']:.2f}x "
                  f"neural-style-pt's speed per iteration (best against best: {reference['best'] / ours['best']:.2f}x; "
                  "goal >= 2x)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="side of the content and style pictures")
    parser.add_argument("--iterations", type=int, default=5, help="timed iterations per row (median)")
    parser.add_argument("--warmup", type=int, default=2, help="iterations before the timed ones")
    parser.add_argument("--rounds", type=int, default=1, help="times every row runs, interleaved; timings pooled")
    parser.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS), choices=OPTIMIZERS)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("--row", nargs=3, help=argparse.SUPPRESS)  # internal: measure one row, print JSON
    args = parser.parse_args()
    if args.row:
        row, optimizer_name, weights_path = args.row
        result = measure_row(row, optimizer_name, Path(weights_path), args.size, args.warmup, args.iterations)
        print(json.dumps(result))
        return
    print_table(args)


if __name__ == "__main__":
    main()
