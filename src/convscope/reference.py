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


def forward(x, w, b, spec, shape):
    """out (N, C_out, H_out, W_out) from x (N, C, H, W), w (C_out, C/groups, kH, kW), b (C_out,) or None."""
    rows, cols = spec_tap_sources(spec, (shape.H, shape.W))
    Cg, Og = shape.in_per_group, shape.out_per_group
    kH, kW = spec.kernel_size
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    out = np.zeros((shape.N, shape.out_channels, shape.H_out, shape.W_out))
    for o in range(shape.out_channels):
        g = o // Og
        channels = slice(g * Cg, (g + 1) * Cg)  # the input channels output channel o sees
        for i in range(shape.H_out):
            for j in range(shape.W_out):
                total = np.zeros(shape.N)
                for u in range(kH):
                    for v in range(kW):
                        h, wc = rows[i, u], cols[j, v]
                        if h < 0 or wc < 0:
                            continue  # zero padding: contributes 0
                        # Σ_c x[n, c, h, w] · w[o, c, u, v] for every n at once
                        total += x64[:, channels, h, wc] @ w64[o, :, u, v]
                out[:, o, i, j] = total + (0.0 if b is None else float(b[o]))
    return out.astype(x.dtype)


def grad_input(grad_out, w, spec, shape):
    """∂L/∂x (N, C, H, W) from grad_out (N, C_out, H_out, W_out) and w."""
    rows, cols = spec_tap_sources(spec, (shape.H, shape.W))
    Cg, Og = shape.in_per_group, shape.out_per_group
    kH, kW = spec.kernel_size
    gy, w64 = grad_out.astype(np.float64), w.astype(np.float64)
    dx = np.zeros((shape.N, shape.C, shape.H, shape.W))
    for o in range(shape.out_channels):
        g = o // Og
        channels = slice(g * Cg, (g + 1) * Cg)
        for i in range(shape.H_out):
            for j in range(shape.W_out):
                for u in range(kH):
                    for v in range(kW):
                        h, wc = rows[i, u], cols[j, v]
                        if h < 0 or wc < 0:
                            continue
                        # (N, 1) · (Cg,) → (N, Cg): this tap's share of every input channel
                        dx[:, channels, h, wc] += gy[:, o, i, j, None] * w64[o, :, u, v]
    return dx.astype(grad_out.dtype)


def grad_weight(grad_out, x, spec, shape):
    """∂L/∂w (C_out, C/groups, kH, kW) from grad_out and x."""
    rows, cols = spec_tap_sources(spec, (shape.H, shape.W))
    Cg, Og = shape.in_per_group, shape.out_per_group
    kH, kW = spec.kernel_size
    gy, x64 = grad_out.astype(np.float64), x.astype(np.float64)
    dw = np.zeros((shape.out_channels, Cg, kH, kW))
    for o in range(shape.out_channels):
        g = o // Og
        channels = slice(g * Cg, (g + 1) * Cg)
        for u in range(kH):
            for v in range(kW):
                for i in range(shape.H_out):
                    for j in range(shape.W_out):
                        h, wc = rows[i, u], cols[j, v]
                        if h < 0 or wc < 0:
                            continue
                        # Σ_n grad_out[n, o, i, j] · x[n, c, h, w] for every c of the group
                        dw[o, :, u, v] += gy[:, o, i, j] @ x64[:, channels, h, wc]
    return dw.astype(x.dtype)
