"""A picture file's cosine similarity to texts under a loaded CLIP, with the CLIP's own preprocessing.

One function for ``dreamcanvas score`` and ``dreamcanvas dalle --rerank-clip``, so that the score a reranked run
records for a picture is the number ``score`` prints for that file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from dreamcanvas.outputs.png import load_image

if TYPE_CHECKING:  # not at import time: open_clip is heavy
    from dreamcanvas.perceptor.clip import ClipPerceptor


def picture_similarities(perceptor: ClipPerceptor, image: str | Path, texts: list[str]) -> list[float]:
    """Cosine similarity of the picture file to each text (unit-norm embeddings, so a dot product)."""
    picture = load_image(image, (perceptor.image_size, perceptor.image_size))  # decoded small, not at full size
    with torch.no_grad():
        image_embedding = perceptor.encode_image(picture)
        text_embeddings = perceptor.encode_text(texts)
    return (text_embeddings @ image_embedding.T).squeeze(1).tolist()
