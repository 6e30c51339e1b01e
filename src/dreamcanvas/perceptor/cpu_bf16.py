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
    """``nn.MultiheadAttention`` (batch first, self-attention) with bf16 projections and an fp32 core."""

    def __init__(self, attention: nn.MultiheadAttention) -> None:
        super().__init__()
        self.num_heads = attention.num_heads
        self.in_proj_weight = attention.in_proj_weight
        self.in_proj_bias = attention.in_proj_bias
        self.out_proj = attention.out_proj

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        need_weights: bool = False,
        attn_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, None]:
        batch, length, width = query.shape
        qkv = F.linear(query, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.view(batch, length, 3, self.num_heads, width // self.num_heads).permute(2, 0, 3, 1, 4).float()
        mask = attn_mask.float() if attn_mask is not None else None
        mixed = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=mask)
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


def _is_patch_conv(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.Conv2d)
        and module.kernel_size == module.stride
        and module.kernel_size[0] == module.kernel_size[1]
        and module.padding == (0, 0)
        and module.dilation == (1, 1)
        and module.groups == 1
    )


def speed_up_for_cpu_bf16(visual: nn.Module) -> nn.Module:
    """Swap, in place, the slow-in-bf16 submodules of a ViT image tower for equivalent fast ones."""
    for parent in list(visual.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.MultiheadAttention) and child.batch_first and child._qkv_same_embed_dim:
                setattr(parent, name, Fp32CoreAttention(child))
            elif name == "conv1" and _is_patch_conv(child):
                setattr(parent, name, LinearPatchEmbed(child))
    return visual
