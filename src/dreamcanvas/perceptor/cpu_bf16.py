"""Make an open_clip vision tower fast in bf16 on CPUs with bf16 matrix units (AMX, AVX512-BF16).

Converting the weights to bf16 alone is not enough: profiled inside the guidance step (ViT-B/32, 32 cutouts,
forward + backward to the pixels), most of the bf16 time went to two places that are cheap in fp32:

- **attention's batched matmuls**: the per-head ``(50 x 64) @ (64 x 50)`` products get strided bf16 copies
  before every ``bmm``, which cost more than the whole MLP. Attention is ~1 % of the FLOPs, so it now runs
  in fp32 (one contiguous cast in, one out) while the big projections stay in bf16.
- **the patch embedding's backward**: a stride = kernel convolution whose bf16 input-gradient kernel is slow.
  It is the same arithmetic as a linear layer over flattened patches, which now computes it.

Both replacements keep the original parameters (same tensors, same names), so ``state_dict`` is unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Fp32CoreAttention(nn.Module):
    """``nn.MultiheadAttention`` (batch first, equal q/k/v widths) with bf16 projections and an fp32 core.

    Self- and cross-attention, boolean or additive ``attn_mask`` (2-D, or 3-D per head as in PyTorch) and
    ``is_causal`` behave as in ``nn.MultiheadAttention``; attention weights and ``key_padding_mask``, which no
    open_clip image tower asks for, raise instead of being silently ignored.
    """

    def __init__(self, attention: nn.MultiheadAttention) -> None:
        super().__init__()
        self.num_heads = attention.num_heads
        self.in_proj_weight = attention.in_proj_weight
        self.in_proj_bias = attention.in_proj_bias
        self.out_proj = attention.out_proj

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, L, H * d)`` -> ``(B, H, L, d)`` in fp32."""
        batch, length, width = x.shape
        return x.view(batch, length, self.num_heads, width // self.num_heads).transpose(1, 2).float()

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, None]:
        if key_padding_mask is not None:
            raise ValueError("Fp32CoreAttention does not support key_padding_mask")
        if need_weights:  # nn.MultiheadAttention's default; open_clip always passes need_weights=False
            raise ValueError("Fp32CoreAttention does not return attention weights; pass need_weights=False")
        batch, length, width = query.shape
        if key is query and value is query:  # self-attention: one fused projection
            q, k, v = F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        else:
            weights = self.in_proj_weight.chunk(3)
            biases = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None,) * 3
            q, k, v = (F.linear(x, w, b) for x, w, b in zip((query, key, value), weights, biases, strict=True))
        mask = attn_mask
        if mask is not None:
            if mask.dtype == torch.bool:  # nn.MultiheadAttention: True = may not attend; SDPA: True = may
                mask = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device).masked_fill(mask, -torch.inf)
            mask = mask.float()
            if mask.dim() == 3:  # (B * H, L, S) -> (B, H, L, S)
                mask = mask.view(batch, self.num_heads, *mask.shape[-2:])
        mixed = F.scaled_dot_product_attention(
            self._heads(q), self._heads(k), self._heads(v), attn_mask=mask, is_causal=is_causal and mask is None
        )
        mixed = mixed.transpose(1, 2).reshape(batch, length, width).to(query.dtype)
        return self.out_proj(mixed), None


class LinearPatchEmbed(nn.Module):
    """A ``kernel = stride`` patch convolution computed as a linear layer over flattened patches."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.patch = conv.kernel_size[0]
        self.weight = conv.weight
        self.bias = conv.bias

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = images.shape
        p, rows, cols = self.patch, height // self.patch, width // self.patch
        patches = images[:, :, : rows * p, : cols * p].reshape(batch, channels, rows, p, cols, p)
        patches = patches.permute(0, 2, 4, 1, 3, 5).reshape(batch, rows * cols, channels * p * p)
        embedded = F.linear(patches, self.weight.flatten(1), self.bias)
        return embedded.transpose(1, 2).reshape(batch, -1, rows, cols)


def _is_patch_conv(module: nn.Module | None) -> bool:
    return (
        isinstance(module, nn.Conv2d)
        and module.kernel_size == module.stride
        and module.kernel_size[0] == module.kernel_size[1]
        and module.padding == (0, 0)
        and module.dilation == (1, 1)
        and module.groups == 1
    )


def speed_up_for_cpu_bf16(visual: nn.Module) -> nn.Module:
    """Swap, in place, the slow-in-bf16 submodules of an image tower for equivalent fast ones.

    Every batch-first ``nn.MultiheadAttention`` with equal q/k/v widths, and the ViT's patch embedding (the
    tower's own ``conv1`` when it is a ``kernel = stride`` convolution; a ResNet's ``conv1`` is not).
    """
    for parent in list(visual.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.MultiheadAttention) and child.batch_first and child._qkv_same_embed_dim:
                setattr(parent, name, Fp32CoreAttention(child))
    if _is_patch_conv(getattr(visual, "conv1", None)):
        visual.conv1 = LinearPatchEmbed(visual.conv1)
    return visual
