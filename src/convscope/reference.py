"""The readable implementation: loops over output positions and kernel taps.

This is the oracle every fast path is tested against, written to be read
next to the maths rather than to be fast.  The batch and the input channels of
a group are handled as NumPy vectors; everything else is an explicit loop.
It accumulates in float64 and returns the caller's compute dtype.

Forward (cross-correlation, as in ``torch.nn.Conv2d``)::

    out[n, o, i, j] = bias[o] + Σ_c Σ_u Σ_v  x̃[n, g·Cg + c, i·sH + u·dH, j·sW + v·dW] · w[o, c, u, v]

where ``g = o // (C_out/groups)`` is the group of output channel ``o``,
``Cg = C_in/groups`` and ``x̃`` is the padded input.  Which real pixel ``x̃``
holds at a padded coordinate comes from :mod:`convscope.geometry`
(``rows[i, u]``, ``cols[j, v]``; ``-1`` means zero padding).

Backward, for ``L = Σ out · grad_out``: each tap that read input pixel
``(c, h, w)`` with weight ``w[o, c, u, v]`` contributes

    ∂L/∂x[n, c, h, w]   += grad_out[n, o, i, j] · w[o, c, u, v]
    ∂L/∂w[o, c, u, v]   += grad_out[n, o, i, j] · x[n, c, h, w]

A padding cell copied from a real pixel (reflect, replicate, circular) sends
its gradient to that pixel, because the loops use the pixel the tap really
read.  A zero-padding tap reads nothing and receives nothing.
"""
from __future__ import annotations

import numpy as np

from .geometry import spec_tap_sources

ERROR = "local"     # each output is rounded from the products it sums (see convscope.precision)


def taps(spec, shape):
    """Every tap that reads a real pixel: ``(o, channels, i, j, u, v, h, w)``.

    Output ``(·, o, i, j)`` reads, through kernel tap ``(u, v)``, input pixel ``(h, w)`` of the
    input channels ``channels`` (the slice of output channel ``o``'s group).  Taps that read
    zero padding are skipped: they contribute nothing forward and receive nothing backward.
    """
    rows, cols = spec_tap_sources(spec, (shape.H, shape.W))
    Cg, Og = shape.in_per_group, shape.out_per_group
    kH, kW = spec.kernel_size
    for o in range(shape.out_channels):
        g = o // Og
        channels = slice(g * Cg, (g + 1) * Cg)  # the input channels output channel o sees
        for i in range(shape.H_out):
            for j in range(shape.W_out):
                for u in range(kH):
                    for v in range(kW):
                        h, w = rows[i, u], cols[j, v]
                        if h >= 0 and w >= 0:
                            yield o, channels, i, j, u, v, h, w


def forward(x, weight, bias, spec, shape):
    """out (N, C_out, H_out, W_out) from x (N, C, H, W), weight (C_out, C/groups, kH, kW), bias (C_out,) or None."""
    x64, w64 = x.astype(np.float64), weight.astype(np.float64)
    out = np.zeros((shape.N, shape.out_channels, shape.H_out, shape.W_out))
    if bias is not None:
        out += bias.astype(np.float64)[None, :, None, None]
    for o, channels, i, j, u, v, h, w in taps(spec, shape):
        # Σ_c x[n, c, h, w] · weight[o, c, u, v], for every n at once
        out[:, o, i, j] += x64[:, channels, h, w] @ w64[o, :, u, v]
    return out.astype(x.dtype)


def grad_input(grad_out, weight, spec, shape):
    """∂L/∂x (N, C, H, W) from grad_out (N, C_out, H_out, W_out) and weight."""
    gy, w64 = grad_out.astype(np.float64), weight.astype(np.float64)
    dx = np.zeros((shape.N, shape.C, shape.H, shape.W))
    for o, channels, i, j, u, v, h, w in taps(spec, shape):
        # (N, 1) · (Cg,) → (N, Cg): this tap's share of each input channel of the group
        dx[:, channels, h, w] += gy[:, o, i, j, None] * w64[o, :, u, v]
    return dx.astype(grad_out.dtype)


def grad_weight(grad_out, x, spec, shape):
    """∂L/∂weight (C_out, C/groups, kH, kW) from grad_out and x."""
    gy, x64 = grad_out.astype(np.float64), x.astype(np.float64)
    dw = np.zeros((shape.out_channels, shape.in_per_group) + tuple(spec.kernel_size))
    for o, channels, i, j, u, v, h, w in taps(spec, shape):
        # Σ_n grad_out[n, o, i, j] · x[n, c, h, w], for every c of the group
        dw[o, :, u, v] += gy[:, o, i, j] @ x64[:, channels, h, w]
    return dw.astype(x.dtype)
