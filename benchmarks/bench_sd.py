"""Seconds per Stable Diffusion picture on this CPU: stock diffusers against dreamcanvas's fastest path.

    python benchmarks/bench_sd.py                       # the four rows below, 512², 2 threads
    python benchmarks/bench_sd.py --models sd-turbo     # only SD-Turbo's pair
    python benchmarks/bench_sd.py --quick               # tiny random models at 64²: a smoke check in seconds

The models are the real SD-Turbo (the SD 2.1 architecture: OpenCLIP ViT-H/14 text tower, 23 of its 24 layers as
SD 2 uses them) and SD 1.5 (CLIP ViT-L/14 text tower) architectures, built from their published configs with
random weights: compute does not depend on the weight values and nothing is downloaded. Parameter counts are
checked against the real models' before anything is timed.

Rows, each in a fresh subprocess (so each peak RSS is its own), one after another in one invocation, with the
matmul peaks measured in the same invocation:

- ``stock``: diffusers' ``StableDiffusionPipeline`` as a user gets it: fp32 weights, its default attention
  (``AttnProcessor2_0``, PyTorch SDPA), the full ``AutoencoderKL`` decoding the picture, PIL output, torch's
  default threads (2 here), the model's own scheduler.
- ``dreamcanvas``: ``dreamcanvas.sd.pipeline.draw`` with the weights built straight in bf16 (no fp32 copy), the
  levers of ``dreamcanvas.sd.speed.prepare_for_cpu`` applied, and ``decoder="taesd"`` (``AutoencoderTiny``).

SD-Turbo draws in 1 step with guidance 0 (Euler, "trailing" spacing); SD 1.5 in 20 steps with guidance 7
(its PNDM scheduler; classifier-free guidance, so the UNet sees a batch of 2). Each row warms up with one call
(one step, same size and guidance) before the timed pictures. "UNet s" is the time spent inside the UNet's
forward calls of the timed pictures; "UNet GFLOP/s" divides the FLOPs of those calls (counted by
``torch.utils.flop_counter`` on one call) by that time, and "% of peak" by the matmul peak of the UNet's dtype.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generate import matmul_peak_gflops

PROMPT = "a lighthouse on a cliff in a storm, oil painting"
VOCAB_SIZE = 49408
"""CLIP's BPE vocabulary size (both text towers): the embedding tables are this big."""

# ------------------------------------------------------------------------------------------------- configs
# The real configs, as the models' diffusers folders publish them (the keys that define the architecture), checked
# against copies of stabilityai/sd-turbo's unet/ and scheduler/ configs, stable-diffusion-2-1-base's unet/ and
# text_encoder/ configs and stable-diffusion-v1-5's unet/, text_encoder/, vae/ and scheduler/ configs; the
# PARAMETERS below catch any drift.
_UNET_COMMON: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "only_cross_attention": False,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
}
UNET_SD_TURBO = {**_UNET_COMMON, "cross_attention_dim": 1024, "attention_head_dim": (5, 10, 20, 20),
                 "use_linear_projection": True}  # fmt: skip
"""stabilityai/sd-turbo unet/config.json (= stable-diffusion-2-1-base's)."""
UNET_SD15 = {**_UNET_COMMON, "cross_attention_dim": 768, "attention_head_dim": 8, "use_linear_projection": False}
"""stable-diffusion-v1-5 unet/config.json."""

_TEXT_COMMON: dict[str, Any] = {
    "vocab_size": VOCAB_SIZE,
    "max_position_embeddings": 77,
    "layer_norm_eps": 1e-5,
    "attention_dropout": 0.0,
    "dropout": 0.0,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
}
TEXT_OPENCLIP_H = {**_TEXT_COMMON, "hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
                   "num_hidden_layers": 23, "hidden_act": "gelu", "projection_dim": 512}  # fmt: skip
"""sd-turbo / SD 2.1 text_encoder/config.json: OpenCLIP ViT-H/14's text tower without its last layer."""
TEXT_CLIP_L = {**_TEXT_COMMON, "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
               "num_hidden_layers": 12, "hidden_act": "quick_gelu", "projection_dim": 768}  # fmt: skip
"""stable-diffusion-v1-5 text_encoder/config.json: CLIP ViT-L/14's text tower."""

VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
"""vae/config.json of both models (the SD VAE; SD 2.1's is the same architecture and scaling factor)."""

_SCHEDULER_COMMON: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "steps_offset": 1,
}
_EULER_TRAILING = {**_SCHEDULER_COMMON, "timestep_spacing": "trailing", "interpolation_type": "linear",
                   "use_karras_sigmas": False}  # fmt: skip
SCHEDULER_SD_TURBO = ("EulerDiscreteScheduler", _EULER_TRAILING)
"""stabilityai/sd-turbo scheduler/scheduler_config.json."""
SCHEDULER_SD15 = ("PNDMScheduler", {**_SCHEDULER_COMMON, "skip_prk_steps": True, "set_alpha_to_one": False})
"""stable-diffusion-v1-5 scheduler/scheduler_config.json (PNDM, diffusers' stock scheduler for it)."""

PARAMETERS = {
    "unet-sd-turbo": 865_910_724,
    "unet-sd15": 859_520_964,
    "text-openclip-h": 340_387_840,
    "text-clip-l": 123_060_480,
    "vae": 83_653_863,
    "taesd": 2_445_063,
}
"""The real models' parameter counts: the configs above must build exactly these."""


@dataclass(frozen=True)
class Model:
    """One architecture and the picture a user asks of it."""

    name: str
    unet: dict[str, Any]
    text: dict[str, Any]
    scheduler: tuple[str, dict[str, Any]]
    steps: int
    guidance: float
    unet_key: str
    text_key: str


MODELS = {
    "sd-turbo": Model("sd-turbo", UNET_SD_TURBO, TEXT_OPENCLIP_H, SCHEDULER_SD_TURBO, 1, 0.0,
                      "unet-sd-turbo", "text-openclip-h"),
    "sd15": Model("sd15", UNET_SD15, TEXT_CLIP_L, SCHEDULER_SD15, 20, 7.0, "unet-sd15", "text-clip-l"),
}  # fmt: skip
ARITHMETICS = ("stock", "dreamcanvas")


def quick_model(model: Model) -> Model:
    """The same model family shrunk to a few thousand parameters: the smoke check's architecture."""
    text = {**model.text, "hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2,
            "projection_dim": 32}  # fmt: skip
    unet = {**model.unet, "block_out_channels": (32, 64), "layers_per_block": 1, "norm_num_groups": 16,
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"), "cross_attention_dim": 32,
            "attention_head_dim": (4, 8) if isinstance(model.unet["attention_head_dim"], tuple) else 8}  # fmt: skip
    steps = min(model.steps, 2)
    return Model(model.name, unet, text, model.scheduler, steps, model.guidance, "", "")


QUICK_VAE = {**VAE, "block_out_channels": (16, 16, 16, 16), "layers_per_block": 1, "norm_num_groups": 8}
QUICK_TAESD = {"encoder_block_out_channels": (8,) * 4, "decoder_block_out_channels": (8,) * 4,
               "num_encoder_blocks": (1,) * 4, "num_decoder_blocks": (1,) * 4}  # fmt: skip


# ------------------------------------------------------------------------------------------------- building
@contextlib.contextmanager
def built_in(dtype: torch.dtype) -> Iterator[None]:
    """Parameters created straight in ``dtype``: a bf16 model never holds an fp32 copy of its weights."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def write_tokenizer(folder: Path) -> Any:
    """A CLIP tokenizer from a vocabulary of letters and the prompt's words (ids far below 49408), padding to 77."""
    from transformers import CLIPTokenizer

    letters = [chr(code) for code in range(ord("a"), ord("z") + 1)]
    tokens = ["<|startoftext|>", "<|endoftext|>", *letters, *(letter + "</w>" for letter in letters), ",</w>"]
    merges: list[str] = []
    for word in PROMPT.replace(",", "").split():
        pieces = [*word[:-1], word[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append(f"{pieces[0]} {pieces[1]}")
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
            tokens.append(pieces[0])
    tokens = list(dict.fromkeys(tokens))
    (folder / "vocab.json").write_text(json.dumps({token: index for index, token in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")
    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=77)


def count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def check_parameters(name: str, module: torch.nn.Module, key: str) -> None:
    """The architecture is the real one: its parameter count is the published model's, exactly."""
    if key and count(module) != PARAMETERS[key]:
        raise AssertionError(f"{name}: {count(module):,} parameters, the real {key} has {PARAMETERS[key]:,}")


def build_pipeline(model: Model, dtype: torch.dtype, quick: bool, tokenizer_dir: Path) -> Any:
    """A diffusers ``StableDiffusionPipeline`` of ``model``'s architecture, random weights, built in ``dtype``."""
    import diffusers
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    spec = quick_model(model) if quick else model
    torch.manual_seed(0)
    with built_in(dtype):
        unet = UNet2DConditionModel(**spec.unet).eval()
        text_encoder = CLIPTextModel(CLIPTextConfig(**spec.text)).eval()
        vae = AutoencoderKL(**(QUICK_VAE if quick else VAE)).eval()
    check_parameters("UNet", unet, spec.unet_key)
    check_parameters("text encoder", text_encoder, spec.text_key)
    check_parameters("VAE", vae, "" if quick else "vae")
    scheduler_class, scheduler_config = spec.scheduler
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=write_tokenizer(tokenizer_dir),
        unet=unet,
        scheduler=getattr(diffusers, scheduler_class)(**scheduler_config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_taesd(dtype: torch.dtype, quick: bool) -> Any:
    """TAESD: ``AutoencoderTiny``'s default config is madebyollin/taesd's."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    with built_in(dtype):
        taesd = AutoencoderTiny(**(QUICK_TAESD if quick else {})).eval()
    check_parameters("TAESD", taesd, "" if quick else "taesd")
    return taesd


# ------------------------------------------------------------------------------------------------- measuring
class UNetClock:
    """Wall time spent inside the UNet's forward calls, and how many calls: the UNet's share of a picture."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._start = 0.0
        unet.register_forward_pre_hook(self._enter)
        unet.register_forward_hook(self._leave)

    def _enter(self, module: torch.nn.Module, inputs: Any) -> None:
        self._start = time.perf_counter()

    def _leave(self, module: torch.nn.Module, inputs: Any, output: Any) -> None:
        self.seconds += time.perf_counter() - self._start
        self.calls += 1

    def reset(self) -> None:
        self.seconds, self.calls = 0.0, 0


def unet_flops(pipe: Any, size: int, guidance: float) -> int:
    """FLOPs of one UNet call as the pipeline makes it (a batch of 2 under classifier-free guidance)."""
    unet = pipe.unet
    batch = 2 if guidance > 1 else 1
    latents = torch.randn(batch, 4, size // 8, size // 8, dtype=unet.dtype)
    context = torch.randn(batch, 77, unet.config.cross_attention_dim, dtype=unet.dtype)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(latents, torch.tensor([999.0]), context)
    return counter.get_total_flops()


def stock_picture(pipe: Any, model: Model, size: int, seed: int, steps: int) -> Any:
    """What a diffusers user writes: the pipeline's own call, a PIL picture out."""
    generator = torch.Generator("cpu").manual_seed(seed)
    return pipe(PROMPT, num_inference_steps=steps, guidance_scale=model.guidance, width=size, height=size,
                generator=generator, output_type="pil").images[0]  # fmt: skip


def dreamcanvas_picture(pipe: Any, tiny_decoder: Any, model: Model, size: int, seed: int, steps: int) -> Any:
    from dreamcanvas.sd.pipeline import draw
    from dreamcanvas.sd.settings import SDSettings

    settings = SDSettings(prompt=PROMPT, model=model.name, steps=steps, guidance=model.guidance, seed=seed,
                          width=size, height=size, preview="none", decoder="taesd", precision="bf16")  # fmt: skip
    return draw(pipe, settings, tiny_decoder=tiny_decoder)[0]


def measure_row(model_name: str, arithmetic: str, size: int, pictures: int, quick: bool) -> dict[str, Any]:
    """Build one configuration, warm it up with a one-step picture, then time ``pictures`` whole pictures."""
    model = quick_model(MODELS[model_name]) if quick else MODELS[model_name]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tokenizer_dir:
        if arithmetic == "stock":
            pipe = build_pipeline(MODELS[model_name], torch.float32, quick, Path(tokenizer_dir))
            picture = lambda seed, steps: stock_picture(pipe, model, size, seed, steps)  # noqa: E731
        else:
            from dreamcanvas.sd.speed import prepare_for_cpu, prepare_tiny_decoder

            pipe = prepare_for_cpu(build_pipeline(MODELS[model_name], torch.bfloat16, quick, Path(tokenizer_dir)))
            tiny = prepare_tiny_decoder(build_taesd(torch.bfloat16, quick))
            picture = lambda seed, steps: dreamcanvas_picture(pipe, tiny, model, size, seed, steps)  # noqa: E731
    built = time.perf_counter() - start
    flops = unet_flops(pipe, size, model.guidance)
    clock = UNetClock(pipe.unet)
    warm_start = time.perf_counter()
    picture(0, 1)
    warm_up = time.perf_counter() - warm_start
    walls, cpus, unet_seconds = [], [], []
    for index in range(pictures):
        clock.reset()
        wall, cpu = time.perf_counter(), time.process_time()
        image = picture(1 + index, model.steps)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        unet_seconds.append(clock.seconds)
    best = min(range(pictures), key=walls.__getitem__)
    return {
        "best": walls[best],
        "median": sorted(walls)[pictures // 2],
        "unet_s": unet_seconds[best],
        "unet_calls": clock.calls,
        "flops": flops,
        "cpu_share": cpus[best] / walls[best] / torch.get_num_threads(),
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "dtype": str(pipe.unet.dtype).removeprefix("torch."),
        "build_s": built,
        "warm_up_s": warm_up,
        "picture": list(image.size),
        "threads": torch.get_num_threads(),
    }


# ------------------------------------------------------------------------------------------------- table
DEFAULT_PICTURES = {("sd-turbo", "stock"): 2, ("sd-turbo", "dreamcanvas"): 4, ("sd15", "stock"): 1,
                    ("sd15", "dreamcanvas"): 1}  # fmt: skip
"""Timed pictures per row: more for the fast rows, whose times the shared machine disturbs most."""


def run_row(model: str, arithmetic: str, args: argparse.Namespace) -> dict[str, Any]:
    pictures = args.pictures or DEFAULT_PICTURES[(model, arithmetic)]
    command = [sys.executable, __file__, "--row", model, arithmetic, "--size", str(args.size),
               "--pictures", str(pictures), *(["--quick"] if args.quick else [])]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"row {model} {arithmetic} failed:\n{done.stderr[-3000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "pictures": pictures}


TABLE_HEADER = ("| model | picture | arithmetic | UNet dtype | s/picture (best) | median | vs stock | UNet s | "
                "UNet calls | GFLOP/call | UNet GFLOP/s | % of matmul peak | CPU share | peak RSS MiB |")  # fmt: skip


def table_line(model: str, arithmetic: str, r: dict[str, Any], stock: float | None, peaks: dict[str, float],
               picture: str) -> str:  # fmt: skip
    """One row of the table; ``stock`` is the same model's stock seconds per picture (None: this is stock)."""
    ratio = f"**{stock / r['best']:.1f}x**" if stock else "-"
    achieved = r["flops"] * r["unet_calls"] / max(r["unet_s"], 1e-9) / 1e9
    gflop = r["flops"] / 1e9
    gflop_text = f"{gflop:.0f}" if gflop >= 10 else f"{gflop:.3g}"
    return (f"| {model} | {picture} | {arithmetic} | {r['dtype']} | {r['best']:.2f} | {r['median']:.2f} | {ratio} | "
            f"{r['unet_s']:.2f} | {r['unet_calls']} | {gflop_text} | {achieved:.0f} | "
            f"{100 * achieved / peaks[r['dtype']]:.0f}% | {r['cpu_share']:.2f} | {r['rss_mib']:.0f} |")  # fmt: skip


def print_table(args: argparse.Namespace) -> None:
    """Every chosen row in its own subprocess, between two matmul-peak measurements; then the table."""
    dtypes = (torch.float32, torch.bfloat16)
    before = {str(d).removeprefix("torch."): matmul_peak_gflops(d, repeats=30) for d in dtypes}
    rows = []
    for model in args.models:
        for arithmetic in args.arithmetics:
            r = run_row(model, arithmetic, args)
            rows.append((model, arithmetic, r))
            print(f"  measured {model} {arithmetic}: {json.dumps(r)}", file=sys.stderr, flush=True)
    after = {str(d).removeprefix("torch."): matmul_peak_gflops(d, repeats=30) for d in dtypes}
    peaks = {name: max(before[name], after[name]) for name in before}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, random weights, prompt padded to 77 tokens; "
          f"matmul peak (the better of before and after the rows) fp32 {peaks['float32']:.0f} GFLOP/s, bf16 "
          f"{peaks['bfloat16']:.0f} GFLOP/s (before {before['float32']:.0f} / {before['bfloat16']:.0f}, "
          f"after {after['float32']:.0f} / {after['bfloat16']:.0f})")  # fmt: skip
    print()
    print(TABLE_HEADER)
    print("|" + "---|" * (TABLE_HEADER.count("|") - 1))
    stock: dict[str, float] = {}
    for model, arithmetic, r in rows:
        spec = quick_model(MODELS[model]) if args.quick else MODELS[model]
        picture = f"{args.size}², {spec.steps} step{'s' if spec.steps > 1 else ''}, CFG {spec.guidance:g}"
        if arithmetic == "stock":
            stock[model] = r["best"]
        print(table_line(model, arithmetic, r, None if arithmetic == "stock" else stock.get(model), peaks, picture))
    print()
    for model, arithmetic, r in rows:
        width, height = r["picture"]
        print(f"- {model} {arithmetic}: built in {r['build_s']:.0f} s, warm-up picture (1 step) "
              f"{r['warm_up_s']:.1f} s, {r['pictures']} timed picture(s) of {width}x{height}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--arithmetics", nargs="+", default=list(ARITHMETICS), choices=ARITHMETICS,
                        help="stock diffusers, dreamcanvas's fastest path, or both (the default)")
    parser.add_argument("--size", type=int, default=None, help="picture side (default 512, 64 with --quick)")
    parser.add_argument("--pictures", type=int, default=0, help="timed pictures per row (default: 1-6 by row)")
    parser.add_argument("--quick", action="store_true", help="tiny random models at 64²: a smoke check in seconds")
    parser.add_argument("--row", nargs=2, help=argparse.SUPPRESS)  # internal: measure one row, print JSON
    args = parser.parse_args()
    args.size = args.size or (64 if args.quick else 512)
    if args.quick and not args.pictures:
        args.pictures = 1
    if args.row:
        print(json.dumps(measure_row(*args.row, args.size, args.pictures or 1, args.quick)))
        return
    print_table(args)


if __name__ == "__main__":
    main()
