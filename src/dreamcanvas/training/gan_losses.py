"""The GAN objectives of ``dreamcanvas train gan``: hinge, and Jolicoeur-Martineau's relativistic family.

Each takes the discriminator's logits on real and on generated pictures and returns the discriminator's loss
(``discriminator_loss``) or the generator's (``generator_loss``), means over the batch.

* ``hinge`` (Lim & Ye; SAGAN, BigGAN): D pushes real logits above +1 and fake ones below -1; G raises fakes.
* ``rsgan``: D says how much more real a real picture is than a fake one, ``sigmoid(C(real) - C(fake))``,
  pairing the two batches element by element; G is the same with the roles swapped.
* ``rasgan``: relativistic *average*: each real picture against the mean fake logit, each fake against the
  mean real one; G, again, the mirror image (so it also learns from the real pictures).
* ``ralsgan``: the same averages under least squares, targets +1 / -1.

In "The relativistic discriminator" (2018) the relativistic losses beat the standard one at 64 px on small
sets (CIFAR-10, 2,011 cats) with the same networks; RaLSGAN gave the best FID on the cats.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _hinge_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def _hinge_g(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


def _rsgan_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.softplus(-(real - fake)).mean()  # -log sigmoid(C(real) - C(fake))


def _rsgan_g(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.softplus(-(fake - real)).mean()


def _rasgan_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return (F.softplus(-(real - fake.mean())).mean() + F.softplus(fake - real.mean()).mean()) / 2


def _rasgan_g(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return _rasgan_d(fake, real)


def _ralsgan_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return ((real - fake.mean() - 1).pow(2).mean() + (fake - real.mean() + 1).pow(2).mean()) / 2


def _ralsgan_g(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return _ralsgan_d(fake, real)


LOSSES: dict[str, tuple[Loss, Loss]] = {
    "hinge": (_hinge_d, _hinge_g),
    "rsgan": (_rsgan_d, _rsgan_g),
    "rasgan": (_rasgan_d, _rasgan_g),
    "ralsgan": (_ralsgan_d, _ralsgan_g),
}
"""name -> (discriminator loss, generator loss), each ``(real logits, fake logits) -> scalar``."""


def discriminator_loss(name: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return LOSSES[name][0](real, fake)


def generator_loss(name: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return LOSSES[name][1](real, fake)
