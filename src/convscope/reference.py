"""The readable implementation: loops over output positions and kernel taps, in 1, 2 or 3 dimensions.

This is the oracle every fast path is tested against, written to be read
next to the maths rather than to be fast.  The batch and the input channels of
a group are handled as NumPy vectors; everything else is an explicit loop
(``itertools.product`` over the spatial axes).
It accumulates in float64 and returns the caller's compute dtype.

Forward (cross-correlation, as in ``torch.nn.Conv1d/2d/3d``), written for 2-d::

    out[n, o, i, j] = bias[o] + Σ_c Σ_u Σ_v  x̃[n, g·Cg + c, i·sH + u·dH, j·sW + v·dW] · w[o, c, u, v]

where ``g = o // (C_out/groups)`` is the group of output channel ``o``,
``Cg = C_in/groups`` and ``x̃`` is the padded input; 1-d has one spatial index, 3-d three.
Which real pixel ``x̃`` holds at a padded coordinate comes from :mod:`convscope.geometry`
(one table per axis, e.g. ``rows[i, u]``, ``cols[j, v]``; ``-1`` means zero padding).

Backward, for ``L = Σ out · grad_out``: each tap that read input pixel
``(c, h, w)`` with weight ``w[o, c, u, v]`` contributes

    ∂L/∂x[n, c, h, w]   += grad_out[n, o, i, j] · w[o, c, u, v]
    ∂L/∂w[o, c, u, v]   += grad_out[n, o, i, j] · x[n, c, h, w]

A padding cell copied from a real pixel (reflect, replicate, circular) sends
its gradient to that pixel, because the loops use the pixel the tap really
read.  A zero-padding tap reads nothing and receives nothing.
"""
from __future__ import annotations

import itertools

import numpy as np

from .geometry import spec_tap_sources

ERROR = "local"     # each output is rounded from the products it sums (see convscope.precision)
DIMS = (1, 2, 3)    # the numbers of spatial dimensions it computes


def taps_nd(spec, shape):
    """Every tap that reads a real pixel: ``(o, channels, out_index, tap, in_index)``.

    Output ``(·, o, *out_index)`` reads, through kernel tap ``tap``, input pixel ``in_index``
    of the input channels ``channels`` (the slice of output channel ``o``'s group); each
    index has one entry per spatial axis.  Taps that read zero padding are skipped: they
    contribute nothing forward and receive nothing backward.
    """
    tables = spec_tap_sources(spec, tuple(shape.spatial))     # one (out_len, kernel) table per axis
    Cg, Og = shape.in_per_group, shape.out_per_group
    out_positions = list(itertools.product(*(range(n) for n in shape.out_spatial)))
    kernel_taps = list(itertools.product(*(range(k) for k in spec.kernel_size)))
    for o in range(shape.out_channels):
        g = o // Og
        channels = slice(g * Cg, (g + 1) * Cg)  # the input channels output channel o sees
        for out_index in out_positions:
            for tap in kernel_taps:
                in_index = tuple(int(t[i, u]) for t, i, u in zip(tables, out_index, tap))
                if min(in_index) >= 0:
                    yield o, channels, out_index, tap, in_index


def taps(spec, shape):
    """The 2-d taps of :func:`taps_nd` unpacked: ``(o, channels, i, j, u, v, h, w)``."""
    for o, channels, (i, j), (u, v), (h, w) in taps_nd(spec, shape):
        yield o, channels, i, j, u, v, h, w


def forward(x, weight, bias, spec, shape):
    """out (N, C_out, *out_spatial) from x (N, C, *spatial), weight (C_out, C/groups, *kernel), bias (C_out,) or None."""
    x64, w64 = x.astype(np.float64), weight.astype(np.float64)
    out = np.zeros((shape.N, shape.out_channels) + tuple(shape.out_spatial))
    if bias is not None:
        out += bias.astype(np.float64).reshape((-1,) + (1,) * spec.ndim)
    for o, channels, out_index, tap, in_index in taps_nd(spec, shape):
        # Σ_c x[n, c, *in_index] · weight[o, c, *tap], for every n at once
        out[(slice(None), o) + out_index] += x64[(slice(None), channels) + in_index] @ w64[(o, slice(None)) + tap]
    return out.astype(x.dtype)


def grad_input(grad_out, weight, spec, shape):
    """∂L/∂x (N, C, *spatial) from grad_out (N, C_out, *out_spatial) and weight."""
    gy, w64 = grad_out.astype(np.float64), weight.astype(np.float64)
    dx = np.zeros((shape.N, shape.C) + tuple(shape.spatial))
    for o, channels, out_index, tap, in_index in taps_nd(spec, shape):
        # (N, 1) · (Cg,) → (N, Cg): this tap's share of each input channel of the group
        dx[(slice(None), channels) + in_index] += gy[(slice(None), o) + out_index][:, None] * w64[(o, slice(None)) + tap]
    return dx.astype(grad_out.dtype)


def grad_weight(grad_out, x, spec, shape):
    """∂L/∂weight (C_out, C/groups, *kernel) from grad_out and x."""
    gy, x64 = grad_out.astype(np.float64), x.astype(np.float64)
    dw = np.zeros((shape.out_channels, shape.in_per_group) + tuple(spec.kernel_size))
    for o, channels, out_index, tap, in_index in taps_nd(spec, shape):
        # Σ_n grad_out[n, o, *out_index] · x[n, c, *in_index], for every c of the group
        dw[(o, slice(None)) + tap] += gy[(slice(None), o) + out_index] @ x64[(slice(None), channels) + in_index]
    return dw.astype(x.dtype)
