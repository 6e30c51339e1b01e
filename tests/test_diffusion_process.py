"""The Gaussian diffusion process of guided-diffusion: schedules, respacing, reverse steps and CLIP-guidance helpers.

Expected numbers are derived here independently (closed forms, exact fractions, hand-worked examples in the
comments), not read back from the code under test. The model is a tiny real conv net with the guided UNet's
interface, ``model(x, t) -> (N, 6, H, W)``; nothing fakes its output.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from torch import nn

from dreamcanvas.diffusion import (
    DiffusionSchedule,
    blend_for_clip,
    clamp_gradient,
    ddim_step,
    ddpm_step,
    denoise,
    extract,
    guided_gradient,
    linear_betas,
    linear_schedule,
    model_output_to_prediction,
    q_sample,
    range_loss,
    rescale_timesteps,
    respaced,
    sampling_timesteps,
    space_timesteps,
    timestep_batch,
    tv_loss,
)
from dreamcanvas.diffusion.sampling import predict_eps_from_xstart, predict_xstart_from_eps
from dreamcanvas.diffusion.schedule import cosine_betas


class TinyEpsModel(nn.Module):
    """Stand-in for the guided UNet: epsilon in channels 0-2, the learned-range variance value (tanh) in 3-5."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.inp = nn.Conv2d(3, 8, 3, padding=1)
        self.time = nn.Linear(1, 8)
        self.out = nn.Conv2d(8, 6, 3, padding=1)
        self.calls = 0

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        h = torch.nn.functional.silu(self.inp(x) + self.time(t.float()[:, None] / 1000)[:, :, None, None])
        eps, var_values = self.out(h).split(3, dim=1)
        return torch.cat([eps, torch.tanh(var_values)], dim=1)


@pytest.fixture(scope="module")
def base() -> DiffusionSchedule:
    return linear_schedule(1000)


@pytest.fixture(scope="module")
def model() -> TinyEpsModel:
    return TinyEpsModel().eval()


def closed_form_alpha_bar(index: int, steps: int = 1000) -> float:
    """prod_{j <= index} (1 - beta_j), beta_j = 1e-4 + j (0.02 - 1e-4) / (steps - 1), in Python (float64) floats."""
    return math.prod(1 - (1e-4 + j * (0.02 - 1e-4) / (steps - 1)) for j in range(index + 1))


# --- schedules -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 1, 9, 250, 500, 999])
def test_linear_alphas_cumprod_matches_closed_form(base: DiffusionSchedule, index: int) -> None:
    assert base.alphas_cumprod.dtype == torch.float64
    assert base.alphas_cumprod[index].item() == pytest.approx(closed_form_alpha_bar(index), rel=1e-12)
    if index:
        assert base.alphas_cumprod_prev[index].item() == pytest.approx(closed_form_alpha_bar(index - 1), rel=1e-12)
    else:
        assert base.alphas_cumprod_prev[0].item() == 1.0


def test_linear_betas_scale_with_step_count() -> None:
    # 1000 / 250 = 4: the 250-step schedule runs from 4e-4 to 0.08.
    betas = linear_betas(250)
    assert betas.dtype == torch.float64 and betas.shape == (250,)
    assert betas[0].item() == pytest.approx(4e-4, rel=1e-12)
    assert betas[-1].item() == pytest.approx(0.08, rel=1e-12)


def test_cosine_betas_follow_alpha_bar_and_are_capped() -> None:
    betas = cosine_betas(1000)

    def f(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    assert betas[10].item() == pytest.approx(1 - f(11 / 1000) / f(10 / 1000), rel=1e-12)
    assert betas.max().item() == 0.999  # the last step would be 1 without the cap


def test_posterior_tables(base: DiffusionSchedule) -> None:
    b, ac = base.betas, base.alphas_cumprod
    t = 400
    assert base.posterior_variance[t].item() == pytest.approx((b[t] * (1 - ac[t - 1]) / (1 - ac[t])).item(), rel=1e-12)
    # The posterior variance is 0 at t = 0; the clipped log borrows step 1's.
    assert base.posterior_variance[0].item() == 0.0
    assert base.posterior_log_variance_clipped[0].item() == math.log(base.posterior_variance[1].item())
    assert base.posterior_mean_coef1[t].item() == pytest.approx(
        (b[t] * ac[t - 1].sqrt() / (1 - ac[t])).item(), rel=1e-12
    )


# --- respacing -------------------------------------------------------------------------------------------------


def test_space_timesteps_250() -> None:
    # One section of 1000 steps, 250 kept: stride (1000 - 1) / (250 - 1) = 999/249 = 333/83, rounded.
    # 333k/83 is never exactly k + 1/2 (83 is odd), so exact fractions give the same rounding.
    expected = [round(Fraction(333 * k, 83)) for k in range(250)]
    got = space_timesteps(1000, "250")
    assert got == expected
    assert got[:4] == [0, 4, 8, 12] and got[-1] == 999
    assert space_timesteps(1000, 250) == got


def test_space_timesteps_ddim() -> None:
    # "ddimN": the smallest integer stride s with len(range(0, 1000, s)) == N.
    assert space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))
    assert space_timesteps(1000, "ddim100") == list(range(0, 1000, 10))
    # ceil(1000 / 33) = 31 but ceil(1000 / 34) = 30: stride 34, last step 986.
    assert space_timesteps(1000, "ddim30") == list(range(0, 1000, 34))
    with pytest.raises(ValueError):
        space_timesteps(1000, "ddim1")  # no stride below 1000 gives a single step


def test_space_timesteps_sections() -> None:
    # 1000 = 3 sections of 333, the first gets the remainder: sizes 334, 333, 333, starting at 0, 334, 667.
    # Section 1: 10 steps, stride 333/9 = 37 exactly -> 0, 37, ..., 333.
    # Section 2: 15 steps, stride 332/14 = 166/7 -> 334 + round(166k/7), ends at 334 + 332 = 666.
    # Section 3: 20 steps, stride 332/19 -> 667 + round(332k/19), ends at 999. No exact halves (7, 19 odd).
    expected = (
        list(range(0, 334, 37))
        + [334 + round(Fraction(166 * k, 7)) for k in range(15)]
        + [667 + round(Fraction(332 * k, 19)) for k in range(20)]
    )
    got = space_timesteps(1000, "10,15,20")
    assert got == expected
    assert len(got) == 45 and {0, 333, 334, 666, 667, 999} <= set(got)
    with pytest.raises(ValueError):
        space_timesteps(30, "11,5,5")  # 11 steps do not fit in a section of 10


def test_space_timesteps_rounds_half_to_even() -> None:
    # 6 steps, 3 kept: stride 5/2 = 2.5, and Python's round(2.5) is 2 (not 3): [0, 2, 5].
    assert space_timesteps(6, "3") == [0, 2, 5]
    # 8 steps, 3 kept: stride 3.5, round(3.5) = 4: [0, 4, 7].
    assert space_timesteps(8, "3") == [0, 4, 7]


def test_respaced_keeps_alphas_cumprod_and_maps_times(base: DiffusionSchedule) -> None:
    kept = space_timesteps(1000, "ddim50")
    spaced = respaced(base, kept)
    assert spaced.num_timesteps == 50
    assert spaced.timestep_map.tolist() == kept
    torch.testing.assert_close(spaced.alphas_cumprod, base.alphas_cumprod[kept], rtol=1e-12, atol=0)
    # First new beta is the original's; later ones bridge the skipped steps: 1 - ac[20] / ac[0] for step 1.
    assert spaced.betas[0].item() == pytest.approx(base.betas[0].item(), rel=1e-12)  # 1 - (1 - b), not b exactly
    assert spaced.betas[1].item() == pytest.approx(1 - closed_form_alpha_bar(20) / closed_form_alpha_bar(0), rel=1e-10)
    # The model is told the original step, on the 0..1000 scale: spaced step 3 is original step 60.
    t = torch.tensor([0, 3, 49])
    assert rescale_timesteps(spaced, t).tolist() == [0.0, 60.0, 980.0]
    assert rescale_timesteps(spaced, t).dtype == torch.float32
    assert rescale_timesteps(spaced, t, rescale=False).tolist() == [0, 60, 980]


def test_respacing_twice_maps_to_the_original(base: DiffusionSchedule) -> None:
    once = respaced(base, space_timesteps(1000, "ddim100"))  # 0, 10, ..., 990
    twice = respaced(once, [0, 5, 99])
    assert twice.timestep_map.tolist() == [0, 50, 990]
    assert twice.original_num_steps == 1000
    torch.testing.assert_close(twice.alphas_cumprod, base.alphas_cumprod[[0, 50, 990]], rtol=1e-12, atol=0)


def test_timestep_rescaling_for_a_short_base_process() -> None:
    # A 250-step process (not respaced) is told t * 1000 / 250.
    schedule = linear_schedule(250)
    assert rescale_timesteps(schedule, torch.tensor([0, 1, 249])).tolist() == [0.0, 4.0, 996.0]


def test_sampling_timesteps_noisiest_first(base: DiffusionSchedule) -> None:
    spaced = respaced(base, space_timesteps(1000, "ddim10"))
    assert sampling_timesteps(spaced) == list(range(9, -1, -1))
    assert sampling_timesteps(spaced, skip=3) == [6, 5, 4, 3, 2, 1, 0]


# --- reading the model output ----------------------------------------------------------------------------------


def test_extract_gathers_float64_and_rounds_after(base: DiffusionSchedule) -> None:
    t = torch.tensor([3, 700])
    got = extract(base.sqrt_recipm1_alphas_cumprod, t, (2, 3, 4, 4))
    assert got.dtype == torch.float32 and got.shape == (2, 3, 4, 4)
    assert got[0, 2, 1, 3].item() == torch.tensor(base.sqrt_recipm1_alphas_cumprod[3].item()).float().item()
    assert got[1, 0, 0, 0].item() == torch.tensor(base.sqrt_recipm1_alphas_cumprod[700].item()).float().item()


def test_learned_range_variance_between_posterior_variance_and_beta(base: DiffusionSchedule) -> None:
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 1, 500, 999])
    var_values = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    var_values[:, :, 0, 0], var_values[:, :, 0, 1] = -1.0, 1.0
    model_out = torch.cat([torch.randn_like(x), var_values], dim=1)
    pred = model_output_to_prediction(base, model_out, x, t)
    low = base.posterior_log_variance_clipped[t].exp().float().view(-1, 1, 1, 1)
    high = base.betas[t].float().view(-1, 1, 1, 1)
    assert (pred.variance >= low * (1 - 1e-5)).all() and (pred.variance <= high * (1 + 1e-5)).all()
    # The ends of [-1, 1] are the ends of the range.
    torch.testing.assert_close(pred.variance[:, :, 0, 0], low.view(-1, 1).expand(4, 3), rtol=1e-5, atol=0)
    torch.testing.assert_close(pred.variance[:, :, 0, 1], high.view(-1, 1).expand(4, 3), rtol=1e-5, atol=0)
    torch.testing.assert_close(pred.log_variance.exp(), pred.variance)


def test_prediction_is_epsilon_parameterised(base: DiffusionSchedule, model: TinyEpsModel) -> None:
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3)) * 3
    t = torch.tensor([10, 900])
    out = denoise(base, model, x, t)
    pred = model_output_to_prediction(base, out, x, t, clip_denoised=False)
    ac = base.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    # x0 = (x - sqrt(1 - ac) eps) / sqrt(ac), and the mean is the posterior mean given that x0.
    torch.testing.assert_close(pred.pred_xstart, (x - (1 - ac).sqrt() * out[:, :3]) / ac.sqrt(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(pred.eps, out[:, :3])
    c1 = base.posterior_mean_coef1[t].float().view(-1, 1, 1, 1)
    c2 = base.posterior_mean_coef2[t].float().view(-1, 1, 1, 1)
    torch.testing.assert_close(pred.mean, c1 * pred.pred_xstart + c2 * x)
    torch.testing.assert_close(predict_eps_from_xstart(base, x, t, pred.pred_xstart), pred.eps, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(predict_xstart_from_eps(base, x, t, pred.eps), pred.pred_xstart)
    clipped = model_output_to_prediction(base, out, x, t, clip_denoised=True)
    torch.testing.assert_close(clipped.pred_xstart, pred.pred_xstart.clamp(-1, 1))
    assert pred.pred_xstart.abs().max() > 1  # the clamp did something
    with pytest.raises(ValueError, match="twice the channels"):
        model_output_to_prediction(base, out[:, :5], x, t)


def test_a_clean_image_prediction_reads_as_the_step_its_noise_gives(base: DiffusionSchedule) -> None:
    """guided-diffusion's ``predict_xstart``: the true clean image as output means the same reverse step as the
    true noise read the usual way; clamping acts on the output itself."""
    g = torch.Generator().manual_seed(4)
    x0, noise = torch.rand(2, 3, 8, 8, generator=g) * 2.4 - 1.2, torch.randn(2, 3, 8, 8, generator=g)
    var_values = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1
    t = torch.tensor([10, 900])
    x_t = q_sample(base, x0, t, noise)
    as_xstart = model_output_to_prediction(base, torch.cat([x0, var_values], 1), x_t, t, clip_denoised=False,
                                           predict_xstart=True)  # fmt: skip
    as_eps = model_output_to_prediction(base, torch.cat([noise, var_values], 1), x_t, t, clip_denoised=False)
    assert torch.equal(as_xstart.pred_xstart, x0)
    for name in ("mean", "variance", "pred_xstart", "eps"):
        torch.testing.assert_close(getattr(as_xstart, name), getattr(as_eps, name), rtol=1e-4, atol=2e-4)
    clipped = model_output_to_prediction(base, torch.cat([x0, var_values], 1), x_t, t, predict_xstart=True)
    assert torch.equal(clipped.pred_xstart, x0.clamp(-1, 1))


def test_guidance_through_a_clean_image_prediction_skips_one_over_sqrt_alpha_bar(base: DiffusionSchedule) -> None:
    """A model whose first output channels copy its input: ``d pred_xstart / d x_t`` is 1 when they are the clean
    image, and ``(1 - sqrt(1 - alpha_bar)) / sqrt(alpha_bar)`` (3.9 at step 900) when they are read as noise."""

    def copy_input(x: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, torch.zeros_like(x)], dim=1)

    def loss_fn(x_in: torch.Tensor, pred_xstart: torch.Tensor) -> torch.Tensor:
        return pred_xstart.sum()

    x, t = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0)), torch.tensor([900])
    through_xstart = guided_gradient(base, loss_fn, x, t, copy_input, predict_xstart=True).grad
    torch.testing.assert_close(through_xstart, torch.full_like(x, -1.0))
    ac = base.alphas_cumprod[900].item()
    through_eps = guided_gradient(base, loss_fn, x, t, copy_input).grad
    torch.testing.assert_close(through_eps, torch.full_like(x, -(1 - math.sqrt(1 - ac)) / math.sqrt(ac)))


def test_schedule_moves_between_devices_without_losing_float64(base: DiffusionSchedule) -> None:
    moved = base.to("cpu")
    assert moved.alphas_cumprod.dtype == torch.float64 and moved.original_num_steps == 1000
    assert torch.equal(moved.posterior_mean_coef2, base.posterior_mean_coef2)
    assert "num_timesteps=1000" in repr(moved)


def test_q_sample_endpoints(base: DiffusionSchedule) -> None:
    gen = torch.Generator().manual_seed(4)
    x0 = torch.rand(4, 3, 32, 32, generator=gen) * 2 - 1
    noise = torch.randn(x0.shape, generator=gen)
    first = q_sample(base, x0, timestep_batch(0, 4), noise)
    last = q_sample(base, x0, timestep_batch(999, 4), noise)
    # t = 0: sqrt(1 - 1e-4) x0 + 0.01 noise.
    assert (first - x0).std().item() == pytest.approx(0.01, rel=0.05)
    # t = 999: alpha_bar ~ 4e-5, so x_t is the noise up to a 0.6% share of x0.
    assert torch.corrcoef(torch.stack([last.flatten(), noise.flatten()]))[0, 1] > 0.9999
    assert last.std().item() == pytest.approx(1.0, abs=0.03)
    assert last.mean().item() == pytest.approx(0.0, abs=0.03)


# --- sampling --------------------------------------------------------------------------------------------------


def _step(kind: str, schedule, model, x, t_int, gen, grad_loss=None):
    """One sampling step the way a caller drives it: one model call, then the step function."""
    t = timestep_batch(t_int, x.shape[0])
    grad = None
    if grad_loss is None:
        out = denoise(schedule, model, x, t)
    else:
        out, grad, _ = guided_gradient(schedule, grad_loss, x, t, model)
    if kind == "ddpm":
        return ddpm_step(schedule, out, x, t, grad=grad, clip_denoised=False, generator=gen).sample
    eta = 0.0 if kind == "ddim" else 1.0
    return ddim_step(schedule, out, x, t, eta=eta, grad=grad, clip_denoised=False, generator=gen).sample


def _sample(kind, schedule, model, seed, grad_loss=None, start=None):
    """A whole chain from a seed, or from a saved ``(x, step index, generator state)``."""
    steps = sampling_timesteps(schedule)
    gen = torch.Generator()
    if start is None:
        gen.manual_seed(seed)
        x, index = torch.randn(2, 3, 8, 8, generator=gen), 0
    else:
        x, index, state = start
        gen.set_state(state)
    for t_int in steps[index:]:
        x = _step(kind, schedule, model, x, t_int, gen, grad_loss)
    return x


@pytest.mark.parametrize("kind", ["ddim", "ddim-eta1", "ddpm"])
def test_sampling_is_reproducible_and_resumable(base: DiffusionSchedule, model: TinyEpsModel, kind: str) -> None:
    schedule = respaced(base, space_timesteps(1000, "ddim10"))
    straight = _sample(kind, schedule, model, seed=7)
    assert torch.equal(straight, _sample(kind, schedule, model, seed=7))
    assert not torch.equal(straight, _sample(kind, schedule, model, seed=8))

    # Stop after k steps, keep (x, step index, RNG state), continue in a fresh generator.
    k, steps, gen = 4, sampling_timesteps(schedule), torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 8, 8, generator=gen)
    for t_int in steps[:k]:
        x = _step(kind, schedule, model, x, t_int, gen)
    saved = (x.clone(), k, gen.get_state())
    gen.manual_seed(12345)  # whatever happens to the old generator meanwhile
    assert torch.equal(_sample(kind, schedule, model, seed=0, start=saved), straight)


def test_ddim_eta0_is_deterministic_given_x(base: DiffusionSchedule, model: TinyEpsModel) -> None:
    # With eta = 0 the step draws nothing: no generator needed, and the generator is left as it was.
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    t = timestep_batch(500, 2)
    out = denoise(base, model, x, t)
    gen = torch.Generator().manual_seed(1)
    state = gen.get_state()
    a = ddim_step(base, out, x, t, generator=gen).sample
    assert torch.equal(a, ddim_step(base, out, x, t).sample)
    assert torch.equal(gen.get_state(), state)
    with pytest.raises(ValueError, match="generator"):
        ddim_step(base, out, x, t, eta=0.5)


def test_ddim_eta0_follows_equation_12(base: DiffusionSchedule, model: TinyEpsModel) -> None:
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    t = timestep_batch(300, 2)
    out = denoise(base, model, x, t)
    pred = model_output_to_prediction(base, out, x, t, clip_denoised=False)
    prev = base.alphas_cumprod[299].item()
    expected = pred.pred_xstart * math.sqrt(prev) + math.sqrt(1 - prev) * pred.eps
    torch.testing.assert_close(ddim_step(base, out, x, t, clip_denoised=False).sample, expected, rtol=1e-4, atol=1e-5)


def test_ddim_sigma_at_eta1_is_the_posterior_std(base: DiffusionSchedule, model: TinyEpsModel) -> None:
    # eta = 1: sigma^2 = (1 - ac_prev) / (1 - ac) * (1 - ac / ac_prev), the DDPM posterior variance.
    x = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    t = timestep_batch(600, 1)
    out = denoise(base, model, x, t)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    with_noise = ddim_step(base, out, x, t, eta=1.0, noise=noise).sample
    without = ddim_step(base, out, x, t, eta=1.0, noise=torch.zeros_like(x)).sample
    sigma = ((with_noise - without) / noise).mean().item()
    assert sigma == pytest.approx(math.sqrt(base.posterior_variance[600].item()), rel=1e-4)


def test_ddpm_step_adds_no_noise_at_t0(base: DiffusionSchedule, model: TinyEpsModel) -> None:
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.1
    noise_a = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    noise_b = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    for t_int, noisy in [(0, False), (1, True)]:
        t = timestep_batch(t_int, 2)
        out = denoise(base, model, x, t)
        a = ddpm_step(base, out, x, t, noise=noise_a)
        b = ddpm_step(base, out, x, t, noise=noise_b)
        assert torch.equal(a.sample, b.sample) is not noisy
        if not noisy:
            torch.testing.assert_close(a.sample, model_output_to_prediction(base, out, x, t).mean, rtol=0, atol=0)
    # Per sample: a batch mixing t = 0 and t = 5 gets noise only where t != 0.
    t = torch.tensor([0, 5])
    out = denoise(base, model, x, t)
    a, b = ddpm_step(base, out, x, t, noise=noise_a).sample, ddpm_step(base, out, x, t, noise=noise_b).sample
    assert torch.equal(a[0], b[0]) and not torch.equal(a[1], b[1])


def test_ddpm_guidance_shifts_the_mean_by_variance_times_grad(base: DiffusionSchedule, model: TinyEpsModel) -> None:
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    t = timestep_batch(400, 2)
    out = denoise(base, model, x, t)
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    zero = torch.zeros_like(x)
    guided = ddpm_step(base, out, x, t, grad=grad, noise=zero).sample
    plain = ddpm_step(base, out, x, t, noise=zero).sample
    pred = model_output_to_prediction(base, out, x, t)
    torch.testing.assert_close(guided - plain, pred.variance * grad)


def test_ddim_guidance_moves_eps_by_sqrt_one_minus_alpha_bar(base: DiffusionSchedule, model: TinyEpsModel) -> None:
    # eps' = eps - sqrt(1 - ac) grad, x0' = (x - sqrt(1 - ac) eps') / sqrt(ac) = x0 + (1 - ac) / sqrt(ac) grad.
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    t = timestep_batch(400, 2)
    out = denoise(base, model, x, t)
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    ac, prev = base.alphas_cumprod[400].item(), base.alphas_cumprod[399].item()
    pred = model_output_to_prediction(base, out, x, t, clip_denoised=False)
    x0 = pred.pred_xstart + (1 - ac) / math.sqrt(ac) * grad
    eps = pred.eps - math.sqrt(1 - ac) * grad
    expected = x0 * math.sqrt(prev) + math.sqrt(1 - prev) * eps
    got = ddim_step(base, out, x, t, grad=grad, clip_denoised=False)
    torch.testing.assert_close(got.sample, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got.pred_xstart, pred.pred_xstart)  # the preview stays the unguided prediction


@pytest.mark.parametrize("kind", ["ddim", "ddpm"])
def test_guidance_toward_brighter_raises_the_mean(base: DiffusionSchedule, model: TinyEpsModel, kind: str) -> None:
    schedule = respaced(base, space_timesteps(1000, "ddim10"))

    def brighter(x_in: torch.Tensor, pred_xstart: torch.Tensor) -> torch.Tensor:
        return -x_in.mean(dim=(1, 2, 3)).sum() * 50

    plain = _sample(kind, schedule, model, seed=3)
    guided = _sample(kind, schedule, model, seed=3, grad_loss=brighter)
    assert guided.mean().item() > plain.mean().item() + 0.1
    assert (guided.mean(dim=(1, 2, 3)) > plain.mean(dim=(1, 2, 3))).all()


# --- guidance helpers ------------------------------------------------------------------------------------------


def test_blend_for_clip_uses_sqrt_one_minus_alpha_bar() -> None:
    # alpha_bar 0.64 -> fac = sqrt(0.36) = 0.6 (not sqrt(0.64) = 0.8, not 1 - 0.64 = 0.36); 0.75 -> fac 0.5.
    pred = torch.ones(2, 3, 2, 2)
    x_t = torch.full((2, 3, 2, 2), 3.0)
    x_in = blend_for_clip(pred, x_t, torch.tensor([0.64, 0.75], dtype=torch.float64))
    assert x_in.dtype == torch.float32
    torch.testing.assert_close(x_in[0], torch.full((3, 2, 2), 0.6 * 1 + 0.4 * 3))
    torch.testing.assert_close(x_in[1], torch.full((3, 2, 2), 0.5 * 1 + 0.5 * 3))


def test_tv_loss_by_hand() -> None:
    # [[0, 1], [2, 3]] padded right and bottom by replication: [[0, 1, 1], [2, 3, 3], [2, 3, 3]].
    # x diffs [[1, 0], [1, 0]], y diffs [[2, 2], [0, 0]]; squares summed [[5, 4], [1, 0]], mean 10 / 4 = 2.5.
    image = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    batch = torch.cat([image, image * 2])
    assert tv_loss(batch).tolist() == [2.5, 10.0]  # per sample; doubling the image quadruples it


def test_range_loss_by_hand() -> None:
    # Out by 1, 2, 0, 0: (1 + 4) / 4 = 1.25, per sample.
    x = torch.tensor([[[[2.0, -3.0], [0.5, 1.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    assert range_loss(x).tolist() == [1.25, 0.0]


def test_guided_gradient_is_one_forward_and_one_backward(base: DiffusionSchedule) -> None:
    model = TinyEpsModel(seed=5)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([700, 200])

    def loss_fn(x_in: torch.Tensor, pred_xstart: torch.Tensor) -> torch.Tensor:
        return (x_in - 0.25).pow(2).mean(dim=(1, 2, 3)).sum() + tv_loss(x_in).sum() + range_loss(pred_xstart).sum()

    model.calls = 0
    guided = guided_gradient(base, loss_fn, x, t, model)
    assert model.calls == 1
    assert all(p.grad is None for p in model.parameters())
    assert not guided.model_out.requires_grad and not guided.grad.requires_grad
    torch.testing.assert_close(guided.model_out, denoise(base, model, x, t))

    # The same gradient, computed the long way: differentiate the whole chain with respect to x by hand.
    xr = x.clone().requires_grad_()
    out = model(xr, t.float())
    ac = base.alphas_cumprod[t].view(-1, 1, 1, 1)
    pred_xstart = (xr - (1 - ac).sqrt().float() * out[:, :3]) / ac.sqrt().float()
    fac = (1 - ac).sqrt().float()
    loss = loss_fn(pred_xstart * fac + xr * (1 - fac), pred_xstart)
    (expected,) = torch.autograd.grad(loss, xr)
    torch.testing.assert_close(guided.grad, -expected, rtol=1e-4, atol=1e-6)
    assert guided.loss.item() == pytest.approx(loss.item(), rel=1e-5)


def test_clamp_gradient_caps_the_rms_and_keeps_the_direction() -> None:
    grad = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2
    clamped = clamp_gradient(grad, 0.05)
    assert clamped.square().mean().sqrt().item() == pytest.approx(0.05, rel=1e-5)
    assert torch.allclose(clamped / clamped.norm(), grad / grad.norm(), atol=1e-6)
    small = grad * 1e-3  # rms 0.002: below the cap, untouched
    assert torch.equal(clamp_gradient(small, 0.05), small)
    assert clamp_gradient(grad, 0.0) is grad  # 0: no clamp, the first notebook's
    assert torch.equal(clamp_gradient(torch.zeros(2, 3), 0.05), torch.zeros(2, 3))  # no division by zero
