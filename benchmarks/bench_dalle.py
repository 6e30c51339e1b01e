"""Seconds per ruDALL-E Malevich picture (1,024 image tokens): ru-dalle's loop arithmetic against dreamcanvas's.

    python benchmarks/bench_dalle.py                                  # every row, 2 threads, one real picture
    python benchmarks/bench_dalle.py --full none --reps 2             # sampled rows only, a few minutes
    python benchmarks/bench_dalle.py --rows dreamcanvas-bf16 --batches 1 --full none

The network is :class:`dreamcanvas.models.rudalle.DalleModel` at the ``MALEVICH`` shape with random weights
(compute does not depend on their values): built on the meta device, cast to the row's dtype there, then
materialised and filled (linear and embedding weights N(0, 0.02), biases 0, LayerNorms 1 / 0), so an fp32 row
never holds more than the fp32 model and a bf16 row never an fp32 copy. Both loops run on the same modules.
Each row (one loop, dtype and batch) runs in a fresh subprocess, one after another, in one invocation; its peak RSS
is that process's own VmHWM. Text: 20 random ids and 108 pads; sampling as ru-dalle's README draws Malevich
(temperature 1, top-k 2048, top-p 0.995), in :func:`dreamcanvas.dalle.sampling.pick`, for both loops.

Rows:

- ``ru-dalle`` (fp32): what ``rudalle.pipelines.generate_images`` does per image token with ``use_cache=True``,
  restated here on our modules (:class:`RuDalleLoop`). Every call gets the *whole* sequence so far; the cache
  holds each layer's keys, values and attention output (and the last layer's MLP output). Per call it still
  embeds the whole sequence, multiplies the ``(B, 1, s, s)`` causal mask by each layer's mask, runs all four
  LayerNorms of every layer, both residual adds, the final LayerNorm, and the logit head (LayerNorm + the
  2048 x 24,704 linear) over all ``s`` positions, and grows the cache by ``torch.cat`` (copying all of it); only
  the q/k/v projection, attention, ``dense`` and the MLP are restricted to the new position. The first call
  (image position 0) is an uncached forward over the 128 text tokens.
- ``dreamcanvas-fp32`` / ``dreamcanvas-bf16``: :func:`dreamcanvas.dalle.sampling.sample_image_tokens`'s step,
  ``model(new_token, cache, only_last=True)``: one position per layer, keys/values written into a preallocated
  :class:`~dreamcanvas.models.rudalle.DalleCache`, the head on the last position only; the model's weights (and
  so its cache and activations) in the row's dtype.

Sampled positions, integrated: a full ru-dalle picture takes far too long here, so each row times windows of
consecutive real steps. A window at image position ``p`` fills the cache with ``127 + p`` random positions (keys,
values, cached outputs), then runs ``reps + 1`` steps of the loop from there (each step feeds the token the
previous one drew, exactly as the loop does); the first step is counted with ``torch.utils.flop_counter`` and not
timed, the median of the other ``reps`` is that window's seconds per step, placed at the window's middle
position. Position 0 (the text prefill) is timed on its own (median of ``reps`` fresh prefills). Seconds per
picture = prefill + the sum over positions 1 ... 1023 of the window medians interpolated linearly between window
middles (constant beyond the first and last). It is an extrapolation from ``5 x reps`` steps, not a run; the
``full`` row is a real one (see ``--full``) and shows how far the two agree.

Columns: "s/step at p" the window medians; "s/image" = seconds per batch / batch; "s/batch of 4": measured for
batch-4 rows, 4 x s/image for batch-1 rows (marked "(4 x)"); "tok/s" image tokens per second (all images of the
batch); "vs ru-dalle" the ratio of s/image against ru-dalle at the same batch; "GFLOP/token": flop counter
(matmuls only, not norms or element-wise work) of the window step at p = 512, per image token; "% peak": FLOP of
the whole picture (flop counts interpolated like the times) over its seconds, over the GEMM peak of the row's
dtype measured in the same invocation (the better of before and after the rows). "weights GB/s": the bytes of
every weight a step reads (the 24 layers and the head; the embedding tables only give B rows and are left out)
x 1024 steps over seconds per batch; "% copy" that over the bandwidth of a 1 GiB ``tensor.copy_`` measured in
the same invocation (bytes read + bytes written, STREAM's convention; best of 5, before and after the rows).
"KV GB/step" the keys and values a step's attention reads on average (every position so far, all layers); it is
not part of "weights GB/s". "CPU share": the row process's CPU seconds over its wall seconds x threads, from
building the model on (below 1: it waited, for memory or for a core another process held). Peak RSS is the row's
process, model included; ru-dalle rows hold, for a moment, the old and the new cache of one layer, as ru-dalle does.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generate import matmul_peak_gflops

ROWS = ("ru-dalle", "dreamcanvas-fp32", "dreamcanvas-bf16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
POSITIONS = (1, 256, 512, 768, 1023)
TOP_K, TOP_P, TEMPERATURE = 2048, 0.995, 1.0
"""ru-dalle's README settings for Malevich."""
FP16_MAX, MASK_VALUE, PB_RELAX_ALPHA = 65504.0, 10000.0, 32.0


# ------------------------------------------------------------------------------------------------- inputs
def random_malevich(dtype: torch.dtype, config: Any = None) -> nn.Module:
    """``DalleModel(MALEVICH)`` (or ``config``) in ``dtype`` with random weights, never in any other dtype."""
    from dreamcanvas.models.rudalle import MALEVICH, DalleModel, attention_mask

    with torch.device("meta"):
        model = DalleModel(config or MALEVICH)
    model = model.to(dtype).to_empty(device="cpu").eval().requires_grad_(False)
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.normal_(0, 0.02, generator=generator)
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.fill_(1)
            module.bias.zero_()
    cfg = model.config
    for kind in ("row", "column", "conv"):  # the masks are derived buffers: rebuild them on the real device
        model.transformer.mask(kind).copy_(
            attention_mask(kind, cfg.text_seq_length, cfg.image_tokens_per_dim, cfg.conv_kernel)
        )
    return model


def text_ids(batch: int) -> Tensor:
    """``(B, 128)``: 20 random text ids, then pads (id 0)."""
    ids = torch.zeros(batch, 128, dtype=torch.long)
    ids[:, :20] = torch.randint(1, 16384, (1, 20), generator=torch.Generator().manual_seed(1))
    return ids


def weight_bytes_per_step(model: nn.Module) -> int:
    """Bytes of the weights every step reads: the transformer and the head (not the embedding tables)."""
    parts = (model.transformer, model.to_logits)
    return sum(p.numel() * p.element_size() for part in parts for p in part.parameters())


def peak_rss() -> int:
    """This process's own peak (VmHWM; ru_maxrss would include the parent's peak at the fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def copy_bandwidth(gib: float = 1.0, repeats: int = 5) -> float:
    """GB/s of a large ``copy_``: bytes read + bytes written (STREAM's copy convention), best of ``repeats``."""
    src = torch.ones(int(gib * 2**30) // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.numel() * 4 / best / 1e9


# ------------------------------------------------------------------------------------------------- reference
class RuDalleLoop:
    """ru-dalle's ``DalleModel.forward(..., use_cache=True)`` and ``generate_images`` step, on our modules (fp32).

    ``cache`` is its dict ``{layer: (keys, values, attention output[, MLP output])}``, updated in place; each call
    takes the whole sequence ``(B, s)`` and returns logits for all ``s`` positions.
    """

    def __init__(self, model: nn.Module, batch: int) -> None:
        self.model = model
        self.cfg = model.config
        total = self.cfg.total_seq_length
        self.attention_mask = torch.tril(torch.ones(batch, 1, total, total))  # made once per batch by the loop

    def forward(self, ids: Tensor, cache: dict[int, tuple[Tensor, ...]]) -> Tensor:
        m, cfg = self.model, self.cfg
        n_text = cfg.text_seq_length
        text = ids[:, :n_text]
        text = torch.where(text == 0, torch.arange(n_text) + (cfg.vocab_size - n_text), text)
        embeddings = m.text_embeddings(text) + m.text_pos_embeddings(torch.arange(n_text))
        image = ids[:, n_text:]
        if image.shape[1]:
            cells = torch.arange(image.shape[1])
            rows = m.image_row_embeddings(cells // cfg.image_tokens_per_dim)
            cols = m.image_col_embeddings(cells % cfg.image_tokens_per_dim)
            embeddings = torch.cat((embeddings, m.image_embeddings(image) + (rows + cols)), dim=1)
        embeddings = embeddings * 0.1 + embeddings.detach() * 0.9  # over the whole sequence, every call
        s = embeddings.shape[1]
        attention_mask = self.attention_mask[:, :, :s, :s]
        hidden = embeddings
        layers = m.transformer.layers
        for i, layer in enumerate(layers):
            layer_mask = m.transformer.mask(m.transformer.mask_kinds[i])[:s, :s]
            mask = torch.mul(attention_mask, layer_mask)  # (B, 1, s, s), every layer, every call
            hidden, cache[i] = self.layer(layer, hidden, mask, cache.get(i), last=i == len(layers) - 1)
        return m.to_logits(m.transformer.final_layernorm(hidden))  # the head over all s positions

    def layer(
        self, layer: nn.Module, hidden: Tensor, mask: Tensor, cache: tuple[Tensor, ...] | None, last: bool
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        attended, new_cache = self.attention(layer.attention, layer.input_layernorm(hidden), mask, cache)
        attended = layer.before_first_addition_layernorm(attended)
        residual = hidden + attended
        cached = 0 if cache is None else cache[0].shape[-2]
        normed = layer.post_attention_layernorm(residual)
        if cached:  # the MLP runs on the new positions; the rest is the last layer's cache, or the norm's output
            earlier = cache[-1] if last else normed[..., :cached, :]
            mlp_out = torch.cat((earlier, layer.mlp(normed[..., cached:, :])), dim=-2)
            if last:
                new_cache = (*new_cache, mlp_out)
        else:
            mlp_out = layer.mlp(normed)
        return residual + layer.before_second_addition_layernorm(mlp_out), new_cache

    def attention(
        self, attention: nn.Module, hidden: Tensor, mask: Tensor, cache: tuple[Tensor, ...] | None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        heads, head_dim = attention.heads, attention.head_dim
        past = 0 if cache is None else cache[0].shape[-2]
        mixed = attention.query_key_value(hidden[:, past:, :])
        q, k, v = (t.reshape(*t.shape[:-1], heads, head_dim).permute(0, 2, 1, 3) for t in mixed.chunk(3, dim=-1))
        if cache is not None:
            past_keys, past_values, past_output = cache[:3]  # keys, values, attention output
            k = torch.cat((past_keys, k), dim=-2)
            v = torch.cat((past_values, v), dim=-2)
        scores = torch.matmul(q / math.sqrt(head_dim), k.transpose(-1, -2))
        row_mask = mask[:, :, -scores.shape[-2] :]
        scores = torch.mul(scores, row_mask) - MASK_VALUE * (1.0 - row_mask)
        scaled = scores / PB_RELAX_ALPHA  # PB-relax: one maximum per sample and head
        peak = scaled.detach().view(scaled.shape[0], scaled.shape[1], -1).max(dim=-1).values
        scores = (scaled - peak[..., None, None].expand_as(scaled)) * PB_RELAX_ALPHA
        context = torch.matmul(torch.softmax(scores, dim=-1), v).permute(0, 2, 1, 3).contiguous()
        output = attention.dense(context.view(*context.shape[:2], -1)).clamp(-FP16_MAX, FP16_MAX)
        if cache is not None:
            output = torch.cat((past_output, output), dim=-2)
        return output, (k, v, output)


# ------------------------------------------------------------------------------------------------- the loops
class Loop:
    """One loop's state: the sequence so far, its cache, and the step that draws the next image token."""

    def __init__(self, kind: str, model: nn.Module, batch: int) -> None:
        from dreamcanvas.dalle.sampling import make_generators

        self.kind, self.model, self.batch, self.cfg = kind, model, batch, model.config
        self.dtype = next(model.parameters()).dtype
        self.reference = RuDalleLoop(model, batch) if kind == "ru-dalle" else None
        self.generators = make_generators(batch, 0, None, torch.device("cpu"))

    def start(self, image_position: int) -> None:
        """The state before the step that draws image token ``image_position``: random history in the cache."""
        cfg, b = self.cfg, self.batch
        self.ids = torch.cat((text_ids(b), torch.randint(0, cfg.image_vocab_size, (b, image_position))), dim=1)
        past = cfg.text_seq_length + image_position - 1
        heads, head_dim, hidden = cfg.num_attention_heads, cfg.head_dim, cfg.hidden_size
        if image_position == 0:
            self.cache: Any = {} if self.reference else self.model.new_cache()
            return
        g = torch.Generator().manual_seed(2)
        keys = torch.randn(b, heads, past, head_dim, generator=g, dtype=self.dtype)
        values = torch.randn(b, heads, past, head_dim, generator=g, dtype=self.dtype)
        if self.reference:  # shared by every layer until the first step replaces them: values do not matter
            output = torch.randn(b, past, hidden, generator=g, dtype=self.dtype) * 0.02
            last = cfg.num_layers - 1
            self.cache = {i: (keys, values, output) + ((output,) if i == last and image_position > 1 else ())
                          for i in range(cfg.num_layers)}  # fmt: skip
        else:
            self.cache = self.model.new_cache()
            for i in range(cfg.num_layers):
                self.cache.extend(i, keys, values)
            self.cache.length = past

    def step(self) -> None:
        """Draw the next image token of every image, as the loop does."""
        from dreamcanvas.dalle.sampling import pick

        if self.reference:
            logits = self.reference.forward(self.ids, self.cache)[:, -1, self.cfg.vocab_size :]
        else:
            fed = self.cache.length
            logits = self.model(self.ids[:, fed:], self.cache, only_last=True)[:, -1, self.cfg.vocab_size :]
        token = pick(logits, self.generators, TEMPERATURE, TOP_K, TOP_P)
        self.ids = torch.cat((self.ids, token[:, None]), dim=1)


def counted(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure_row(kind: str, dtype_name: str, batch: int, positions: list[int], reps: int, threads: int) -> dict:
    """Runs in a subprocess: the prefill and the windows of one row, their times, FLOPs, bytes and peak RSS."""
    torch.set_num_threads(threads)
    model = random_malevich(DTYPES[dtype_name])
    loop = Loop(kind, model, batch)
    cpu, wall = time.process_time(), time.perf_counter()
    cfg = model.config
    with torch.no_grad():
        loop.start(0)
        prefill_flops = counted(loop.step)  # also the warm-up
        prefill_times = []
        for _ in range(reps):
            loop.start(0)
            prefill_times.append(timed(loop.step))
        windows = []
        for p in positions:
            p = max(1, min(p, cfg.image_seq_length - 1 - reps))  # the window's steps must stay inside the picture
            loop.start(p)
            flops = counted(loop.step)
            times = [timed(loop.step) for _ in range(reps)]
            windows.append({"start": p, "middle": p + (reps + 1) / 2, "flops": flops, "times": times,
                            "median": statistics.median(times)})  # fmt: skip
            del loop.cache
    return {
        "cpu_share": (time.process_time() - cpu) / (time.perf_counter() - wall) / threads,
        "prefill": statistics.median(prefill_times),
        "prefill_flops": prefill_flops,
        "windows": windows,
        "weight_bytes": weight_bytes_per_step(model),
        "element_size": model.to_logits[1].weight.element_size(),
        "peak_bytes": peak_rss(),
    }


def measure_full(dtype_name: str, batch: int, threads: int) -> dict:
    """Runs in a subprocess: one real ``sample_image_tokens`` run of ``batch`` pictures."""
    from dreamcanvas.dalle.sampling import sample_image_tokens

    torch.set_num_threads(threads)
    model = random_malevich(DTYPES[dtype_name])
    cpu, start = time.process_time(), time.perf_counter()
    tokens = sample_image_tokens(model, text_ids(1)[0], images=batch, top_k=TOP_K, top_p=TOP_P, seed=0)
    seconds = time.perf_counter() - start
    assert tokens.shape == (batch, model.config.image_seq_length)
    share = (time.process_time() - cpu) / seconds / threads
    weights = weight_bytes_per_step(model)
    return {"seconds": seconds, "cpu_share": share, "peak_bytes": peak_rss(), "weight_bytes": weights}


# ------------------------------------------------------------------------------------------------- the table
def integrate(r: dict, key: str, prefill_key: str) -> float:
    """Prefill + the sum over image positions 1 ... 1023 of the window values interpolated between middles."""
    windows = r["windows"]
    x = [w["middle"] for w in windows]
    y = [w[key] for w in windows]
    return r[prefill_key] + float(np.interp(np.arange(1, 1024), x, y).sum())


def run_child(args: argparse.Namespace, *child: str) -> dict:
    command = [sys.executable, __file__, *child, "--reps", str(args.reps), "--threads", str(args.threads),
               "--positions", *map(str, args.positions)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(child)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


HEADER = ("| row | dtype | batch | s/step at p = 0 (prefill) / {positions} | s/image | s/batch of 4 | tok/s | "
          "vs ru-dalle (same batch) | GFLOP/token (p=512) | GFLOP/s | % peak | weights GB/step | weights GB/s | "
          "% copy | KV GB/step | CPU share | peak RSS GiB |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--positions", type=int, nargs="+", default=list(POSITIONS), help="image positions sampled")
    parser.add_argument("--reps", type=int, default=3, help="timed steps per window (median), after one counted")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--full", default="auto",
                        help="a real run: 'none', 'ROW,BATCH' (e.g. dreamcanvas-bf16,4), or 'auto': one picture in the "
                             "faster dreamcanvas dtype at batch 1, if its estimate fits --full-budget")  # fmt: skip
    parser.add_argument("--full-budget", type=float, default=480.0, help="seconds a real run may be estimated at")
    parser.add_argument("--row", help=argparse.SUPPRESS)  # internal: KIND,DTYPE,BATCH -> JSON
    parser.add_argument("--full-row", help=argparse.SUPPRESS)  # internal: DTYPE,BATCH -> JSON
    args = parser.parse_args()
    if args.row:
        kind, dtype_name, batch = args.row.split(",")
        print(json.dumps(measure_row(kind, dtype_name, int(batch), args.positions, args.reps, args.threads)))
        return
    if args.full_row:
        dtype_name, batch = args.full_row.split(",")
        print(json.dumps(measure_full(dtype_name, int(batch), args.threads)))
        return

    torch.set_num_threads(args.threads)
    peaks_before = {name: matmul_peak_gflops(dtype) for name, dtype in DTYPES.items()}
    copy_before = copy_bandwidth()
    results: dict[tuple[str, int], dict] = {}
    for batch in args.batches:
        for row in args.rows:
            dtype_name = "fp32" if row == "ru-dalle" else row.split("-")[1]
            r = run_child(args, "--row", f"{row if row == 'ru-dalle' else 'dreamcanvas'},{dtype_name},{batch}")
            r["dtype"], r["batch"] = dtype_name, batch
            r["seconds"] = integrate(r, "median", "prefill")
            r["flops_total"] = integrate(r, "flops", "prefill_flops")
            results[(row, batch)] = r
            print(f"  measured {row} batch {batch}: {r['seconds']:.0f} s per batch; "
                  f"{json.dumps(r['windows'])}", file=sys.stderr, flush=True)  # fmt: skip

    full = None
    if args.full != "none":
        if args.full == "auto":  # one picture, the faster dreamcanvas dtype, if its estimate fits
            singles = sorted((r["seconds"], row) for (row, b), r in results.items() if row != "ru-dalle" and b == 1)
            choice = (singles[0][1], 1) if singles and singles[0][0] <= args.full_budget else None
        else:
            row, batch = args.full.split(",")
            choice = (row, int(batch))
        if choice:
            row, batch = choice
            full = run_child(args, "--full-row", f"{row.split('-')[1]},{batch}")
            full.update(row=row, batch=batch, dtype=row.split("-")[1])
            print(f"  full run {row} batch {batch}: {full['seconds']:.0f} s", file=sys.stderr, flush=True)

    peaks_after = {name: matmul_peak_gflops(dtype) for name, dtype in DTYPES.items()}
    copy_after = copy_bandwidth()
    peaks = {name: max(peaks_before[name], peaks_after[name]) for name in DTYPES}
    copy = max(copy_before, copy_after)
    cfg_layers, cfg_hidden = 24, 2048
    print(
        f"torch {torch.__version__}, {args.threads} threads, ruDALL-E Malevich (random weights), windows of "
        f"{args.reps} timed steps after 1 at image positions {', '.join(map(str, args.positions))}; matmul peak "
        f"fp32 {peaks['fp32']:.0f}, bf16 {peaks['bf16']:.0f} GFLOP/s; copy {copy:.1f} GB/s (before "
        f"{copy_before:.1f}, after {copy_after:.1f})"
    )
    print()
    print(HEADER.format(positions=" / ".join(str(w["start"]) for w in next(iter(results.values()))["windows"])))
    print("|" + "---|" * (HEADER.count("|") - 1))
    for (row, batch), r in results.items():
        reference = results.get(("ru-dalle", batch))
        per_image = r["seconds"] / batch
        ratio = f"{reference['seconds'] / r['seconds']:.1f}x" if reference else "-"
        batch4 = f"{r['seconds']:.0f}" if batch == 4 else f"{4 * r['seconds']:.0f} (4 x)"
        middle = min(r["windows"], key=lambda w: abs(w["start"] - 512))
        steps = " / ".join(f"{t:.2f}" for t in [r["prefill"], *(w["median"] for w in r["windows"])])
        rate = r["flops_total"] / r["seconds"] / 1e9
        weights_rate = r["weight_bytes"] * 1024 / r["seconds"] / 1e9
        kv = 2 * batch * (128 + 512) * cfg_hidden * cfg_layers * r["element_size"] / 1e9
        print(f"| {row} | {r['dtype']} | {batch} | {steps} | {per_image:.0f} | {batch4} | "
              f"{1024 * batch / r['seconds']:.2f} | {ratio} | {middle['flops'] / batch / 1e9:.1f} | {rate:.0f} | "
              f"{100 * rate / peaks[r['dtype']]:.0f} % | {r['weight_bytes'] / 1e9:.2f} | {weights_rate:.1f} | "
              f"{100 * weights_rate / copy:.0f} % | {kv:.2f} | {r['cpu_share']:.2f} | "
              f"{r['peak_bytes'] / 2**30:.2f} |")  # fmt: skip
    if full:
        batch, seconds = full["batch"], full["seconds"]
        estimate = results.get((full["row"], batch), {}).get("seconds")
        weights_rate = full["weight_bytes"] * 1024 / seconds / 1e9
        note = f"{seconds:.0f} real" + (f" (estimate {estimate:.0f})" if estimate else "")
        batch4 = note if batch == 4 else f"{4 * seconds:.0f} (4 x)"
        reference = results.get(("ru-dalle", batch))
        ratio = f"{reference['seconds'] / seconds:.1f}x" if reference else "-"
        print(f"| **{full['row']} full run** (`sample_image_tokens`) | {full['dtype']} | {batch} | - | "
              f"{seconds / batch:.0f} | {batch4} | {1024 * batch / seconds:.2f} | {ratio} | - | - | - | "
              f"{full['weight_bytes'] / 1e9:.2f} | {weights_rate:.1f} | {100 * weights_rate / copy:.0f} % | - | "
              f"{full['cpu_share']:.2f} | {full['peak_bytes'] / 2**30:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
