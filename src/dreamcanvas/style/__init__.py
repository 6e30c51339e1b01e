"""Style transfer: ``dreamcanvas style CONTENT STYLE[:weight] ...``'s library, one idea per module.

* :mod:`~dreamcanvas.style.settings` - :class:`StyleSettings`, every setting of a picture, checked one way.
* :mod:`~dreamcanvas.style.vgg` - VGG-19's features by ReLU name, from torchvision's file or the Caffe-converted
  one neural-style uses, each with its own preprocessing.
* :mod:`~dreamcanvas.style.gatys` - the losses of Gatys et al. as neural-style defines them: Gram matrices,
  content, total variation, blended style targets.
* :mod:`~dreamcanvas.style.fast` - Magenta's arbitrary-style network through onnxruntime (``--method fast``).
* :mod:`~dreamcanvas.style.colors` - ``--original-colors``: the result's luma, the content's chroma.
* :mod:`~dreamcanvas.style.plan` - :func:`preflight`: every check made before a model is loaded or a file
  written (pictures' headers, sizes, ``STYLE[:weight]``, VGG-19's dtype, the memory estimate).
* :mod:`~dreamcanvas.style.optimizer` - neural-style's L-BFGS (or Adam), stepped one iteration at a time.
* :mod:`~dreamcanvas.style.checkpoint` - ``state.pt``: what a stopped run keeps, written and checked back.
* :mod:`~dreamcanvas.style.run` - :func:`stylize` and :func:`resume`: a picture as a dreamcanvas run (folder,
  frames, settings in every PNG, video, exact resume), by the contract of :mod:`dreamcanvas.outputs.run`.
* :mod:`~dreamcanvas.style.loss` - a painting's style as one more loss of ``generate --style-image``.

Importing this package is light: torchvision and onnxruntime load when a network is first made.
"""

from __future__ import annotations

from dreamcanvas.style.plan import parse_style, preflight
from dreamcanvas.style.run import METHOD, StepReport, StyleResult, resume, stylize
from dreamcanvas.style.settings import StyleSettings

__all__ = ["METHOD", "StepReport", "StyleResult", "StyleSettings", "parse_style", "preflight", "resume", "stylize"]
