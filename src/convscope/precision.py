"""Which paths the planner may choose: where a call's rounding error may go.

In the spirit of ``torch.set_float32_matmul_precision``, one setting trades
speed for where rounding error lands:

* ``"high"`` (the default): the planner may choose Winograd and FFT.  They mix
  values across a tile (Winograd) or a whole image (FFT), so their rounding
  error is relative to the largest values of the call, not to the values an
  output reads: in float32 an output may be off by about ``1e-7 × max |value|``
  of the call (input, weight, grad_output and result), even where it never
  read that value (one bright star on a dark sky puts about 1e-7 of its value
  into the dark pixels around it); in float64 about ``1e-16 ×`` that.
* ``"highest"``: the planner stays on the paths whose error is local, each
  output rounded from the products it sums (gemm, pointwise, depthwise and the
  reference loops), as torch's CPU kernels are.

Why ``"high"`` by default: the planner's Winograd and FFT rows are where they are
because those paths are faster there, and their error stays within float32's
norm-relative accuracy (about 2e-6 for Winograd) on ordinary data; torch on a GPU
makes the same trade by default, where cuDNN's heuristics may pick Winograd and FFT.
Data with a large dynamic range (astronomy, HDR images, radar) should ask for
``"highest"``.  NaN and ±Inf do not depend on this setting: whatever the
setting, the paths that mix values recompute a call whose input, weight,
grad_output or result is not finite on an exact local path (see
:mod:`convscope.algorithms`), so NaN and Inf land where torch puts them.

An explicit ``algorithm=`` is not affected.  :func:`set_conv_precision` sets the
mode for every thread; :func:`conv_precision` sets it for the calls the
calling thread makes inside a ``with`` block.
"""
from __future__ import annotations

from ._setting import Setting
from .spec import check_conv_precision

DEFAULT_PRECISION = "high"

_mode = Setting(DEFAULT_PRECISION)


def get_conv_precision() -> str:
    """The precision mode of the calling thread: ``"highest"`` or ``"high"``."""
    return _mode.get()


def set_conv_precision(mode: str) -> str:
    """Set the precision mode (``"highest"`` or ``"high"``) for every thread; returns the previous mode.

    >>> import convscope
    >>> previous = convscope.set_conv_precision("highest")
    >>> convscope.plan((8, 64, 28, 28), (64, 64, 3, 3), padding=1).forward.algorithm
    'gemm'
    >>> _ = convscope.set_conv_precision(previous)
    >>> convscope.plan((8, 64, 28, 28), (64, 64, 3, 3), padding=1).forward.algorithm
    'winograd'
    """
    return _mode.set(check_conv_precision(mode))


def conv_precision(mode: str):
    """``with conv_precision(mode):`` — the mode for calls made by this thread inside the block.

    >>> import convscope
    >>> with convscope.conv_precision("highest"):
    ...     convscope.plan((1, 16, 64, 64), (16, 16, 7, 7), padding=3).forward.algorithm
    'gemm'
    """
    return _mode.override(check_conv_precision(mode))
