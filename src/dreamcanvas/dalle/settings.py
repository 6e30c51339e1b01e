"""Every setting of a ``dreamcanvas dalle`` picture, in one record checked the same way from any source.

The record is what ``run.json`` and every PNG store and what ``--resume`` reads back; each field's docstring is
its ``--help`` text. The sampling defaults are those ru-dalle's README draws Malevich with (``top_k=2048``,
``top_p=0.995``, ``temperature=1.0`` as ``generate_images`` defaults it), or taming's (``top_k=100``): ``-1``
becomes the model's own before a run starts, so what is stored is the number drawn with.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import ClassVar

from dreamcanvas.records import MODEL, SettingsRecord, setting

PRECISIONS = ("auto", "bf16", "fp32")
DEFAULT_MODEL = "rudalle-malevich"
OFFLINE_MODEL = "bundled:dalle"
"""What draws when no --model is given and Malevich cannot be had (not downloaded, offline)."""
DEFAULT_VQGAN = "sber-vqgan"
MAX_IMAGES = 8
"""ru-dalle's pipeline draws 8 at a time (``bs=8``): the images of a run go through the network as one batch."""
RUDALLE_TOP_K = 2048
RUDALLE_TOP_P = 0.995
"""What ``--top-k -1`` / ``--top-p -1`` become for a ruDALL-E model (taming's own are in ``dalle/taming.py``)."""
MAX_SEED = 2**62
"""Image ``i`` draws from ``seed + i``: every seed of a run stays a valid ``torch.Generator`` seed."""


@dataclass
class DalleSettings(SettingsRecord):
    """A picture from text by ruDALL-E: a GPT writes 32x32 image tokens one at a time, a VQGAN paints them."""

    prompt: str = setting("", flag="PROMPT")
    """What to draw, in Russian (ruDALL-E was trained on Russian captions; it is lower-cased, as ru-dalle does).
    A taming model draws no text: leave it out and give --class."""
    class_label: str = setting("", flag="--class")
    """The ImageNet class a class-conditional taming model (taming-cin) draws: a name (lighthouse, goldfish) or
    its number 0-999; only for those models."""
    model: str = setting("", kind=MODEL)
    """The network; empty = rudalle-malevich if it is downloaded or can be fetched now, else bundled:dalle (with a
    warning). rudalle-malevich (Malevich v3, 1.3B parameters, 2.6 GB download); rudalle-emojich (emoji, ru-dalle's v2
    forward), rudalle-malevich-v2, rudalle-surrealist-xl (Malevich's shape, other weights); bundled:dalle (a
    9M-parameter DALL-E of the same design trained here on clip art, English and Russian captions, 64 px, offline);
    local:DIR, a folder holding a ruDALL-E checkpoint (pytorch_model_v3.bin, or the only .bin / .pt there) and its
    tokenizer bpe.model (and optionally config.json: ru-dalle's model_params, e.g. num_attention_heads, hf_version
    "v2" for a v2 network); or taming-cin
    (taming-transformers' class-conditional ImageNet GPT and its f16 VQGAN in one 1.4B-parameter checkpoint, --vqgan
    unused), or local:PATH, a taming Net2NetTransformer .ckpt (or a folder with one) and its project .yaml."""
    vqgan: str = setting("", kind=MODEL)
    """The VQGAN that paints the image tokens; empty = the model's own (sber-vqgan, Sber's Gumbel f8 VQGAN with 8192
    codes, for ruDALL-E; the vqgan a model folder's config.json names, bundled:vqgan for the bundled model), or
    sber-vqgan, bundled:vqgan, local:PATH (a folder with one .yaml and one .ckpt, or a .ckpt); its codebook must
    have the model's image vocabulary."""
    images: int = setting(1, low=1, high=MAX_IMAGES)
    """Pictures drawn from the prompt, together in one batch (picture k draws from seed + k - 1)."""
    temperature: float = setting(1.0, low=0, high=100)
    """The logits are divided by this before filtering: lower is safer, higher wilder; 0 takes the most likely
    token every time (no randomness: every picture of the run is the same)."""
    top_k: int = setting(-1, low=0, high=1_000_000, special=(-1,))
    """Only the k most likely image tokens may be drawn (0 = all of them; -1 = the model's own: 2048 for ruDALL-E,
    100 for taming)."""
    top_p: float = setting(-1.0, above=0, high=1, special=(-1,))
    """Of those, only the most likely ones that together hold this share of the probability (1 = all; -1 = the
    model's own: 0.995 for ruDALL-E, 1 for taming)."""
    seed: int = setting(-1, low=0, high=MAX_SEED, special=(-1,))
    """-1 picks a random seed; the seed used is stored, so the pictures can be made again."""
    precision: str = setting("auto", choices=PRECISIONS)
    """The network and the VQGAN in bf16 or fp32; auto = bf16 on CPUs with native bf16 (AMX / AVX512-BF16),
    where it reads half the bytes per token."""
    save_every: int = setting(4, low=1, high=1024)
    """A frame (the rows drawn so far, the rest grey) and a checkpoint --resume continues from, every N rows of
    image tokens (Malevich draws 32 rows)."""
    video: bool = False
    """Also write an MP4 of the frames: the picture filling in, row by row."""
    gif: bool = False
    """Also write a GIF of the frames."""
    fps: int = setting(4, low=1, high=240)
    """Frames per second of the video and GIF."""
    size: int = setting(0, low=0, high=4096)
    """Picture side in pixels (square); 0 = the model's own (256 for Malevich and taming-cin). A taming model draws
    larger pictures (multiples of its VQGAN's factor, 16) with a sliding window of its trained 16x16 codes;
    ruDALL-E draws only its own size."""
    rerank_clip: str = setting("", kind=MODEL)
    """Score every picture against the prompt with this CLIP (any --clip spec: bundled:judge, ViT-B-32:openai,
    ruclip-vit-base-patch32-384, local-dir:PATH) and write the finals best first, final-1.png the best, their
    scores in run.json and each PNG; empty = no reranking."""

    # the panel of each field in `dalle --help` and in the studio (presentation only; the help is the docstring)
    PANELS: ClassVar[dict[str, str]] = {
        **dict.fromkeys(("prompt", "class_label"), "Prompt"),
        **dict.fromkeys(("model", "vqgan", "precision"), "Model"),
        **dict.fromkeys(("images", "temperature", "top_k", "top_p", "seed"), "Sampling"),
        **dict.fromkeys(("size", "save_every", "video", "gif", "fps", "rerank_clip"), "Output"),
    }

    def with_seed(self) -> DalleSettings:
        """``seed -1`` replaced by a random seed, so that the run can be stored and made again."""
        return self.replace(seed=secrets.randbelow(2**31)) if self.seed == -1 else self
