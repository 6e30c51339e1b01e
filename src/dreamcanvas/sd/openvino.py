"""``sd --backend openvino``: Stable Diffusion's UNet, nearly all of a picture's time, run by OpenVINO.

Measured (``benchmarks/bench_sd_openvino.py``: SD-Turbo's UNet for a 512² picture, 2 threads of an AMD EPYC with
AVX512-BF16 and no AMX): OpenVINO's bf16 2.72 s a call against 3.43 s for dreamcanvas's PyTorch path (bf16,
channels_last), 1.26x; in fp32 5.30 s against PyTorch's 7.27 s. So it is offered as an optional backend
(``pip install "dreamcanvas[openvino]"``). optimum-intel, the usual bridge, pins a transformers older than
dreamcanvas needs, so the UNet is converted here with OpenVINO's own ``convert_model`` from the PyTorch UNet the
pipeline loaded (its dtype kept: a bf16 model converts without an fp32 copy), once per model: the converted
network is kept in dreamcanvas's cache as OpenVINO IR and read back on later runs. The rest of the pipeline
(text encoder, scheduler, decoders) stays diffusers' own; :class:`OpenVINOUNet` stands in for the UNet.

The conversion traces the UNet, so branches that depend on a tensor's size are fixed by the example it traces
with: diffusers' UNet takes another path when the latents' sides are not multiples of 8 (pictures not multiples
of 64 pixels), so the backend asks for multiples of 64 (``SDSettings``' ``OPENVINO_SIDE_MULTIPLE``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.weights import dreamcanvas_cache_dir

CACHE_FOLDER = "openvino"
INSTALL_HINT = 'pip install "dreamcanvas[openvino]"'
UNSUPPORTED = ("--backend openvino runs SD 1.x / 2.x UNets; this model (LCM's guidance embedding or SDXL's added "
               "conditions) needs --backend pytorch")  # fmt: skip


def require_openvino() -> Any:
    """The ``openvino`` module, or one line saying how to install it."""
    try:
        import openvino
    except ImportError:
        raise DreamcanvasError(f"--backend openvino needs OpenVINO: {INSTALL_HINT}") from None
    return openvino


class _TensorsOnly(nn.Module):
    """The UNet as a function of three tensors (what the tracer converts): the noise prediction."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.unet(sample, timestep, context, return_dict=False)[0]


class OpenVINOUNet(nn.Module):
    """A compiled OpenVINO UNet with the face diffusers' pipelines use: ``config``, ``dtype``, ``device`` and a
    call taking ``(sample, timestep, encoder_hidden_states, ...)``."""

    def __init__(self, compiled: Any, config: Any, dtype: torch.dtype) -> None:
        super().__init__()
        self.compiled, self.config = compiled, config
        self.register_buffer("anchor", torch.zeros((), dtype=dtype), persistent=False)

    @property
    def dtype(self) -> torch.dtype:
        return self.anchor.dtype

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    def forward(self, sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor,
                timestep_cond: Any = None, cross_attention_kwargs: Any = None, added_cond_kwargs: Any = None,
                return_dict: bool = True, **_: Any) -> Any:  # fmt: skip
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

        if timestep_cond is not None or added_cond_kwargs:  # refused at load already (openvino_unet)
            raise DreamcanvasError(UNSUPPORTED)
        steps = torch.as_tensor(timestep, dtype=torch.float32).reshape(-1).expand(sample.shape[0])
        feeds = [tensor.float().contiguous().numpy() for tensor in (sample, steps, encoder_hidden_states)]
        noise = torch.from_numpy(self.compiled(feeds)[0]).to(sample.dtype)
        return UNet2DConditionOutput(sample=noise) if return_dict else (noise,)


def fingerprint(unet: nn.Module) -> str:
    """Which UNet this is, cheaply: its config, dtype and the first values of every parameter (a change of
    weights under the same name converts again; hashing all 1.7 GB would cost seconds a run)."""
    digest = hashlib.sha256(json.dumps(dict(unet.config), sort_keys=True, default=str).encode())
    digest.update(str(next(unet.parameters()).dtype).encode())
    for name, parameter in unet.state_dict().items():
        digest.update(name.encode())
        digest.update(parameter.detach().reshape(-1)[:64].float().numpy().tobytes())
    return digest.hexdigest()[:16]


def convert(unet: nn.Module) -> Path:
    """The OpenVINO IR of ``unet`` in dreamcanvas's cache: converted now if it is not there yet."""
    openvino = require_openvino()
    version = openvino.__version__.split("-")[0]  # "2026.4.1-22982-<commit>-releases/2026/4"
    target = dreamcanvas_cache_dir() / CACHE_FOLDER / f"unet-{fingerprint(unet)}-{version}.xml"
    if target.is_file() and target.with_suffix(".bin").is_file():
        return target
    dtype = next(unet.parameters()).dtype
    example = (torch.randn(1, unet.config.in_channels, 8, 8, dtype=dtype), torch.tensor([999.0]),
               torch.randn(1, 77, unet.config.cross_attention_dim, dtype=dtype))  # fmt: skip
    with torch.no_grad():
        model = openvino.convert_model(_TensorsOnly(unet), example_input=example)
    model = _float32_at_the_edges(openvino, model)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.stem}.incomplete.xml")
    openvino.save_model(model, partial, compress_to_fp16=False)
    partial.with_suffix(".bin").replace(target.with_suffix(".bin"))
    partial.replace(target)  # the .xml last: a file pair is whole once its .xml exists
    return target


def _float32_at_the_edges(openvino: Any, model: Any) -> Any:
    """Inputs and output in fp32 whatever the weights' dtype (numpy has no bf16): OpenVINO converts inside."""
    steps = openvino.preprocess.PrePostProcessor(model)
    for index in range(len(model.inputs)):
        steps.input(index).tensor().set_element_type(openvino.Type.f32)
    steps.output(0).tensor().set_element_type(openvino.Type.f32)
    return steps.build()


def openvino_unet(unet: nn.Module, dtype: torch.dtype, threads: int | None = None) -> OpenVINOUNet:
    """``unet`` converted (or read from the cache) and compiled for the CPU in ``dtype`` (bf16 or fp32).

    Refused in one line, before a run starts: UNets that take more than a sample, a timestep and the text (LCM's
    guidance embedding, SDXL's added conditions), which the traced three-input network cannot carry."""
    openvino = require_openvino()
    config = unet.config
    if config.get("time_cond_proj_dim") is not None or config.get("addition_embed_type") is not None:
        raise DreamcanvasError(UNSUPPORTED)
    path = convert(unet)
    hints = {"INFERENCE_PRECISION_HINT": "bf16" if dtype == torch.bfloat16 else "f32",
             "INFERENCE_NUM_THREADS": threads or torch.get_num_threads()}  # fmt: skip
    core = openvino.Core()
    compiled = core.compile_model(core.read_model(path), "CPU", hints)
    return OpenVINOUNet(compiled, unet.config, dtype)
