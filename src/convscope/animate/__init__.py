"""Animations of a convolution with the real numbers: :func:`animate`.

One frame per output element (or per element of ∂input or ∂weight): the padded input with
the kernel window, the kernel, the products and their sum, and the result filling in.  Every
number comes from :func:`convscope.explain` / :func:`convscope.explain_grad`.  Drawn with
matplotlib (Agg) and written as GIF with Pillow, or MP4 with ffmpeg: ``pip install
'convscope[viz]'``.

- :mod:`.scenes`: what each frame shows (from the explanations; no drawing)
- :mod:`.draw`: the layout and the matplotlib renderer
- :mod:`.media`: GIF, MP4 and the inline HTML
- :mod:`.transposed`: the transposed mode (``transposed=True`` or a ``ConvTranspose2d``): each input
  element stamps its weighted kernel onto the output, the sums from ``conv_transpose2d``
"""
from .core import MAX_FRAMES, MAX_GRID, Animation, FrameInfo, animate

__all__ = ["MAX_FRAMES", "MAX_GRID", "Animation", "FrameInfo", "animate"]
