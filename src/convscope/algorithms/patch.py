"""Kernels as large as their stride, with no padding and no dilation: the taps of neighbouring outputs
do not overlap ("patchify", and the adjoint of a U-Net's 2×2 stride-2 up-convolution).

Each output reads its own kH × kW patch, so the input rearranged by patches (space to depth)::

    x_p[n, (c, u, v), i, j] = x[n, c, i·kH + u, j·kW + v]          (N, C·kH·kW, H_out, W_out)

turns the convolution into a 1×1 one over ``C·kH·kW`` channels with the weight ``w`` reshaped to
``(C_out, C/G·kH·kW, 1, 1)`` (the channel order ``(c, u, v)`` keeps each group's channels together)::

    out  = pointwise(x_p, w_p)          ∂L/∂w = ∂L/∂w_p reshaped
    ∂L/∂x[n, c, i·kH + u, j·kW + v] = ∂L/∂x_p[n, (c, u, v), i, j]   (depth to space; 0 in the rows
                                                                     and columns no patch reads)

The products run on gemm's 1×1 layouts, as :mod:`convscope.algorithms.pointwise`'s do; the
depth-to-space scatter is a compiled kernel (:mod:`convscope.algorithms.kernels.patch`).  No im2col: the
rearranged input is the same size as the input.  Padding modes do not matter, there being no padding.
"""
from __future__ import annotations

import functools

import numpy as np

from . import gemm

ERROR = "local"     # each output is rounded from the products it sums (see convscope.precision)


def needs(spec, shape):
    """None when the kernel equals the stride, with no padding and dilation 1, else what is wrong."""
    wrong = []
    if spec.stride != spec.kernel_size:
        wrong.append(f"stride={spec.stride} with kernel_size={spec.kernel_size}")
    if spec.padding != ((0, 0), (0, 0)):
        wrong.append(f"padding={spec.padding}")
    if spec.dilation != (1, 1):
        wrong.append(f"dilation={spec.dilation}")
    if wrong:
        return "a stride equal to the kernel size, no padding and dilation 1, got " + ", ".join(wrong)
    return None


@functools.lru_cache(maxsize=256)
def _inner(spec, shape):
    """The 1×1 convolution over the patches' channels, and its shape."""
    from ..spec import make_spec

    kH, kW = spec.kernel_size
    flat = make_spec((1, 1), 1, 0, 1, spec.groups, ndim=2)
    return flat, shape._replace(C=shape.C * kH * kW, H=shape.H_out, W=shape.W_out)


def space_to_depth(x, kH, kW, rows, cols):
    """x (N, C, H, W) by its kH × kW blocks as channels, (N, C·kH·kW, rows, cols), channel order
    (c, u, v): x cropped, or zero-extended, to rows·kH × cols·kW first."""
    N, C, H, W = x.shape
    x = x[:, :, :rows * kH, :cols * kW]                                # a view: cropped where x is larger
    if x.shape[2:] != (rows * kH, cols * kW):
        full = np.zeros((N, C, rows * kH, cols * kW), dtype=x.dtype)
        full[:, :, :x.shape[2], :x.shape[3]] = x
        x = full
    out = np.empty((N, C, kH, kW, rows, cols), dtype=x.dtype)
    np.copyto(out, x.reshape(N, C, rows, kH, cols, kW).transpose(0, 1, 3, 5, 2, 4))
    return out.reshape(N, C * kH * kW, rows, cols)


def _patches(x, spec, shape):
    """x_p (N, C·kH·kW, H_out, W_out): space to depth."""
    return space_to_depth(x, *spec.kernel_size, shape.H_out, shape.W_out)


def _unpatch(dxp, spec, shape):
    """∂L/∂x (N, C, H, W) from ∂L/∂x_p (N, C·kH·kW, H_out, W_out): depth to space."""
    from .kernels import _numba
    from .kernels import patch as kernels

    kH, kW = spec.kernel_size
    covered = (shape.H_out * kH, shape.W_out * kW) == (shape.H, shape.W)
    dx = (np.empty if covered else np.zeros)((shape.N, shape.C, shape.H, shape.W), dtype=dxp.dtype)
    _numba.launch(kernels.depth_to_space, np.ascontiguousarray(dxp), kH, kW, dx)
    return dx


def _weight(w):
    return None if w is None else w.reshape(w.shape[0], -1, 1, 1)


def forward(x, w, b, spec, shape):
    flat, inner = _inner(spec, shape)
    return gemm.forward(_patches(x, spec, shape), _weight(w), b, flat, inner)


def backward(grad_out, x, w, spec, shape, mask):
    """(∂L/∂x or None, ∂L/∂w or None) as ``mask = (input, weight)`` asks, on gemm's 1×1 layouts."""
    flat, inner = _inner(spec, shape)
    xp = _patches(x, spec, shape) if mask[1] else None
    dxp, dw = gemm.backward(grad_out, xp, _weight(w), flat, inner, mask)
    dx = None if dxp is None else _unpatch(dxp, spec, shape)
    return dx, (None if dw is None else dw.reshape((shape.out_channels, shape.in_per_group) + spec.kernel_size))


def describe(spec, shape, pass_) -> str:
    flat, inner = _inner(spec, shape)
    kH, kW = spec.kernel_size
    return (f"the input's {kH}×{kW} patches as {inner.C} channels, then a 1×1 product: "
            + gemm.layout_text(flat, inner, pass_, with_phases=False))


def workspace(pass_, spec, shape, itemsize):
    """Scratch bytes: the rearranged input (forward, grad_weight) or ∂L/∂x_p (grad_input), and gemm's
    1×1 layouts on them."""
    flat, inner = _inner(spec, shape)
    rearranged = shape.N * inner.C * shape.H_out * shape.W_out
    return gemm.workspace(pass_, flat, inner, itemsize) + rearranged * itemsize
