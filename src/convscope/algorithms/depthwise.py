"""Depthwise convolutions (one input channel per group): multiply-adds per kernel tap.

With ``C/groups = 1`` every output channel ``o = c·m + k`` (``m = C_out/C``, the
channel multiplier) reads one input channel ``c``, so the convolution is, per
tap ``(u, v)``, an elementwise product of a shifted (strided) window of the
padded input with one weight per channel::

    out[n, c, k, i, j] = b[c·m + k] + Σ_u Σ_v  w[c, k, u, v] · x̃[n, c, i·sH + u·dH, j·sW + v·dW]

There is no matrix product to hand to BLAS (im2col would copy the input kH·kW
times to multiply by 1×(kH·kW) matrices), so the work is done as NumPy
multiply-adds over whole (channel block × image) arrays, with Python loops only
over kernel taps and over blocks.  The blocks (one sample, a range of channels,
about ``BLOCK_ELEMENTS`` output values) keep the accumulator in the core's
cache and run in parallel on :func:`convscope.threads.parallel_map`.

Backward, the adjoints of the same sum:

* ``∂L/∂x̃[n, c, window(u, v)] += Σ_k w[c, k, u, v] · grad_out[n, c, k]``, then
  :func:`convscope.padding.fold` sends the border's gradient home;
* ``∂L/∂w[c, k, u, v] = Σ_n Σ_ij grad_out[n, c, k, i, j] · x̃[n, c, window(u, v)]``.
"""
from __future__ import annotations

import numpy as np

from ..padding import fold, pad
from ..threads import parallel_map
from .gemm import _tap_slices, _tap_sources

BLOCK_ELEMENTS = 1 << 17     # output values per block (512 KiB of float32)


def _blocks(N, C, per_channel):
    """(n, c0, c1) blocks of about BLOCK_ELEMENTS output values."""
    cb = max(1, min(C, BLOCK_ELEMENTS // max(per_channel, 1)))
    return [(n, c0, min(C, c0 + cb)) for n in range(N) for c0 in range(0, C, cb)]


def _split(spec, shape):
    m = shape.out_per_group                                        # channel multiplier
    return m, spec.kernel_size


def forward(x, w, b, spec, shape):
    N, C, Ho, Wo = shape.N, shape.C, shape.H_out, shape.W_out
    m, (kH, kW) = _split(spec, shape)
    source = _tap_sources(pad(x, spec), spec, shape)               # (u, v) → (N, C, Ho, Wo) view
    w4 = w.reshape(C, m, kH, kW)                                   # (C_out, 1, kH, kW) → (C, m, kH, kW)
    out = np.empty((N, C, m, Ho, Wo), dtype=x.dtype)
    b2 = None if b is None else b.reshape(C, m, 1, 1)              # (C_out,) → (C, m, 1, 1)

    def block(job):
        n, c0, c1 = job
        o = out[n, c0:c1]                                          # (cb, m, Ho, Wo) view
        tmp = np.empty_like(o)
        for u in range(kH):
            for v in range(kW):
                src = source(u, v)[n, c0:c1, None]                 # (cb, 1, Ho, Wo) view
                wt = w4[c0:c1, :, u, v, None, None]                # (cb, m, 1, 1) view
                if u == 0 and v == 0:
                    np.multiply(src, wt, out=o)
                else:
                    np.multiply(src, wt, out=tmp)
                    o += tmp
        if b2 is not None:
            o += b2[c0:c1]

    parallel_map(block, _blocks(N, C, m * Ho * Wo))
    return out.reshape(N, shape.out_channels, Ho, Wo)              # (N, C, m, Ho, Wo) → (N, C·m, Ho, Wo)


def grad_input(grad_out, w, spec, shape):
    return backward(grad_out, None, w, spec, shape, (True, False))[0]


def grad_weight(grad_out, x, spec, shape):
    return backward(grad_out, x, None, spec, shape, (False, True))[1]


def backward(grad_out, x, w, spec, shape, mask):
    """(∂L/∂x or None, ∂L/∂w or None) as ``mask = (input, weight)`` asks; one pass over the blocks."""
    want_dx, want_dw = mask
    N, C, Ho, Wo = shape.N, shape.C, shape.H_out, shape.W_out
    m, (kH, kW) = _split(spec, shape)
    (pt, pb), (pl, pr) = spec.padding
    Hp, Wp = shape.H + pt + pb, shape.W + pl + pr
    dtype = grad_out.dtype
    gy = grad_out.reshape(N, C, m, Ho, Wo)                         # (N, C·m, Ho, Wo) → (N, C, m, Ho, Wo)
    dxp = np.zeros((N, C, Hp, Wp), dtype=dtype) if want_dx else None
    w4 = None if w is None else w.reshape(C, m, kH, kW)            # (C·m, 1, kH, kW) → (C, m, kH, kW)
    source = _tap_sources(pad(x, spec), spec, shape) if want_dw else None

    def block(job):
        n, c0, c1 = job
        g = gy[n, c0:c1]                                           # (cb, m, Ho, Wo) view
        part = np.empty((c1 - c0, m, kH, kW), dtype=dtype) if want_dw else None
        tmp = np.empty((c1 - c0, Ho, Wo), dtype=dtype) if want_dx else None
        for u in range(kH):
            for v in range(kW):
                if want_dx:
                    rs, cs = _tap_slices(spec, shape, u, v)
                    wt = w4[c0:c1, :, u, v, None, None]            # (cb, m, 1, 1) view
                    if m == 1:
                        np.multiply(g[:, 0], wt[:, 0], out=tmp)
                    else:
                        np.einsum("ckij,ck->cij", g, wt[:, :, 0, 0], out=tmp)
                    dxp[n, c0:c1, rs, cs] += tmp
                if want_dw:
                    src = source(u, v)[n, c0:c1]                   # (cb, Ho, Wo) view
                    np.einsum("cij,ckij->ck", src, g, out=part[:, :, u, v])
        return c0, c1, part

    results = parallel_map(block, _blocks(N, C, m * Ho * Wo))
    dx = dw = None
    if want_dx:
        dx = fold(dxp, spec, (shape.H, shape.W))
    if want_dw:
        acc = np.zeros((C, m, kH, kW), dtype=dtype)
        for c0, c1, part in results:
            acc[c0:c1] += part
        dw = acc.reshape(shape.out_channels, 1, kH, kW)            # (C, m, kH, kW) → (C·m, 1, kH, kW)
    return dx, dw


def workspace(pass_, spec, shape, itemsize):
    """Scratch bytes: the padded input (or its gradient), the result, and one block per thread."""
    (pt, pb), (pl, pr) = spec.padding
    padded = shape.N * shape.C * (shape.H + pt + pb) * (shape.W + pl + pr)
    out = shape.N * shape.out_channels * shape.H_out * shape.W_out
    x = shape.N * shape.C * shape.H * shape.W
    extra = {"forward": out, "grad_input": 2 * x, "grad_weight": 0}[pass_]
    return (padded * (2 if pass_ == "grad_input" else 1) + extra + 4 * BLOCK_ELEMENTS) * itemsize
