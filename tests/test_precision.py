"""``--precision auto``: one rule for every method and trainer, bf16 only where the CPU has native bf16 units.

On a CPU without them (AVX2 only, most laptops) bf16 is emulated: a 2048² matrix product measured 109 GFLOP/s in
fp32 against 0.33 in bf16 on such a machine, so a trainer whose default was ``bf16`` ran many times slower there.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dreamcanvas import precision
from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.memory import estimates
from dreamcanvas.training.clip import TrainOptions
from dreamcanvas.training.dalle import TrainDalleConfig
from dreamcanvas.training.diffusion import TrainDiffusionConfig
from dreamcanvas.training.gan import TrainGANConfig
from dreamcanvas.training.sd import TrainSDConfig
from dreamcanvas.training.vqgan import TrainVQGANConfig

TRAINER_CONFIGS = [TrainOptions, TrainDalleConfig, TrainDiffusionConfig, TrainGANConfig, TrainSDConfig,
                   TrainVQGANConfig]  # fmt: skip


@pytest.mark.parametrize("fast", [False, True])
def test_auto_resolves_by_the_cpu_and_explicit_choices_are_kept(monkeypatch, fast: bool) -> None:
    monkeypatch.setattr(precision, "fast_bf16_available", lambda: fast)
    assert precision.concrete_precision("auto") == ("bf16" if fast else "fp32")
    assert precision.working_dtype("auto") == (torch.bfloat16 if fast else torch.float32)
    assert [precision.concrete_precision(p) for p in ("bf16", "fp32")] == ["bf16", "fp32"]
    with pytest.raises(DreamcanvasError, match="unknown precision 'fp16'"):
        precision.concrete_precision("fp16")


@pytest.mark.parametrize("config", TRAINER_CONFIGS, ids=lambda c: c.__name__)
def test_every_trainer_accepts_auto_and_defaults_to_it_unless_bf16_was_measured_not_to_pay(config) -> None:
    field = next(f for f in dataclasses.fields(config) if f.name == "precision")
    assert field.metadata["limits"].choices == precision.PRECISIONS
    # train sd's tiny 8x8 latents: bf16 measured slower even with AMX, so fp32 stays its default
    assert field.default == ("fp32" if config is TrainSDConfig else "auto")


@pytest.mark.parametrize("fast", [False, True])
def test_training_memory_estimates_read_auto_as_the_cpu_resolves_it(monkeypatch, fast: bool) -> None:
    monkeypatch.setattr(estimates, "_cpu_has_fast_bf16", lambda: fast)
    assert estimates._dtype_bytes("auto") == (estimates.BFLOAT16 if fast else estimates.FLOAT32)
    assert estimates._dtype_bytes("fp32") == estimates.FLOAT32
    assert estimates._dtype_bytes("bf16") == estimates.BFLOAT16


@pytest.mark.parametrize("fast", [False, True])
def test_the_trainers_autocast_follows_the_same_rule(monkeypatch, fast: bool) -> None:
    """``auto`` reaching a training step unresolved (train sd's latent encoding asks for it) computes in bf16
    only on a CPU with native bf16, as every other ``auto``."""
    monkeypatch.setattr(precision, "fast_bf16_available", lambda: fast)
    seen = {}
    for choice in precision.PRECISIONS:
        with precision.cpu_autocast(choice):
            seen[choice] = torch.is_autocast_enabled("cpu")
    assert seen == {"auto": fast, "bf16": True, "fp32": False}
