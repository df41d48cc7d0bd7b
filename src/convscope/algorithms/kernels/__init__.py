"""Compiled kernels (numba), one module per family.

Nothing here is imported by ``import convscope``: an algorithm imports its kernel module inside the
function that needs it, and the kernel module imports numba through :mod:`._numba`, which prepares
numba's cache directory and threading layer first.  Each kernel is compiled with ``cache=True``, once
per machine.  The helpers in this file (:func:`fused_padding`, :func:`channel_bias`) need only NumPy
and import a kernel module when they run one.
"""

import numpy as np

from ...padding import pad


def fused_padding(x, spec):
    """(the C-contiguous input a kernel reads, the top and left padding it fuses).

    Kernels fuse zero padding (a tap in the border is skipped or reads 0); for the other padding modes
    the input is padded first (:func:`convscope.padding.pad`) and the kernel runs unpadded.
    """
    if spec.padding_mode == "zeros":
        return np.ascontiguousarray(x), spec.padding[0][0], spec.padding[1][0]
    return pad(x, spec), 0, 0


BIAS_COMPILED_FROM = 1 << 18    # outputs from which a bias is written by the compiled kernel (NumPy's broadcast: one thread; bench/README.md)


def channel_bias(out, b, add=False, channel_axes=1):
    """``out[n, c, …] = b[c]``, or ``+=`` with ``add``, in place; returns out.

    out is (N, C, …) of b's dtype, or with ``channel_axes=2`` (N, G, C/G, …), the channels numbered
    across both axes.  From :data:`BIAS_COMPILED_FROM` outputs of a C-contiguous ``out`` the rows are
    written by :mod:`.bias` on every thread, else by NumPy's broadcast: the same values either way (one
    addition per output, NaN and ±Inf as IEEE arithmetic gives them).
    """
    if out.size >= BIAS_COMPILED_FROM and out.flags.c_contiguous and b.dtype == out.dtype:
        from . import _numba, bias as kernels

        rows = out.reshape(out.shape[0], b.size, -1)        # (N, C, …) → (N, C, L), a view
        _numba.launch(kernels.channel_rows, rows, np.ascontiguousarray(b).reshape(-1), bool(add))
        return out
    lead = out.shape[1:1 + channel_axes]
    column = b.reshape(lead + (1,) * (out.ndim - 1 - channel_axes))    # (C,) → (C, 1, …) or (G, C/G, 1, …)
    if add:
        with np.errstate(all="ignore"):                     # inf + (−inf) is NaN, as in torch, without a warning
            np.add(out, column, out=out)
    else:
        out[...] = column
    return out
