"""BigSleep (lucidrains/big-sleep): CLIP steers a frozen BigGAN-deep through its latents, one row per layer.

BigGAN-deep conditions its first linear layer and every residual block on ``[z, embed(classes)]``. BigSleep gives
each of those ``L + 1`` places its own row: a noise vector ``normu`` ``(L + 1, z_dim)`` and class logits ``cls``
``(L + 1, classes)``, turned into class weights by a sigmoid or, with ``--max-classes K``, a differentiable top-k.
Two regularisers keep the latents where the GAN was trained (:meth:`BigGANGenerator.penalty`): the noise rows
should look like draws of N(0, 1) (mean, standard deviation, skew, kurtosis, mean square), and every class but
the strongest of a row should be near 0.

Adam moves the raw latents; an exponential moving average of them (bias-corrected, as big-sleep's EMA) makes the
pictures that are kept, frames and ``final.png`` (:meth:`BigGANGenerator.picture_to_keep`). It is updated after
every optimiser step in :meth:`BigGANGenerator.constrain_` and lives in buffers, so a resumed run continues it.
"""

from __future__ import annotations

import difflib
import functools

import torch
import torch.nn.functional as F
from torch import nn

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.generators.base import Generator, keep_out_of_checkpoints
from dreamcanvas.models.biggan import BigGAN, load_biggan
from dreamcanvas.precision import resolve_precision
from dreamcanvas.settings import GenerateSettings

START_CLASS_LOGIT = (-3.9, 0.3)
"""Mean and standard deviation of the class logits at the start (big-sleep's): every class weighs about 0.02."""
CHOSEN_CLASS_LOGIT = 3.9
"""The start logit of a ``--biggan-class``: as far above 0 as the others are below it (sigmoid about 0.98), and
always the first pick of the top-k."""
SIMILARITY_WEIGHT = 100.0
"""big-sleep's ``loss_coef``: its CLIP term is ``-100 * cosine similarity``. The engine's CLIP loss (the squared
spherical distance / 2) moves about as much per unit of cosine as a plain ``-cosine`` near the similarities CLIP
gives (0.2-0.4), so the regularisers are divided by this weight to keep big-sleep's balance between them."""
LATENT_MEAN_SQUARE_FLOOR = 1.0
"""big-sleep's ``thresh_lat``: the mean square of the noise rows is penalised only above this."""
CLASS_LOSS_SCALE = 50.0
"""big-sleep's class loss: ``(50 * weight)^2`` of every class but a row's strongest."""


def differentiable_top_k(logits: torch.Tensor, k: int, temperature: float) -> torch.Tensor:
    """Per row, ``k`` classes picked one after another: each pick is the largest of a softmax (at
    ``temperature``) over the classes not picked yet, and keeps that softmax value as its weight (so the
    gradient reaches the logits); every other class weighs exactly 0."""
    weights = torch.zeros_like(logits)
    remaining = logits
    for pick in range(k):
        value, index = (remaining / temperature).softmax(dim=-1).max(dim=-1, keepdim=True)
        weights = weights + torch.zeros_like(logits).scatter(-1, index, value)
        if pick < k - 1:
            remaining = remaining.scatter(-1, index, float("-inf"))
    return weights


def latent_loss(latents: torch.Tensor) -> torch.Tensor:
    """big-sleep's ``lat_loss`` of the noise rows ``(rows, z_dim)``: each row's standard deviation near 1 and mean
    near 0, the mean square at most 1, and, averaged over the rows, no skew and no excess kurtosis."""
    rows = latents.shape[0]
    loss = (1 - latents.std(dim=1)).abs().mean() + latents.mean(dim=1).abs().mean()
    loss = loss + 4 * torch.clamp(latents.square().mean(), min=LATENT_MEAN_SQUARE_FLOOR)
    deviations = latents - latents.mean(dim=1, keepdim=True)
    zscores = deviations / deviations.square().mean(dim=1, keepdim=True).sqrt()  # the biased variance, as there
    skew = zscores.pow(3).mean(dim=1)
    kurtosis = zscores.pow(4).mean(dim=1) - 3
    return loss + (kurtosis.abs() + skew.abs()).sum() / rows


def class_loss(classes: torch.Tensor) -> torch.Tensor:
    """big-sleep's ``cls_loss``: every class weight but each row's largest pushed towards 0."""
    others = torch.topk(classes, classes.shape[-1] - 1, dim=-1, largest=False).values
    return (CLASS_LOSS_SCALE * others).square().mean()


class BigGANGenerator(Generator):
    """BigSleep's latents ``normu`` ``(L + 1, z_dim)`` and ``cls`` ``(L + 1, classes)``, drawn by a frozen BigGAN-deep.

    The model draws squares of its own size (128, 256 or 512); another ``--size`` is the square resized
    (bilinear, antialiased, differentiable) to cover it and centre-cropped, so the proportions stay.
    ``state_dict()`` holds the latents and their moving average; the BigGAN comes from the settings again.
    """

    name = "biggan"
    default_lr = 0.07  # big-sleep's, with Adam
    starts_from_pictures = False

    def __init__(
        self,
        biggan: BigGAN,
        width: int,
        height: int,
        *,
        truncation: float = 1.0,
        max_classes: int = 0,
        class_temperature: float = 2.0,
        ema_decay: float = 0.5,
        chosen_classes: list[int] | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(width, height)
        config = biggan.config
        if not 0 <= max_classes <= config.num_classes:
            raise DreamcanvasError(
                f"--max-classes must be between 0 and {config.num_classes} (this BigGAN's classes), got {max_classes}"
            )
        outside = [index for index in chosen_classes or [] if not 0 <= index < config.num_classes]
        if outside:
            raise DreamcanvasError(f"--biggan-class {outside[0]}: this BigGAN has only {config.num_classes} classes")
        self.biggan = biggan.eval().requires_grad_(False)
        self.dtype = dtype or torch.float32
        if self.dtype != torch.float32:
            # Run forward and backward every step, like the VQGAN decoder: bf16 + channels_last is the fast path on
            # CPUs with native bf16 (one step at 256², one core: 1.8 s against 5.2 s in fp32). The latents, their
            # losses and the picture handed to CLIP stay fp32. Checked on random weights only: where the network is
            # smooth, the picture stays within 1 % (mean) of fp32's; keeping the batch norms in fp32 gained nothing.
            self.biggan.to(dtype=self.dtype, memory_format=torch.channels_last)
        self.truncation, self.max_classes, self.class_temperature = truncation, max_classes, class_temperature
        self.ema_decay = ema_decay
        rows = biggan.generator.conditions
        self.normu = nn.Parameter(torch.empty(rows, config.z_dim).normal_(std=1.0))
        self.cls = nn.Parameter(torch.empty(rows, config.num_classes).normal_(*START_CLASS_LOGIT))
        with torch.no_grad():
            for index in chosen_classes or []:
                self.cls[:, index] = CHOSEN_CLASS_LOGIT
        # The moving average as big-sleep keeps it: decayed sums and the decay's running product, which corrects
        # their bias towards the zeros they start from. Its first update is the start itself.
        self.register_buffer("ema_decayed", torch.tensor(ema_decay))
        self.register_buffer("ema_normu", (1 - ema_decay) * self.normu.detach().clone())
        self.register_buffer("ema_cls", (1 - ema_decay) * self.cls.detach().clone())
        keep_out_of_checkpoints(self, "biggan")

    @classmethod
    def check_settings(cls, settings: GenerateSettings) -> None:
        """A ``--biggan-class`` that names no ImageNet class is refused before BigGAN and CLIP load."""
        super().check_settings(settings)
        class_indices(settings.biggan_classes)

    @classmethod
    def from_settings(cls, settings: GenerateSettings) -> BigGANGenerator:
        chosen = class_indices(settings.biggan_classes)
        return cls(
            load_biggan(settings.biggan_model),
            settings.width,
            settings.height,
            truncation=settings.truncation,
            max_classes=settings.max_classes,
            class_temperature=settings.class_temperature,
            ema_decay=settings.ema_decay,
            chosen_classes=chosen,
            dtype=resolve_precision(settings.precision),
        )

    def class_weights(self, logits: torch.Tensor) -> torch.Tensor:
        """What BigGAN's class embedding gets: sigmoids of the logits, or the top-k of ``--max-classes``."""
        if self.max_classes:
            return differentiable_top_k(logits, self.max_classes, self.class_temperature)
        return torch.sigmoid(logits)

    def draw(self, normu: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """The picture of these latents at this generator's size, ``(1, 3, H, W)`` in ``[0, 1]``."""
        classes = self.class_weights(logits)
        out = self.biggan(normu[None].to(self.dtype), classes[None].to(self.dtype), self.truncation)
        return self._fit((out.float().contiguous() + 1) / 2)

    def _fit(self, square: torch.Tensor) -> torch.Tensor:
        """BigGAN's square scaled to cover ``width x height`` and centre-cropped to it."""
        side = max(self.width, self.height)
        if side != square.shape[-1]:
            square = F.interpolate(square, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        top, left = (side - self.height) // 2, (side - self.width) // 2
        return square[:, :, top : top + self.height, left : left + self.width]

    def forward(self) -> torch.Tensor:
        """The picture of the raw latents: what the optimiser moves and CLIP judges."""
        return self.draw(self.normu, self.cls)

    def averaged_latents(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The bias-corrected moving averages of ``normu`` and ``cls``."""
        correction = 1 - self.ema_decayed
        return self.ema_normu / correction, self.ema_cls / correction

    @torch.no_grad()
    def picture_to_keep(self, drawn: torch.Tensor) -> torch.Tensor:
        """big-sleep saves the picture of the averaged latents, not of the raw ones it optimises."""
        return self.draw(*self.averaged_latents())

    def penalty(self) -> torch.Tensor:
        """big-sleep's latent and class losses of the raw latents, on the scale of the engine's CLIP loss."""
        regularisers = latent_loss(self.normu) + class_loss(self.class_weights(self.cls))
        return regularisers / SIMILARITY_WEIGHT

    @torch.no_grad()
    def constrain_(self) -> None:
        """Nothing to project: the moving average takes in the step just made (big-sleep's ``update``)."""
        decay = self.ema_decay
        self.ema_decayed.mul_(decay)
        self.ema_normu.mul_(decay).add_(self.normu, alpha=1 - decay)
        self.ema_cls.mul_(decay).add_(self.cls, alpha=1 - decay)

    def from_image(self, image: torch.Tensor) -> None:
        raise DreamcanvasError(
            "--generator biggan (BigSleep) draws from its latents only; it cannot start from a "
            "picture (--init-image, --zoom)"
        )


# -------------------------------------------------------------------------------------------------------
# ImageNet's class names


@functools.cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet class names in BigGAN's order (torchvision ships them with its weights' metadata)."""
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def class_indices(names: list[str]) -> list[int]:
    """The ImageNet class of each ``--biggan-class``: a name (any case, unless two classes differ only in case:
    ``Cardigan`` the dog, ``cardigan`` the jacket) or a number 0-999; one line for a name that is not one."""
    if not names:
        return []
    classes = imagenet_classes()
    indices = []
    for name in names:
        wanted = name.strip()
        if wanted.isdigit() and int(wanted) < len(classes):
            indices.append(int(wanted))
            continue
        exact = [index for index, known in enumerate(classes) if known == wanted]
        matches = exact or [index for index, known in enumerate(classes) if known.lower() == wanted.lower()]
        if len(matches) == 1:
            indices.append(matches[0])
        elif matches:
            choices = ", ".join(f"{index} ({classes[index]})" for index in matches)
            raise DreamcanvasError(
                f"--biggan-class {name!r} names several ImageNet classes: give one number, {choices}"
            )
        else:
            lowered = {known.lower(): known for known in classes}
            close = [lowered[match] for match in difflib.get_close_matches(wanted.lower(), lowered, n=5, cutoff=0.6)]
            hint = f"; did you mean {', '.join(close)}?" if close else "; give an ImageNet class name or number 0-999"
            raise DreamcanvasError(f"--biggan-class {name!r} is not an ImageNet class{hint}")
    return indices
