"""Train a small VQGAN on a folder of pictures, on a CPU, resumable, saved in taming-transformers' format.

The recipe is taming's ``VQModel`` + ``VQLPIPSWithDiscriminator``, scaled down for a laptop:

* **Reconstruction: L1 only.** LPIPS needs ImageNet-trained VGG weights, which dreamcanvas cannot download
  or bundle, and a perceptual term made from random features would only pretend to be one. The patch
  discriminator is what sharpens textures instead.
* **Codebook: taming's codebook + commitment losses (beta 0.25), not EMA updates.** The codebook stays an
  ordinary parameter in ``quantize.embedding.weight``, trained by the same Adam as the rest, so the
  checkpoint is exactly taming's and resuming needs no extra statistics. EMA's main advantage, fewer dead
  codes, comes from the dead-code restarts below, which EMA would need as well on a few hundred pictures.
* **Dead-code restarts.** Every ``restart_every`` steps, each codebook row that no latent picked since the
  last check is moved onto a random encoder output of the current batch. Without this a 1024-row codebook
  trained on a few hundred pictures ends up using a few dozen rows: worse reconstructions, and VQGAN+CLIP,
  which starts from random rows, would start from rows the decoder has never seen.
* **GAN: NLayerDiscriminator with hinge loss from ``disc_start`` on, taming's adaptive weight.** The
  generator's adversarial term is scaled by ``|grad L1| / |grad GAN|`` at the decoder's last layer, so it
  is worth a fixed fraction (``disc_weight``) of the reconstruction signal whatever the pictures: a fixed
  weight would need retuning per data set. Before ``disc_start`` the discriminator is not even run.
* **Adam, betas (0.5, 0.9), constant learning rate after a short warmup** (as taming, which has no decay):
  the schedule does not depend on ``steps``, so a finished run can be extended with ``--resume --steps``
  and still equal a straight run to the new length.

Every random draw (initial weights, batch order, crops, flips, restarts) is a function of ``(seed, step)``,
not of a generator's history, so a run stopped at step k (Ctrl-C, ``max_minutes``, a callback raising
``KeyboardInterrupt``) and continued with ``resume`` ends with the same weights, byte for byte, as an
uninterrupted run with the same thread count.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dreamcanvas import memory, training
from dreamcanvas.data.captions import iter_images
from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.files import atomic
from dreamcanvas.files.pictures import open_rgb
from dreamcanvas.models.discriminator import NLayerDiscriminator, min_size
from dreamcanvas.models.vqgan import VQGAN, VQGANConfig, lookup, nearest_codes, save_vqgan, taming_config
from dreamcanvas.precision import PRECISIONS, concrete_precision, cpu_autocast
from dreamcanvas.records import check_record, setting
from dreamcanvas.training import loop, output_folder, restore, torch_threads
from dreamcanvas.training.loop import train_until

STATE_NAME = "train_state.pt"
"""Everything ``--resume`` needs; ``.pt``, so ``--vqgan-model local:OUT`` still sees one .yaml and one .ckpt."""
YAML_NAME, CKPT_NAME, METRICS_NAME = "model.yaml", "model.ckpt", "metrics.json"
SAMPLES_DIR, HELDOUT_NAME = "samples", "heldout.png"
BETA = 0.25
"""Commitment weight: how strongly the encoder is pulled towards the codebook (taming and VQ-VAE use 0.25)."""
ADAM_BETAS = (0.5, 0.9)
"""taming's: a short momentum memory keeps the generator/discriminator game from oscillating."""
GRID_PICTURES = 8
MAX_SCORED = 512
"""Held-out pictures scored for ``metrics.json`` (evenly spaced): enough for a stable mean, in seconds."""
RESUME_PER_SESSION = ("data_dir", "out", "steps", "sample_every", "checkpoint_every", "max_minutes", "threads",
                      "export_dtype")  # fmt: skip
"""Options a resumed run may change; all others define the run and must match the saved ones."""


@dataclass
class TrainVQGANConfig:
    """Everything that defines a training run; see ``dreamcanvas train vqgan --help``."""

    data_dir: Path
    out: Path
    size: int = setting(64, low=1, high=65_536)
    steps: int = setting(10_000, low=1, high=100_000_000_000)
    batch_size: int = setting(8, low=1, high=1_000_000)
    lr: float = setting(2e-4, above=0, high=10)
    warmup_steps: int = setting(100, low=0, high=100_000_000)
    seed: int = setting(0, low=0, high=2**63 - 1)
    n_embed: int = setting(1024, low=1, high=1_000_000)
    embed_dim: int = setting(64, low=1, high=65_536)
    ch: int = setting(64, low=1, high=65_536)
    ch_mult: tuple[int, ...] = setting((1, 2, 2, 2), low=1, high=64)
    num_res_blocks: int = setting(1, low=1, high=64)
    disc_start: int = setting(4_000, low=0, high=100_000_000_000)
    disc_weight: float = setting(0.8, low=0, high=1e6)
    disc_ndf: int = setting(64, low=1, high=65_536)
    disc_layers: int = setting(3, low=1, high=16)
    restart_every: int = setting(100, low=0, high=100_000_000)
    val_fraction: float = setting(0.1, low=0, high=0.99)
    precision: str = setting("auto", choices=PRECISIONS)
    sample_every: int = setting(500, low=1, high=100_000_000)
    checkpoint_every: int = setting(500, low=1, high=100_000_000)
    max_minutes: float | None = setting(None, above=0, high=1e7)
    threads: int | None = setting(None, low=1, high=4096)
    export_dtype: str = setting("fp32", choices=("fp16", "fp32"))

    def ddconfig(self) -> dict[str, Any]:
        """taming's ``ddconfig`` for this run: no attention above the middle block (cheap on a CPU)."""
        return {"double_z": False, "z_channels": self.embed_dim, "resolution": self.size, "in_channels": 3,
                "out_ch": 3, "ch": self.ch, "ch_mult": list(self.ch_mult), "num_res_blocks": self.num_res_blocks,
                "attn_resolutions": [], "dropout": 0.0}  # fmt: skip

    def saved(self) -> dict[str, Any]:
        """The options that define the run (what ``--resume`` restores and checks)."""
        return training.run_options(self, RESUME_PER_SESSION)


@dataclass
class StepInfo(loop.StepInfo):
    """What the progress callback sees after each optimiser step, with the codebook's use."""

    codes_used: float = 0.0
    """Fraction of codebook rows picked between the last two dead-code checks (so far, before the first)."""
    restarted: int = 0


@dataclass
class TrainVQGANResult:
    out: Path
    steps: int
    total_steps: int
    finished: bool
    l1: list[float] = field(default_factory=list)
    """Training L1 (pixels in [-1, 1]) of every step so far, earlier sessions included."""
    steps_per_s: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- checks
def parse_ch_mult(text: str) -> tuple[int, ...]:
    """``"1,2,2,4"`` -> ``(1, 2, 2, 4)``, with a one-line error for anything else."""
    try:
        values = tuple(int(part) for part in text.replace(" ", "").split(","))
    except ValueError:
        raise DreamcanvasError(f"--ch-mult {text!r}: expected comma-separated integers such as 1,2,2,4") from None
    if not values or min(values) < 1:
        raise DreamcanvasError(f"--ch-mult {text!r}: expected positive integers such as 1,2,2,4")
    return values


def validate(config: TrainVQGANConfig) -> None:
    """One-line errors for options that cannot work, before any picture is read."""
    check_record(config)
    if not config.ch_mult or len(config.ch_mult) > 8:
        raise DreamcanvasError("--ch-mult needs 1 to 8 levels, such as 1,2,2,2")
    if any(config.ch * m % 32 for m in config.ch_mult):
        raise DreamcanvasError(f"--ch {config.ch} times each --ch-mult must be a multiple of 32 (group norm)")
    factor = 2 ** (len(config.ch_mult) - 1)
    if config.size % factor or config.size < min_size(config.disc_layers):
        raise DreamcanvasError(f"--size must be a multiple of {factor} (the downsampling of --ch-mult) and at "
                               f"least {min_size(config.disc_layers)} (the discriminator's patch)")  # fmt: skip


# --------------------------------------------------------------------------------------------- data
def open_picture(path: Path, size: int) -> torch.Tensor:
    """``(3, h, w)`` uint8, shorter side ``size``: transparency over white, the aspect ratio kept."""
    flat = open_rgb(path, (size, size), cover=True)  # large pictures arrive shrunk, shorter side still >= 3 x size
    scale = size / min(flat.size)
    shape = (max(size, round(flat.width * scale)), max(size, round(flat.height * scale)))
    if shape != flat.size:
        flat = flat.resize(shape, Image.Resampling.BICUBIC, reducing_gap=3.0)
    return torch.from_numpy(np.array(flat)).permute(2, 0, 1).contiguous()


def split_paths(paths: Sequence[Path], root: Path, val_fraction: float) -> tuple[list[Path], list[Path]]:
    """(training, held-out): the held-out ones are those whose relative path hashes lowest, so the same folder
    always gives the same split, whatever the order of listing. At least one of each when possible."""
    if val_fraction == 0 or len(paths) < 2:
        return list(paths), []
    count = min(max(1, round(len(paths) * val_fraction)), len(paths) - 1)
    ranked = sorted(paths, key=lambda p: hashlib.sha256(p.relative_to(root).as_posix().encode()).digest())
    held = set(ranked[:count])
    return [p for p in paths if p not in held], [p for p in paths if p in held]


def fingerprint(paths: Sequence[Path], root: Path) -> str:
    """Changes when a picture is added, removed, renamed or rewritten with another size in bytes."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{path.relative_to(root).as_posix()}\t{path.stat().st_size}\n".encode())
    return digest.hexdigest()


def center_crop(picture: torch.Tensor, size: int) -> torch.Tensor:
    top, left = (picture.shape[1] - size) // 2, (picture.shape[2] - size) // 2
    return picture[:, top : top + size, left : left + size]


@dataclass
class Pictures:
    """The folder in memory: uint8 pictures with their shorter side at ``size``, split once."""

    train: list[torch.Tensor]
    val: list[torch.Tensor]
    size: int
    fingerprint: str

    @classmethod
    def load(cls, root: Path, size: int, val_fraction: float) -> Pictures:
        if not root.is_dir():
            raise DreamcanvasError(f"no such picture folder: {root}")
        paths = list(iter_images(root))
        if not paths:
            raise DreamcanvasError(f"no pictures (png, jpg, webp) under {root}")
        train, val = split_paths(paths, root, val_fraction)
        return cls([open_picture(p, size) for p in train], [open_picture(p, size) for p in val], size,
                   fingerprint(paths, root))  # fmt: skip

    def batch(self, step: int, batch_size: int, seed: int) -> torch.Tensor:
        """Batch number ``step`` in ``[0, 1]``: epoch-wise shuffled pictures, each randomly cropped and flipped."""
        generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
        if len(self.train) >= batch_size:
            chosen = loop.epoch_batch(step, batch_size, len(self.train), seed).tolist()
        else:  # fewer pictures than a batch: draw with replacement
            chosen = torch.randint(len(self.train), (batch_size,), generator=generator).tolist()
        crops = [self._random_crop(self.train[i], generator) for i in chosen]
        return torch.stack(crops).float() / 255

    def _random_crop(self, picture: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        room = (picture.shape[1] - self.size + 1, picture.shape[2] - self.size + 1, 2)
        top, left, flip = (int(torch.randint(n, (1,), generator=generator)) for n in room)
        crop = picture[:, top : top + self.size, left : left + self.size]
        return crop.flip(-1) if flip else crop

    def views(self, pictures: Sequence[torch.Tensor], count: int) -> torch.Tensor:
        """Up to ``count`` evenly spaced pictures, centre-cropped, in ``[0, 1]``: fixed, for grids and scores."""
        if not pictures:
            return torch.empty(0, 3, self.size, self.size)
        chosen = np.linspace(0, len(pictures) - 1, min(count, len(pictures))).round().astype(int)
        return torch.stack([center_crop(pictures[i], self.size) for i in chosen]).float() / 255


# --------------------------------------------------------------------------------------------- losses
Tensors3 = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def quantize_for_training(latent: torch.Tensor, codebook: torch.Tensor) -> Tensors3:
    """(straight-through quantised latent, codes, codebook + BETA * commitment loss).

    The decoder's gradient reaches only the encoder (straight through); the codebook learns from its own
    loss, which pulls each used row towards the latents that picked it.
    """
    codes = nearest_codes(latent.detach(), codebook)
    snapped = lookup(codes, codebook)
    loss = F.mse_loss(snapped, latent.detach()) + BETA * F.mse_loss(latent, snapped.detach())
    return latent + (snapped - latent).detach(), codes, loss


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator's hinge loss: real patches pushed above +1, reconstructed ones below -1."""
    return 0.5 * (F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean())


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
    """taming's balance: the ratio of the two losses' gradient norms at the decoder's last layer (clamped),
    so that the adversarial gradient there is as large as the reconstruction one."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0, 1e4).detach()


def restart_dead_codes(codebook: torch.Tensor, usage: torch.Tensor, latent: torch.Tensor,
                       generator: torch.Generator) -> int:  # fmt: skip
    """Move every row nobody picked onto a random latent vector of this batch (plus a little noise, so rows
    restarted on the same vector separate); returns how many moved."""
    dead = (usage == 0).nonzero().flatten()
    if len(dead) == 0:
        return 0
    vectors = latent.detach().movedim(1, -1).reshape(-1, latent.shape[1])
    picks = torch.randint(len(vectors), (len(dead),), generator=generator)
    noise = torch.randn(len(dead), vectors.shape[1], generator=generator) * (0.01 * vectors.std())
    with torch.no_grad():
        codebook[dead] = vectors[picks] + noise
    return len(dead)


# --------------------------------------------------------------------------------------------- the run
@dataclass
class Run:
    """The networks and optimisers of a run, and the counters that make it resumable."""

    model: VQGAN
    disc: NLayerDiscriminator
    opt_g: torch.optim.Adam
    opt_d: torch.optim.Adam
    step: int = 0
    usage: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    l1: list[float] = field(default_factory=list)

    @classmethod
    def create(cls, config: TrainVQGANConfig) -> Run:
        torch.manual_seed(config.seed)
        model = VQGAN(VQGANConfig(config.ddconfig(), config.n_embed, config.embed_dim)).train()
        disc = NLayerDiscriminator(3, config.disc_ndf, config.disc_layers).train()
        opt_g = torch.optim.Adam(model.parameters(), lr=config.lr, betas=ADAM_BETAS)
        opt_d = torch.optim.Adam(disc.parameters(), lr=config.lr, betas=ADAM_BETAS)
        return cls(model, disc, opt_g, opt_d, usage=torch.zeros(config.n_embed, dtype=torch.long))

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "disc": self.disc.state_dict(), "opt_g": self.opt_g.state_dict(),
                "opt_d": self.opt_d.state_dict(), "step": self.step, "usage": self.usage, "l1": self.l1}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.disc.load_state_dict(state["disc"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.step, self.usage, self.l1 = state["step"], state["usage"].clone(), list(state["l1"])


def set_lr(run: Run, config: TrainVQGANConfig) -> None:
    """Linear warmup over the first steps, then constant (so ``steps`` can grow on resume)."""
    lr = config.lr * min(1.0, (run.step + 1) / max(config.warmup_steps, 1))
    for group in (*run.opt_g.param_groups, *run.opt_d.param_groups):
        group["lr"] = lr


def train_step(run: Run, images: torch.Tensor, config: TrainVQGANConfig) -> tuple[dict[str, float], torch.Tensor]:
    """One generator update, then (from ``disc_start`` on) one discriminator update, on the same batch.

    Returns the losses and the batch's latents (for dead-code restarts). The networks run under bf16
    autocast if asked (about twice as fast on CPUs with AMX); the codebook and all losses stay fp32.
    """
    model, disc = run.model, run.disc
    use_gan = run.step >= config.disc_start
    autocast = cpu_autocast(config.precision)
    x = images * 2 - 1
    with autocast:
        latent = model.encode(x).float()
    straight, codes, vq_loss = quantize_for_training(latent, model.codebook)
    with autocast:
        recon = model.decode(straight).float()
    rec_loss = (x - recon).abs().mean()
    loss = rec_loss + vq_loss
    losses = {"l1": rec_loss.item(), "vq": vq_loss.item()}
    if use_gan:
        disc.requires_grad_(False)  # its weights take no part in the generator's update
        with autocast:
            g_loss = -disc(recon).float().mean()
        weight = adaptive_weight(rec_loss, g_loss, model.decoder.conv_out.weight) * config.disc_weight
        loss = loss + weight * g_loss
        losses |= {"g": g_loss.item(), "w": weight.item()}
    run.opt_g.zero_grad(set_to_none=True)
    loss.backward()
    run.opt_g.step()
    if use_gan:
        disc.requires_grad_(True)
        with autocast:
            logits_real, logits_fake = disc(x).float(), disc(recon.detach()).float()
        d_loss = hinge_d_loss(logits_real, logits_fake)
        run.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        run.opt_d.step()
        losses["d"] = d_loss.item()
    run.usage += torch.bincount(codes.flatten(), minlength=config.n_embed)
    return losses, latent.detach()


# --------------------------------------------------------------------------------------------- outputs
@torch.no_grad()
def reconstruct(model: VQGAN, images: torch.Tensor, batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """(reconstructions in ``[0, 1]``, codes) of ``[0, 1]`` pictures, in fp32 and eval mode, as generation runs."""
    was_training = model.training
    model.eval()
    outs, all_codes = [], []
    for start in range(0, len(images), batch_size):
        latent = model.encode(images[start : start + batch_size] * 2 - 1)
        codes = model.codes(latent)
        outs.append(((model.decode(lookup(codes, model.codebook)) + 1) / 2).clamp(0, 1))
        all_codes.append(codes)
    model.train(was_training)
    return torch.cat(outs), torch.cat(all_codes)


def save_grid(originals: torch.Tensor, reconstructions: torch.Tensor, path: Path) -> Path:
    """Originals in the top row, their reconstructions below, as one PNG (written atomically)."""
    rows = [torch.cat(list(images), dim=2) for images in (originals, reconstructions)]
    grid = torch.cat(rows, dim=1).mul(255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(np.ascontiguousarray(grid), "RGB")
    atomic.write_atomically(path, lambda file: picture.save(file, format="PNG"))
    return path


def score(model: VQGAN, images: torch.Tensor, n_embed: int) -> dict[str, float]:
    """Mean absolute error (pixels in ``[0, 1]``), PSNR, and the share of codebook rows the pictures use."""
    recon, codes = reconstruct(model, images)
    mse = (recon - images).pow(2).mean().item()
    return {"l1": round((recon - images).abs().mean().item(), 5),
            "psnr": round(10 * math.log10(1 / max(mse, 1e-10)), 3),
            "codes_used": round(len(codes.unique()) / n_embed, 4)}  # fmt: skip


def yaml_content(config: TrainVQGANConfig, model: VQGAN) -> dict[str, Any]:
    """taming's yaml for the network, with the loss settings this run really used."""
    content = taming_config(model.config)
    content["model"]["base_learning_rate"] = config.lr / config.batch_size  # taming multiplies by the batch
    content["model"]["params"]["lossconfig"] = {
        "target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
        "params": {"disc_conditional": False, "disc_in_channels": 3, "disc_start": config.disc_start,
                   "disc_weight": config.disc_weight, "codebook_weight": 1.0, "perceptual_weight": 0.0,
                   "disc_num_layers": config.disc_layers, "disc_ndf": config.disc_ndf, "disc_loss": "hinge"},
    }  # fmt: skip
    return content


def export(run: Run, config: TrainVQGANConfig) -> None:
    """``OUT/model.yaml`` + ``OUT/model.ckpt``, loadable as ``--vqgan-model local:OUT``; the discriminator
    rides along as ``loss.discriminator.*``, as in taming's checkpoints (loaders drop it)."""
    model = run.model
    extra = {f"loss.discriminator.{k}": v for k, v in run.disc.state_dict().items()}
    if config.export_dtype == "fp16":
        model = copy.deepcopy(model).half()
        extra = {k: v.half() if v.is_floating_point() else v for k, v in extra.items()}
    save_vqgan(model, yaml_content(config, run.model), config.out / YAML_NAME, config.out / CKPT_NAME,
               extra_state=extra)  # fmt: skip


def save_state(run: Run, config: TrainVQGANConfig, data_fingerprint: str) -> None:
    training.save_state(config.out / STATE_NAME, run.state_dict(), config.saved(), data_fingerprint)


def load_state(out: Path) -> dict[str, Any]:
    return training.load_state(out / STATE_NAME)


def resumed_config(config: TrainVQGANConfig, explicit: set[str]) -> TrainVQGANConfig:
    """The saved run's options, except those given explicitly now (the CLI's ``--resume``)."""
    return training.resumed_options(config, explicit, RESUME_PER_SESSION, config.out / STATE_NAME)


def write_metrics(config: TrainVQGANConfig, run: Run, data: Pictures, seconds: float, steps_per_s: float) -> dict:
    """``metrics.json``: held-out reconstruction error (the number to compare runs by), and a training-set
    score on as many pictures, whose gap to the held-out one shows over-fitting."""
    val = data.views(data.val, MAX_SCORED)
    metrics: dict[str, Any] = {
        "step": run.step,
        "held_out": score(run.model, val, config.n_embed) if len(val) else None,
        "train": score(run.model, data.views(data.train, max(len(val), GRID_PICTURES)), config.n_embed),
        "pictures": {"train": len(data.train), "held_out": len(data.val), "held_out_scored": len(val)},
        "train_l1_last_100": round(float(np.mean(run.l1[-100:])), 5) if run.l1 else None,
        "steps_per_s_last_session": round(steps_per_s, 3),
        "seconds_last_session": round(seconds, 1),
        "parameters": sum(p.numel() for p in run.model.parameters()),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
    }
    atomic.write_json(config.out / METRICS_NAME, metrics)
    if len(val):
        grid = val[:GRID_PICTURES]
        save_grid(grid, reconstruct(run.model, grid)[0], config.out / HELDOUT_NAME)
    return metrics


# --------------------------------------------------------------------------------------------- the loop
def train_vqgan(config: TrainVQGANConfig, resume: bool = False, on_step: Callable[[StepInfo], None] | None = None,
                log: Callable[[str], None] = lambda message: None,
                force: bool = False) -> TrainVQGANResult:  # fmt: skip
    """Train (or with ``resume``, continue) a run; on Ctrl-C save the state and the model, then re-raise.

    ``config.threads`` applies for the call only (see :func:`~dreamcanvas.training.torch_threads`). A run
    whose memory estimate exceeds the memory available is refused before any picture is decoded, unless
    ``force``.
    """
    validate(config)
    config = replace(config, precision=concrete_precision(config.precision))
    with torch_threads(config.threads), output_folder(config.out):
        return _train(config, resume, on_step, log, force)


def _train(config: TrainVQGANConfig, resume: bool, on_step: Callable[[StepInfo], None] | None,
           log: Callable[[str], None], force: bool) -> TrainVQGANResult:  # fmt: skip
    memory.check_fits(memory.estimate_train_vqgan(config, sum(1 for _ in iter_images(config.data_dir))), force=force)
    log(f"reading the pictures under {config.data_dir}")
    data = Pictures.load(config.data_dir, config.size, config.val_fraction)
    run = Run.create(config)
    if resume:
        state = load_state(config.out)
        training.check_resumable(config, state, data.fingerprint)
        restore(lambda: run.load_state_dict(state["run"]), config.out / STATE_NAME)
    log(f"{len(data.train)} training pictures, {len(data.val)} held out; "
        f"{sum(p.numel() for p in run.model.parameters()) / 1e6:.1f} M parameters, f={run.model.factor}")  # fmt: skip
    fixed = data.views(data.train, GRID_PICTURES)
    used = (run.usage > 0).float().mean().item()

    def step(rate: Callable[[], float]) -> tuple[dict[str, float], StepInfo]:
        nonlocal used
        set_lr(run, config)
        losses, latent = train_step(run, data.batch(run.step, config.batch_size, config.seed), config)
        run.step += 1
        run.l1.append(round(losses["l1"], 5))
        restarted = 0
        if config.restart_every and run.step % config.restart_every == 0:
            used = (run.usage > 0).float().mean().item()
            generator = torch.Generator().manual_seed(config.seed * 7_919 + run.step)
            restarted = restart_dead_codes(run.model.codebook, run.usage, latent, generator)
            run.usage.zero_()
        elif not config.restart_every or run.step < config.restart_every:  # no full window yet: so far
            used = (run.usage > 0).float().mean().item()
        return losses, StepInfo(run.step, config.steps, losses, rate(), used, restarted)

    def save() -> None:
        save_state(run, config, data.fingerprint)
        export(run, config)

    def sample() -> None:
        save_grid(fixed, reconstruct(run.model, fixed)[0], sample_path(config.out, run.step))

    times = train_until(run, config.steps, step, save=save, sample=sample, sample_every=config.sample_every,
                        checkpoint_every=config.checkpoint_every, max_minutes=config.max_minutes, out=config.out,
                        on_step=on_step, log=log)  # fmt: skip
    seconds, steps_per_s = times.seconds, times.steps_per_s
    metrics = write_metrics(config, run, data, seconds, steps_per_s)
    return TrainVQGANResult(config.out, run.step, config.steps, run.step >= config.steps, list(run.l1), steps_per_s,
                            metrics)  # fmt: skip


def sample_path(out: Path, step: int) -> Path:
    return out / SAMPLES_DIR / f"step_{step:06d}.png"
