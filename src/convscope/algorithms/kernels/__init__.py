"""Compiled kernels (numba), one module per family.

Nothing here is imported by ``import convscope``: an algorithm imports its kernel module inside the
function that needs it, and the kernel module imports numba through :mod:`._numba`, which prepares
numba's cache directory and threading layer first.  Each kernel is compiled with ``cache=True``, once
per machine.
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
