"""Cutouts, augmentations and losses: the pieces of the perceptor, one at a time."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.perceptor.augment import AUGMENTATIONS, build_augmentations
from dreamcanvas.perceptor.cutouts import cutout_boxes, make_cutouts
from dreamcanvas.perceptor.losses import prompt_loss, spherical_distance, total_variation


def test_cutouts_have_the_model_size_and_stay_inside_the_picture():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 50, 70)
    assert make_cutouts(image, 32, cutn=16).shape == (16, 3, 32, 32)
    for top, left, size in cutout_boxes(50, 70, 200, 1.0, min_size=8):
        assert 8 <= size <= 50 and 0 <= top <= 50 - size and 0 <= left <= 70 - size


def test_cut_pow_above_one_favours_small_cutouts():
    torch.manual_seed(0)
    mean_size = {p: sum(s for *_, s in cutout_boxes(256, 256, 400, p, min_size=32)) / 400 for p in (0.5, 1.0, 3.0)}
    assert mean_size[3.0] < mean_size[1.0] < mean_size[0.5]


def test_cutouts_are_differentiable():
    image = torch.rand(1, 3, 40, 40, requires_grad=True)
    make_cutouts(image, 16, cutn=4).sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


def test_every_augmentation_is_differentiable_and_keeps_the_shape():
    torch.manual_seed(0)
    images = torch.rand(6, 3, 32, 32, requires_grad=True)
    out = build_augmentations(list(AUGMENTATIONS))(images)
    assert out.shape == images.shape
    out.sum().backward()
    assert images.grad is not None


def test_no_augmentations_is_the_identity():
    images = torch.rand(2, 3, 8, 8)
    assert torch.equal(build_augmentations([])(images), images)


def test_unknown_augmentation_is_a_clear_error():
    with pytest.raises(DreamcanvasError, match="unknown augmentation 'blurr'"):
        build_augmentations(["flip", "blurr"])


def test_spherical_distance_is_zero_for_equal_and_pi_squared_over_two_for_opposite():
    x = torch.nn.functional.normalize(torch.randn(5, 16), dim=-1)
    assert torch.allclose(spherical_distance(x, x), torch.zeros(5), atol=1e-6)
    assert torch.allclose(
        spherical_distance(x, -x), torch.full((5,), math.pi**2 / 2), atol=5e-3
    )  # arcsin is steep at 1
    # It is twice the squared half-angle: monotone in the angle between the vectors.
    angles = torch.linspace(0.1, 3.0, 7)
    a = torch.tensor([[1.0, 0.0]]).expand(7, 2)
    b = torch.stack([angles.cos(), angles.sin()], dim=-1)
    assert torch.allclose(spherical_distance(a, b), 2 * (angles / 2) ** 2, atol=1e-5)


def test_prompt_loss_weight_sign_and_stop_floor():
    image = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1).requires_grad_()
    target = torch.nn.functional.normalize(torch.randn(1, 8), dim=-1)
    plain = prompt_loss(image, target, 1.0, -math.inf)
    assert torch.isclose(prompt_loss(image, target, -2.0, -math.inf), -2 * plain)

    (grad,) = torch.autograd.grad(prompt_loss(image, target, 1.0, stop=5.0), image)
    assert torch.count_nonzero(grad) == 0, "below the stop floor nothing should pull"
    (grad,) = torch.autograd.grad(plain, image)
    assert torch.count_nonzero(grad) > 0


def test_total_variation_is_zero_for_flat_pictures():
    assert total_variation(torch.full((1, 3, 8, 8), 0.3)) == 0
    assert total_variation(torch.rand(1, 3, 8, 8)) > 0


def test_bf16_image_tower_embeds_like_fp32_and_passes_gradients(tiny_clip_spec):
    from dreamcanvas.perceptor.clip import load_perceptor

    perceptor = load_perceptor(tiny_clip_spec)
    images = torch.rand(4, 3, 32, 32)
    exact = perceptor.encode_image(images)
    perceptor.use_image_dtype(torch.bfloat16)
    assert next(perceptor.model.visual.parameters()).dtype == torch.bfloat16
    assert next(perceptor.model.transformer.parameters()).dtype == torch.float32  # text tower untouched
    images.requires_grad_(True)
    fast = perceptor.encode_image(images)
    assert fast.dtype == torch.float32
    assert (fast * exact).sum(-1).min() > 0.99
    fast.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_cpu_bf16_swaps_compute_the_same_function_and_keep_parameter_names(tiny_clip_spec):
    """The fast-bf16 replacements (fp32-core attention, linear patch embedding) are the same maths: in fp32
    they match the original tower's embeddings and pixel gradients, and the checkpoint keys do not change."""
    import copy

    from dreamcanvas.perceptor.clip import load_perceptor
    from dreamcanvas.perceptor.cpu_bf16 import Fp32CoreAttention, LinearPatchEmbed, speed_up_for_cpu_bf16

    original = load_perceptor(tiny_clip_spec).model.visual
    swapped = speed_up_for_cpu_bf16(copy.deepcopy(original))
    kinds = {type(m) for m in swapped.modules()}
    assert {Fp32CoreAttention, LinearPatchEmbed} <= kinds
    assert swapped.state_dict().keys() == original.state_dict().keys()

    def embed_and_grad(tower):
        images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
        features = tower(images)
        (features * torch.arange(features.shape[-1])).sum().backward()
        return features.detach(), images.grad

    (expected, expected_grad), (got, got_grad) = embed_and_grad(original), embed_and_grad(swapped)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_grad, expected_grad, rtol=1e-4, atol=1e-6)


def test_bf16_guidance_gradient_points_where_fp32_does(tiny_clip_spec):
    from dreamcanvas.perceptor.clip import load_perceptor

    perceptor = load_perceptor(tiny_clip_spec)
    text = perceptor.encode_text(["a red apple"])

    def pixel_gradient():
        images = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
        (perceptor.encode_image(images) @ text.T).sum().backward()
        return images.grad.flatten()

    exact = pixel_gradient()
    perceptor.use_image_dtype(torch.bfloat16)
    fast = pixel_gradient()
    assert torch.nn.functional.cosine_similarity(exact, fast, dim=0) > 0.98


@pytest.mark.parametrize("case", ["self", "cross", "float mask", "bool mask", "per-head mask"])
def test_fp32_core_attention_matches_multihead_attention(case):
    """The swap must be exact for every way open_clip (or a pooler) may call nn.MultiheadAttention."""
    from dreamcanvas.perceptor.cpu_bf16 import Fp32CoreAttention

    torch.manual_seed(0)
    original = nn.MultiheadAttention(16, 4, batch_first=True)
    query = torch.randn(2, 5, 16)
    key = value = query if case != "cross" else torch.randn(2, 7, 16)
    mask = None
    if case == "float mask":
        mask = torch.randn(5, 5)
    elif case == "bool mask":
        mask = torch.rand(5, 5) > 0.6
        mask.fill_diagonal_(False)  # every query keeps something to attend to
    elif case == "per-head mask":
        mask = torch.randn(2 * 4, 5, 5)
    expected, _ = original(query, key, value, need_weights=False, attn_mask=mask)
    got, _ = Fp32CoreAttention(original)(query, key, value, need_weights=False, attn_mask=mask)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_cpu_bf16_swaps_only_a_vit_patch_embedding():
    """A ResNet tower's conv1 (3x3, stride 2) and its bottlenecks' 1x1 conv1s are convolutions, not patches."""
    from dreamcanvas.perceptor.cpu_bf16 import LinearPatchEmbed, speed_up_for_cpu_bf16

    resnet_like = nn.Module()
    resnet_like.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
    resnet_like.layer1 = nn.Module()
    resnet_like.layer1.conv1 = nn.Conv2d(8, 8, 1)
    speed_up_for_cpu_bf16(resnet_like)
    assert not any(isinstance(m, LinearPatchEmbed) for m in resnet_like.modules())
