"""The forward of 2-d convolutions with few input channels per group (an image's 3 colours, a grey
digit) as direct sums over the input's stride phases: no im2col.

With ``Cg`` input channels per group, im2col copies ``Cg·kH·kW`` values per output pixel for a product
whose inner dimension is just as short, so for the stem of ResNet (7×7/2, 3 → 64) the copies cost about
as much as the product.  Here the input is copied once, split into its ``sH·sW`` stride phases, and
each output is its bias plus its taps' products summed in place (:mod:`convscope.algorithms.kernels.direct`
has the layout)::

    out[n, g·Og + o, i, j] = b[g·Og + o] + Σ_{c, u, v} w[g·Og + o, c, u, v] · x̃[n, g·Cg + c, i·sH + u·dH, j·sW + v·dW]

Zero padding is fused into the phase split; the other padding modes pad first.  The gradients are
gemm's (:func:`convscope.algorithms.gemm.backward`).
"""
from __future__ import annotations

import functools
import math

import numpy as np

from . import gemm

ERROR = "local"     # each output is rounded from the products it sums (see convscope.precision)


def needs(spec, shape):
    """None: the direct sums compute the forward of every 2-d convolution."""
    return None


@functools.lru_cache(maxsize=256)
def _geometry(spec):
    """(plane, rows, cols, extra rows, extra columns) of the taps ``(u, v)`` of one input channel: the
    stride phase each reads and its offset in it (row, column: the kernel module's docstring), and the
    largest offsets."""
    (kH, kW), (sH, sW), (dH, dW) = spec.kernel_size, spec.stride, spec.dilation
    taps = [(u, v) for u in range(kH) for v in range(kW)]
    plane = np.array([((u * dH) % sH) * sW + (v * dW) % sW for u, v in taps], dtype=np.int64)
    rows = np.array([(u * dH) // sH for u, v in taps], dtype=np.int64)
    cols = np.array([(v * dW) // sW for u, v in taps], dtype=np.int64)
    return plane, rows, cols, ((kH - 1) * dH) // sH, ((kW - 1) * dW) // sW


def _planes(spec, shape):
    """(Hq, Wq): each stride phase's rows and columns, enough for every tap's flat run."""
    *_, extra_rows, extra_cols = _geometry(spec)
    return shape.H_out + extra_rows + 1, shape.W_out + extra_cols


def _taps(spec, shape):
    """(chan, plane, start): for tap ``r = (c·kH + u)·kW + v`` of a group, its channel, phase and offset."""
    plane, rows, cols, _, _ = _geometry(spec)
    Wq = _planes(spec, shape)[1]
    Cg, per = shape.in_per_group, plane.size
    chan = np.repeat(np.arange(Cg, dtype=np.int64), per)
    return chan, np.tile(plane, Cg), np.tile(rows * Wq + cols, Cg)


def forward(x, w, b, spec, shape):
    """out (N, C_out, H_out, W_out)."""
    from .kernels import _numba, fused_padding
    from .kernels import direct as kernels

    N, C, Co = shape.N, shape.C, shape.out_channels
    (sH, sW) = spec.stride
    Hq, Wq = _planes(spec, shape)
    out = np.empty((N, Co, shape.H_out, shape.W_out), dtype=x.dtype)
    if out.size == 0:
        if b is not None and N:
            out[...] = b.reshape(1, Co, 1, 1)
        return out
    xs, pt, pl = fused_padding(x, spec)
    per_sample = C * sH * sW * Hq * Wq
    lanes = _numba.REGISTER_BYTES // x.dtype.itemsize
    phf = np.empty(N * per_sample + lanes, dtype=x.dtype)
    phf[N * per_sample:] = 0
    _numba.launch(kernels.split_phases, xs, phf[:N * per_sample].reshape(N, C, sH, sW, Hq, Wq), sH, sW, pt, pl)
    chan, plane, start = _taps(spec, shape)
    off = (chan * (sH * sW) + plane) * (Hq * Wq) + start
    G, Og = shape.groups, shape.out_per_group
    octs = -(-Og // 8)
    w8 = np.zeros((G, octs * 8, off.size), dtype=x.dtype)
    w8[:, :Og] = w.reshape(G, Og, -1)
    w8 = np.ascontiguousarray(w8.reshape(G, octs, 8, off.size).transpose(0, 1, 3, 2))
    # a copy (a few bytes): a read-only bias would otherwise need a kernel compiled of its own
    bias = np.empty(0, x.dtype) if b is None else np.array(b, dtype=x.dtype)
    _numba.launch(kernels.forward, phf, per_sample, per_sample // shape.groups, w8, bias, out, off, Wq)
    return out


def backward(grad_out, x, w, spec, shape, mask):
    """(∂L/∂x or None, ∂L/∂w or None) as ``mask = (input, weight)`` asks: gemm's."""
    return gemm.backward(grad_out, x, w, spec, shape, mask)


def describe(spec, shape, pass_) -> str:
    if pass_ != "forward":
        return "gemm's: " + gemm.describe(spec, shape, pass_)
    sH, sW = spec.stride
    phases = f"{sH * sW} stride phases" if sH * sW > 1 else "one phase"
    return f"the input split into {phases}, each output's {shape.in_per_group * spec.kernel_size[0] * spec.kernel_size[1]} taps summed in place"


def preferred_bytes(pass_, spec, shape):
    """gemm's preference for its gradients' slices of the batch; none for the forward."""
    return None if pass_ == "forward" else gemm.preferred_bytes(pass_, spec, shape)


def workspace(pass_, spec, shape, itemsize):
    """Scratch bytes of the forward: the phase planes and their one block of pad, the padded input of a
    mode other than zeros, the output and the weights in blocks of eight channels; gemm's for the
    gradients."""
    from .kernels._numba import REGISTER_BYTES

    if pass_ != "forward":
        return gemm.workspace(pass_, spec, shape, itemsize)
    Hq, Wq = _planes(spec, shape)
    sH, sW = spec.stride
    phases = shape.N * shape.C * sH * sW * Hq * Wq + REGISTER_BYTES // itemsize
    padded = 0 if spec.padding_mode == "zeros" else shape.N * shape.C * math.prod(spec.padded_size(shape.spatial))
    out = shape.N * shape.out_channels * shape.H_out * shape.W_out
    weights = 2 * shape.groups * -(-shape.out_per_group // 8) * 8 * shape.in_per_group * math.prod(spec.kernel_size)
    return (phases + padded + out + weights) * itemsize
